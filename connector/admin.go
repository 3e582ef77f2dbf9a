package connector

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// The admin API (its endpoints and wire types are documented in connector/admin) is plain
// HTTP+JSON on a unix socket created 0600 in the state directory: only root and the service
// user reach it.

// Status gathers the daemon's state.
func (d *Daemon) Status(ctx context.Context) admin.StatusReport {
	ready, checks := d.readiness(ctx)
	rep := admin.StatusReport{Version: d.opts.Version, StartedAt: d.startedAt, Ready: ready && d.ready.Load(), Checks: checks}
	var lic licensing.Status
	if d.lic != nil {
		lic = d.lic.Status()
	}
	d.unitsMu.Lock()
	for _, p := range d.pbxs {
		rep.PBX = append(rep.PBX, p.source.Status())
	}
	d.unitsMu.Unlock()
	rep.HeldCalls = d.HeldCalls()
	rep.UnstoredCalls = d.UnstoredCalls()
	slices.SortFunc(rep.PBX, func(a, b asterisk.SourceStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range d.routes() {
		cr := admin.ConnectorReport{Name: c.name, Type: c.typ, Delivery: c.worker.Status(), LiveDrop: c.liveDrop.Load()}
		if sr, ok := c.adapter.(crm.StatusReporter); ok {
			cr.CRM = sr.Status()
		}
		for i := range lic.Connectors {
			if lic.Connectors[i].Name == c.name {
				cr.Licence = &lic.Connectors[i]
			}
		}
		rep.Connectors = append(rep.Connectors, cr)
	}
	if d.store != nil {
		if st, err := d.store.Stats(ctx); err == nil {
			rep.Outbox = st
		}
	}
	return rep
}

// serveAdmin starts the admin API on the unix socket and returns its stop function.
func (d *Daemon) serveAdmin(cfg *config.Config) (func(), error) {
	path := cfg.Admin.Socket
	if path == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// A socket left by a crashed daemon is removed; a live one means another daemon runs.
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = conn.Close()
		return nil, fmt.Errorf("admin socket %s: another pbxbridge is running", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	srv := &http.Server{Handler: d.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("admin socket stopped", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
		_ = os.Remove(path)
	}, nil
}

// itemOf is the admin view of an outbox row.
func itemOf(r outbox.Row) admin.OutboxItem {
	it := admin.OutboxItem{ID: r.ID, Key: r.Key, Connector: r.Connector, State: string(r.State), Attempts: r.Attempts,
		StartedAt: r.StartedAt, EnqueuedAt: r.EnqueuedAt, NextAttemptAt: r.NextAttemptAt, LastError: r.LastError}
	var rec call.Record
	if json.Unmarshal(r.Payload, &rec) == nil {
		it.Direction, it.Customer, it.Disposition = string(rec.Direction), rec.Customer, string(rec.Disposition)
	}
	return it
}

// Call gathers what is known about one call (key = record key or call id).
func (d *Daemon) Call(ctx context.Context, key string) (admin.CallReport, error) {
	// Each candidate key is looked up once: the key as given, then (for a bare call id) the id
	// under each configured PBX. The candidates are built here, never by calling Call again, so an
	// unknown key costs a bounded number of look-ups whatever it holds.
	candidates := []string{key}
	if !strings.Contains(key, "/") {
		for _, p := range d.Config().PBX {
			candidates = append(candidates, p.Name+"/"+key)
		}
	}
	for _, k := range candidates {
		rows, tl, err := d.callRows(ctx, k)
		if err != nil {
			return admin.CallReport{Key: key}, err
		}
		if len(rows) > 0 || len(tl) > 0 {
			return d.callReport(k, rows, tl), nil
		}
	}
	return admin.CallReport{Key: key}, fmt.Errorf("no call %q in the outbox or timelines (kept %d days)", key, d.Config().Outbox.RetentionDays)
}

// callRows reads one call key's outbox rows and timeline.
func (d *Daemon) callRows(ctx context.Context, key string) ([]outbox.Row, []outbox.TimelineEntry, error) {
	rows, err := d.store.List(ctx, outbox.Filter{Key: key, Limit: 100})
	if err != nil {
		return nil, nil, err
	}
	tl, err := d.store.Timeline(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	return rows, tl, nil
}

// callReport assembles the report of a call found under key.
func (d *Daemon) callReport(key string, rows []outbox.Row, tl []outbox.TimelineEntry) admin.CallReport {
	rep := admin.CallReport{Key: key}
	// Live actions reach the timeline lazily (live.go), after entries written later: in time
	// order the story reads right.
	slices.SortStableFunc(tl, func(a, b outbox.TimelineEntry) int { return a.At.Compare(b.At) })
	rep.Timeline = tl
	for _, r := range rows {
		rep.Rows = append(rep.Rows, itemOf(r))
		if rep.Record == nil {
			var rec call.Record
			if json.Unmarshal(r.Payload, &rec) == nil {
				rep.Record = &rec
			}
		}
	}
	if rep.Record == nil {
		for _, e := range tl {
			if e.Kind == "call" {
				var rec call.Record
				if json.Unmarshal([]byte(e.Detail), &rec) == nil {
					rep.Record = &rec
				}
			}
		}
	}
	return rep
}

// Import enqueues finished call records (JSON lines in the replay schema) as if the call model
// had just built them: for backfilling calls from a capture (`pbxbridge outbox import`).
func (d *Daemon) Import(ctx context.Context, r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var rec call.Record
		if err := json.Unmarshal([]byte(text), &rec); err != nil {
			return n, fmt.Errorf("line %d: %w", line, err)
		}
		if rec.CallID == "" || rec.StartedAt.IsZero() {
			return n, fmt.Errorf("line %d: a record needs call_id and started_at", line)
		}
		if err := d.enqueue(ctx, &rec); err != nil {
			return n, fmt.Errorf("line %d: %w", line, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return n, err
	}
	return n, nil
}

// AdminAPI is the admin socket's handler (tests drive it without the socket).
func (d *Daemon) AdminAPI() http.Handler { return d.adminHandler() }

func (d *Daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.Status(r.Context()))
	})
	mux.HandleFunc("GET /v1/license", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, d.lic.Status())
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Reload(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, map[string]string{"result": "reloaded"})
	})
	mux.HandleFunc("GET /v1/outbox", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := outbox.Filter{Connector: q.Get("connector"), Key: q.Get("key")}
		if s := q.Get("state"); s != "" {
			st, err := outbox.ParseState(s)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			f.State = st
		}
		var err error
		if f.Since, err = admin.ParseTime(q.Get("since")); err != nil {
			http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
			return
		}
		if f.Until, err = admin.ParseTime(q.Get("until")); err != nil {
			http.Error(w, "until: "+err.Error(), http.StatusBadRequest)
			return
		}
		if l := q.Get("limit"); l != "" {
			if f.Limit, err = strconv.Atoi(l); err != nil {
				http.Error(w, "limit: not a number", http.StatusBadRequest)
				return
			}
		}
		rows, err := d.store.List(r.Context(), f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		items := make([]admin.OutboxItem, 0, len(rows))
		for _, row := range rows {
			items = append(items, itemOf(row))
		}
		writeJSON(w, items)
	})
	outboxOp := func(op func(context.Context, outbox.Filter) (int64, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req admin.OutboxRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
				http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
				return
			}
			n, err := op(r.Context(), req.Filter())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if n > 0 {
				d.wakeAll()
			}
			writeJSON(w, map[string]int64{"count": n})
		}
	}
	mux.HandleFunc("POST /v1/outbox/retry", outboxOp(func(ctx context.Context, f outbox.Filter) (int64, error) { return d.store.Requeue(ctx, f) }))
	mux.HandleFunc("POST /v1/outbox/drop", outboxOp(func(ctx context.Context, f outbox.Filter) (int64, error) { return d.store.Drop(ctx, f) }))
	mux.HandleFunc("POST /v1/outbox/redeliver", outboxOp(func(ctx context.Context, f outbox.Filter) (int64, error) { return d.store.Redeliver(ctx, f) }))
	mux.HandleFunc("POST /v1/outbox/check", func(w http.ResponseWriter, r *http.Request) {
		if err := d.store.Check(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, map[string]string{"result": "ok"})
	})
	mux.HandleFunc("POST /v1/outbox/import", func(w http.ResponseWriter, r *http.Request) {
		n, err := d.Import(r.Context(), io.LimitReader(r.Body, 256<<20))
		if err != nil {
			http.Error(w, fmt.Sprintf("imported %d records, then: %v", n, err), http.StatusBadRequest)
			return
		}
		writeJSON(w, map[string]int{"count": n})
	})
	mux.HandleFunc("GET /v1/calls/{key...}", func(w http.ResponseWriter, r *http.Request) {
		rep, err := d.Call(r.Context(), r.PathValue("key"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("GET /v1/calls", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, d.recent.list())
	})
	mux.HandleFunc("POST /v1/forget", func(w http.ResponseWriter, r *http.Request) {
		var req admin.ForgetRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		rep, err := d.Forget(r.Context(), req.Number)
		switch {
		case errors.Is(err, ErrNotANumber):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("POST /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.BackupNow(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, res)
	})
	return mux
}

func (d *Daemon) wakeAll() {
	for _, c := range d.routes() {
		c.worker.Wake()
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
