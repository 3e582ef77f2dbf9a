// Package cli is the pbxbridge command line (kong): `run` starts the daemon (package connector);
// status, reload, outbox, calls and license status are clients of the running daemon's admin API
// (connector/admin), so the CLI never opens the state the daemon writes; forget and backup now go
// through the admin API too and open the state themselves only while the daemon is stopped (the
// outbox's lock proves it), restore only ever runs then; config, replay, capture,
// crm test/auth, doctor and the licence tools work offline from the config file. `demo` hands over
// to the pbxbridge-demo program (connector/demo), so the simulators never ship in this binary.
//
// Main is what cmd/pbxbridge runs; MainIO runs the same in-process for tests.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/licensecli"
)

// Globals are the flags every command accepts, and what commands share.
type Globals struct {
	ConfigFile string `name:"config" short:"c" help:"Config file (default ${default_config})." env:"PBXBRIDGE_CONFIG" placeholder:"FILE"`
	Socket     string `help:"Admin socket of the running daemon (default: admin.socket from the config)." env:"PBXBRIDGE_SOCKET" placeholder:"PATH"`

	Version string `kong:"-"`
	// Daemon are the options `run` starts the daemon with (the zero value in production; the
	// load harness's child process allows demo licences).
	Daemon connector.Options `kong:"-"`
	Stdout io.Writer         `kong:"-"`
	Stderr io.Writer         `kong:"-"`
	Ctx    context.Context   `kong:"-"`
}

// configPath is the config file commands that need one use.
func (g *Globals) configPath() string {
	if g.ConfigFile != "" {
		return g.ConfigFile
	}
	return config.DefaultPath
}

// loadConfig loads the config with exactly the daemon's loader.
func (g *Globals) loadConfig() (*config.Config, error) {
	return config.Load(g.configPath(), os.Getenv)
}

// optionalConfig loads the config if the file exists, else returns the defaults.
func (g *Globals) optionalConfig() (*config.Config, error) {
	cfg, err := g.loadConfig()
	if err == nil {
		return cfg, nil
	}
	if g.ConfigFile == "" && errors.Is(err, os.ErrNotExist) {
		return config.Defaults(os.Getenv), nil
	}
	return nil, err
}

// admin returns a client of the running daemon's admin socket.
func (g *Globals) client() *admin.Client {
	if g.Socket != "" {
		return admin.NewClient(g.Socket)
	}
	cfg, err := g.optionalConfig()
	if err != nil {
		return admin.NewClient(config.Defaults(nil).Admin.Socket)
	}
	return admin.NewClient(cfg.Admin.Socket)
}

// CLI is the pbxbridge command line.
type CLI struct {
	Globals
	ShowVersion kong.VersionFlag `name:"version" help:"Print the version and exit."`

	Run     RunCmd         `cmd:"" help:"Run the daemon (what the systemd unit starts)."`
	Demo    DemoCmd        `cmd:"" help:"Run a simulated PBX, fake CRMs, demo licences and the daemon on this machine, with nothing installed."`
	Status  StatusCmd      `cmd:"" help:"Show the running daemon's state: PBX connections, connectors, licences, outbox."`
	Reload  ReloadCmd      `cmd:"" help:"Ask the running daemon to reload its config and licences (like SIGHUP)."`
	Config  ConfigCmd      `cmd:"" help:"Check or print the configuration."`
	Outbox  OutboxCmd      `cmd:"" help:"Inspect and act on the delivery queue of the running daemon."`
	Calls   CallsCmd       `cmd:"" help:"Show recent calls and why each was logged the way it was."`
	Replay  ReplayCmd      `cmd:"" help:"Print the call records of an AMI or ARI capture as JSON lines (offline)."`
	Capture CaptureCmd     `cmd:"" help:"Record the raw AMI stream of a live PBX to a file, for support tickets."`
	CRM     CRMCmd         `cmd:"" name:"crm" help:"Test a connector's CRM account and authorise integrations."`
	Doctor  DoctorCmd      `cmd:"" help:"Check everything pbxbridge needs before going live, with a plain fix for each problem."`
	Forget  ForgetCmd      `cmd:"" help:"Erase every trace of a phone number from pbxbridge's state (not from the CRM)."`
	Backup  BackupCmd      `cmd:"" help:"Back up the state (outbox, CRM tokens, licence state) now, or list the backups."`
	Restore RestoreCmd     `cmd:"" help:"Restore a backup into the state directory (the daemon must be stopped)."`
	License licensecli.Cmd `cmd:"" help:"Licences: fingerprint, offline activation request, install, inspect, verify, status."`
	Version VersionCmd     `cmd:"" help:"Print the version."`

	Man        ManCmd        `cmd:"" hidden:"" help:"Print the manual page (roff), generated from this command line (gen.go)."`
	Completion CompletionCmd `cmd:"" hidden:"" help:"Print a shell completion script (gen.go)."`
	Help       HelpCmd       `cmd:"" help:"Show help for a command (pbxbridge help outbox list)."`
}

