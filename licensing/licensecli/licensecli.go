// Package licensecli is the `pbxbridge license ...` command tree (kong). The root CLI embeds it:
//
//	License licensecli.Cmd `cmd:"" help:"Licences: fingerprint, request, install, inspect, verify, status."`
//
// and binds a *licensecli.Env (kong.Bind or kong.BindToProvider, e.g. after loading the config):
// the licence and state directories, the licensable connector types, the configured connector
// instances, and the Status/Reload functions wired to the running daemon's admin API. Every Run
// method takes that *Env.
//
// Errors that need a specific exit status implement `ExitCode() int` (see ExitError); kong's
// FatalIfErrorf honours it. `verify` exits 0 valid, 2 bad format/signature/unknown key/schema,
// 3 not yet valid, 4 expired, 5 host/CRM mismatch or a demo licence (demo licences work only in
// `pbxbridge demo`), 6 superseded/revoked, 7 grace (valid, but late); I/O problems (missing file)
// exit 1.
package licensecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// Exit statuses of `license verify` (and of install/inspect where they apply).
const (
	ExitValid      = 0
	ExitBadFormat  = 2
	ExitNotYet     = 3
	ExitExpired    = 4
	ExitMismatch   = 5
	ExitSuperseded = 6
	ExitGrace      = 7
)

// ExitError carries an exit status for the root CLI.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }

func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode implements kong's ExitCoder.
func (e *ExitError) ExitCode() int { return e.Code }

// DefaultStateDir is the daemon's default state directory.
const DefaultStateDir = "/var/lib/pbxbridge"

