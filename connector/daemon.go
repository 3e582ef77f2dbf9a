// Package connector wires pbxbridge together: the CLI, the daemon's Run loop, its HTTP and admin
// endpoints, metrics, systemd notification and reload.
//
// Start order (docs/design.md §3): outbox → licensing → CRM adapters and their delivery workers →
// HTTP endpoints and admin API → Asterisk sources. Stop is the reverse: sources stop first, the
// call model's open calls are flushed into the outbox, deliveries drain for
// dispatch.drain_timeout, adapters close, the outbox closes, and the endpoints stop last.
//
// Telephony is never touched: a CRM outage, a missing licence or a broken authorisation only
// keeps calls queued; only a bad local configuration at start-up is fatal.
package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/dispatch"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/connector/recordings"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// Options are the daemon's runtime dependencies; the zero value fits production.
type Options struct {
	Version string
	// Logger is the daemon's logger; nil builds one on stderr from the config's log section.
	Logger *slog.Logger
	// Level, when set, is the level variable of Logger (SIGHUP applies log.level to it).
	Level *slog.LevelVar
	// Getenv reads the environment (secrets on reload); nil means os.Getenv.
	Getenv func(string) string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NewSource builds a PBX source; nil means the AMI or ARI client per pbx[].type.
	NewSource func(p config.PBX, d *Daemon) (asterisk.Source, error)
	// Notify sends sd_notify states ("READY=1", …); nil means systemd's $NOTIFY_SOCKET.
	Notify func(state string)
	// Licensing overrides parts of the licensing service (keyring, host facts) for the demo and
	// tests.
	Licensing licensing.Options
	// OnDelivered is called after each successful delivery (the demo prints a line).
	OnDelivered func(connector string, rec *call.Record)
	// PublicListener and AdminListener, when set, are used instead of listening on
	// http.public.listen and http.admin.listen (tests, the demo).
	PublicListener func() (net.Listener, error)
	AdminListener  func() (net.Listener, error)
	// Resolve, when set, rewrites the host:port CRM requests dial (the demo sends the reserved
	// demo-*.invalid hosts to its fake CRMs on loopback).
	Resolve func(addr string) string
}

// Daemon is a running pbxbridge. Build it with New and start it with Run.
type Daemon struct {
	opts  Options
	log   *slog.Logger
	level *slog.LevelVar
	// redact is log.redact_numbers in force (the log handler's switch).
	redact *atomic.Bool
	now    func() time.Time
	reg    *prometheus.Registry
	m      *metrics
	dm     *dispatch.Metrics

	cfgMu sync.Mutex
	cfg   *config.Config // the config in force

	store *outbox.Store
	lic   *licensing.Service
	norm  *numbers.Normalizer

	// rt is the routing table: the connector instances in force, swapped whole on reload.
	rt atomic.Pointer[[]*connRT]

	unitsMu sync.Mutex
	conns   map[string]*connRT
	pbxs    map[string]*pbxRT

	ready     atomic.Bool
	startedAt time.Time
	recent    *recentCalls
	click     *clickGate
	publicMux *publicMux
	adminMux  *routeMux

	recOnce sync.Once
	rec     *recordings.Server
	pages   *pages

	// backupMu serialises backups (automatic and `pbxbridge backup now`); lastBackup is the
	// newest one's time.
	backupMu   sync.Mutex
	lastBackup time.Time
	// restoreUnsettled: a connector could not be told about a restore (the note stays).
	restoreUnsettled atomic.Bool
}

