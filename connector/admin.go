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
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/dispatch"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// The admin API is plain HTTP+JSON on a unix socket created 0600 in the state directory: only
// root and the service user reach it. `pbxbridge status`, `outbox …`, `calls show` and
// `license status` are its clients, so the CLI never opens the outbox the daemon writes.

// StatusReport is what `pbxbridge status` shows.
type StatusReport struct {
	Version    string                  `json:"version"`
	StartedAt  time.Time               `json:"started_at"`
	Ready      bool                    `json:"ready"`
	Checks     []check                 `json:"checks"`
	PBX        []asterisk.SourceStatus `json:"pbx"`
	Connectors []ConnectorReport       `json:"connectors"`
	Outbox     []outbox.ConnectorStats `json:"outbox"`
	HeldCalls  int                     `json:"held_calls"` // finished calls waiting in memory for the outbox
}

// ConnectorReport is one connector's part of the status.
type ConnectorReport struct {
	Name     string                     `json:"name"`
	Type     string                     `json:"type"`
	Delivery dispatch.Status            `json:"delivery"`
	CRM      crm.Status                 `json:"crm"`
	Licence  *licensing.ConnectorStatus `json:"licence,omitempty"`
	LiveDrop int64                      `json:"live_dropped"`
}

// Status gathers the daemon's state.
func (d *Daemon) Status(ctx context.Context) StatusReport {
	ready, checks := d.readiness(ctx)
	rep := StatusReport{Version: d.opts.Version, StartedAt: d.startedAt, Ready: ready && d.ready.Load(), Checks: checks}
	var lic licensing.Status
	if d.lic != nil {
		lic = d.lic.Status()
	}
	d.unitsMu.Lock()
	for _, p := range d.pbxs {
		rep.PBX = append(rep.PBX, p.source.Status())
		rep.HeldCalls += p.held.len()
	}
	d.unitsMu.Unlock()
	slices.SortFunc(rep.PBX, func(a, b asterisk.SourceStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range d.routes() {
		cr := ConnectorReport{Name: c.name, Type: c.typ, Delivery: c.worker.Status(), LiveDrop: c.liveDrop.Load()}
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

// OutboxItem is one outbox row as the admin API lists it.
type OutboxItem struct {
	ID            int64     `json:"id"`
	Key           string    `json:"key"`
	Connector     string    `json:"connector"`
	State         string    `json:"state"`
	Attempts      int       `json:"attempts"`
	StartedAt     time.Time `json:"started_at"`
	EnqueuedAt    time.Time `json:"enqueued_at"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	LastError     string    `json:"last_error,omitempty"`
	Direction     string    `json:"direction,omitempty"`
	Customer      string    `json:"customer,omitempty"`
	Disposition   string    `json:"disposition,omitempty"`
}

func itemOf(r outbox.Row) OutboxItem {
	it := OutboxItem{ID: r.ID, Key: r.Key, Connector: r.Connector, State: string(r.State), Attempts: r.Attempts,
		StartedAt: r.StartedAt, EnqueuedAt: r.EnqueuedAt, NextAttemptAt: r.NextAttemptAt, LastError: r.LastError}
	var rec call.Record
	if json.Unmarshal(r.Payload, &rec) == nil {
		it.Direction, it.Customer, it.Disposition = string(rec.Direction), rec.Customer, string(rec.Disposition)
	}
	return it
}

// OutboxRequest selects rows for retry, drop and redeliver.
type OutboxRequest struct {
	IDs       []int64   `json:"ids,omitempty"`
	Key       string    `json:"key,omitempty"`
	Connector string    `json:"connector,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Until     time.Time `json:"until,omitzero"`
}

func (o OutboxRequest) filter() outbox.Filter {
	return outbox.Filter{IDs: o.IDs, Key: o.Key, Connector: o.Connector, Since: o.Since, Until: o.Until}
}

// CallReport is `pbxbridge calls show`: the call, its timeline and its delivery rows.
type CallReport struct {
	Key      string                 `json:"key"`
	Record   *call.Record           `json:"record,omitempty"`
	Timeline []outbox.TimelineEntry `json:"timeline"`
	Rows     []OutboxItem           `json:"rows"`
}

// Call gathers what is known about one call (key = record key or call id).
func (d *Daemon) Call(ctx context.Context, key string) (CallReport, error) {
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
			return CallReport{Key: key}, err
		}
		if len(rows) > 0 || len(tl) > 0 {
			return d.callReport(k, rows, tl), nil
		}
	}
	return CallReport{Key: key}, fmt.Errorf("no call %q in the outbox or timelines (kept %d days)", key, d.Config().Outbox.RetentionDays)
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
func (d *Daemon) callReport(key string, rows []outbox.Row, tl []outbox.TimelineEntry) CallReport {
	rep := CallReport{Key: key}
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
		if f.Since, err = parseTimeParam(q.Get("since")); err != nil {
			http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
			return
		}
		if f.Until, err = parseTimeParam(q.Get("until")); err != nil {
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
		items := make([]OutboxItem, 0, len(rows))
		for _, row := range rows {
			items = append(items, itemOf(row))
		}
		writeJSON(w, items)
	})
	outboxOp := func(op func(context.Context, outbox.Filter) (int64, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req OutboxRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
				http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
				return
			}
			n, err := op(r.Context(), req.filter())
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

// parseTimeParam accepts RFC 3339 or YYYY-MM-DD (midnight UTC); "" is the zero time.
func parseTimeParam(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want YYYY-MM-DD or RFC 3339, got %q", s)
	}
	return t, nil
}

// AdminClient talks to a running daemon's admin socket.
type AdminClient struct {
	Socket string
	hc     *http.Client
}

// NewAdminClient returns a client for the socket at path.
func NewAdminClient(path string) *AdminClient {
	return &AdminClient{Socket: path, hc: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", path)
		}},
	}}
}

// ErrNotRunning says the daemon's admin socket does not answer.
var ErrNotRunning = errors.New("pbxbridge is not running (or its admin socket is elsewhere)")

// Do sends a request and decodes the JSON answer into out (nil to discard).
func (c *AdminClient) Do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://pbxbridge"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return fmt.Errorf("%w: %s: %w", ErrNotRunning, c.Socket, opErr.Err)
		}
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", strings.TrimSpace(string(data)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}
