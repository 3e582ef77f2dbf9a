// Package demo is `pbxbridge demo`: the whole pipeline on one machine with nothing installed (a
// simulated PBX replaying the real Asterisk transcripts over AMI, fake Bitrix24, amoCRM and Kommo
// servers, demo licences and the daemon with its status page). It is the only production code
// that imports the simulators (asterisk/fakepbx, crm/fakecrm); it runs in the pbxbridge-demo
// program, never in the pbxbridge daemon binary. Tests use Start for end-to-end checks.
package demo

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/config"
	_ "github.com/pbxbridge/pbxbridge/crm/all" // the demo runs every connector type
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
	"github.com/pbxbridge/pbxbridge/licensing"
	demolicence "github.com/pbxbridge/pbxbridge/licensing/demo"
)

// demoHosts are the reserved names the demo CRMs answer to (RFC 2606 .invalid).
const (
	demoB24Host   = "demo-bitrix24.invalid"
	demoAmoHost   = "demo-amocrm.invalid"
	demoKommoHost = "demo-kommo.invalid"
)

// Options configure a demo environment.
type Options struct {
	Speed   float64 // replay speed of the simulated PBX (default 1)
	Listen  string  // the daemon's HTTP address (default 127.0.0.1:0); the next free port is used
	Dir     string  // state directory (default: a temporary one, removed by Close)
	Version string
	Logger  *slog.Logger // the daemon's log (default: discarded)
	// OnDelivered is called after each successful delivery.
	OnDelivered func(connector string, rec *call.Record)
	// B24 are extra options of the fake Bitrix24, applied after the demo's own (its users named as
	// in the lab office, the amoCRM account's contacts); Amo of the fake amoCRM and Kommo.
	B24 []fakecrm.Bitrix24Option
	Amo fakecrm.AmoOptions
	// PBX, when set, adjusts the simulated PBX's configuration (tests: a hostile peer).
	PBX func(*fakepbx.Config)
	// Configure, when set, adjusts the daemon's configuration before it starts (tests).
	Configure func(*config.Config)
	// Daemon, when set, adjusts the daemon's options (tests: licensing as `pbxbridge run` has
	// it). With Unlicensed, Start does not wait for the demo licences to apply.
	Daemon     func(*connector.Options)
	Unlicensed bool
}

// Env is a running demo: a simulated PBX, fake Bitrix24, amoCRM and Kommo servers reached
// through reserved .invalid names, demo licences and the daemon. Tests use it for end-to-end
// checks; `pbxbridge demo` drives it.
type Env struct {
	PBX       *fakepbx.Server
	B24       *fakecrm.Bitrix24
	Amo       *fakecrm.AmoCRM
	Kommo     *fakecrm.AmoCRM
	Daemon    *connector.Daemon
	BaseURL   string // the daemon's admin listener: status page, metrics
	PublicURL string // the daemon's public listener: what the CRMs call
	Dir       string

	cfg       *config.Config
	dopts     connector.Options
	stops     []func()
	removeTmp func() // removes the temporary state directory (nil: Options.Dir was given)
	done      chan error
	cancel    context.CancelFunc
	closeMu   sync.Mutex
	closed    bool
	err       error
}