// New validates what it can without I/O and returns a Daemon for cfg.
func New(cfg *config.Config, opts Options) (*Daemon, error) {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	level := opts.Level
	if level == nil {
		level = new(slog.LevelVar)
	}
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := opts.Logger
	if log == nil {
		log = newLogger(os.Stderr, cfg.Log.Format, level)
	}
	// Every line goes through the number mask (log.redact_numbers), the adapters' included.
	redact := new(atomic.Bool)
	redact.Store(cfg.Log.RedactNumbers)
	log = slog.New(newRedactHandler(log.Handler(), redact))
	norm, err := numbers.New(cfg.Numbers)
	if err != nil {
		return nil, fmt.Errorf("config: numbers: %w", err)
	}
	reg := prometheus.NewRegistry()
	d := &Daemon{
		opts:      opts,
		log:       log,
		level:     level,
		redact:    redact,
		now:       opts.Now,
		reg:       reg,
		cfg:       cfg,
		norm:      norm,
		conns:     map[string]*connRT{},
		pbxs:      map[string]*pbxRT{},
		recent:    newRecentCalls(200),
		publicMux: newPublicMux(),
		adminMux:  newRouteMux(),
	}
	if d.pages, err = loadPages(); err != nil {
		return nil, fmt.Errorf("status page templates: %w", err)
	}
	d.click = newClickGate(norm, d.now)
	d.m = newMetrics(reg, d, opts.Version)
	d.dm = dispatch.NewMetrics(reg)
	empty := []*connRT{}
	d.rt.Store(&empty)
	return d, nil
}

// Registry returns the daemon's metrics registry.
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }

// Config returns the config in force.
func (d *Daemon) Config() *config.Config {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	return d.cfg
}

func (d *Daemon) notify(state string) {
	if d.opts.Notify != nil {
		d.opts.Notify(state)
		return
	}
	sdNotify(state)
}

// Run runs the daemon until ctx ends (SIGTERM/SIGINT in production), then stops in order. It
// returns an error only for problems at start-up (bad local config, unusable state directory).
func (d *Daemon) Run(ctx context.Context) error {
	d.startedAt = d.now()
	cfg := d.Config()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := restoreInterrupted(cfg.StateDir); err != nil {
		return err
	}

	// The outbox first: every finished call is stored here before anything else happens to it
	// (opening it delivers nothing).
	store, err := outbox.Open(ctx, filepath.Join(cfg.StateDir, "outbox.db"), outbox.Options{
		Retention:           time.Duration(cfg.Outbox.RetentionDays) * 24 * time.Hour,
		DeadLetterRetention: time.Duration(cfg.Outbox.DeadLetterRetentionDays) * 24 * time.Hour,
		Clock:               d.now,
		Logger:              d.log.With("component", "outbox"),
	})
	if err != nil {
		return err
	}
	d.unitsMu.Lock()
	d.store = store
	d.unitsMu.Unlock()
	defer func() {
		if err := store.Close(); err != nil {
			d.log.Error("closing the outbox", "err", err)
		}
	}()

	// Licensing before any connector: the gate must be right before any delivery. Its state has
	// a second copy in the outbox database, so deleting license-state.json resets nothing.
	lopts := d.opts.Licensing
	if lopts.StateDir == "" {
		lopts.StateDir = cfg.StateDir
	}
	lopts.Logger = d.log.With("component", "licensing")
	lopts.Registerer = d.reg
	lopts.Mirror = licenceMirror{store: store}
	if lopts.Connectors.Len() == 0 {
		if lopts.Connectors, err = LicensedTypes(); err != nil {
			return err
		}
	}
	if lopts.Version == "" {
		lopts.Version = d.opts.Version
	}
	lic, err := licensing.New(ctx, cfg.Licensing, lopts)
	if err != nil {
		return err
	}
	d.unitsMu.Lock()
	d.lic = lic
	d.unitsMu.Unlock()
	licCtx, stopLic := context.WithCancel(context.WithoutCancel(ctx))
	licDone := make(chan struct{})
	go func() {
		defer close(licDone)
		if err := lic.Run(licCtx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("licensing stopped", "err", err)
		}
	}()
	defer func() { stopLic(); <-licDone }()

	// Connectors (adapters + delivery workers).
	unitCtx := context.WithoutCancel(ctx)
	for i := range cfg.Connectors {
		cn := &cfg.Connectors[i]
		if !cn.IsEnabled() {
			d.log.Info("connector disabled in config", "connector", cn.Name)
			continue
		}
		if err := d.startConnector(unitCtx, cfg, cn); err != nil {
			d.stopAllConnectors()
			return err
		}
	}
	d.publishRoutes()
	defer d.stopAllConnectors()
	if !d.restoreUnsettled.Load() {
		// Every connector of this start knows about a restore: the note has served.
		if err := store.DeleteMeta(ctx, restoreMeta); err != nil {
			d.log.Warn("removing the restore note", "err", err)
		}
	}
	// Calls the previous run could not store (it had to stop while the outbox failed).
	if err := d.importSpill(ctx); err != nil {
		d.log.Error("importing the spill file of the previous run; it stays where it is", "err", err)
	}

	// HTTP endpoints and the admin API.
	stopHTTP, err := d.serveHTTP(cfg)
	if err != nil {
		return err
	}
	defer stopHTTP()
	stopAdmin, err := d.serveAdmin(cfg)
	if err != nil {
		return err
	}
	defer stopAdmin()

	// Housekeeping: outbox pruning, backups, watchdog.
	d.initBackups()
	hkCtx, stopHK := context.WithCancel(context.WithoutCancel(ctx))
	hkDone := make(chan struct{})
	go func() { defer close(hkDone); d.housekeeping(hkCtx) }()
	defer func() { stopHK(); <-hkDone }()

	// Asterisk last.
	for i := range cfg.PBX {
		if err := d.startPBX(unitCtx, &cfg.PBX[i]); err != nil {
			d.stopAllPBX()
			return err
		}
	}
	defer d.stopAllPBX()

	readyDone := make(chan struct{})
	go func() { defer close(readyDone); d.waitReady(ctx) }()

	d.log.Info("pbxbridge running", "version", d.opts.Version, "pbx", len(cfg.PBX), "connectors", len(cfg.Connectors), "admin_http", cfg.HTTP.Admin.Listen, "public_http", cfg.HTTP.Public.Listen)
	d.loop(ctx)
	<-readyDone

	d.notify("STOPPING=1")
	d.log.Info("stopping: flushing open calls and draining deliveries")
	d.ready.Store(false)
	// The deferred calls run in reverse: PBX sources stop and flush, then housekeeping, the
	// endpoints stay up until connectors have drained, then licensing and the outbox close.
	return nil
}