// Env is what the root CLI provides to the licence commands.
type Env struct {
	// Dir is the licence directory (the daemon config's licensing.dir); "" means
	// licensing.DefaultDir.
	Dir string
	// StateDir is the daemon's state directory (install id, licence state); "" means
	// DefaultStateDir.
	StateDir string
	// Version is the daemon version (put in activation requests, checked against min_version).
	Version string
	// Connectors are the licensable connector types and their binding kinds (the daemon's CRM
	// registry). A licence for another type fails verification; the zero value licenses nothing.
	Connectors licensing.Connectors
	// Instances are the connector instances of the loaded configuration; nil when none was
	// loaded. `request --connector` resolves an instance name through them, and `install` warns
	// when no instance would use the licence.
	Instances []Instance
	// Keyring overrides the trusted keys; nil means keyring.Default().
	Keyring *keyring.Keyring
	// Host overrides the host-factor source; nil means licensing.SystemHost{StateDir: StateDir}.
	Host licensing.HostSource
	// Status fetches the running daemon's licensing status (admin API); nil: `status` fails
	// with a clear message.
	Status func(ctx context.Context) (licensing.Status, error)
	// Reload asks the running daemon to reload its licences (admin API); nil: rely on the
	// daemon's directory watch.
	Reload func(ctx context.Context) error
	// Context for the commands; nil means context.Background().
	Context context.Context
	// Stdin, Stdout, Stderr default to the process's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Instance is a configured connector instance as the licence commands see it.
type Instance struct {
	Name string // instance name (connectors[].name)
	Type string // connector type (connectors[].type)
	// Account is the CRM account the instance uses, when known (reported by the running daemon,
	// or read from the configuration); zero when unknown.
	Account licensing.Account
}

func (e *Env) ctx() context.Context {
	if e.Context == nil {
		return context.Background()
	}
	return e.Context
}

func (e *Env) dir() string {
	if e.Dir == "" {
		return licensing.DefaultDir
	}
	return e.Dir
}

func (e *Env) stateDir() string {
	if e.StateDir == "" {
		return DefaultStateDir
	}
	return e.StateDir
}

func (e *Env) out() io.Writer {
	if e.Stdout == nil {
		return os.Stdout
	}
	return e.Stdout
}

func (e *Env) errOut() io.Writer {
	if e.Stderr == nil {
		return os.Stderr
	}
	return e.Stderr
}

func (e *Env) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

func (e *Env) verifier() (*licensing.Verifier, error) {
	kr := e.Keyring
	if kr == nil {
		var err error
		if kr, err = keyring.Default(); err != nil {
			return nil, err
		}
	}
	return &licensing.Verifier{Keyring: kr, Connectors: e.Connectors, Version: e.Version}, nil
}

func (e *Env) host() licensing.HostSource {
	if e.Host != nil {
		return e.Host
	}
	return licensing.SystemHost{StateDir: e.stateDir()}
}

func (e *Env) fingerprint() (licensing.Fingerprint, licensing.RawFactors, error) {
	raw, err := e.host().ReadFactors(e.ctx())
	if err != nil {
		return licensing.Fingerprint{}, nil, err
	}
	return licensing.FingerprintOf(raw), raw, nil
}

// Cmd is the `license` command tree.
type Cmd struct {
	Fingerprint FingerprintCmd `cmd:"" help:"Show this host's (HMAC'd) factors and whether installed licences match them."`
	Request     RequestCmd     `cmd:"" help:"Print an offline activation request code (no secrets) to send to the vendor."`
	Install     InstallCmd     `cmd:"" help:"Verify a licence file and place it atomically into the licence directory."`
	Inspect     InspectCmd     `cmd:"" help:"Print a licence's claims; marked UNVERIFIED when the signature fails."`
	Verify      VerifyCmd      `cmd:"" help:"Authoritative check with exit codes: 0 valid, 2 bad, 3 not yet valid, 4 expired, 5 mismatch, 6 superseded/revoked, 7 grace."`
	Status      StatusCmd      `cmd:"" help:"Licence state from the running daemon."`
}

// readInput reads FILE or "-" (stdin), at most licensing.MaxFileSize bytes.
func readInput(env *Env, name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = env.Stdin
		if r == nil {
			r = os.Stdin
		}
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, licensing.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > licensing.MaxFileSize {
		return nil, &ExitError{Code: ExitBadFormat, Err: fmt.Errorf("%s: larger than %d bytes", name, licensing.MaxFileSize)}
	}
	return data, nil
}

// rollbackView combines the daemon's persisted memory (when readable) with the tokens in the
// licence directory, so the CLI sees what the daemon would.
type rollbackView struct {
	mem  *licensing.Memory
	revs map[string]int
}

func (v *rollbackView) MaxRev(lid string) int   { return max(v.mem.MaxRev(lid), v.revs[lid]) }
func (v *rollbackView) RevokedRev(l string) int { return v.mem.RevokedRev(l) }
func (v *rollbackView) KIDRevoked(k string) bool {
	return v.mem.KIDRevoked(k)
}
func (v *rollbackView) MaxSeq() int64 { return v.mem.MaxSeq() }

// loadRollback reads the state file and the licence directory; unreadable parts are skipped
// (the CLI may run unprivileged). It also returns the highest iat seen, for the time floor.
func loadRollback(env *Env, ver *licensing.Verifier, raw licensing.RawFactors, skip string) (*rollbackView, time.Time) {
	mem, err := licensing.LoadMemory(filepath.Join(env.stateDir(), licensing.StateFile), licensing.StateKey(raw))
	if err != nil {
		_, _ = fmt.Fprintf(env.errOut(), "note: licence state not used: %v\n", err)
	}
	view := &rollbackView{mem: mem, revs: map[string]int{}}
	maxIAT := mem.HWM
	paths, _ := filepath.Glob(filepath.Join(env.dir(), "*.lic"))
	var revocations []*licensing.License
	for _, p := range paths {
		if abs, _ := filepath.Abs(p); abs == skip {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		l, err := ver.VerifyFile(data)
		if err != nil {
			continue
		}
		if l.IAT().After(maxIAT) {
			maxIAT = l.IAT()
		}
		if l.IsRevocation() {
			revocations = append(revocations, l)
			continue
		}
		view.revs[l.LID()] = max(view.revs[l.LID()], l.Rev())
	}
	sort.Slice(revocations, func(i, j int) bool { return revocations[i].Claims().Seq < revocations[j].Claims().Seq })
	for _, r := range revocations {
		c := r.Claims()
		if c.Seq < mem.Seq {
			continue
		}
		mem.Seq = c.Seq
		for _, e := range c.Revoked {
			mem.Revoked[e.LID] = max(mem.Revoked[e.LID], e.RevLE)
		}
		mem.RevokedKIDs = append(mem.RevokedKIDs, c.RevokedKIDs...)
	}
	return view, maxIAT
}

// parseCRM parses repeated KEY=VALUE flags into a binding.
func parseCRM(kvs []string) (*licensing.CRMBinding, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	b := &licensing.CRMBinding{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("--crm %q: want KEY=VALUE", kv)
		}
		switch k {
		case "bitrix24_domain", "domain":
			b.Bitrix24Domain = v
		case "member_id":
			b.MemberID = v
		case "account_id":
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				return nil, fmt.Errorf("--crm account_id=%q: want a positive integer", v)
			}
			b.AccountID = id
		case "subdomain":
			b.Subdomain = v
		default:
			return nil, fmt.Errorf("--crm %q: keys are bitrix24_domain, member_id, account_id, subdomain", k)
		}
	}
	return b, nil
}

