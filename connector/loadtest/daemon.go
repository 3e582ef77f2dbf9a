package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/cli"
	_ "github.com/pbxbridge/pbxbridge/crm/all"  // the shipped connector types
	_ "github.com/pbxbridge/pbxbridge/crm/fake" // the "fake" connector of the harness
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/demo"
)

// Environment of the daemon subprocess.
const (
	childEnv      = "PBXBRIDGE_LOADTEST_CHILD"      // "1": this process is the daemon
	cpuProfileEnv = "PBXBRIDGE_LOADTEST_CPUPROFILE" // the daemon writes a CPU profile there
	pprofEnv      = "PBXBRIDGE_LOADTEST_PPROF"      // the daemon serves net/http/pprof there
)

// RunChildIfRequested turns the process into the pbxbridge command (cli.MainWith with the
// process arguments, demo licences allowed) when the harness started it as the daemon subprocess, and exits with its
// code; otherwise it returns at once. Call it first in main and TestMain.
func RunChildIfRequested() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	stop := func() {}
	if path := os.Getenv(cpuProfileEnv); path != "" {
		if f, err := os.Create(path); err == nil { //nolint:gosec // set by the harness that started this process
			if pprof.StartCPUProfile(f) == nil {
				stop = func() { pprof.StopCPUProfile(); _ = f.Close() }
			} else {
				_ = f.Close()
			}
		}
	}
	if addr := os.Getenv(pprofEnv); addr != "" {
		runtime.SetBlockProfileRate(int(time.Millisecond))
		runtime.SetMutexProfileFraction(10)
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.ListenAndServe() }()
	}
	// The harness's CRMs are the demo's fakes under reserved .invalid names, licensed by the demo
	// licences, which only a daemon started with AllowDemo honours (never `pbxbridge run`).
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.MainWith(ctx, "loadtest", os.Args[1:], os.Stdout, os.Stderr,
		connector.Options{Licensing: licensing.Options{AllowDemo: true}})
	cancel()
	stop()
	os.Exit(code)
}

// Connector types the harness can configure.
const (
	ConnBitrix24 = "bitrix24" // instance "b24" on the fake Bitrix24
	ConnAmo      = "amocrm"   // instance "amo" on the fake amoCRM
	ConnFake     = "fake"     // instance "fake": the in-process recording connector (no CRM I/O), every direction
)

// DaemonOptions configure the daemon subprocess.
type DaemonOptions struct {
	// Dir holds the config, logs, licences and admin socket (required).
	Dir string
	// StateDir is the state directory (default Dir/state): a small file system for disk-full
	// tests.
	StateDir string
	// PBX is the simulated PBX's AMI address.
	PBX string
	// Connectors lists ConnBitrix24, ConnAmo and/or ConnFake.
	Connectors []string
	// ProxyURL is the HTTP_PROXY of the daemon (CRMs.ProxyURL).
	ProxyURL string
	// Unlimited raises the connectors' client-side rate limits (Bitrix24 2 req/s burst 50,
	// amoCRM 7 req/s by default) to the most the config allows, for an unlimited CRM.
	Unlimited bool
	// AttachRecordings makes the Bitrix24 connector attach recordings (off by default: the
	// transcripts' recording files are not on this machine; see EnvOptions.Recordings).
	AttachRecordings bool
	// Workers, BackoffMin and BackoffMax: dispatch settings (defaults 2, 200 ms, 2 s).
	Workers                int
	BackoffMin, BackoffMax time.Duration
	// FakeLatency is the fake connector's delivery latency; FakeLog its log file ("": memory).
	FakeLatency time.Duration
	FakeLog     string
	// CPUProfile, when set, makes the daemon write a CPU profile there (on a clean stop).
	CPUProfile string
	// PprofAddr, when set, makes the daemon serve net/http/pprof there, with block and mutex
	// profiling on (diagnosis of a run).
	PprofAddr string
	// LogLevel of the daemon (default info).
	LogLevel string
	// CDRCSV, when set, is the Master.csv the daemon reads to recover the calls it did not see
	// (pbx[].cdr.csv, as the simulated PBX writes it: loguniqueid and loguserfield, UTC);
	// CDRMySQL, instead, the DSN of a FreePBX-style cdr table (pbx[].cdr.mysql). The simulated
	// PBX must write there (fakepbx.Config.CDR).
	CDRCSV   string
	CDRMySQL string
	// CDRDelay is pbx[].cdr.delay (default 1s).
	CDRDelay time.Duration
	// Executable is the binary to run (default: this one; it must call RunChildIfRequested).
	Executable string
	// AdminToken, when set, is http.admin.token: the harness sends it on its own requests to the
	// admin listener (status, metrics).
	AdminToken string
}

