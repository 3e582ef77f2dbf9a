package connector

import (
	"net/http"
	"sort"
	"sync"

	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/recordings"
	"github.com/pbxbridge/pbxbridge/crm"
)

// RecentCall is one of the last finished calls, for the status page.
type RecentCall struct {
	Record     callmodel.Record `json:"record"`
	Connectors []string         `json:"connectors"` // where it was queued
}

// recentCalls keeps the last n finished calls in memory (the outbox keeps them durably).
type recentCalls struct {
	mu    sync.Mutex
	n     int
	items []RecentCall
}

func newRecentCalls(n int) *recentCalls { return &recentCalls{n: n} }

func (r *recentCalls) add(rec *callmodel.Record, connectors []string) {
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

func sortChecks(cs []check) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
}

// delivered is the dispatch hook after a successful delivery.
func (d *Daemon) delivered(connector string, rec *callmodel.Record, _ int) {
	if d.opts.OnDelivered != nil {
		d.opts.OnDelivered(connector, rec)
	}
}

// recordings returns the recording access adapters use: uploads always, signed links when
// recordings.public_url and recordings.secret are set. It is built once per daemon.
func (d *Daemon) recordings(cfg *config.Config) crm.Recordings {
	d.recOnce.Do(func() {
		srv, err := recordings.New(cfg.Recordings, recordings.Options{
			Now:      d.now,
			Metrics:  d.reg,
			Logger:   d.log.With("component", "recordings"),
			CacheDir: cfg.StateDir,
		})
		if err != nil {
			d.log.Error("recordings unavailable", "err", err)
			return
		}
		d.rec = srv
	})
	if d.rec == nil {
		return nil
	}
	return d.rec
}

// mountExtra adds the status page and the recordings endpoint.
func (d *Daemon) mountExtra(mux *http.ServeMux, cfg *config.Config) {
	mux.HandleFunc("GET /{$}", d.statusPage)
	mux.HandleFunc("GET /calls/{key...}", d.callPage)
	mux.HandleFunc("POST /actions/retry-dead", d.retryDead)
	if rec := d.recordings(cfg); rec != nil && d.rec.Links() {
		mux.Handle(d.rec.Pattern(), d.rec)
	}
}
