package licensecli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/demo"
	"github.com/pbxbridge/pbxbridge/licensing/issuer"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
	"github.com/pbxbridge/pbxbridge/licensing/licensecli"
)

type staticHost licensing.RawFactors

func (h staticHost) ReadFactors(context.Context) (licensing.RawFactors, error) {
	out := licensing.RawFactors{}
	for k, v := range h {
		out[k] = v
	}
	return out, nil
}

var hostA = staticHost{
	licensing.FactorMachineID: "3d1219c7c4c5404aaa1f6d2a48adfda4",
	licensing.FactorInstallID: "9f0c2b7e1d3a4c5b8e6f7a9b0c1d2e3f",
	licensing.FactorDMI:       "4c4c4544-0051-3010-8052-b4c04f4d4a32",
	licensing.FactorMAC:       "52:54:00:12:34:56",
}

// root mimics how the daemon's root CLI embeds the tree.
type root struct {
	License licensecli.Cmd `cmd:"" help:"Licences."`
}

type fixture struct {
	t    *testing.T
	key  *issuer.SigningKey
	kr   *keyring.Keyring
	env  *licensecli.Env
	out  *bytes.Buffer // stdout, then "ERROR: " and the error of the command
	errb *bytes.Buffer // stderr (notes and warnings)
}

// The connector types of the tests, as the daemon's CRM registry declares them.
var testConnectors = licensing.MustConnectors(
	licensing.ConnectorType{Name: "bitrix24", Binding: licensing.BindingDomain},
	licensing.ConnectorType{Name: "amocrm", Binding: licensing.BindingAccount},
	licensing.ConnectorType{Name: "kommo", Binding: licensing.BindingAccount},
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	k, err := issuer.GenerateKey(keyring.ScopePaid, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Release().Merge(k.Key)
	if err != nil {
		t.Fatal(err)
	}
	out, errb := &bytes.Buffer{}, &bytes.Buffer{}
	env := &licensecli.Env{Dir: filepath.Join(t.TempDir(), "licenses.d"), StateDir: t.TempDir(), Keyring: kr, Host: hostA,
		Stdout: out, Stderr: errb, Now: func() time.Time { return time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC) },
		Connectors: testConnectors,
		Instances:  []licensecli.Instance{{Name: "b24", Type: "bitrix24"}, {Name: "kommo-main", Type: "kommo"}}}
	return &fixture{t: t, key: k, kr: kr, env: env, out: out, errb: errb}
}

// issue writes a licence file and returns its path.
func (f *fixture) issue(lid string, rev int, start, end, grace string, hosts bool) string {
	f.t.Helper()
	c := licensing.Claims{V: 1, Iss: licensing.Issuer, LID: lid, Rev: rev, IAT: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Typ: keyring.TypePaid, Sub: "c1", Licensee: "Test", Connector: "bitrix24",
		Term: &licensing.Term{Start: licensing.MustDate(start), End: licensing.MustDate(end), TZ: "Europe/Moscow"}}
	g := licensing.MustDate(grace)
	c.GraceUntil = &g
	if hosts {
		c.Hosts = []licensing.HostBinding{{FPV: 1, F: licensing.FingerprintOf(licensing.RawFactors(hostA)).Factors}}
		c.MinMatch, c.MinStable = 3, 1
	}
	return f.write(c)
}

// issueBound writes a licence of March 2026 bound to a CRM account and returns its path.
func (f *fixture) issueBound(lid string, crm *licensing.CRMBinding) string {
	f.t.Helper()
	c := licensing.Claims{V: 1, Iss: licensing.Issuer, LID: lid, Rev: 1, IAT: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Typ: keyring.TypePaid, Sub: "c1", Licensee: "Test", Connector: "bitrix24", CRM: crm,
		Term: &licensing.Term{Start: licensing.MustDate("2026-03-01"), End: licensing.MustDate("2026-03-31"), TZ: "Europe/Moscow"}}
	g := licensing.MustDate("2026-04-06")
	c.GraceUntil = &g
	return f.write(c)
}