// loop waits for the end of ctx, handling reloads requested by SIGHUP or the admin API.
func (d *Daemon) loop(ctx context.Context) {
	reloads := reloadSignals(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-reloads:
			_ = d.Reload(ctx) // logged inside; the running config stays in force on failure
		}
	}
}

// waitReady sends READY=1 once every PBX has logged in (or after 20 s, so that one unreachable
// PBX does not keep the service "activating" forever; /readyz and the status page say which PBX
// is down).
func (d *Daemon) waitReady(ctx context.Context) {
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if d.allLoggedIn() {
			d.ready.Store(true)
			d.notify("READY=1\nSTATUS=running")
			d.log.Info("ready: every PBX connected")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			d.notify("READY=1\nSTATUS=running; some PBX not connected, see pbxbridge status")
			d.log.Warn("some PBX is not connected yet; running anyway (see pbxbridge status)")
			for !d.allLoggedIn() {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
			d.ready.Store(true)
			d.notify("STATUS=running")
			return
		case <-tick.C:
		}
	}
}

func (d *Daemon) allLoggedIn() bool {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	for _, p := range d.pbxs {
		if !p.loggedIn() {
			return false
		}
	}
	return true
}

// housekeeping prunes the outbox hourly, writes the automatic backups and pings the systemd
// watchdog.
func (d *Daemon) housekeeping(ctx context.Context) {
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	backup := time.NewTimer(d.nextBackupIn())
	defer backup.Stop()
	wd := watchdogInterval()
	var wdC <-chan time.Time
	if wd > 0 {
		t := time.NewTicker(wd)
		defer t.Stop()
		wdC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			d.pruneSpills()
			res, err := d.store.Prune(ctx)
			if err != nil {
				d.log.Error("pruning the outbox", "err", err)
				continue
			}
			d.log.Debug("outbox pruned", "result", fmt.Sprintf("%+v", res))
		case <-backup.C:
			if d.Config().Backup.Interval > 0 && d.backupDue() {
				if _, err := d.BackupNow(ctx); err != nil && ctx.Err() == nil {
					// Logged and counted by BackupNow; try again sooner than a whole interval.
					backup.Reset(min(d.Config().Backup.Interval/4, time.Hour))
					continue
				}
			}
			backup.Reset(d.nextBackupIn())
		case <-wdC:
			// The watchdog proves the outbox still answers, not just that a goroutine runs.
			cctx, cancel := context.WithTimeout(ctx, wd)
			err := d.store.Ping(cctx)
			cancel()
			if err == nil {
				d.notify("WATCHDOG=1")
			} else {
				d.log.Error("watchdog: the outbox does not answer", "err", err)
			}
		}
	}
}