// Daemon is a running daemon subprocess.
type Daemon struct {
	o         DaemonOptions
	config    string
	BaseURL   string // its admin listener: status, metrics
	PublicURL string // its public listener: what the CRMs call
	Socket    string // its admin socket
	LogPath   string
	cmd       *exec.Cmd
	waited    chan struct{}
	err       error
	hc        *http.Client
}

// WriteConfig writes the daemon's config, the demo licences and the state directory, and picks
// the HTTP port. StartDaemon calls it; a restarted daemon reuses it.
func writeConfig(o *DaemonOptions, httpAddr, publicAddr string) (string, error) {
	if o.Dir == "" || o.PBX == "" {
		return "", errors.New("loadtest: daemon: Dir and PBX are required")
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(o.Dir, "state")
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 200 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(2*time.Second, o.BackoffMin)
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	// The state directory exists before the daemon starts: started as root, the command line
	// would create a missing one for the pbxbridge user where that user exists (the package is
	// or was installed on this machine) and run as that user, who cannot read the test's files.
	// A directory root owns keeps the daemon root.
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return "", fmt.Errorf("loadtest: %w", err)
	}
	licDir := filepath.Join(o.Dir, "licenses.d")
	if err := os.MkdirAll(licDir, 0o700); err != nil {
		return "", fmt.Errorf("loadtest: %w", err)
	}
	if _, err := demo.Install(licDir); err != nil {
		return "", fmt.Errorf("loadtest: demo licences: %w", err)
	}
	host, port, err := net.SplitHostPort(o.PBX)
	if err != nil {
		return "", fmt.Errorf("loadtest: pbx address: %w", err)
	}
	base := "http://" + publicAddr
	var b strings.Builder
	fmt.Fprintf(&b, `state_dir: %s
log: {level: %s}
http: {admin: {listen: "%s", token: "%s"}, public: {listen: "%s", url: "%s"}}
admin: {socket: %s/admin.sock}
licensing: {dir: %s}
dispatch: {workers: %d, backoff_min: %s, backoff_max: %s, drain_timeout: 5s, delivery_timeout: 30s}
recordings: {dir: %s/recordings, public_url: "%s/rec/", secret: "0123456789abcdef0123456789abcdef"}
pbx:
  - name: %s
    ami: {host: %s, port: %s, username: pbxbridge, secret: secret, auth: md5, ping_interval: 5s}
    calls:
      extensions: ['^Local/(?P<ext>\d+)@phones-[0-9a-f]+;1$', '^Local/[^@]+@internal-[0-9a-f]+;1$']
      trunks: ['^Local/[^@]+@from-pstn-[0-9a-f]+;2$', '^Local/[^@]+@pstn-[0-9a-f]+;1$']
      originate_id_variables: [PBXBRIDGE_ORIGINATE_ID, CRM_ORIGINATE_ID]
      did_variables: [FROM_DID, LAB_DID]
`, o.StateDir, o.LogLevel, httpAddr, o.AdminToken, publicAddr, base, o.Dir, licDir, o.Workers, o.BackoffMin, o.BackoffMax, o.Dir, base,
		PBXName, host, port)
	if o.CDRCSV != "" || o.CDRMySQL != "" {
		if o.CDRDelay <= 0 {
			o.CDRDelay = time.Second
		}
		fmt.Fprintf(&b, "    cdr:\n      delay: %s\n", o.CDRDelay)
		if o.CDRCSV != "" {
			fmt.Fprintf(&b, "      csv: {path: %q, loguniqueid: true, loguserfield: true, timezone: UTC}\n", o.CDRCSV)
		} else {
			fmt.Fprintf(&b, "      mysql: {dsn: %q, timezone: UTC}\n", o.CDRMySQL)
		}
	}
	b.WriteString("connectors:\n")
	for _, c := range o.Connectors {
		switch c {
		case ConnBitrix24:
			limit := ""
			if o.Unlimited {
				limit = "\n      rate_limit: {rps: 1000, burst: 1000, live_reserve: 5}"
			}
			attach := "false"
			if o.AttachRecordings {
				attach = "true"
			}
			fmt.Fprintf(&b, `  - name: b24
    type: bitrix24
    bitrix24:
      portal_url: http://%[1]s
      oauth_url: http://%[1]s
      auth: {mode: oauth, client_id: local.pbxbridge, client_secret: pbxbridge-secret}
      lines: [{number: "+74951112233", name: Main line}]
      recordings: {attach: %[3]s}
      users: {default_user_id: 1}
      missed_calls: {follow_up: task}%[2]s
`, B24Host, limit, attach)
		case ConnAmo:
			limit := ""
			if o.Unlimited {
				limit = "\n      rate_limit: 1000"
			}
			fmt.Fprintf(&b, `  - name: amo
    type: amocrm
    amocrm:
      subdomain: demo-amocrm
      base_url: http://%s
      auth: {long_lived_token: %s}
      users: {"101": 504141, "102": 504142, "103": 504143}
      default_user: 504141
      recording_links: true%s
`, AmoHost, fakecrm.DemoLongLivedToken, limit)
		case ConnFake:
			fmt.Fprintf(&b, `  - name: fake
    type: fake
    directions: [inbound, outbound, internal]
    fake: {latency: %s, log_file: "%s"}
`, o.FakeLatency, o.FakeLog)
		default:
			return "", fmt.Errorf("loadtest: unknown connector %q", c)
		}
	}
	path := filepath.Join(o.Dir, "pbxbridge.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("loadtest: %w", err)
	}
	return path, nil
}

