package connector

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cleanhttp "github.com/hashicorp/go-cleanhttp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/dispatch"
	"github.com/pbxbridge/pbxbridge/connector/hooks"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// connRT is one running connector instance.
type connRT struct {
	name    string
	typ     string
	cfg     config.Connector
	adapter crm.Adapter
	route   *route
	worker  *dispatch.Worker
	log     *slog.Logger

	live     *liveCalls // the live path: per-call ordering, staleness, timeline (live.go)
	liveDrop atomic.Int64

	// queries bounds the dialplan's /v1/responsible and /v1/lookup questions to this CRM: a
	// flood of distinct numbers must not spend the CRM's request budget.
	queries *rate.Limiter

	free bool // a connector type that needs no licence
	lic  *licensing.Service

	cancel context.CancelFunc
	done   chan struct{}
}

// startConnector builds the adapter of cn and starts its delivery worker and live loop.
func (d *Daemon) startConnector(ctx context.Context, cfg *config.Config, cn *config.Connector) error {
	f, ok := crm.Lookup(cn.Type)
	if !ok {
		return fmt.Errorf("connector %s: unknown type %q", cn.Name, cn.Type)
	}
	log := d.log.With("connector", cn.Name)
	stateDir := filepath.Join(cfg.StateDir, "connectors", cn.Name)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("connector %s: state directory: %w", cn.Name, err)
	}
	publicURL := strings.TrimRight(cfg.HTTP.Public.URL, "/")
	routeURL := ""
	if publicURL != "" {
		routeURL = publicURL + "/crm/" + cn.Name
	}
	settings := cn.Settings
	if settings == nil {
		settings = f.NewConfig()
	}
	// The worker is built after the adapter; a renewal before then has nothing to resume.
	var worker atomic.Pointer[dispatch.Worker]
	params := crm.Params{
		Name:              cn.Name,
		Type:              cn.Type,
		Config:            settings,
		Logger:            log,
		Metrics:           prometheus.WrapRegistererWith(prometheus.Labels{"connector": cn.Name}, d.reg),
		StateDir:          stateDir,
		Calls:             d.store.CallState(cn.Name),
		Originator:        &gatedOriginator{d: d, connector: cn.Name, pbx: cn.PBX},
		PublicURL:         publicURL,
		RouteURL:          routeURL,
		Recordings:        d.recordings(cfg),
		Now:               d.now,
		HTTPClient:        d.crmHTTPClient(cn.Name),
		MaxResponseBody:   cn.MaxResponseBytes,
		ObserveServerDate: d.lic.ObserveCRMDate,
		AuthRenewed: func() {
			if w := worker.Load(); w != nil {
				w.ResumeAuth()
			}
		},
	}
	hs := hooks.New(cn.CompiledHooks(), hooks.Options{Connector: cn.Name, Metrics: d.m.hooks, Logger: log, Now: d.now})
	if hs != nil {
		params.Hooks = hs
		log.Info("hooks configured", "points", hs.Points())
	}
	adapter, err := f.New(params)
	if err != nil {
		return fmt.Errorf("connector %s: %w", cn.Name, err)
	}
	r, err := newRoute(cn)
	if err != nil {
		return err
	}
	if hs.Has(crm.HookLogIf) {
		r.logIf = hs
	}
	// Sold connector types need a licence; others (the "fake" test CRM that writes a local
	// file) are free.
	free := !d.lic.Connectors().Known(cn.Type)
	if !free {
		inst := licensing.Instance{Name: cn.Name, Type: cn.Type}
		if m, ok := settings.(crm.ExtensionMapper); ok {
			inst.Extensions = m.MappedExtensions()
		}
		if err := d.lic.Register(inst); err != nil {
			return fmt.Errorf("connector %s: licensing: %w", cn.Name, err)
		}
	}

	c := &connRT{
		name:    cn.Name,
		typ:     cn.Type,
		free:    free,
		lic:     d.lic,
		cfg:     *cn,
		adapter: adapter,
		route:   r,
		log:     log,
		done:    make(chan struct{}),
		queries: rate.NewLimiter(routerQueriesPerSecond, routerQueryBurst),
	}
	dc := d.Config().Dispatch
	d.dm.Init(cn.Name)
	d.m.initConnector(cn.Name)
	c.worker = dispatch.New(d.store, dispatch.Options{
		Connector:       cn.Name,
		Adapter:         adapter,
		Concurrency:     concurrencyFor(adapter, dc.Workers),
		BackoffMin:      dc.BackoffMin,
		BackoffMax:      dc.BackoffMax,
		GiveUpAfter:     dc.GiveUpAfter,
		DeliveryTimeout: dc.DeliveryTimeout,
		DrainTimeout:    dc.DrainTimeout,
		Allowed:         func(string) bool { return c.allowed() },
		Skip:            func(_ string, rec *call.Record) string { return c.seatSkip(rec) },
		Clock:           d.now,
		Logger:          d.log,
		OnDelivered:     d.delivered,
	}, d.dm)
	worker.Store(c.worker)

	if rc, ok := adapter.(crm.Reconciler); ok && !d.reconcileRestored(ctx, cn.Name, rc) {
		d.restoreUnsettled.Store(true)
	}
	runCtx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	var tl *timelineBuffer
	if d.store != nil {
		tl = newTimelineBuffer(d.store, log)
	}
	c.live = newLiveCalls(runCtx, cn.Name, adapter, d.m, log, tl)
	c.live.drop = func() { c.liveDrop.Add(1) }
	for _, r := range []string{crm.LiveDropCallEnded, crm.LiveDropAnsweredElsewhere, crm.LiveDropStoppedRinging, crm.LiveDropQueueFull} {
		d.m.liveDropped.WithLabelValues(cn.Name, r)
	}
	if s, ok := adapter.(crm.Starter); ok {
		if err := s.Start(runCtx); err != nil {
			cancel()
			return fmt.Errorf("connector %s: starting: %w", cn.Name, err)
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = c.worker.Run(runCtx) }()
	go func() { defer wg.Done(); d.bindAccount(runCtx, c) }()
	tlDone := make(chan struct{})
	go func() {
		defer close(tlDone)
		if tl != nil {
			tl.run(runCtx)
		}
	}()
	go func() {
		wg.Wait()
		c.live.close()
		<-tlDone
		if cl, ok := adapter.(crm.Closer); ok {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := cl.Close(cctx); err != nil {
				log.Warn("closing the adapter", "err", err)
			}
			ccancel()
		}
		close(c.done)
	}()

	if hr, ok := adapter.(crm.HTTPRoutes); ok {
		d.publicMux.mount(cn.Name, hr.Routes())
	}
	d.unitsMu.Lock()
	d.conns[cn.Name] = c
	d.unitsMu.Unlock()
	log.Info("connector started", "type", cn.Type, "licensed", c.allowed())
	return nil
}