// routes returns the connectors in force.
func (d *Daemon) routes() []*connRT { return *d.rt.Load() }

func (d *Daemon) publishRoutes() {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	list := make([]*connRT, 0, len(d.conns))
	cfg := d.Config()
	for i := range cfg.Connectors { // config order: stable
		if c, ok := d.conns[cfg.Connectors[i].Name]; ok {
			list = append(list, c)
		}
	}
	d.rt.Store(&list)
}

// Outbox returns the open outbox (nil before Run opened it).
func (d *Daemon) Outbox() *outbox.Store {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	return d.store
}

// Licensing returns the licensing service (nil before Run started it).
func (d *Daemon) Licensing() *licensing.Service {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	return d.lic
}

// Adapter returns the adapter of a connector instance (tests, the demo).
func (d *Daemon) Adapter(name string) crm.Adapter {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	if c, ok := d.conns[name]; ok {
		return c.adapter
	}
	return nil
}

// Ready reports whether the daemon is ready (outbox open, every PBX logged in once).
func (d *Daemon) Ready() bool { return d.ready.Load() }

// Licensed reports whether every connector in force may act in its CRM (tests and the demo wait
// for it after start-up).
func (d *Daemon) Licensed() bool {
	for _, c := range d.routes() {
		if !c.allowed() {
			return false
		}
	}
	return true
}

// HeldCalls is how many finished calls wait in memory because the outbox could not take them:
// those of a PBX whose outbox writes are failing (0 while writes succeed, however many calls
// are on their way to the outbox; readiness and the status page report it).
func (d *Daemon) HeldCalls() int {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	n := 0
	for _, p := range d.pbxs {
		if p.failing.Load() > 0 {
			n += p.held.len()
		}
	}
	return n
}

// UnstoredCalls is how many finished calls are not in the outbox yet: queued for it or being
// written. A call is counted from the moment it is built until its outbox commit (or spill)
// returns, so a caller that sees 0 here and no outbox rows pending has nothing in flight.
func (d *Daemon) UnstoredCalls() int {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	n := 0
	for _, p := range d.pbxs {
		n += p.held.len()
	}
	return n
}

// LicensedTypes is the licensing view of the connector registry: every registered type that
// needs a licence, with how its licences bind to a CRM account.
func LicensedTypes() (licensing.Connectors, error) {
	var ts []licensing.ConnectorType
	for t, b := range crm.Licensed() {
		ts = append(ts, licensing.ConnectorType{Name: t, Binding: licensing.Binding(b)})
	}
	return licensing.NewConnectors(ts...)
}

// licenceMirror keeps the licensing state's second copy in the outbox database
// (licensing.StateMirror).
type licenceMirror struct{ store *outbox.Store }

// licenceMirrorName is the outbox meta value that holds the copy.
const licenceMirrorName = "licensing.state"

func (m licenceMirror) Load(ctx context.Context) ([]byte, error) {
	return m.store.GetMeta(ctx, licenceMirrorName)
}

func (m licenceMirror) Save(ctx context.Context, blob []byte) error {
	return m.store.SetMeta(ctx, licenceMirrorName, blob)
}

// Recent returns the last finished calls, newest first (the status page's list).
func (d *Daemon) Recent() []admin.RecentCall { return d.recent.list() }
