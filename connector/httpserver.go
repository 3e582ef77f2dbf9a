package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
)

// listenerCloser is a net.Listener (the HTTPListener option returns one).
type listenerCloser = net.Listener

// dynamicMux is the daemon's public handler: fixed routes plus each connector's routes under
// /crm/<name>/, mounted and unmounted as connectors start and stop.
type dynamicMux struct {
	static *http.ServeMux
	mu     sync.RWMutex
	crm    map[string]*http.ServeMux
}

func newDynamicMux() *dynamicMux {
	return &dynamicMux{static: http.NewServeMux(), crm: map[string]*http.ServeMux{}}
}

func (m *dynamicMux) mount(name string, routes []crm.Route) {
	mux := http.NewServeMux()
	for _, r := range routes {
		method, path, ok := strings.Cut(r.Pattern, " ")
		if !ok {
			method, path = "", r.Pattern
		}
		pattern := "/crm/" + name + "/" + strings.TrimLeft(path, "/")
		if method != "" {
			pattern = method + " " + pattern
		}
		mux.Handle(pattern, r.Handler)
	}
	m.mu.Lock()
	m.crm[name] = mux
	m.mu.Unlock()
}

func (m *dynamicMux) unmount(name string) {
	m.mu.Lock()
	delete(m.crm, name)
	m.mu.Unlock()
}

func (m *dynamicMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/crm/"); ok {
		name, _, _ := strings.Cut(rest, "/")
		m.mu.RLock()
		mux := m.crm[name]
		m.mu.RUnlock()
		if mux == nil {
			http.Error(w, "no such connector", http.StatusNotFound)
			return
		}
		mux.ServeHTTP(w, r)
		return
	}
	m.static.ServeHTTP(w, r)
}

// serveHTTP starts the public listener and returns its stop function.
func (d *Daemon) serveHTTP(cfg *config.Config) (func(), error) {
	mux := d.httpMux.static
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", d.handleReady)
	mux.HandleFunc("GET /v1/responsible", d.handleResponsible)
	mux.HandleFunc("GET /v1/lookup", d.handleLookup)
	d.mountExtra(mux, cfg)

	if cfg.HTTP.Listen == "" && d.opts.HTTPListener == nil {
		return func() {}, nil
	}
	var ln net.Listener
	var err error
	if d.opts.HTTPListener != nil {
		ln, err = d.opts.HTTPListener()
	} else {
		ln, err = net.Listen("tcp", cfg.HTTP.Listen)
	}
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	srv := &http.Server{
		Handler:           d.httpMux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("http listener stopped", "err", err)
		}
	}()
	d.log.Info("http listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// readiness computes /readyz: ready when the outbox answers and every PBX is connected. Licence
// and CRM problems are reported but do not make the daemon unready (they never stop telephony,
// and restarting would not fix them).
func (d *Daemon) readiness(ctx context.Context) (bool, []admin.Check) {
	var checks []admin.Check
	ready := true
	if d.store == nil {
		checks = append(checks, admin.Check{Name: "outbox", OK: false, Detail: "not open yet"})
		ready = false
	} else if err := d.store.Ping(ctx); err != nil {
		checks = append(checks, admin.Check{Name: "outbox", OK: false, Detail: err.Error()})
		ready = false
	} else {
		checks = append(checks, admin.Check{Name: "outbox", OK: true})
	}
	d.unitsMu.Lock()
	for name, p := range d.pbxs {
		st := p.source.Status()
		c := admin.Check{Name: "pbx/" + name, OK: st.Connected}
		if !st.Connected {
			c.Detail = "not connected"
			if st.LastError != "" {
				c.Detail += ": " + st.LastError
			}
			ready = false
		}
		checks = append(checks, c)
	}
	for name, c := range d.conns {
		ws := c.worker.Status()
		ck := admin.Check{Name: "connector/" + name, OK: ws.Licensed && !ws.AuthBroken}
		switch {
		case !ws.Licensed:
			ck.Detail = "no valid licence: calls are queued"
		case ws.AuthBroken:
			ck.Detail = "CRM authorisation broken: calls are queued until it is renewed"
		}
		checks = append(checks, ck)
	}
	d.unitsMu.Unlock()
	sortChecks(checks)
	return ready, checks
}

func (d *Daemon) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	ready, checks := d.readiness(ctx)
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "checks": checks})
}

// routerQueryTimeout bounds /v1/responsible and /v1/lookup: the dialplan waits for the answer.
const routerQueryTimeout = 300 * time.Millisecond

// handleResponsible answers the extension of the customer's responsible manager as plain text
// ("" when unknown), for the dialplan's CURL(). ?connector= picks one connector.
func (d *Daemon) handleResponsible(w http.ResponseWriter, r *http.Request) {
	d.routerQuery(w, r, func(ctx context.Context, rt crm.Router, number string) (string, error) {
		return rt.Responsible(ctx, number)
	})
}

// handleLookup answers the customer's name in the CRM as plain text ("" when unknown), for
// CALLERID(name).
func (d *Daemon) handleLookup(w http.ResponseWriter, r *http.Request) {
	d.routerQuery(w, r, func(ctx context.Context, rt crm.Router, number string) (string, error) {
		return rt.Lookup(ctx, number)
	})
}

func (d *Daemon) routerQuery(w http.ResponseWriter, r *http.Request, ask func(context.Context, crm.Router, string) (string, error)) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	number := strings.TrimSpace(r.URL.Query().Get("number"))
	if number == "" || len(number) > 64 {
		http.Error(w, "number: required, at most 64 characters", http.StatusBadRequest)
		return
	}
	number = d.norm.Normalize(number)
	want := r.URL.Query().Get("connector")
	ctx, cancel := context.WithTimeout(r.Context(), routerQueryTimeout)
	defer cancel()
	for _, c := range d.routes() {
		if want != "" && c.name != want {
			continue
		}
		rt, ok := c.adapter.(crm.Router)
		if !ok || !c.allowed() {
			continue
		}
		ans, err := ask(ctx, rt, number)
		if err != nil {
			c.log.Debug("routing query failed", "err", err)
			continue
		}
		if ans != "" {
			_, _ = io.WriteString(w, ans)
			return
		}
	}
	// Unknown: an empty answer lets the dialplan fall through to its normal route.
}