// StartDaemon writes the config and starts the daemon; it returns once the daemon answers on
// its HTTP listener (not necessarily logged in to the PBX: see WaitReady).
func StartDaemon(ctx context.Context, o DaemonOptions) (*Daemon, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	publicAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg, err := writeConfig(&o, addr, publicAddr)
	if err != nil {
		return nil, err
	}
	if o.Executable == "" {
		if o.Executable, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("loadtest: %w", err)
		}
	}
	d := &Daemon{o: o, config: cfg, BaseURL: "http://" + addr, PublicURL: "http://" + publicAddr, Socket: filepath.Join(o.Dir, "admin.sock"),
		LogPath: filepath.Join(o.Dir, "daemon.log"), hc: &http.Client{Timeout: 10 * time.Second}}
	return d, d.Start(ctx)
}

// Start starts the (stopped or killed) daemon again with the same config.
func (d *Daemon) Start(ctx context.Context) error {
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(d.o.Executable, "run", "--config", d.config) //nolint:gosec // our own binary
	cmd.Env = append(os.Environ(), childEnv+"=1", "HTTP_PROXY="+d.o.ProxyURL, "http_proxy="+d.o.ProxyURL, "NO_PROXY=", "no_proxy=")
	if d.o.CPUProfile != "" {
		cmd.Env = append(cmd.Env, cpuProfileEnv+"="+d.o.CPUProfile)
	}
	if d.o.PprofAddr != "" {
		cmd.Env = append(cmd.Env, pprofEnv+"="+d.o.PprofAddr)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("loadtest: starting the daemon: %w", err)
	}
	d.cmd = cmd
	d.waited = make(chan struct{})
	go func() { d.err = cmd.Wait(); close(d.waited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d.get(ctx, "/healthz") == nil {
			return nil
		}
		select {
		case <-d.waited:
			return fmt.Errorf("loadtest: the daemon exited at start: %w; log:\n%s", d.err, d.LogTail(3000))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loadtest: the daemon did not answer within 30 s; log:\n%s", d.LogTail(3000))
		}
	}
}

// WaitReady waits until /readyz answers 200 (outbox open, PBX logged in).
func (d *Daemon) WaitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for d.get(ctx, "/readyz") != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("loadtest: the daemon is not ready after %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// WaitLicensed waits until every licensed connector may act in its CRM (the demo licence is
// checked against the CRM account the adapter reports, which Bitrix24 knows only once the
// application is installed) and its delivery worker has noticed.
func (d *Daemon) WaitLicensed(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last string
	for {
		st, err := d.Status(ctx)
		if err == nil {
			ok := true
			last = ""
			for _, c := range st.Connectors {
				if c.Licence != nil && (!c.Licence.Allowed || !c.Delivery.Licensed) {
					ok = false
					last += fmt.Sprintf(" %s: %s %s;", c.Name, c.Licence.State, c.Licence.Reason)
				}
			}
			if ok {
				return nil
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loadtest: connectors not licensed after %v:%s", limit, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Daemon) get(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.BaseURL+path, nil)
	if err != nil {
		return err
	}
	d.authorize(req)
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return nil
}

// authorize adds the admin token (DaemonOptions.AdminToken) to a request to the admin listener.
func (d *Daemon) authorize(req *http.Request) {
	if d.o.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+d.o.AdminToken)
	}
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the process to end.
func (d *Daemon) Kill() error {
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("loadtest: kill: %w", err)
	}
	<-d.waited
	return nil
}

// Stop sends SIGTERM and waits up to limit for a clean exit, then kills it.
func (d *Daemon) Stop(limit time.Duration) error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.waited:
		var ee *exec.ExitError
		if d.err != nil && !errors.As(d.err, &ee) {
			return fmt.Errorf("loadtest: daemon: %w", d.err)
		}
		if d.cmd.ProcessState.ExitCode() != 0 {
			return fmt.Errorf("loadtest: the daemon exited with code %d", d.cmd.ProcessState.ExitCode())
		}
		return nil
	case <-time.After(limit):
		_ = d.Kill()
		return fmt.Errorf("loadtest: the daemon did not stop within %v", limit)
	}
}

// Exited reports whether the process has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.waited:
		return true
	default:
		return false
	}
}