// HelpCmd shows the help of a command.
type HelpCmd struct {
	Command []string `arg:"" optional:"" help:"The command, e.g. outbox list."`
}

// Run prints the help of the named command (the whole tree without one).
func (c *HelpCmd) Run(kctx *kong.Context) error {
	_, err := kctx.Parse(append(append([]string{}, c.Command...), "--help"))
	return err
}

// exitCoder is implemented by errors that choose the process exit status.
type exitCoder interface{ ExitCode() int }

// licenceInstances lists the configured connector instances for the licence commands, with the
// CRM account each names in its config (when it does).
func licenceInstances(cfg *config.Config) []licensecli.Instance {
	out := make([]licensecli.Instance, 0, len(cfg.Connectors))
	for _, cn := range cfg.Connectors {
		inst := licensecli.Instance{Name: cn.Name, Type: cn.Type}
		if ac, ok := cn.Settings.(crm.AccountConfigurer); ok {
			a := ac.ConfiguredAccount()
			inst.Account = licensing.Account{Domain: a.Domain, MemberID: a.MemberID, AccountID: a.AccountID, Subdomain: a.Subdomain}
		}
		out = append(out, inst)
	}
	return out
}

// Main runs the command line and returns the process exit status. SIGINT and SIGTERM cancel the
// command's context (the daemon then stops in order).
func Main(version string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return MainIO(ctx, version, args, os.Stdout, os.Stderr)
}

// helpExit is how kong's --help ends inside MainIO (instead of os.Exit).
type helpExit int

// MainIO is Main with explicit context and output streams (tests run the CLI in-process).
func MainIO(ctx context.Context, version string, args []string, stdout, stderr io.Writer) (code int) {
	return MainWith(ctx, version, args, stdout, stderr, connector.Options{})
}

// MainWith is MainIO whose `run` starts the daemon with the given options (version excepted):
// for test tools that run the real command line with test-only options. The pbxbridge binary
// never calls it.
func MainWith(ctx context.Context, version string, args []string, stdout, stderr io.Writer, daemon connector.Options) (code int) {
	cli := CLI{Globals: Globals{Version: version, Stdout: stdout, Stderr: stderr, Ctx: ctx, Daemon: daemon}}
	defer func() {
		if r := recover(); r != nil {
			h, ok := r.(helpExit)
			if !ok {
				panic(r)
			}
			code = int(h)
		}
	}()
	parser, err := kong.New(&cli,
		kong.Name("pbxbridge"),
		kong.Description("Asterisk → CRM connector (Bitrix24, amoCRM, Kommo)."),
		kong.UsageOnError(),
		kong.Vars{"default_config": config.DefaultPath, "version": "pbxbridge " + version},
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(helpExit(c)) }),
	)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "pbxbridge: %v\n", err)
		return 2
	}
	if err := asService(&cli.Globals, kctx); err != nil { // root: act as the service user (privileges.go)
		return Report(stderr, "pbxbridge", err)
	}
	env := &licensecli.Env{Version: version, Context: ctx, Stdout: stdout, Stderr: stderr}
	if env.Connectors, err = connector.LicensedTypes(); err != nil {
		fmt.Fprintln(stderr, "pbxbridge: "+err.Error())
		return 1
	}
	if cfg, err := cli.loadConfig(); err == nil {
		env.Dir, env.StateDir = cfg.Licensing.Dir, cfg.StateDir
		env.Instances = licenceInstances(cfg)
	} else if cfg, err := cli.optionalConfig(); err == nil {
		env.Dir, env.StateDir = cfg.Licensing.Dir, cfg.StateDir
	}
	env.Status = func(ctx context.Context) (licensing.Status, error) {
		var st licensing.Status
		err := cli.client().Do(ctx, "GET", "/v1/license", nil, &st)
		return st, err
	}
	env.Reload = func(ctx context.Context) error {
		return cli.client().Do(ctx, "POST", "/v1/reload", nil, nil)
	}
	return Report(stderr, "pbxbridge", kctx.Run(&cli.Globals, env))
}