// Start starts a demo environment and returns once the daemon is ready and the Bitrix24
// application is installed into it.
func Start(ctx context.Context, o Options) (env *Env, err error) {
	if o.Speed <= 0 {
		o.Speed = 1
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	env = &Env{Dir: o.Dir}
	defer func() {
		if err != nil {
			_ = env.Close()
		}
	}()
	if env.Dir == "" {
		tmp, err := os.MkdirTemp("", "pbxbridge-demo-")
		if err != nil {
			return nil, err
		}
		env.Dir = tmp
		env.removeTmp = func() { _ = os.RemoveAll(tmp) }
	}
	licDir := filepath.Join(env.Dir, "licenses.d")
	if err := os.MkdirAll(licDir, 0o700); err != nil {
		return nil, err
	}
	if _, err := demolicence.Install(licDir); err != nil {
		return nil, fmt.Errorf("demo licences: %w", err)
	}

	// The simulated PBX.
	pc := fakepbx.Config{Speed: o.Speed, Secret: "demo-secret"}
	if o.PBX != nil {
		o.PBX(&pc)
	}
	if env.PBX, err = fakepbx.Start(pc); err != nil {
		return nil, fmt.Errorf("simulated PBX: %w", err)
	}
	env.stops = append(env.stops, func() { _ = env.PBX.Close() })

	// The fake CRMs, each on its own loopback port, reached through its reserved name.
	env.B24 = fakecrm.NewBitrix24(append([]fakecrm.Bitrix24Option{
		fakecrm.B24Users(demoB24Users()...), fakecrm.B24Entities(demoB24Entities()...),
	}, o.B24...)...)
	env.B24.SetBaseURL("http://" + demoB24Host)
	env.Amo = fakecrm.NewAmoCRM(o.Amo)
	env.Amo.AddAccount(demoAmoAccount(demoAmoHost))
	env.Amo.AddLongLivedToken(demoAmoHost, fakecrm.DemoLongLivedToken, fakecrm.DemoLongLivedTTL)
	ko := o.Amo
	ko.Flavor = "kommo"
	env.Kommo = fakecrm.NewAmoCRM(ko)
	env.Kommo.AddAccount(demoAmoAccount(demoKommoHost))
	env.Kommo.AddLongLivedToken(demoKommoHost, fakecrm.DemoLongLivedToken, fakecrm.DemoLongLivedTTL)
	hosts := map[string]string{}
	for host, h := range map[string]http.Handler{demoB24Host: env.B24, demoAmoHost: env.Amo, demoKommoHost: env.Kommo} {
		addr, stop, err := serveLoopback(h)
		if err != nil {
			return nil, err
		}
		env.stops = append(env.stops, stop)
		hosts[host+":80"] = addr
	}

	// The daemon's listeners: the status page on the asked port or the next free one, the
	// public one (what the fake CRMs call) on any free port.
	adminLn, err := listenNear(o.Listen)
	if err != nil {
		return nil, err
	}
	publicLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = adminLn.Close()
		return nil, err
	}
	closeBoth := func() { _ = adminLn.Close(); _ = publicLn.Close() }
	env.BaseURL = "http://" + adminLn.Addr().String()
	env.PublicURL = "http://" + publicLn.Addr().String()
	secret := make([]byte, 16)
	_, _ = crand.Read(secret)
	_, amiPort, _ := net.SplitHostPort(env.PBX.Addr())
	yaml := fmt.Sprintf(demoConfig, env.Dir, licDir, adminLn.Addr().String(), publicLn.Addr().String(), env.PublicURL, amiPort, hex.EncodeToString(secret))
	cfgPath := filepath.Join(env.Dir, "pbxbridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		closeBoth()
		return nil, err
	}
	cfg, err := config.Load(cfgPath, func(string) string { return "" })
	if err != nil {
		closeBoth()
		return nil, fmt.Errorf("demo config: %w", err)
	}
	cfg.PBX[0].Calls = LabCalls()
	if o.Configure != nil {
		o.Configure(cfg)
	}
	env.cfg = cfg
	env.dopts = connector.Options{
		Version: o.Version,
		// The demo is the one daemon that honours demo licences.
		Licensing: licensing.Options{AllowDemo: true},
		Logger:    o.Logger,
		Notify:    func(string) {},
		Resolve: func(addr string) string {
			if a, ok := hosts[addr]; ok {
				return a
			}
			return addr
		},
		OnDelivered: o.OnDelivered,
	}
	if o.Daemon != nil {
		o.Daemon(&env.dopts)
	}
	if err := env.startDaemon(ctx, adminLn, publicLn); err != nil {
		return nil, err
	}
	// Install the Bitrix24 local application into the daemon, as a portal admin would.
	if err := env.B24.Install(ctx, env.PublicURL+"/crm/b24-demo/install"); err != nil {
		return nil, fmt.Errorf("installing the Bitrix24 application: %w", err)
	}
	if o.Unlicensed {
		return env, nil
	}
	if err := env.waitLicensed(ctx); err != nil {
		return nil, err
	}
	return env, nil
}

