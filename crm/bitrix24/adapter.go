package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cleanhttp "github.com/hashicorp/go-cleanhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// Type is the connector type name.
const Type = "bitrix24"

// tokenFile is the name of the OAuth token file in the instance's state directory.
const tokenFile = "bitrix24-tokens.json" //nolint:gosec // a file name, not a credential

const (
	userAgent = "pbxbridge-bitrix24"
	// queueTimeout bounds a request's wait for a rate-limit slot plus its attempts; the caller's
	// context usually ends it sooner.
	queueTimeout = time.Hour
	// uploadTimeout bounds one recording upload.
	uploadTimeout = 5 * time.Minute
)

func init() {
	crm.Register(crm.Factory{
		Type:      Type,
		Licence:   crm.LicenceDomain,
		NewConfig: func() any { return NewConfig() },
		New: func(p crm.Params) (crm.Adapter, error) {
			return New(p)
		},
	})
}

// Adapter is one Bitrix24 connector instance. It is safe for concurrent use.
type Adapter struct {
	name     string
	cfg      *Config
	log      *slog.Logger
	now      func() time.Time
	loc      *time.Location
	store    crm.CallStore
	orig     asterisk.Originator
	recs     crm.Recordings
	routeURL string
	m        *metrics
	bucket   *api.Bucket
	client   *api.Client
	batch    *batcher
	tokens   *api.TokenSource // oauth mode
	webhook  *api.Webhook     // webhook mode
	portal   *api.PortalToken // portal_token mode
	apiOpts  api.Options
	users    *userCache
	routes   *routeCache
	hooks    crm.Hooks // nil: none configured (hooks.go)
	// authRenewed resumes deliveries paused on a broken authorisation (crm.Params.AuthRenewed).
	authRenewed func()
	callLocks   keyedMutex
	claimLocks  keyedMutex // per CALL_ID

	// Endpoint security (install.go, replay.go, oauthstate.go).
	stateDir     string
	oauthHTTP    *http.Client     // OAuth-server requests of installs and authorisations
	oauthServers api.OAuthServers // where those go (never where an installation says, unless allowed)
	proofs       proofLimiter
	replays      *replayGuard
	states       *oauthStates
	bindMu       sync.Mutex
	bound        portalBinding // the portal of the first installation
	rebindLogged time.Time

	liveMu sync.Mutex
	live   map[string]*liveCall
	reqs   map[string]int64 // requests made by Live per call key, in thousandths
	// firstLive is the time (the PBX's clock) of the first live event handled from each PBX.
	firstLive map[string]time.Time
	// liveSwept is when live was last swept of calls older than liveMaxAge.
	liveSwept time.Time

	authProblem atomic.Pointer[string] // last account-level error, cleared by success
	// statDenied is until when look-ups in the telephony statistics are skipped (refused).
	statDenied atomic.Pointer[time.Time]
	setupMu    sync.Mutex
	setupErr   error
	setupDone  bool

	bgMu     sync.Mutex
	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup
	setupReq chan struct{}
}