// concurrencyFor lets adapters that batch (amoCRM) ask for more deliveries in flight.
func concurrencyFor(a crm.Adapter, configured int) int {
	if c, ok := a.(crm.ConcurrencyHinter); ok && c.DeliverConcurrency() > configured {
		return c.DeliverConcurrency()
	}
	return configured
}

// stopConnector stops one connector: its worker drains, its live loop ends, the adapter closes.
func (d *Daemon) stopConnector(name string) {
	d.unitsMu.Lock()
	c, ok := d.conns[name]
	delete(d.conns, name)
	d.unitsMu.Unlock()
	if !ok {
		return
	}
	d.publicMux.unmount(name)
	c.cancel()
	<-c.done
	if !c.free {
		d.lic.Unregister(name)
	}
	c.log.Info("connector stopped")
}

func (d *Daemon) stopAllConnectors() {
	d.unitsMu.Lock()
	names := make([]string, 0, len(d.conns))
	for n := range d.conns {
		names = append(names, n)
	}
	d.unitsMu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopConnector(n) }()
	}
	wg.Wait()
	d.publishRoutes()
}

// pushLive queues a live event for c without blocking the call model (see liveCalls).
func (c *connRT) pushLive(ev *call.Live) {
	c.live.push(ev)
}

// bindAccount asks the adapter which CRM account it is authorised to and tells licensing, at
// start and hourly (licence CRM binding, docs/licensing-design.md §3.8).
func (d *Daemon) bindAccount(ctx context.Context, c *connRT) {
	ai, ok := c.adapter.(crm.AccountIdentifier)
	if !ok {
		return
	}
	// The first minutes matter: a licence bound to the account (and every demo licence) waits for
	// it, so retry quickly while the adapter is not authorised yet (an admin is installing it).
	wait := time.Second
	for {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		acc, err := ai.Account(actx)
		cancel()
		next := time.Hour
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Debug("CRM account not known yet", "err", err)
			next = wait
			wait = min(wait*3/2, 5*time.Minute)
		} else if err := d.lic.SetAccount(c.name, licensing.Account{Domain: acc.Domain, MemberID: acc.MemberID, AccountID: acc.AccountID, Subdomain: acc.Subdomain}); err != nil {
			c.log.Warn("licensing: CRM account", "err", err)
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// allowed is the licence gate of the connector.
func (c *connRT) allowed() bool { return c.free || c.lic.Allowed(c.name) }

// extAllowed reports whether ext keeps CRM actions under the licence's seats.
func (c *connRT) extAllowed(ext string) bool { return c.free || c.lic.ExtensionAllowed(c.name, ext) }

// seatSkip withholds CRM actions for calls of extensions beyond the licence's seats (§3.9): the
// call is skipped only when every extension it involves is suspended.
func (c *connRT) seatSkip(rec *call.Record) string {
	exts := recordExtensions(rec)
	if rec.CallerExt != "" {
		exts = append(exts, rec.CallerExt)
	}
	if len(exts) == 0 {
		return ""
	}
	for _, e := range exts {
		if c.extAllowed(e) {
			return ""
		}
	}
	return fmt.Sprintf("extensions %s are beyond the licence's seats: no CRM actions for this call", strings.Join(exts, ", "))
}

// crmHTTPClient is the instrumented HTTP client adapters build on: it times every CRM request,
// counts it for requests-per-call, and feeds CRM Date headers to the licence time floor.
func (d *Daemon) crmHTTPClient(connector string) *http.Client {
	tr := cleanhttp.DefaultPooledTransport()
	if resolve := d.opts.Resolve; resolve != nil {
		dial := tr.DialContext
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dial(ctx, network, resolve(addr))
		}
	}
	return &http.Client{Transport: &instrumented{
		next:      tr,
		connector: connector,
		d:         d,
	}}
}

type instrumented struct {
	next      http.RoundTripper
	connector string
	d         *Daemon
}

// WithTLSConfig returns a copy whose connections use tc (an adapter's own trust for its CRM's
// certificate, e.g. bitrix24's tls.ca_file); timing, counting and resolution stay as they are.
// It returns nil when the transport underneath cannot take it.
func (t *instrumented) WithTLSConfig(tc *tls.Config) http.RoundTripper {
	tr, ok := t.next.(*http.Transport)
	if !ok {
		return nil
	}
	tr = tr.Clone()
	tr.TLSClientConfig = tc
	c := *t
	c.next = tr
	return &c
}

func (t *instrumented) RoundTrip(req *http.Request) (*http.Response, error) {
	crm.CountRequest(req.Context())
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	code := "error"
	if err == nil {
		code = fmt.Sprint(resp.StatusCode)
		if req.URL.Scheme == "https" && resp.TLS != nil {
			if date, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil && t.d.lic != nil {
				t.d.lic.ObserveCRMDate(date)
			}
		}
	}
	t.d.m.crmDuration.WithLabelValues(t.connector, code).Observe(time.Since(start).Seconds())
	t.d.m.crmRequests.WithLabelValues(t.connector).Inc()
	return resp, err
}

// delivered is the dispatch hook after a successful delivery.
func (d *Daemon) delivered(connector string, rec *call.Record, _ int) {
	if d.opts.OnDelivered != nil {
		d.opts.OnDelivered(connector, rec)
	}
}