// Report prints a command's error (prefixed with the program's name) and returns the process
// exit status: 0 for nil, the status an ExitCode error carries, 1 for any other error.
func Report(stderr io.Writer, program string, err error) int {
	if err == nil {
		return 0
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(stderr, program+": "+msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(stderr, program+": "+err.Error())
	return 1
}

// exitError carries an exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// ExitCode is an error that ends the command with exit status code and no further message
// (what the command printed says why).
func ExitCode(code int) error { return &exitError{code: code} }

// RunCmd runs the daemon.
type RunCmd struct{}

// Run loads the config (problems are fatal, all of them listed), then runs until SIGTERM.
func (c *RunCmd) Run(g *Globals) error {
	cfg, err := g.loadConfig()
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("config problems, not starting:\n%w", err)}
	}
	signal.Ignore(syscall.SIGPIPE) // a restarted journald must not kill us
	opts := g.Daemon
	opts.Version = g.Version
	d, err := connector.New(cfg, opts)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(g.Ctx) }()
	select {
	case err := <-done:
		return err
	case <-g.Ctx.Done():
	}
	// Stopping is bounded, always: systemd's TimeoutStopSec would SIGKILL us a little later.
	t := time.NewTimer(stopDeadline)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return &exitError{code: 1, err: fmt.Errorf("stopping took longer than %v; exiting now (the outbox is consistent: queued calls are delivered after the next start; see the log for what was still running)", stopDeadline)}
	}
}

// stopDeadline bounds `run`'s shutdown after SIGTERM (the unit's TimeoutStopSec is 30 s).
const stopDeadline = 25 * time.Second

// StatusCmd prints the daemon's state.
type StatusCmd struct {
	JSON bool `help:"Print JSON."`
}

// Run prints the status.
func (c *StatusCmd) Run(g *Globals) error {
	var st admin.StatusReport
	if err := g.client().Do(g.Ctx, "GET", "/v1/status", nil, &st); err != nil {
		return err
	}
	if c.JSON {
		if err := writeJSONTo(g.Stdout, st); err != nil {
			return err
		}
	} else {
		printStatus(g.Stdout, st)
	}
	if !st.Ready {
		return &exitError{code: 3} // the same with --json: scripts test the exit status
	}
	return nil
}