// startDaemon runs a daemon of the environment on its two listeners and waits until it is
// ready.
func (e *Env) startDaemon(ctx context.Context, adminLn, publicLn net.Listener) error {
	o := e.dopts
	o.AdminListener = func() (net.Listener, error) { return adminLn, nil }
	o.PublicListener = func() (net.Listener, error) { return publicLn, nil }
	d, err := connector.New(e.cfg, o)
	if err != nil {
		_ = adminLn.Close()
		_ = publicLn.Close()
		return err
	}
	e.Daemon = d
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- d.Run(runCtx) }()
	if err := waitUntil(ctx, 20*time.Second, func() bool { return d.Ready() }); err != nil {
		return fmt.Errorf("the daemon did not get ready: %w", err)
	}
	return nil
}

// waitLicensed waits until every connector's licence applies (demo licences apply once each
// adapter has reported its reserved CRM account).
func (e *Env) waitLicensed(ctx context.Context) error {
	err := waitUntil(ctx, 30*time.Second, func() bool {
		return e.Daemon.Licensed()
	})
	if err != nil {
		return fmt.Errorf("the demo licences did not apply: %w", err)
	}
	return nil
}

// RestartDaemon stops the daemon as systemd would (SIGTERM: it flushes open calls and drains
// deliveries) and starts a new one on the same state directory and address; the PBX and the CRMs
// keep running.
func (e *Env) RestartDaemon(ctx context.Context) error {
	return e.RestartDaemonWith(ctx, nil)
}

// RestartDaemonWith is RestartDaemon that runs between, when set, while the daemon is stopped
// (tests: damage or remove state files).
func (e *Env) RestartDaemonWith(ctx context.Context, between func() error) error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	e.cancel()
	if err := <-e.done; err != nil {
		return err
	}
	if between != nil {
		if err := between(); err != nil {
			return err
		}
	}
	var lns [2]net.Listener
	for i, base := range []string{e.BaseURL, e.PublicURL} {
		addr := strings.TrimPrefix(base, "http://")
		err := waitUntil(ctx, 10*time.Second, func() bool {
			var lerr error
			lns[i], lerr = net.Listen("tcp", addr)
			return lerr == nil
		})
		if err != nil {
			if lns[0] != nil {
				_ = lns[0].Close()
			}
			return fmt.Errorf("listening again on %s: %w", addr, err)
		}
	}
	if err := e.startDaemon(ctx, lns[0], lns[1]); err != nil {
		return err
	}
	return e.waitLicensed(ctx)
}

// WaitSettled waits (up to limit) until the call model has no open call left, nothing is held
// in memory and the outbox holds nothing waiting for delivery, twice in a row a second apart (the
// model reports open calls once a second). Call it after the PBX finished its calls.
func (e *Env) WaitSettled(limit time.Duration) {
	settled := 0
	_ = waitUntil(context.Background(), limit, func() bool {
		if openCalls(e.Daemon) == 0 && outboxDrained(e.Daemon) {
			settled++
		} else {
			settled = 0
		}
		if settled < 2 {
			time.Sleep(time.Second)
			return false
		}
		return true
	})
}

// Close stops the daemon (it drains and flushes), the fakes, and removes a temporary directory.
func (e *Env) Close() error {
	err := e.stop()
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.removeTmp != nil {
		e.removeTmp()
		e.removeTmp = nil
	}
	return err
}

// stop stops the daemon (it flushes open calls into the outbox and lets deliveries in progress
// finish for dispatch.drain_timeout) and the fakes, and keeps the state directory. It is
// idempotent and returns the daemon's error.
func (e *Env) stop() error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.closed {
		return e.err
	}
	e.closed = true
	if e.cancel != nil {
		e.cancel()
		e.err = <-e.done
	}
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
	return e.err
}

