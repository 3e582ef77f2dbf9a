package bitrix24

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// OAuth state nonces: each authorisation started from a connect URL carries a random state that
// the callback must return. A state is single-use and expires after stateTTL; at most stateMax
// are outstanding (the oldest is evicted). The connect URL is rebuilt for every status-page view
// and log line, so a state younger than stateReuse that was not used yet is handed out again
// instead of a new one: polling the status page does not push out the state an admin is using.
const (
	stateTTL   = 30 * time.Minute
	stateReuse = 5 * time.Minute
	stateMax   = 64
)

type oauthStates struct {
	mu     sync.Mutex
	issued map[string]time.Time // state -> issued at
	newest string
}

func newOAuthStates() *oauthStates { return &oauthStates{issued: map[string]time.Time{}} }

// issue returns a state for a new connect URL.
func (s *oauthStates) issue(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.issued[s.newest]; ok && now.Sub(at) < stateReuse && !now.Before(at) {
		return s.newest
	}
	for st, at := range s.issued {
		if now.Sub(at) > stateTTL {
			delete(s.issued, st)
		}
	}
	for len(s.issued) >= stateMax {
		oldest, oldestAt := "", time.Time{}
		for st, at := range s.issued {
			if oldest == "" || at.Before(oldestAt) {
				oldest, oldestAt = st, at
			}
		}
		delete(s.issued, oldest)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics instead)
	st := hex.EncodeToString(b)
	s.issued[st] = now
	s.newest = st
	return st
}

// consume reports whether state was issued, is unused and has not expired; it can succeed only
// once per state.
func (s *oauthStates) consume(now time.Time, state string) bool {
	if state == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.issued[state]
	if !ok {
		return false
	}
	delete(s.issued, state)
	return now.Sub(at) <= stateTTL
}