// LogTail returns the last n bytes of the daemon's log.
func (d *Daemon) LogTail(n int) string {
	data, err := os.ReadFile(d.LogPath)
	if err != nil {
		return ""
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// Log returns the daemon's whole log.
func (d *Daemon) Log() string {
	data, _ := os.ReadFile(d.LogPath)
	return string(data)
}

// Metrics scrapes /metrics.
func (d *Daemon) Metrics(ctx context.Context) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.BaseURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	d.authorize(req)
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("loadtest: metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("loadtest: metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// Status asks the admin API for the daemon's status.
func (d *Daemon) Status(ctx context.Context) (admin.StatusReport, error) {
	var st admin.StatusReport
	err := admin.NewClient(d.Socket).Do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Metrics are scraped Prometheus samples: "name{labels}" (labels sorted as exposed) → value.
type Metrics map[string]float64

// Sum adds the samples of a metric whose labels contain every given "key=\"value\"" pair.
func (m Metrics) Sum(name string, labels ...string) float64 {
	var total float64
	for k, v := range m {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			total += v
		}
	}
	return total
}

func parseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("loadtest: metrics: %w", err)
	}
	return m, nil
}

// ProcStat is a sample of the daemon process from /proc.
type ProcStat struct {
	CPU     time.Duration // user + system time so far
	RSS     int64         // resident set size, bytes
	Threads int
}

// Proc samples the daemon process.
func (d *Daemon) Proc() (ProcStat, error) { return procStat(d.Pid()) }

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on every Linux port Go
// supports).
const clockTicks = 100

func procStat(pid int) (ProcStat, error) {
	var ps ProcStat
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, fmt.Errorf("loadtest: %w", err)
	}
	// The command name may contain spaces: fields start after the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ps, errors.New("loadtest: unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ps, errors.New("loadtest: short /proc stat")
	}
	// f[0] is field 3 (state): utime is field 14, stime 15, num_threads 20.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	ps.CPU = time.Duration(ut+st) * time.Second / clockTicks
	ps.Threads, _ = strconv.Atoi(f[17])
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, fmt.Errorf("loadtest: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			ps.RSS = kb << 10
		}
	}
	return ps, nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("loadtest: %w", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr, nil
}

// LoadAverage is the 1-minute load average of the machine (0 when unknown).
func LoadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