// demoConfig is the daemon config of the demo: %[1]s state dir, %[2]s licences, %[3]s admin
// listener, %[4]s public listener, %[5]s public URL, %[6]s AMI port on 127.0.0.1, %[7]s
// recordings secret.
const demoConfig = `
state_dir: %[1]s/state
http: {admin: {listen: "%[3]s"}, public: {listen: "%[4]s", url: "%[5]s"}}
admin: {socket: %[1]s/admin.sock}
licensing: {dir: %[2]s}
dispatch: {backoff_min: 1s, backoff_max: 10s, drain_timeout: 5s}
recordings: {dir: /var/spool/asterisk/monitor, public_url: "%[5]s/rec/", secret: "%[7]s"}
pbx:
  - name: lab
    ami: {host: 127.0.0.1, port: %[6]s, username: pbxbridge, secret: demo-secret, auth: md5, ping_interval: 5s}
    originate: {channel: "Local/{ext}@internal", context: pstn-out}
connectors:
  - name: b24-demo
    type: bitrix24
    bitrix24:
      portal_url: http://demo-bitrix24.invalid
      oauth_url: http://demo-bitrix24.invalid
      auth: {mode: oauth, client_id: local.pbxbridge, client_secret: pbxbridge-secret}
      lines: [{number: "+74951112233", name: Main line}]
      recordings: {attach: false}
      users: {default_user_id: 1}
      missed_calls: {follow_up: task}
  - name: amo-demo
    type: amocrm
    amocrm:
      subdomain: demo-amocrm
      base_url: http://demo-amocrm.invalid
      auth: {long_lived_token: ` + fakecrm.DemoLongLivedToken + `}
      users: {"101": 504141, "102": 504142, "103": 504143}
      default_user: 504141
      recording_links: true
  - name: kommo-demo
    type: kommo
    kommo:
      subdomain: demo-kommo
      base_url: http://demo-kommo.invalid
      auth: {long_lived_token: ` + fakecrm.DemoLongLivedToken + `}
      users: {"101": 504141, "102": 504142, "103": 504143}
      default_user: 504141
      recording_links: true
`

// demoAmoAccount is the fake amoCRM/Kommo demo account under a reserved name.
func demoAmoAccount(sub string) fakecrm.AmoAccountSpec {
	a := fakecrm.AmoDemoAccount()
	a.Subdomain = sub
	return a
}

func serveLoopback(h http.Handler) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// listenNear listens on addr or, when it is taken, on the next of the following 20 ports, then
// on any free port.
func listenNear(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	var p int
	if _, err := fmt.Sscan(port, &p); err != nil {
		return nil, fmt.Errorf("--listen: bad port %q", port)
	}
	for i := range 21 {
		if ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(p+i))); err == nil {
			return ln, nil
		}
	}
	return net.Listen("tcp", net.JoinHostPort(host, "0"))
}

func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("still waiting after %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func outboxDrained(d *connector.Daemon) bool {
	if d.HeldCalls() > 0 {
		return false
	}
	stats, err := d.Outbox().Stats(context.Background())
	if err != nil {
		return false
	}
	for _, s := range stats {
		if s.Pending+s.Leased > 0 {
			return false
		}
	}
	return true
}

// builtCalls is how many finished calls the call model built (all PBXs).
func builtCalls(d *connector.Daemon) int64 { return sumMetric(d, "pbxbridge_calls_total") }

// openCalls is how many calls the call model has open (all PBXs; updated once a second).
func openCalls(d *connector.Daemon) int64 { return sumMetric(d, "pbxbridge_calls_open") }

func sumMetric(d *connector.Daemon, name string) int64 {
	mfs, err := d.Registry().Gather()
	if err != nil {
		return 0
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				n += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				n += g.GetValue()
			}
		}
	}
	return int64(n)
}
