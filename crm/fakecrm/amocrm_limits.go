package fakecrm

import (
	"encoding/json"
	"time"
)

// amoWindow logs API request arrivals per (account, client IP) over the last second: how many
// arrived within one rolling second at most, and how many arrived over the limit.
type amoWindow struct {
	log  map[string][]time.Time
	max  int
	over int
}

// arrive records a request at now and returns how many arrived in [now−1s, now], itself included.
func (w *amoWindow) arrive(key string, now time.Time, limit int) int {
	if w.log == nil {
		w.log = map[string][]time.Time{}
	}
	l := w.log[key]
	i := 0
	for i < len(l) && now.Sub(l[i]) > time.Second {
		i++
	}
	if i > 0 {
		l = l[:copy(l, l[i:])]
	}
	l = append(l, now)
	w.log[key] = l
	n := len(l)
	w.max = max(w.max, n)
	if limit > 0 && n > limit {
		w.over++
	}
	return n
}

// ResetRateLimit forgets the requests counted so far by the rate limit (token buckets, rolling
// windows, consecutive 429s, blocks; not the statistics): for tests whose set-up talked to the
// fake outside the client under test, as `pbxbridge crm auth` does minutes before a daemon
// starts.
func (f *AmoCRM) ResetRateLimit() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buckets = map[string]*amoBucket{}
	f.window.log = nil
}

// ThrottleFor answers every API request 429 for d from now, with the time left as retry_after
// (body, whatever the flavour) and Retry-After (header): what amoCRM does when it asks an
// integration to slow down the whole account. State().Throttled counts those answers.
func (f *AmoCRM) ThrottleFor(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.throttledUntil = f.o.Now().Add(d)
}

// noteUniq returns params.uniq of a note ("" when absent).
func noteUniq(params json.RawMessage) string {
	var p struct {
		Uniq string `json:"uniq"`
	}
	if json.Unmarshal(params, &p) != nil {
		return ""
	}
	return p.Uniq
}
