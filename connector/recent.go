package connector

import (
	"sync"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// recentCalls keeps the last n finished calls in memory (the outbox keeps them durably).
type recentCalls struct {
	mu    sync.Mutex
	n     int
	items []admin.RecentCall
}

func newRecentCalls(n int) *recentCalls { return &recentCalls{n: n} }

func (r *recentCalls) add(rec *call.Record, connectors []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, admin.RecentCall{Record: *rec, Connectors: connectors})
	if len(r.items) > r.n {
		r.items = r.items[len(r.items)-r.n:]
	}
}

// list returns the calls, newest first.
func (r *recentCalls) list() []admin.RecentCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]admin.RecentCall, len(r.items))
	for i, it := range r.items {
		out[len(out)-1-i] = it
	}
	return out
}
