package bitrix24

import (
	"crypto/sha256"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// Replay protection of click-to-call and callback events.
//
// Bitrix24 signs nothing: an event is authenticated only by the application_token it carries,
// so whoever holds one posted event (a log, a proxy that retries POSTs, the event queue
// delivering twice) can post it again. Each event is therefore accepted once: click-to-call by
// its CALL_ID, a callback request (which has no id) by a digest of its content including ts.
// Events whose ts is older than replayWindow (or too far ahead) are refused, and accepted ids
// are remembered for replayWindow+replayAhead, so a replay is refused either as stale or as a
// duplicate. The memory is bounded: when replayMaxEntries ids are remembered, new events are
// refused (pbxbridge_bitrix24_replay_guard_full_total) rather than the memory growing.
const (
	replayWindow     = time.Hour
	replayAhead      = 5 * time.Minute // clock skew tolerated for ts in the future
	replayMaxEntries = 50000           // ~5 MB at most
)

// replayVerdict is the outcome of replayGuard.admit.
type replayVerdict int

const (
	replayNew replayVerdict = iota
	replayDuplicate
	replayFull
)

// replayGuard remembers event ids for a fixed time. Keys are SHA-256 digests, so the memory per
// entry is fixed whatever the event carries. It is safe for concurrent use.
type replayGuard struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	seen  map[[sha256.Size]byte]time.Time // id -> expiry
	order []replayEntry                   // insertion order = expiry order (ttl is fixed)
}

type replayEntry struct {
	id  [sha256.Size]byte
	exp time.Time
}

func newReplayGuard(ttl time.Duration, maxEntries int) *replayGuard {
	return &replayGuard{ttl: ttl, max: maxEntries, seen: map[[sha256.Size]byte]time.Time{}}
}

// admit records id at now; it reports replayDuplicate when id is remembered, and replayFull
// (recording nothing) when the guard holds max unexpired ids.
func (g *replayGuard) admit(now time.Time, id string) replayVerdict {
	k := sha256.Sum256([]byte(id))
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	if exp, ok := g.seen[k]; ok && now.Before(exp) {
		return replayDuplicate
	}
	if len(g.seen) >= g.max {
		return replayFull
	}
	exp := now.Add(g.ttl)
	g.seen[k] = exp
	g.order = append(g.order, replayEntry{id: k, exp: exp})
	return replayNew
}

// forget drops id (an event refused after admit, so that a corrected delivery is not taken
// for a replay).
func (g *replayGuard) forget(id string) {
	k := sha256.Sum256([]byte(id))
	g.mu.Lock()
	delete(g.seen, k)
	g.mu.Unlock()
}

// len returns the number of remembered ids.
func (g *replayGuard) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

func (g *replayGuard) expireLocked(now time.Time) {
	i := 0
	for ; i < len(g.order) && !now.Before(g.order[i].exp); i++ {
		e := g.order[i]
		if exp, ok := g.seen[e.id]; ok && exp.Equal(e.exp) {
			delete(g.seen, e.id)
		}
	}
	if i == 0 {
		return
	}
	g.order = g.order[i:]
	// Forgotten ids leave entries behind; compact once the slice is mostly garbage.
	if len(g.order) > 2*len(g.seen)+64 {
		live := make([]replayEntry, 0, len(g.seen))
		for _, e := range g.order {
			if exp, ok := g.seen[e.id]; ok && exp.Equal(e.exp) {
				live = append(live, e)
			}
		}
		g.order = live
	}
}

// eventTime parses an event's ts (unix seconds); ok is false when it is absent or malformed.
func eventTime(ev *api.Event) (time.Time, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(ev.TS), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

// fresh reports whether an event's ts is inside the accepted window (absent ts: yes; the id
// is still remembered for the whole window).
func fresh(ev *api.Event, now time.Time) bool {
	ts, ok := eventTime(ev)
	if !ok {
		return true
	}
	return !ts.Before(now.Add(-replayWindow)) && !ts.After(now.Add(replayAhead))
}

// clickID is the replay id of a click-to-call event: its CALL_ID (Bitrix24 registers a new call
// for every click).
func clickID(s *api.ExternalCallStart) string { return "click\x00" + s.CallID }

// callbackID is the replay id of a callback request: the event carries no id, so its content
// (ts, number, line, CRM object, text) identifies it.
func callbackID(ev *api.Event, s *api.ExternalCallbackStart) string {
	return strings.Join([]string{"callback", ev.TS, ev.HandlerID, s.PhoneNumber, s.LineNumber, s.CRMEntityType,
		strconv.Itoa(s.CRMEntityID), s.Text, s.Voice}, "\x00")
}