// ParseCRM is parseCRM for other command trees (the vendor issuer).
func ParseCRM(kvs []string) (*licensing.CRMBinding, error) { return parseCRM(kvs) }

func exitForReason(r licensing.Reason) int {
	switch r {
	case licensing.ReasonSuperseded, licensing.ReasonRevoked:
		return ExitSuperseded
	case licensing.ReasonHostMismatch, licensing.ReasonCRMMismatch, licensing.ReasonDemoOnly:
		return ExitMismatch
	}
	return ExitBadFormat
}

// Printer writes command output and keeps the first write error, so that a command reports a
// broken stdout once instead of ignoring it.
type Printer struct {
	W   io.Writer
	Err error
}

// Printf writes unless an earlier write failed.
func (p *Printer) Printf(format string, a ...any) {
	if p.Err == nil {
		_, p.Err = fmt.Fprintf(p.W, format, a...)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// VerifyCmd is `license verify FILE [--at YYYY-MM-DD] [--no-host]`.
type VerifyCmd struct {
	File   string   `arg:"" help:"Licence file, or - for stdin."`
	At     string   `help:"Evaluate on this date (YYYY-MM-DD, in the licence's zone) instead of now." placeholder:"YYYY-MM-DD"`
	NoHost bool     `help:"Skip the host-binding check."`
	CRM    []string `help:"Also check the CRM binding against this account (KEY=VALUE: bitrix24_domain, member_id, account_id, subdomain)." sep:"none" placeholder:"KEY=VALUE"`
}

// Run verifies the file and maps the outcome to the exit status.
func (c *VerifyCmd) Run(env *Env) error {
	data, err := readInput(env, c.File)
	if err != nil {
		return err
	}
	ver, err := env.verifier()
	if err != nil {
		return err
	}
	var at licensing.Date
	if c.At != "" {
		if at, err = licensing.ParseDate(c.At); err != nil {
			return fmt.Errorf("--at: %w", err)
		}
	}
	acct, err := parseCRM(c.CRM)
	if err != nil {
		return err
	}
	l, err := ver.VerifyFile(data)
	if err != nil {
		return &ExitError{Code: exitForReason(licensing.ReasonOf(err)), Err: err}
	}
	fp, raw, err := env.fingerprint()
	if err != nil {
		return err
	}
	self, _ := filepath.Abs(c.File)
	view, maxIAT := loadRollback(env, ver, raw, self)
	if err := licensing.CheckRollback(l, view); err != nil {
		return &ExitError{Code: exitForReason(licensing.ReasonOf(err)), Err: err}
	}
	p := &Printer{W: env.out()}
	if l.IsRevocation() {
		p.Printf("valid revocation list seq %d (%d entries, %d revoked keys)\n", l.Claims().Seq, len(l.Claims().Revoked), len(l.Claims().RevokedKIDs))
		return p.Err
	}
	if !c.NoHost {
		if m := l.MatchHost(fp); !m.OK {
			return &ExitError{Code: ExitMismatch, Err: fmt.Errorf("licence %s does not match this host: %d of %d factors, %d of %d hardware-tied (differing %v, missing %v)",
				l.LID(), m.Matched, m.Required, m.StableMatched, m.StableRequired, m.Failing, m.Missing)}
		}
	}
	if acct != nil {
		ok := licensing.AccountMatches(l, licensing.Account{Domain: acct.Bitrix24Domain, MemberID: acct.MemberID, AccountID: acct.AccountID, Subdomain: acct.Subdomain})
		if !ok {
			return &ExitError{Code: ExitMismatch, Err: fmt.Errorf("licence %s is bound to CRM account %s", l.LID(), l.Claims().CRM)}
		}
	}
	var n time.Time
	if !at.IsZero() {
		n = at.Start(l.Location()).Add(12 * time.Hour)
	} else {
		n = env.now()
		for _, t := range []time.Time{maxIAT, l.IAT(), licensing.BuildTime()} {
			if t.After(n) {
				n = t
			}
		}
	}
	today := licensing.DateOf(n.In(l.Location()))
	desc := fmt.Sprintf("%s %s rev %d (%s) for %s, term %s..%s, grace until %s (%s)", l.Type(), l.LID(), l.Rev(), l.Claims().Licensee,
		l.Connector(), l.Start(), l.End(), l.GraceUntil(), l.Claims().Term.TZ)
	if l.DevKey() {
		desc += " [signed by a DEV key]"
	}
	switch l.PhaseAt(n) {
	case licensing.PhasePending:
		return &ExitError{Code: ExitNotYet, Err: fmt.Errorf("not yet valid on %s: %s", today, desc)}
	case licensing.PhaseExpired:
		return &ExitError{Code: ExitExpired, Err: fmt.Errorf("expired on %s: %s", today, desc)}
	case licensing.PhaseGrace:
		return &ExitError{Code: ExitGrace, Err: fmt.Errorf("in grace on %s (payment late; connector still on until %s): %s", today, l.GraceUntil(), desc)}
	}
	p.Printf("valid on %s: %s\n", today, desc)
	return p.Err
}

// InspectCmd is `license inspect FILE`.
type InspectCmd struct {
	File string `arg:"" help:"Licence file, or - for stdin."`
}

// Run prints the claims; an unverifiable token is printed with an UNVERIFIED banner and exits 2.
func (c *InspectCmd) Run(env *Env) error {
	data, err := readInput(env, c.File)
	if err != nil {
		return err
	}
	ver, err := env.verifier()
	if err != nil {
		return err
	}
	w := env.out()
	p := &Printer{W: w}
	l, verr := ver.VerifyFile(data)
	if verr == nil {
		dev := ""
		if l.DevKey() {
			dev = ", DEV key"
		}
		p.Printf("VERIFIED (key %s%s)\n", l.KID(), dev)
		if p.Err != nil {
			return p.Err
		}
		return writeJSON(w, l.Claims())
	}
	payload, kid, err := licensing.DecodeUnverified(data)
	if err != nil {
		return &ExitError{Code: ExitBadFormat, Err: fmt.Errorf("cannot decode: %w (verification: %w)", err, verr)}
	}
	p.Printf("UNVERIFIED: %v\nDo not trust anything below. kid in footer: %q\n", verr, kid)
	var pretty any
	if json.Unmarshal(payload, &pretty) == nil && p.Err == nil {
		p.Err = writeJSON(w, pretty)
	} else {
		p.Printf("%q\n", payload)
	}
	if p.Err != nil {
		return p.Err
	}
	return &ExitError{Code: ExitBadFormat, Err: verr}
}

// InstallCmd is `license install FILE|-`.
type InstallCmd struct {
	File   string `arg:"" help:"Licence file, or - for stdin."`
	NoHost bool   `help:"Install even if the licence is bound to another host."`
}

// Run verifies the file (signature, schema, anti-rollback, host) and renames it atomically into
// the licence directory. The running daemon picks it up through its directory watch.
func (c *InstallCmd) Run(env *Env) error {
	data, err := readInput(env, c.File)
	if err != nil {
		return err
	}
	ver, err := env.verifier()
	if err != nil {
		return err
	}
	l, err := ver.VerifyFile(data)
	if err != nil {
		return &ExitError{Code: exitForReason(licensing.ReasonOf(err)), Err: fmt.Errorf("refusing to install: %w", err)}
	}
	fp, raw, err := env.fingerprint()
	if err != nil {
		return err
	}
	view, _ := loadRollback(env, ver, raw, "")
	if err := licensing.CheckRollback(l, view); err != nil {
		return &ExitError{Code: exitForReason(licensing.ReasonOf(err)), Err: fmt.Errorf("refusing to install: %w", err)}
	}
	if !c.NoHost && !l.IsRevocation() {
		if m := l.MatchHost(fp); !m.OK {
			return &ExitError{Code: ExitMismatch, Err: fmt.Errorf("refusing to install: licence %s is bound to another host (%d of %d factors; use --no-host to install anyway)",
				l.LID(), m.Matched, m.Required)}
		}
	}
	p, err := licensing.Install(env.dir(), l)
	if err != nil {
		return err
	}
	out := &Printer{W: env.out()}
	out.Printf("installed %s\n", p)
	if !l.IsRevocation() {
		out.Printf("%s %s rev %d for %s: term %s..%s, grace until %s (%s)\n", l.Type(), l.LID(), l.Rev(), l.Connector(),
			l.Start(), l.End(), l.GraceUntil(), l.Claims().Term.TZ)
	}
	if w := env.unusedWarning(l); w != "" {
		_, _ = fmt.Fprintln(env.errOut(), "warning: "+w)
	}
	if env.Reload != nil {
		if err := env.Reload(env.ctx()); err != nil {
			_, _ = fmt.Fprintf(env.errOut(), "note: could not ask the daemon to reload (%v); its directory watch picks the file up\n", err)
		}
	}
	return out.Err
}

// FingerprintCmd is `license fingerprint [--json]`.
type FingerprintCmd struct {
	JSON bool `help:"Print JSON."`
}

// FingerprintReport is the JSON output of `license fingerprint`.
type FingerprintReport struct {
	Fingerprint licensing.Fingerprint `json:"fingerprint"`
	Stable      []string              `json:"stable_factors"`
	Licences    []FingerprintMatch    `json:"licences"`
}

// FingerprintMatch is one installed licence compared with this host.
type FingerprintMatch struct {
	File      string              `json:"file"`
	LID       string              `json:"lid"`
	Connector string              `json:"connector"`
	Host      licensing.HostMatch `json:"host"`
}

// Run prints the factors and the match against every verifiable installed licence.
func (c *FingerprintCmd) Run(env *Env) error {
	fp, _, err := env.fingerprint()
	if err != nil {
		return err
	}
	ver, err := env.verifier()
	if err != nil {
		return err
	}
	rep := FingerprintReport{Fingerprint: fp, Stable: []string{}, Licences: []FingerprintMatch{}}
	for name := range fp.Factors {
		if licensing.IsStableFactor(name) {
			rep.Stable = append(rep.Stable, name)
		}
	}
	sort.Strings(rep.Stable)
	paths, _ := filepath.Glob(filepath.Join(env.dir(), "*.lic"))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if l, err := ver.VerifyFile(data); err == nil && !l.IsRevocation() {
			rep.Licences = append(rep.Licences, FingerprintMatch{File: p, LID: l.LID(), Connector: l.Connector(), Host: l.MatchHost(fp)})
		}
	}
	w := env.out()
	if c.JSON {
		return writeJSON(w, rep)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	t := &Printer{W: tw}
	t.Printf("FACTOR\tKIND\tVALUE (HMAC)\n")
	for _, name := range []string{licensing.FactorMachineID, licensing.FactorInstallID, licensing.FactorDMI, licensing.FactorRootFS, licensing.FactorMAC} {
		kind := "copyable"
		if licensing.IsStableFactor(name) {
			kind = "hardware"
		}
		v, ok := fp.Factors[name]
		if !ok {
			v = "(absent)"
		}
		t.Printf("%s\t%s\t%s\n", name, kind, v)
	}
	if t.Err != nil {
		return t.Err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	p := &Printer{W: w}
	for _, m := range rep.Licences {
		if !m.Host.Bound {
			p.Printf("%s (%s): not host-bound\n", m.LID, m.Connector)
			continue
		}
		verdict := "MISMATCH"
		if m.Host.OK {
			verdict = "MATCH"
		}
		p.Printf("%s (%s): %s, %d of %d factors, %d of %d hardware-tied; differing %v, missing %v\n", m.LID, m.Connector,
			verdict, m.Host.Matched, m.Host.Required, m.Host.StableMatched, m.Host.StableRequired, m.Host.Failing, m.Host.Missing)
	}
	return p.Err
}

// RequestCmd is `license request --connector NAME`.
type RequestCmd struct {
	Connector string   `required:"" placeholder:"NAME" help:"Connector instance to license, by its name in the configuration (a connector type is accepted when exactly one instance of it is configured)."`
	CRM       []string `help:"CRM account to bind (KEY=VALUE: bitrix24_domain, member_id, account_id, subdomain); default: the account the instance is known to use." sep:"none" placeholder:"KEY=VALUE"`
	Out       string   `help:"Write the code to this file instead of stdout." type:"path"`
}

// Run prints the activation request code. It writes the install id first if it does not exist,
// so the code carries the same factors the daemon will see.
func (c *RequestCmd) Run(env *Env) error {
	inst, err := env.resolveInstance(c.Connector)
	if err != nil {
		return err
	}
	crm, err := parseCRM(c.CRM)
	if err != nil {
		return err
	}
	if crm == nil {
		kind, _ := env.Connectors.Binding(inst.Type)
		crm = licensing.BindingOf(kind, inst.Account)
	}
	if env.Host == nil {
		if _, err := licensing.EnsureInstallID(env.stateDir()); err != nil {
			_, _ = fmt.Fprintf(env.errOut(), "note: no install id (%v); the request uses the other host factors\n", err)
		}
	}
	fp, _, err := env.fingerprint()
	if err != nil {
		return err
	}
	req, err := licensing.NewRequest(env.Connectors, inst.Type, env.Version, fp, crm, env.now())
	if err != nil {
		return err
	}
	code, err := licensing.EncodeRequest(req)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(env.errOut(), "activation request for connector %s (type %s), CRM account: %s\n", inst.Name, inst.Type, crm)
	if c.Out != "" {
		return os.WriteFile(c.Out, []byte(code+"\n"), 0o644)
	}
	_, err = fmt.Fprintln(env.out(), code)
	return err
}

// resolveInstance finds the configured instance arg names. A connector type names its only
// instance; with none or several, the error says what to do.
func (e *Env) resolveInstance(arg string) (Instance, error) {
	for _, in := range e.Instances {
		if in.Name == arg {
			if !e.Connectors.Known(in.Type) {
				return Instance{}, fmt.Errorf("--connector %s: connector type %s needs no licence (licensable: %s)", arg, in.Type, e.Connectors)
			}
			return in, nil
		}
	}
	if e.Instances == nil {
		return Instance{}, fmt.Errorf("--connector %s: no configuration loaded (see --config), so no connector instance is known", arg)
	}
	if !e.Connectors.Known(arg) {
		return Instance{}, fmt.Errorf("--connector %s: no connector of that name is configured (configured: %s)", arg, describeInstances(e.Instances))
	}
	var same []Instance
	for _, in := range e.Instances {
		if in.Type == arg {
			same = append(same, in)
		}
	}
	switch len(same) {
	case 0:
		return Instance{}, fmt.Errorf("--connector %s: no %s connector is configured (configured: %s); add it to the configuration first", arg, arg, describeInstances(e.Instances))
	case 1:
		return same[0], nil
	}
	return Instance{}, fmt.Errorf("--connector %s: %d %s connectors are configured (%s): name one, e.g. --connector %s", arg, len(same), arg, describeInstances(same), same[0].Name)
}

func describeInstances(list []Instance) string {
	if len(list) == 0 {
		return "none"
	}
	parts := make([]string, len(list))
	for i, in := range list {
		parts[i] = fmt.Sprintf("%s (%s)", in.Name, in.Type)
	}
	return strings.Join(parts, ", ")
}

// unusedWarning explains why an installed licence will not apply to any configured instance yet
// ("" when one may use it, or when no configuration was loaded).
func (e *Env) unusedWarning(l *licensing.License) string {
	if l.IsRevocation() || e.Instances == nil {
		return ""
	}
	var same []Instance
	for _, in := range e.Instances {
		if in.Type == l.Connector() {
			same = append(same, in)
		}
	}
	if len(same) == 0 {
		return fmt.Sprintf("installed, but no %s connector is configured; it will apply once one is", l.Connector())
	}
	if l.Claims().CRM == nil {
		return ""
	}
	for _, in := range same {
		if in.Account.IsZero() || licensing.AccountMatches(l, in.Account) {
			return ""
		}
	}
	return fmt.Sprintf("installed, but it is bound to CRM account %s and no configured %s connector uses that account (%s); it will apply once one does",
		l.Claims().CRM, l.Connector(), describeAccounts(same))
}

func describeAccounts(list []Instance) string {
	parts := make([]string, len(list))
	for i, in := range list {
		parts[i] = in.Name + ": " + in.Account.String()
	}
	return strings.Join(parts, "; ")
}

// StatusCmd is `license status [--json]`.
type StatusCmd struct {
	JSON bool `help:"Print JSON."`
}

// ErrNoDaemon is returned by `status` when the root CLI has not wired the admin API.
var ErrNoDaemon = errors.New("license status needs the running daemon's admin API")

// Run prints the daemon's licensing status.
func (c *StatusCmd) Run(env *Env) error {
	if env.Status == nil {
		return ErrNoDaemon
	}
	st, err := env.Status(env.ctx())
	if err != nil {
		return fmt.Errorf("license status: %w", err)
	}
	w := env.out()
	if c.JSON {
		return writeJSON(w, st)
	}
	return PrintStatus(w, st)
}

// PrintStatus renders a Status as a table.
func PrintStatus(w io.Writer, st licensing.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	t := &Printer{W: tw}
	t.Printf("CONNECTOR\tTYPE\tSTATE\tCRM ACTIONS\tDAYS LEFT\tLICENCE\tSEATS\tNOTE\n")
	for _, cs := range st.Connectors {
		lic, days, seats := "-", "-", "-"
		if cs.License != nil {
			lic = fmt.Sprintf("%s r%d %s", cs.License.LID, cs.License.Rev, cs.License.Type)
		}
		if cs.DaysLeft != nil {
			days = fmt.Sprintf("%.1f", *cs.DaysLeft)
		}
		if cs.Seats.ExtensionsLimit != nil {
			seats = fmt.Sprintf("%d/%d", cs.Seats.ExtensionsUsed, *cs.Seats.ExtensionsLimit)
			if cs.Seats.SuspendedExcess {
				seats += " suspended " + strings.Join(cs.Seats.Suspended, ",")
			} else if cs.Seats.OverLimit {
				seats += " over limit"
			}
		} else if cs.License != nil {
			seats = fmt.Sprintf("%d/unlimited", cs.Seats.ExtensionsUsed)
		}
		on := "off"
		if cs.Allowed {
			on = "on"
		}
		t.Printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cs.Name, cs.Type, cs.State, on, days, lic, seats, cs.Reason)
	}
	if t.Err != nil {
		return t.Err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	p := &Printer{W: w}
	p.Printf("time floor %s, evaluated at %s", st.Floor.UTC().Format(time.RFC3339), st.Now.UTC().Format(time.RFC3339))
	if st.ClockSuspect {
		p.Printf(" (CLOCK BEHIND THE FLOOR)")
	}
	p.Printf("\n")
	for _, f := range st.Files {
		if f.Result != licensing.FileValid {
			p.Printf("%s: %s %s\n", f.Path, f.Result, f.Error)
		}
	}
	return p.Err
}

var _ licensing.RollbackState = (*rollbackView)(nil)