func (f *fixture) write(c licensing.Claims) string {
	f.t.Helper()
	lid := c.LID
	_, data, err := f.key.Issue(c)
	if err != nil {
		f.t.Fatal(err)
	}
	p := filepath.Join(f.t.TempDir(), lid+".lic")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) run(args ...string) (string, int) {
	f.t.Helper()
	f.out.Reset()
	f.errb.Reset()
	var cli root
	p, err := kong.New(&cli, kong.Exit(func(int) { f.t.Fatalf("kong exit on %v", args) }))
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, err := p.Parse(append([]string{"license"}, args...))
	if err != nil {
		f.t.Fatalf("parse %v: %v", args, err)
	}
	err = ctx.Run(f.env)
	code := 0
	if err != nil {
		code = 1
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		f.out.WriteString("ERROR: " + err.Error())
	}
	return f.out.String(), code
}

func TestVerifyExitCodes(t *testing.T) {
	f := newFixture(t)
	lic := f.issue("L-1", 2, "2026-01-15", "2026-02-14", "2026-02-20", true)
	cases := []struct {
		args []string
		want int
	}{
		{[]string{"--at", "2026-01-01"}, licensecli.ExitNotYet},
		{[]string{"--at", "2026-02-01"}, licensecli.ExitValid},
		{[]string{"--at", "2026-02-16"}, licensecli.ExitGrace},
		{[]string{"--at", "2026-02-21"}, licensecli.ExitExpired},
		{nil, licensecli.ExitExpired}, // now = 2026-03-10
	}
	for _, c := range cases {
		out, code := f.run(append([]string{"verify", lic}, c.args...)...)
		if code != c.want {
			t.Errorf("verify %v: exit %d, want %d\n%s", c.args, code, c.want, out)
		}
	}
	// Host mismatch, unless --no-host.
	f.env.Host = staticHost{licensing.FactorMachineID: "elsewhere"}
	if out, code := f.run("verify", lic, "--at", "2026-02-01"); code != licensecli.ExitMismatch || !strings.Contains(out, "does not match this host") {
		t.Errorf("other host: %d %s", code, out)
	}
	if _, code := f.run("verify", lic, "--at", "2026-02-01", "--no-host"); code != 0 {
		t.Errorf("other host --no-host: %d", code)
	}
	f.env.Host = hostA
	// Superseded: the daemon's state remembers rev 3 for L-1.
	mem := &licensing.Memory{V: 1, Revs: map[string]int{"L-1": 3}}
	raw, _ := hostA.ReadFactors(context.Background())
	if err := licensing.SaveMemory(filepath.Join(f.env.StateDir, licensing.StateFile), licensing.StateKey(raw), mem); err != nil {
		t.Fatal(err)
	}
	if out, code := f.run("verify", lic, "--at", "2026-02-01"); code != licensecli.ExitSuperseded {
		t.Errorf("superseded by state: %d %s", code, out)
	}
	// Bad input.
	garbage := filepath.Join(t.TempDir(), "g.lic")
	if err := os.WriteFile(garbage, []byte("not a licence"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, code := f.run("verify", garbage); code != licensecli.ExitBadFormat {
		t.Errorf("garbage: %d", code)
	}
	if _, code := f.run("verify", filepath.Join(t.TempDir(), "missing.lic")); code != 1 {
		t.Errorf("missing file: %d", code)
	}
	// From stdin.
	f.env.Stdin = bytes.NewReader(mustRead(t, lic))
	mem.Revs = nil
	_ = licensing.SaveMemory(filepath.Join(f.env.StateDir, licensing.StateFile), licensing.StateKey(raw), mem)
	if out, code := f.run("verify", "-", "--at", "2026-02-01"); code != 0 || !strings.Contains(out, "valid on 2026-02-01") {
		t.Errorf("stdin: %d %s", code, out)
	}
}

func TestInspect(t *testing.T) {
	f := newFixture(t)
	lic := f.issue("L-1", 1, "2026-01-15", "2026-02-14", "2026-02-20", false)
	out, code := f.run("inspect", lic)
	if code != 0 || !strings.HasPrefix(out, "VERIFIED") || !strings.Contains(out, `"lid": "L-1"`) {
		t.Fatalf("inspect: %d %s", code, out)
	}
	data := mustRead(t, lic)
	i := bytes.Index(data, []byte("v4.public.")) + 30
	data[i] ^= 0x01
	bad := filepath.Join(t.TempDir(), "bad.lic")
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = f.run("inspect", bad)
	if code != licensecli.ExitBadFormat || !strings.HasPrefix(out, "UNVERIFIED") {
		t.Fatalf("tampered inspect: %d %s", code, out)
	}
	f.env.Keyring = keyring.Release()
	out, code = f.run("inspect", lic)
	if code != licensecli.ExitBadFormat || !strings.HasPrefix(out, "UNVERIFIED") || !strings.Contains(out, "unknown_key") {
		t.Fatalf("unknown key inspect: %d %s", code, out)
	}
}

func TestInstall(t *testing.T) {
	f := newFixture(t)
	var reloads int
	f.env.Reload = func(context.Context) error { reloads++; return nil }
	lic := f.issue("L-1", 2, "2026-03-01", "2026-03-31", "2026-04-06", true)
	out, code := f.run("install", lic)
	if code != 0 || reloads != 1 {
		t.Fatalf("install: %d %s", code, out)
	}
	installed := filepath.Join(f.env.Dir, "bitrix24-L-1-r2-2026-03-01.lic")
	if _, err := (&licensing.Verifier{Keyring: f.kr, Connectors: testConnectors}).VerifyFile(mustRead(t, installed)); err != nil {
		t.Fatalf("installed file: %v", err)
	}
	entries, _ := os.ReadDir(f.env.Dir)
	if len(entries) != 1 {
		t.Fatalf("leftover temporary files: %v", entries)
	}
	// Refused: bad file, older rev, other host.
	garbage := filepath.Join(t.TempDir(), "g.lic")
	_ = os.WriteFile(garbage, []byte("garbage"), 0o644)
	if _, code := f.run("install", garbage); code != licensecli.ExitBadFormat {
		t.Errorf("garbage: %d", code)
	}
	if out, code := f.run("install", f.issue("L-1", 1, "2026-03-01", "2026-06-30", "2026-07-06", true)); code != licensecli.ExitSuperseded {
		t.Errorf("older rev: %d %s", code, out)
	}
	f.env.Host = staticHost{licensing.FactorMachineID: "other"}
	if _, code := f.run("install", f.issue("L-2", 1, "2026-03-01", "2026-03-31", "2026-04-06", true)); code != licensecli.ExitMismatch {
		t.Errorf("other host: %d", code)
	}
	entries, _ = os.ReadDir(f.env.Dir)
	if len(entries) != 1 {
		t.Fatalf("a refused file was installed: %v", entries)
	}
	// From stdin, with --no-host.
	f.env.Stdin = bytes.NewReader(mustRead(t, f.issue("L-3", 1, "2026-04-01", "2026-04-30", "2026-05-06", true)))
	if out, code := f.run("install", "-", "--no-host"); code != 0 {
		t.Fatalf("stdin: %d %s", code, out)
	}
}

func TestFingerprintAndRequest(t *testing.T) {
	f := newFixture(t)
	lic := f.issue("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", true)
	if _, code := f.run("install", lic); code != 0 {
		t.Fatal("install")
	}
	out, code := f.run("fingerprint", "--json")
	if code != 0 {
		t.Fatal(out)
	}
	var rep licensecli.FingerprintReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Fingerprint.Factors) != 4 || len(rep.Licences) != 1 || !rep.Licences[0].Host.OK || rep.Licences[0].Host.Matched != 4 ||
		strings.Join(rep.Stable, ",") != "dmi,mac" {
		t.Fatalf("fingerprint: %+v", rep)
	}
	for _, v := range hostA {
		if strings.Contains(out, v) {
			t.Fatal("raw factor printed")
		}
	}
	out, code = f.run("fingerprint")
	if code != 0 || !strings.Contains(out, "(absent)") || !strings.Contains(out, "MATCH") {
		t.Fatalf("text fingerprint: %s", out)
	}
	out, code = f.run("request", "--connector", "bitrix24", "--crm", "bitrix24_domain=romashka.bitrix24.ru")
	if code != 0 {
		t.Fatal(out)
	}
	req, err := licensing.DecodeRequest(out)
	if err != nil || req.Connector != "bitrix24" || req.CRM.Bitrix24Domain != "romashka.bitrix24.ru" || len(req.Host.Factors) != 4 {
		t.Fatalf("request: %+v %v", req, err)
	}
	if _, code := f.run("request", "--connector", "bitrix24", "--crm", "colour=blue"); code != 1 {
		t.Fatal("bad --crm accepted")
	}
}

// TestRequestWritesInstallID: with the system host source, `request` creates the install id so
// the code carries the same iid the daemon will see.
func TestRequestWritesInstallID(t *testing.T) {
	f := newFixture(t)
	f.env.Host = nil
	out, code := f.run("request", "--connector", "kommo")
	if code != 0 {
		t.Fatal(out)
	}
	id, err := os.ReadFile(filepath.Join(f.env.StateDir, licensing.InstallIDFile))
	if err != nil {
		t.Fatal(err)
	}
	req, err := licensing.DecodeRequest(out)
	if err != nil {
		t.Fatal(err)
	}
	want := licensing.FingerprintOf(licensing.RawFactors{licensing.FactorInstallID: strings.TrimSpace(string(id))}).Factors[licensing.FactorInstallID]
	if req.Host.Factors[licensing.FactorInstallID] != want {
		t.Fatalf("iid in request %q, want %q", req.Host.Factors[licensing.FactorInstallID], want)
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t)
	if out, code := f.run("status"); code != 1 || !strings.Contains(out, "admin API") {
		t.Fatalf("no daemon: %d %s", code, out)
	}
	days := 20.5
	lim := 40
	st := licensing.Status{Now: time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC), Floor: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		Connectors: []licensing.ConnectorStatus{{Name: "b24", Type: "bitrix24", State: licensing.StateActive, Allowed: true,
			License: &licensing.LicenseInfo{LID: "L-1", Rev: 2, Type: "paid"}, DaysLeft: &days,
			Seats: licensing.SeatStatus{ExtensionsLimit: &lim, ExtensionsUsed: 12}}},
		Files: []licensing.FileStatus{{Path: "/x/bad.lic", Result: licensing.FileError, Error: "licence bad_format: no token found"}}}
	f.env.Status = func(context.Context) (licensing.Status, error) { return st, nil }
	out, code := f.run("status")
	if code != 0 || !strings.Contains(out, "L-1 r2 paid") || !strings.Contains(out, "12/40") || !strings.Contains(out, "bad.lic: error") {
		t.Fatalf("status: %s", out)
	}
	out, code = f.run("status", "--json")
	var got licensing.Status
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Connectors[0].Name != "b24" {
		t.Fatalf("status --json: %s", out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRequestByInstanceName: --connector takes the instance name, so two Bitrix24 portals can be
// told apart (the account the instance is known to use goes into the request); a bare type is
// accepted only when exactly one instance of it is configured.
func TestRequestByInstanceName(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env.Instances = []licensecli.Instance{
		{Name: "b24-main", Type: "bitrix24", Account: licensing.Account{Domain: "main.bitrix24.ru", MemberID: "m1"}},
		{Name: "b24-branch", Type: "bitrix24"},
		{Name: "amo", Type: "amocrm", Account: licensing.Account{AccountID: 31234567, Subdomain: "romashka"}},
		{Name: "file", Type: "fake"},
	}
	request := func(args ...string) (licensing.Request, string, int) {
		out, code := f.run(append([]string{"request"}, args...)...)
		if code != 0 {
			return licensing.Request{}, out, code
		}
		req, err := licensing.DecodeRequest(out)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return req, f.errb.String(), code
	}
	req, note, code := request("--connector", "b24-main")
	if code != 0 || req.Connector != "bitrix24" || req.CRM == nil || *req.CRM != (licensing.CRMBinding{Bitrix24Domain: "main.bitrix24.ru", MemberID: "m1"}) ||
		!strings.Contains(note, "connector b24-main (type bitrix24)") {
		t.Fatalf("b24-main: %+v %q %d", req, note, code)
	}
	if req, _, code := request("--connector", "b24-branch"); code != 0 || req.Connector != "bitrix24" || req.CRM != nil {
		t.Fatalf("b24-branch: %+v %d", req, code)
	}
	// --crm overrides the known account.
	if req, _, code := request("--connector", "b24-main", "--crm", "bitrix24_domain=other.bitrix24.ru"); code != 0 || req.CRM.Bitrix24Domain != "other.bitrix24.ru" {
		t.Fatalf("--crm: %+v %d", req, code)
	}
	// A bare type naming its only instance.
	if req, _, code := request("--connector", "amocrm"); code != 0 || req.Connector != "amocrm" || req.CRM == nil || req.CRM.AccountID != 31234567 {
		t.Fatalf("amocrm: %+v %d", req, code)
	}
	for _, c := range []struct {
		arg, want string
	}{
		{"bitrix24", "2 bitrix24 connectors are configured (b24-main (bitrix24), b24-branch (bitrix24)): name one, e.g. --connector b24-main"},
		{"kommo", "no kommo connector is configured"},
		{"file", "connector type fake needs no licence"},
		{"nope", "no connector of that name is configured (configured: b24-main (bitrix24), b24-branch (bitrix24), amo (amocrm), file (fake))"},
	} {
		if _, out, code := request("--connector", c.arg); code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("--connector %s: %d %s", c.arg, code, out)
		}
	}
	f.env.Instances = nil
	if _, out, code := request("--connector", "bitrix24"); code != 1 || !strings.Contains(out, "no configuration loaded") {
		t.Errorf("no config: %d %s", code, out)
	}
}

// TestInstallWarnsWhenUnused: installing a licence no configured instance can use succeeds with a
// warning that says when it will apply.
func TestInstallWarnsWhenUnused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env.Instances = []licensecli.Instance{{Name: "amo", Type: "amocrm"}}
	if out, code := f.run("install", f.issue("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", true)); code != 0 {
		t.Fatalf("install: %d %s", code, out)
	}
	if w := f.errb.String(); !strings.Contains(w, "warning: installed, but no bitrix24 connector is configured; it will apply once one is") {
		t.Fatalf("warning: %q", w)
	}
	// Configured: no warning.
	f.env.Instances = []licensecli.Instance{{Name: "b24", Type: "bitrix24"}}
	if out, code := f.run("install", f.issue("L-2", 1, "2026-03-01", "2026-03-31", "2026-04-06", true)); code != 0 || f.errb.String() != "" {
		t.Fatalf("install: %d %s %q", code, out, f.errb.String())
	}
	// Bound to an account no instance uses.
	bound := f.issueBound("L-3", &licensing.CRMBinding{Bitrix24Domain: "romashka.bitrix24.ru"})
	f.env.Instances = []licensecli.Instance{{Name: "b24", Type: "bitrix24", Account: licensing.Account{Domain: "other.bitrix24.ru"}}}
	if _, code := f.run("install", bound); code != 0 || !strings.Contains(f.errb.String(), "bound to CRM account domain romashka.bitrix24.ru and no configured bitrix24 connector uses that account (b24: domain other.bitrix24.ru)") {
		t.Fatalf("bound: %d %q", code, f.errb.String())
	}
	// ...but not when an instance's account is not known yet.
	f.env.Instances = append(f.env.Instances, licensecli.Instance{Name: "b24-new", Type: "bitrix24"})
	if _, code := f.run("install", bound); code != 0 || f.errb.String() != "" {
		t.Fatalf("bound, unknown account: %d %q", code, f.errb.String())
	}
}

// TestDemoLicenceOutsideDemo: verify and install of an embedded demo licence say that demo
// licences work only in `pbxbridge demo`, with the mismatch exit status, and install nothing.
func TestDemoLicenceOutsideDemo(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, df := range demo.Files() {
		p := filepath.Join(t.TempDir(), df.Name)
		must(t, os.WriteFile(p, df.Data, 0o644))
		for _, cmd := range []string{"verify", "install"} {
			out, code := f.run(cmd, p)
			if code != licensecli.ExitMismatch || !strings.Contains(out, "demo licences work only in `pbxbridge demo`") {
				t.Errorf("%s %s: %d %s", cmd, df.Name, code, out)
			}
		}
	}
	if entries, _ := os.ReadDir(f.env.Dir); len(entries) != 0 {
		t.Fatalf("installed: %v", entries)
	}
}

// TestRootWritesAsServiceUser: run as root (sudo) with the state and licence directories owned by
// the service user (uid 65534 here), `request` and `install` leave files that user owns, so the
// daemon can read them. Skipped unless the test runs as root.
func TestRootWritesAsServiceUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const svc = 65534
	f := newFixture(t)
	f.env.Host = nil // the system host source: `request` writes the install id
	for _, d := range []string{f.env.StateDir, f.env.Dir} {
		must(t, os.MkdirAll(d, 0o750))
		must(t, os.Chown(d, svc, svc))
	}
	if out, code := f.run("request", "--connector", "kommo"); code != 0 {
		t.Fatalf("request: %s", out)
	}
	if out, code := f.run("install", f.issue("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", false)); code != 0 {
		t.Fatalf("install: %s", out)
	}
	for _, p := range []string{filepath.Join(f.env.StateDir, licensing.InstallIDFile), filepath.Join(f.env.Dir, "bitrix24-L-1-r1-2026-03-01.lic")} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); s.Uid != svc || s.Gid != svc {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, s.Uid, s.Gid, svc, svc)
		}
	}
}
