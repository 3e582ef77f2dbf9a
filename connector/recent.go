package connector

import (
	"sync"

	"github.com/pbxbridge/pbxbridge/crm/call"
)

// RecentCall is one of the last finished calls, for the status page.
type RecentCall struct {
	Record     call.Record `json:"record"`
	Connectors []string    `json:"connectors"` // where it was queued
}

// recentCalls keeps the last n finished calls in memory (the outbox keeps them durably).
type recentCalls struct {
	mu    sync.Mutex
	n     int
	items []RecentCall
}

func newRecentCalls(n int) *recentCalls { return &recentCalls{n: n} }

func (r *recentCalls) add(rec *call.Record, connectors []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, RecentCall{Record: *rec, Connectors: connectors})
	if len(r.items) > r.n {
		r.items = r.items[len(r.items)-r.n:]
	}
}

// list returns the calls, newest first.
func (r *recentCalls) list() []RecentCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RecentCall, len(r.items))
	for i, it := range r.items {
		out[len(out)-1-i] = it
	}
	return out
}