func printStatus(w io.Writer, st admin.StatusReport) {
	state := "ready"
	if !st.Ready {
		state = "NOT READY"
	}
	fmt.Fprintf(w, "pbxbridge %s — %s, up since %s\n\n", st.Version, state, st.StartedAt.Local().Format(time.DateTime))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PBX\tTYPE\tADDRESS\tSTATE\tEVENTS\tRECONNECTS")
	for _, p := range st.PBX {
		s := "connected"
		if !p.Connected {
			s = "DOWN"
			if p.LastError != "" {
				s += ": " + p.LastError
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", p.Name, p.Kind, p.Address, s, p.Events, p.Reconnects)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	pending := map[string][2]int64{}
	for _, o := range st.Outbox {
		pending[o.Connector] = [2]int64{o.Pending + o.Leased, o.Dead}
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTOR\tTYPE\tLICENCE\tCRM AUTH\tDELIVERED\tPENDING\tDEAD\tLAST ERROR")
	for _, c := range st.Connectors {
		lic := "none"
		if c.Licence != nil {
			lic = string(c.Licence.State)
			if c.Licence.DaysLeft != nil {
				lic += fmt.Sprintf(" (%.0f days)", *c.Licence.DaysLeft)
			}
		}
		auth := c.CRM.Auth
		if auth == "" {
			auth = "-"
		}
		if c.Delivery.AuthBroken {
			auth = "BROKEN"
		}
		p := pending[c.Name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", c.Name, c.Type, lic, auth, c.Delivery.Delivered, p[0], p[1], oneLine(c.Delivery.LastError, 60))
	}
	_ = tw.Flush()
	if st.HeldCalls > 0 {
		fmt.Fprintf(w, "\n%d finished calls are held in memory: the outbox cannot write (disk full?)\n", st.HeldCalls)
	}
	for _, ck := range st.Checks {
		if !ck.OK {
			fmt.Fprintf(w, "\n! %s: %s", ck.Name, ck.Detail)
		}
	}
	fmt.Fprintln(w)
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

// ReloadCmd asks the daemon to reload.
type ReloadCmd struct{}

// Run sends the reload request.
func (c *ReloadCmd) Run(g *Globals) error {
	if err := g.client().Do(g.Ctx, "POST", "/v1/reload", nil, nil); err != nil {
		return err
	}
	fmt.Fprintln(g.Stdout, "reloaded")
	return nil
}

// ConfigCmd groups the config commands.
type ConfigCmd struct {
	Check       ConfigCheckCmd       `cmd:"" help:"Load and validate the config exactly as the daemon does; list every problem."`
	Sample      ConfigSampleCmd      `cmd:"" help:"Print the documented sample config."`
	Env         ConfigEnvCmd         `cmd:"" help:"List the environment variables that set each secret."`
	Eventfilter ConfigEventfilterCmd `cmd:"" help:"Print the manager.conf eventfilter lines that make Asterisk send only what pbxbridge reads."`
}

// ConfigEventfilterCmd prints the eventfilter lines of docs/asterisk.md for a PBX's variables.
type ConfigEventfilterCmd struct {
	PBX    string `help:"The PBX whose variables to admit (required when the config has several)." placeholder:"NAME"`
	Legacy bool   `help:"Regular-expression lines any Asterisk version reads, instead of the advanced syntax (Asterisk 22.1, 21.6, 20.11, 18.26 and later)."`
}

// Run prints the lines for the [pbxbridge] section of manager.conf.
func (c *ConfigEventfilterCmd) Run(g *Globals) error {
	opts, err := pbxModelOptions(g, c.PBX)
	if err != nil {
		return err
	}
	syntax, what := ami.AdvancedFilter, "advanced syntax: Asterisk 22.1, 21.6, 20.11, 18.26 or later"
	if c.Legacy {
		syntax, what = ami.LegacyFilter, "legacy syntax: any Asterisk version"
	}
	lines, err := ami.EventFilterLines(syntax, opts.Variables())
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Stdout, "; pbxbridge: the AMI events it reads (%s; docs/asterisk.md).\n", what)
	fmt.Fprintf(g.Stdout, "; Variables admitted in VarSet: %s.\n", strings.Join(opts.Variables(), ", "))
	fmt.Fprintln(g.Stdout, "; Put these lines in the [pbxbridge] section, then: asterisk -rx \"manager reload\"")
	for _, l := range lines {
		fmt.Fprintln(g.Stdout, l)
	}
	return nil
}

// ConfigCheckCmd validates a config.
type ConfigCheckCmd struct {
	Quiet bool `short:"q" help:"Print nothing when the config is good."`
	JSON  bool `help:"Print the result as JSON ({\"file\", \"ok\", \"pbx\", \"connectors\", \"problems\"})."`
}

// configCheckResult is `config check --json`.
type configCheckResult struct {
	File       string            `json:"file"`
	OK         bool              `json:"ok"`
	PBX        int               `json:"pbx"`
	Connectors int               `json:"connectors"`
	Problems   []*config.Problem `json:"problems,omitempty"`
	Error      string            `json:"error,omitempty"`
}

// Run checks the config; exit status 1 with every problem listed.
func (c *ConfigCheckCmd) Run(g *Globals) error {
	cfg, err := g.loadConfig()
	res := configCheckResult{File: g.configPath(), OK: err == nil}
	var ps config.Problems
	switch {
	case err == nil:
		res.PBX, res.Connectors = len(cfg.PBX), len(cfg.Connectors)
	case errors.As(err, &ps):
		res.Problems = ps
	default:
		res.Error = err.Error()
	}
	if c.JSON {
		if err := writeJSONTo(g.Stdout, res); err != nil {
			return err
		}
		if !res.OK {
			return &exitError{code: 1}
		}
		return nil
	}
	switch {
	case res.OK:
		if !c.Quiet {
			fmt.Fprintf(g.Stdout, "%s: OK (%d pbx, %d connectors)\n", res.File, res.PBX, res.Connectors)
		}
		return nil
	case len(ps) > 0:
		fmt.Fprintf(g.Stderr, "%s: %d problem(s):\n", res.File, len(ps))
		for _, p := range ps {
			fmt.Fprintln(g.Stderr, "  "+p.Error())
		}
		return &exitError{code: 1}
	}
	return &exitError{code: 1, err: err}
}

// ConfigSampleCmd prints the sample.
type ConfigSampleCmd struct{}

// Run prints configs/pbxbridge.example.yaml.
func (c *ConfigSampleCmd) Run(g *Globals) error {
	_, err := g.Stdout.Write(configs.Example())
	return err
}

// ConfigEnvCmd lists secret variables.
type ConfigEnvCmd struct{}

// Run prints one line per secret: its path and variable.
func (c *ConfigEnvCmd) Run(g *Globals) error {
	// The names come from the config's pbx and connector names; the sample's placeholders (the
	// very values these variables replace) are no reason to refuse.
	cfg, err := config.Load(g.configPath(), os.Getenv, config.ForTools())
	if g.ConfigFile == "" && errors.Is(err, os.ErrNotExist) {
		cfg, err = config.Defaults(os.Getenv), nil
	}
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tENVIRONMENT VARIABLE (or VARIABLE_FILE)")
	for _, s := range cfg.SecretEnvNames() {
		fmt.Fprintf(tw, "%s\t%s\n", s[0], s[1])
	}
	return tw.Flush()
}

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints the version.
func (c *VersionCmd) Run(g *Globals) error {
	fmt.Fprintln(g.Stdout, "pbxbridge", g.Version)
	return nil
}

func writeJSONTo(w io.Writer, v any) error {
	enc := jsonEncoder(w)
	return enc.Encode(v)
}