// New builds an adapter from the daemon's parameters. It does no network I/O.
func New(p crm.Params) (*Adapter, error) {
	cfg, ok := p.Config.(*Config)
	if !ok || cfg == nil {
		return nil, fmt.Errorf("bitrix24: config of type %T", p.Config)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("bitrix24: invalid config: %w", errors.Join(errs...))
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := p.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("bitrix24: metrics: %w", err)
	}
	now := p.Now
	if now == nil {
		now = time.Now
	}
	a := &Adapter{
		name: p.Name, cfg: cfg, log: log, now: now, loc: cfg.location(), store: p.Calls,
		orig: p.Originator, recs: p.Recordings, routeURL: p.RouteURL, m: m,
		live: map[string]*liveCall{}, reqs: map[string]int64{}, firstLive: map[string]time.Time{}, setupReq: make(chan struct{}, 1),
		stateDir: p.StateDir, replays: newReplayGuard(replayWindow+replayAhead, replayMaxEntries), states: newOAuthStates(),
	}
	if a.store == nil {
		return nil, errors.New("bitrix24: a call store is required")
	}
	a.bgCtx, a.bgCancel = context.WithCancel(context.Background())
	a.hooks = p.Hooks
	a.authRenewed = p.AuthRenewed

	// Transport chain: rate limit -> per-call request counting -> the daemon's client.
	base := p.HTTPClient
	if base == nil {
		base = &http.Client{Transport: cleanhttp.DefaultPooledTransport()}
	}
	// The portal's own certificate trust (tls.ca_file, tls.pin_sha256): requests to the portal's
	// host only, whatever client makes them.
	tc, err := cfg.TLS.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("bitrix24: %w", err)
	}
	if tc != nil {
		if base, err = portalTransport(base, cfg.restURL(), tc); err != nil {
			return nil, fmt.Errorf("bitrix24: %w", err)
		}
	}
	base = withCertHost(base)
	next := base.Transport
	a.bucket = api.NewBucket(cfg.RateLimit.RPS, cfg.RateLimit.Burst, cfg.RateLimit.LiveReserve, nil)
	// The wait for a slot happens inside the transport, so the client's own timeout only bounds
	// the queue (queueTimeout); the limiter bounds each attempt from the moment it is sent.
	limited := func(attempt time.Duration) *http.Client {
		c := *base
		c.Transport = &api.Limiter{
			Next:           countingTransport{next: next},
			Bucket:         a.bucket,
			AttemptTimeout: attempt,
			OnWait:         func(d time.Duration) { m.limiterWait.Observe(d.Seconds()) },
		}
		return &c
	}
	portal := httpclient.New(httpclient.Options{Base: limited(cfg.HTTPTimeout), Timeout: queueTimeout, Logger: log, UserAgent: userAgent, MaxResponseBody: p.MaxResponseBody})
	upload := httpclient.New(httpclient.Options{Base: limited(max(cfg.HTTPTimeout, uploadTimeout)), Timeout: queueTimeout, Logger: log, UserAgent: userAgent, MaxResponseBody: p.MaxResponseBody})

	var auth api.Authenticator
	switch cfg.Auth.Mode {
	case AuthWebhook:
		w, err := api.NewWebhook(cfg.Auth.WebhookURL.Value())
		if err != nil {
			return nil, fmt.Errorf("bitrix24: auth.webhook_url: %w", err)
		}
		a.webhook, auth = w, w
		m.authOK.Set(1)
	case AuthPortalToken:
		pt, err := api.NewPortalToken(cfg.PortalURL, cfg.Auth.PortalToken.Value())
		if err != nil {
			return nil, fmt.Errorf("bitrix24: auth.portal_token: %w", err)
		}
		a.portal, auth = pt, pt
		m.authOK.Set(1)
		if err := a.loadBinding(); err != nil {
			return nil, fmt.Errorf("bitrix24: %w", err)
		}
	default:
		if p.StateDir == "" {
			return nil, errors.New("bitrix24: a state directory is required for OAuth tokens")
		}
		oauthHTTP := httpclient.New(httpclient.Options{Base: base, Timeout: cfg.HTTPTimeout, Logger: log, UserAgent: userAgent, MaxResponseBody: p.MaxResponseBody})
		a.oauthServers = api.NewOAuthServers(cfg.OAuthURL)
		ts, err := api.NewTokenSource(api.OAuthConfig{
			PortalURL: cfg.PortalURL, ServerURL: cfg.OAuthURL,
			ClientID: cfg.Auth.ClientID, ClientSecret: cfg.Auth.ClientSecret.Value(),
			HTTP: oauthHTTP, File: api.TokenFile{Path: filepath.Join(p.StateDir, tokenFile)}, Now: now,
			OnChange:  a.onAuthChange,
			OnRefresh: a.onRefresh,
		})
		if err != nil {
			return nil, fmt.Errorf("bitrix24: %w", err)
		}
		a.tokens, auth = ts, ts
		if st, _ := ts.State(); st == api.StateOK {
			m.authOK.Set(1)
		}
		// Installs and authorisations ask the OAuth server once each, outside the portal's
		// rate limiter, without retries (refresh tokens are single-use) or redirects (the
		// URL carries the client secret).
		oc := *base
		oc.Timeout = cfg.HTTPTimeout
		oc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		a.oauthHTTP = &oc
		if err := a.loadBinding(); err != nil {
			return nil, fmt.Errorf("bitrix24: %w", err)
		}
	}
	a.apiOpts = api.Options{
		HTTP: portal, Upload: upload, Auth: auth,
		ObserveServerDate: p.ObserveServerDate,
		OnResponse:        a.onResponse,
	}
	a.client, err = api.New(a.apiOpts)
	if err != nil {
		return nil, fmt.Errorf("bitrix24: %w", err)
	}
	a.users = newUserCache(a)
	a.routes = newRouteCache(a)
	a.batch = newBatcher(a)
	return a, nil
}

// Start begins the background work: the user-cache refresh and the portal set-up (event.bind,
// external lines). It returns at once.
func (a *Adapter) Start(ctx context.Context) error {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	a.bgCancel() // the placeholder context of New
	a.bgCtx, a.bgCancel = context.WithCancel(ctx)
	bg := a.bgCtx
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		a.users.run(bg)
	}()
	go func() {
		defer a.wg.Done()
		a.setupLoop(bg)
	}()
	a.requestSetup()
	return nil
}

