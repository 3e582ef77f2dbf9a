package connector

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
)

// The daemon has two HTTP listeners (docs/security.md):
//
//   - public: only what a CRM must reach from the internet: each connector's routes under
//     /crm/<name>/ (mounted and unmounted as connectors start and stop) and signed recording
//     links (/rec/…). Every handler there authenticates its requests itself.
//   - admin: the status page, /calls, /metrics, /healthz, /readyz, /v1/responsible and
//     /v1/lookup. Loopback or a socket by default; a token guards it whenever it is set (and
//     must be set when the listener is reachable from other hosts).
//
// Both muxes record the patterns they serve (Routes), so a test enumerates each listener and
// nothing lands on the public one by accident.

// routeMux is a ServeMux that remembers its patterns.
type routeMux struct {
	*http.ServeMux
	mu       sync.Mutex
	patterns []string
}

func newRouteMux() *routeMux { return &routeMux{ServeMux: http.NewServeMux()} }

// Handle registers h for pattern and records the pattern.
func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.mu.Lock()
	m.patterns = append(m.patterns, pattern)
	m.mu.Unlock()
	m.ServeMux.Handle(pattern, h)
}

// HandleFunc registers f for pattern and records the pattern.
func (m *routeMux) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(f))
}

func (m *routeMux) list() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.patterns)
}

// publicMux is the public listener's handler: fixed routes (recordings) plus each connector's
// routes under /crm/<name>/, mounted and unmounted as connectors start and stop.
type publicMux struct {
	static *routeMux
	mu     sync.RWMutex
	crm    map[string]*routeMux
}

func newPublicMux() *publicMux {
	return &publicMux{static: newRouteMux(), crm: map[string]*routeMux{}}
}

func (m *publicMux) mount(name string, routes []crm.Route) {
	mux := newRouteMux()
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

func (m *publicMux) unmount(name string) {
	m.mu.Lock()
	delete(m.crm, name)
	m.mu.Unlock()
}

func (m *publicMux) list() []string {
	out := m.static.list()
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, mux := range m.crm {
		out = append(out, mux.list()...)
	}
	slices.Sort(out)
	return out
}

func (m *publicMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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

// Routes lists the patterns each listener serves (tests enumerate them).
func (d *Daemon) Routes() (public, admin []string) {
	admin = d.adminMux.list()
	slices.Sort(admin)
	return d.publicMux.list(), admin
}

// PublicHandler is the public listener's handler (tests drive it without a socket).
func (d *Daemon) PublicHandler() http.Handler { return d.publicMux }

// AdminHandler is the admin listener's handler, authentication included.
func (d *Daemon) AdminHandler() http.Handler { return d.adminAuth(d.adminMux) }

// mountRoutes fills both muxes with the daemon's fixed routes (connectors mount theirs as they
// start).
func (d *Daemon) mountRoutes(cfg *config.Config) {
	m := d.adminMux
	m.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	m.HandleFunc("GET /readyz", d.handleReady)
	m.HandleFunc("GET /v1/responsible", d.handleResponsible)
	m.HandleFunc("GET /v1/lookup", d.handleLookup)
	m.HandleFunc("GET /{$}", d.statusPage)
	m.HandleFunc("GET /calls/{key...}", d.callPage)
	m.HandleFunc("POST /actions/retry-dead", d.retryDead)
	if rec := d.recordings(cfg); rec != nil && d.rec.Links() {
		d.publicMux.static.Handle(d.rec.Pattern(), d.rec)
	}
}

// adminAuth guards the admin listener. With http.admin.token set, every route but /healthz
// needs it (Bearer, or basic auth with the token as the password, so a browser can open the
// status page). Without a token (loopback or a socket only) it refuses requests whose Host is
// not this machine (DNS rebinding: a web page that resolves its own name to 127.0.0.1 must not
// read the status page). In both cases a request a browser marks cross-site is refused, so
// another site cannot make an operator's browser use the listener.
func (d *Daemon) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
			d.m.adminRefused.WithLabelValues("cross_site").Inc()
			http.Error(w, "cross-site requests are refused", http.StatusForbidden)
			return
		}
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		token := d.Config().HTTP.Admin.Token
		if !token.IsSet() {
			if !localHost(r.Host) {
				d.m.adminRefused.WithLabelValues("host").Inc()
				http.Error(w, "this listener answers only to 127.0.0.1, ::1 or localhost (set http.admin.token to reach it by name)", http.StatusMisdirectedRequest)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if !adminTokenOK(r, token.Value()) {
			d.m.adminRefused.WithLabelValues("token").Inc()
			w.Header().Set("WWW-Authenticate", `Basic realm="pbxbridge", charset="UTF-8"`)
			http.Error(w, "authentication required: Authorization: Bearer <http.admin.token> (or basic auth with the token as the password)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminTokenOK reports whether the request carries the admin token, as a Bearer token or as
// the password of basic auth (any user name). The comparison takes constant time.
func adminTokenOK(r *http.Request, want string) bool {
	got, ok := bearer(r)
	if !ok {
		_, got, ok = r.BasicAuth()
	}
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// bearer returns the Bearer token of the request.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// localHost reports whether a Host header names this machine by a loopback literal or
// "localhost" (with or without a port).
func localHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Listener limits common to both listeners.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 60 * time.Second
	httpWriteTimeout      = 2 * time.Minute // recordings stream; answers are otherwise small
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 32 << 10
)

// serveHTTP starts both listeners and returns their stop function.
func (d *Daemon) serveHTTP(cfg *config.Config) (func(), error) {
	d.mountRoutes(cfg)
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	for _, l := range []struct {
		name, addr string
		ln         func() (net.Listener, error)
		h          http.Handler
	}{
		{"public", cfg.HTTP.Public.Listen, d.opts.PublicListener, d.publicMux},
		{"admin", cfg.HTTP.Admin.Listen, d.opts.AdminListener, d.AdminHandler()},
	} {
		if l.addr == "" && l.ln == nil {
			continue
		}
		var ln net.Listener
		var err error
		switch {
		case l.ln != nil:
			ln, err = l.ln()
		case strings.HasPrefix(l.addr, "unix:"):
			ln, err = listenUnix(strings.TrimPrefix(l.addr, "unix:"))
		default:
			ln, err = net.Listen("tcp", l.addr)
		}
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("http %s listener: %w", l.name, err)
		}
		stops = append(stops, d.serveOn(l.name, ln, l.h))
	}
	return stopAll, nil
}

// serveOn serves h on ln until the returned function is called.
func (d *Daemon) serveOn(name string, ln net.Listener, h http.Handler) func() {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("http listener stopped", "listener", name, "err", err)
		}
	}()
	d.log.Info("http listening", "listener", name, "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}

// listenUnix listens on a unix socket at path, created 0660 (the service user and its group),
// replacing a socket left by a crashed daemon.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: another pbxbridge is listening there", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil { //nolint:gosec // the socket is for the service user and its group (a reverse proxy, Prometheus)
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
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
	if held := d.HeldCalls(); held > 0 {
		checks = append(checks, admin.Check{Name: "outbox/writes", OK: false,
			Detail: fmt.Sprintf("%d finished calls are held in memory: the outbox cannot write (disk full?)", held)})
		ready = false
	}
	// Every configured PBX, running or not: one whose reader failed to start (a reload with a
	// bad block) is as unready as one that is down.
	cfg := d.Config()
	d.unitsMu.Lock()
	for _, pc := range cfg.PBX {
		c := admin.Check{Name: "pbx/" + pc.Name}
		p, running := d.pbxs[pc.Name]
		switch {
		case !running:
			c.Detail = "not running: its reader did not start (see the log of the last reload)"
		default:
			st := p.source.Status()
			c.OK = st.Connected
			if !st.Connected {
				c.Detail = "not connected"
				if st.LastError != "" {
					c.Detail += ": " + st.LastError
				}
			}
		}
		if !c.OK {
			ready = false
		}
		checks = append(checks, c)
		// The CDR recovery's health is reported, but a failing CDR never makes the daemon
		// unready: calls still flow, only the gaps wait.
		if running {
			if name, ok, detail := p.gap.check(); name != "" {
				checks = append(checks, admin.Check{Name: name, OK: ok, Detail: detail})
			}
		}
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

// Each connector answers at most routerQueriesPerSecond routing questions a second (bursts of
// routerQueryBurst, a few calls arriving at once); beyond that the answer is empty at once and
// the dialplan takes its usual route. Adapters cache answers, so repeated numbers cost nothing.
const (
	routerQueriesPerSecond = 5
	routerQueryBurst       = 20
)

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
		if !c.queries.Allow() {
			d.m.routerThrottled.WithLabelValues(c.name).Inc()
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