// Close stops the background work and waits for it (bounded by ctx).
func (a *Adapter) Close(ctx context.Context) error {
	a.bgMu.Lock()
	a.bgCancel()
	a.bgMu.Unlock()
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bitrix24: close: %w", ctx.Err())
	}
}

// background returns the context of background work (click-to-call originates).
func (a *Adapter) background() context.Context {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	return a.bgCtx
}

func (a *Adapter) onResponse(o api.Outcome) {
	switch {
	case o.Err == nil:
		a.m.requests.WithLabelValues(o.Method, "ok").Inc()
		a.authProblem.Store(nil)
	case o.Status == 0:
		a.m.requests.WithLabelValues(o.Method, "transport").Inc()
	default:
		a.m.requests.WithLabelValues(o.Method, resultLabel(o.Code)).Inc()
		if api.IsCode(o.Err, api.CodeQueryLimitExceeded, api.CodeOperationTimeLimit, api.CodeOverloadLimit) {
			a.m.rateLimited.WithLabelValues(resultLabel(o.Code)).Inc()
		}
	}
}

func (a *Adapter) onRefresh(err error) {
	switch {
	case err == nil:
		a.m.refreshes.WithLabelValues("ok").Inc()
	case errors.Is(err, api.ErrReauthorize):
		a.m.refreshes.WithLabelValues("rejected").Inc()
	default:
		a.m.refreshes.WithLabelValues("error").Inc()
	}
}

// onAuthChange logs each change of the authorisation state once and updates the gauges.
func (a *Adapter) onAuthChange(st api.AuthState, cause error) {
	switch st {
	case api.StateOK:
		a.authProblem.Store(nil)
		a.m.authOK.Set(1)
		a.m.reauthorize.Set(0)
		if cause != nil {
			a.log.Warn("bitrix24 authorisation works, but", "err", cause)
		} else {
			a.log.Info("bitrix24 authorisation is working")
		}
		a.requestSetup()
		a.users.kick()
	case api.StateReauthorize:
		a.m.authOK.Set(0)
		a.m.reauthorize.Set(1)
		a.log.Error("bitrix24 refused the refresh token: an admin must authorise the application again; calls stay queued",
			"connect_url", a.connectURL(), "err", cause)
	case api.StateMissing:
		a.m.authOK.Set(0)
		a.m.reauthorize.Set(0)
		a.log.Warn("bitrix24 authorisation is missing: install the local application; calls stay queued", "err", cause)
	}
}

// noteAuthProblem keeps an account-level error for the status page, explained when it can be.
func (a *Adapter) noteAuthProblem(err error) {
	s := err.Error()
	if h := a.accessProblem(err); h != "" && !strings.Contains(s, h) {
		s = h + " (" + s + ")"
	}
	a.authProblem.Store(&s)
}

// countingTransport counts HTTP attempts per call (requests-per-call metric), in thousandths
// of a request: a command sent inside a batch of n counts 1/n (addShare).
type countingTransport struct{ next http.RoundTripper }

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if n, ok := r.Context().Value(counterKey{}).(*atomic.Int64); ok {
		n.Add(milli)
	}
	return c.next.RoundTrip(r)
}

// milli is one request in the per-call counters.
const milli = 1000

type counterKey struct{}

// addShare counts a command that went in a batch of n commands: 1/n of a request.
func addShare(ctx context.Context, n int) {
	if c, ok := ctx.Value(counterKey{}).(*atomic.Int64); ok && n > 0 {
		c.Add(milli / int64(n))
	}
}

// withCounter returns ctx with a per-call request counter (in thousandths of a request).
func withCounter(ctx context.Context) (context.Context, *atomic.Int64) {
	if n, ok := ctx.Value(counterKey{}).(*atomic.Int64); ok {
		return ctx, n
	}
	n := new(atomic.Int64)
	return context.WithValue(ctx, counterKey{}, n), n
}

// keyedMutex serialises work per call key (Live and Deliver of one call).
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	ch   chan struct{}
	refs int
}

// lock waits for the key's lock or ctx; it returns the unlock function.
func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

var (
	_ crm.Adapter           = (*Adapter)(nil)
	_ crm.LiveHandler       = (*Adapter)(nil)
	_ crm.Starter           = (*Adapter)(nil)
	_ crm.Closer            = (*Adapter)(nil)
	_ crm.Prober            = (*Adapter)(nil)
	_ crm.AccountIdentifier = (*Adapter)(nil)
	_ crm.HTTPRoutes        = (*Adapter)(nil)
	_ crm.Router            = (*Adapter)(nil)
	_ crm.StatusReporter    = (*Adapter)(nil)
)
