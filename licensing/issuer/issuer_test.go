package issuer_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/issuer"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
	"github.com/pbxbridge/pbxbridge/licensing/licensecli"
)

// TestMonthTermEnd is the calendar table of docs/licensing-design.md §3.6.
func TestMonthTermEnd(t *testing.T) {
	cases := []struct {
		start  string
		months int
		end    string
	}{
		{"2026-01-15", 1, "2026-02-14"},
		{"2026-01-31", 1, "2026-02-28"}, // no Feb 31: last day of February
		{"2028-01-31", 1, "2028-02-29"}, // leap year
		{"2026-01-30", 1, "2026-02-28"},
		{"2026-01-29", 1, "2026-02-28"},  // no Feb 29 in 2026
		{"2028-01-29", 1, "2028-02-28"},  // Feb 29 exists in 2028: the day before
		{"2028-02-29", 12, "2029-02-28"}, // from a leap day to a year without one
		{"2028-02-29", 48, "2032-02-28"}, // ... and to the next leap year
		{"2027-02-28", 12, "2028-02-27"},
		{"2026-12-15", 1, "2027-01-14"}, // December to January
		{"2026-12-31", 1, "2027-01-30"},
		{"2026-12-31", 2, "2027-02-28"},
		{"2026-11-30", 3, "2027-02-28"},
		{"2026-03-31", 1, "2026-04-30"},
		{"2026-01-01", 12, "2026-12-31"},
		{"2026-01-01", 1, "2026-01-31"},
		{"2026-11-01", 878, "2099-12-31"},
	}
	for _, c := range cases {
		got, why := issuer.MonthTermEnd(licensing.MustDate(c.start), c.months)
		if got.String() != c.end {
			t.Errorf("%s + %d months = %s, want %s (%s)", c.start, c.months, got, c.end, why)
		}
		if why == "" {
			t.Errorf("%s: no explanation", c.start)
		}
	}
	// Never Go's AddDate: time.AddDate normalises Jan 31 + 1 month to Mar 3.
	if d := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0); d.Month() != time.March {
		t.Fatal("AddDate changed behaviour")
	}
}

// TestRenewalChainHasNoGapsOrDrift: monthly renewals from Jan 31 are contiguous (each starts the
// day after the previous end); after the short February term they run on whole calendar months.
func TestRenewalChainHasNoGapsOrDrift(t *testing.T) {
	start := licensing.MustDate("2026-01-31")
	var ends []string
	for range 12 {
		p, err := issuer.PlanTerm(start, 1, 0, 6)
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, p.End.String())
		start = p.End.AddDays(1)
	}
	want := "2026-02-28 2026-03-31 2026-04-30 2026-05-31"
	if got := strings.Join(ends[:4], " "); got != want {
		t.Fatalf("ends %s, want %s", got, want)
	}
	if start != licensing.MustDate("2027-02-01") {
		t.Fatalf("after 12 renewals the next start is %s", start)
	}
}

func TestPlanTerm(t *testing.T) {
	p, err := issuer.PlanTerm(licensing.MustDate("2026-01-15"), 1, 0, 6)
	if err != nil || p.End.String() != "2026-02-14" || p.GraceUntil.String() != "2026-02-20" {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := issuer.PlanTerm(licensing.MustDate("2026-01-15"), 0, 0, 6); !errors.Is(err, issuer.ErrNoTerm) {
		t.Fatal(err)
	}
	if _, err := issuer.PlanTerm(licensing.MustDate("2026-01-15"), 1, 0, 40); err == nil {
		t.Fatal("grace of 40 days accepted")
	}
	p, err = issuer.PlanTerm(licensing.MustDate("2026-03-01"), 0, 14, 0)
	if err != nil || p.End.String() != "2026-03-14" || p.GraceUntil != p.End {
		t.Fatalf("trial: %+v %v", p, err)
	}
}

// run executes the issuer CLI through kong and returns stdout and the error.
func run(t *testing.T, env *issuer.Env, args ...string) (string, error) {
	t.Helper()
	var cli issuer.CLI
	var out bytes.Buffer
	env.Stdout = &out
	env.Stderr = &out
	parser, err := kong.New(&cli, kong.Name("pbxbridge-issuer"), kong.Exit(func(int) { t.Fatalf("kong exited on %v", args) }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		return "", err
	}
	err = ctx.Run(env)
	return out.String(), err
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

func onlyKey(t *testing.T, dir, ext string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+ext))
	if err != nil || len(m) != 1 {
		t.Fatalf("%s in %s: %v %v", ext, dir, m, err)
	}
	return m[0]
}

// TestCLIFlow runs the licensing acceptance scenario through the issuer and the daemon-side
// commands: key gen, issue, verify at several dates, a one-character change, an unknown key;
// then renew, transfer, revoke and dry runs.
func TestCLIFlow(t *testing.T) {
	kr := filepath.Join(t.TempDir(), "kr")
	now := time.Date(2026, 1, 10, 9, 0, 0, 0, time.UTC)
	env := &issuer.Env{Connectors: issuer.Connectors(), Now: func() time.Time { return now }, Dir: t.TempDir(), StateDir: t.TempDir()}
	out, err := run(t, env, "key", "gen", "--scope", "paid", "--out", kr, "--not-before", "2026-01-01")
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile := onlyKey(t, kr, ".key"), onlyKey(t, kr, ".pub")
	kid := strings.TrimSuffix(filepath.Base(keyFile), ".key")
	if !strings.HasPrefix(kid, "k4.pid.") || !strings.Contains(out, kid) {
		t.Fatalf("kid %q, output %q", kid, out)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret key mode: %v %v", st.Mode(), err)
	}
	pubs, err := keyring.LoadPubDir(kr)
	if err != nil {
		t.Fatal(err)
	}
	devKR, err := keyring.Release().Merge(pubs...)
	if err != nil {
		t.Fatal(err)
	}
	lic := filepath.Join(t.TempDir(), "l.lic")
	out, err = run(t, env, "issue", "--key", keyFile, "--connector", "bitrix24", "--licensee", "Test", "--sub", "c1",
		"--start", "2026-01-15", "--months", "1", "--grace-days", "6", "--tz", "Europe/Moscow", "--no-host", "--out", lic)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "2026-02-14") || !strings.Contains(out, "grace_until 2026-02-20") {
		t.Fatalf("issue output: %s", out)
	}

	verify := func(keys *keyring.Keyring, file string, args ...string) int {
		env := &issuer.Env{Connectors: issuer.Connectors(), Keyring: keys, Dir: t.TempDir(), StateDir: t.TempDir(), Host: staticHost{}}
		_, err := run(t, env, append([]string{"verify", file}, args...)...)
		return exitCode(err)
	}
	for _, c := range []struct {
		at   string
		want int
	}{
		{"2026-01-14", licensecli.ExitNotYet},
		{"2026-01-15", licensecli.ExitValid},
		{"2026-02-14", licensecli.ExitValid},
		{"2026-02-15", licensecli.ExitGrace},
		{"2026-02-16", licensecli.ExitGrace},
		{"2026-02-20", licensecli.ExitGrace},
		{"2026-02-21", licensecli.ExitExpired},
	} {
		if got := verify(devKR, lic, "--at", c.at, "--no-host"); got != c.want {
			t.Errorf("verify --at %s = %d, want %d", c.at, got, c.want)
		}
	}
	// One changed character in the token.
	data, err := os.ReadFile(lic)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte("v4.public.")) + 40
	bad := bytes.Clone(data)
	bad[i] = map[bool]byte{true: 'A', false: 'B'}[bad[i] != 'A']
	badFile := filepath.Join(t.TempDir(), "bad.lic")
	must(t, os.WriteFile(badFile, bad, 0o644))
	if got := verify(devKR, badFile, "--at", "2026-02-14", "--no-host"); got != licensecli.ExitBadFormat {
		t.Errorf("changed character: exit %d", got)
	}
	// Without the dev key: unknown key.
	if got := verify(keyring.Release(), lic, "--at", "2026-02-14", "--no-host"); got != licensecli.ExitBadFormat {
		t.Errorf("release keyring only: exit %d", got)
	}

	// Renewal: starts the day after the previous end, same lid and rev.
	ren := filepath.Join(t.TempDir(), "renew.lic")
	env.Keyring = devKR
	out, err = run(t, env, "renew", lic, "--key", keyFile, "--months", "1", "--out", ren)
	if err != nil {
		t.Fatal(err)
	}
	rl := verifyFile(t, devKR, ren)
	ol := verifyFile(t, devKR, lic)
	if rl.Start().String() != "2026-02-15" || rl.End().String() != "2026-03-14" || rl.GraceUntil().String() != "2026-03-20" ||
		rl.LID() != ol.LID() || rl.Rev() != ol.Rev() {
		t.Fatalf("renewal: %s..%s grace %s lid %s rev %d\n%s", rl.Start(), rl.End(), rl.GraceUntil(), rl.LID(), rl.Rev(), out)
	}
	// Transfer: rev+1, same end, new licensee.
	tr := filepath.Join(t.TempDir(), "transfer.lic")
	out, err = run(t, env, "transfer", lic, "--key", keyFile, "--licensee", "New Owner", "--sub", "c2", "--no-host",
		"--crm", "bitrix24_domain=new.bitrix24.ru", "--out", tr)
	if err != nil {
		t.Fatal(err)
	}
	tl := verifyFile(t, devKR, tr)
	if tl.Rev() != ol.Rev()+1 || tl.End() != ol.End() || tl.Claims().Licensee != "New Owner" || tl.Claims().CRM.Bitrix24Domain != "new.bitrix24.ru" {
		t.Fatalf("transfer: %+v", tl.Claims())
	}
	if !strings.Contains(out, "--lid "+ol.LID()+":1") {
		t.Fatalf("transfer does not print the revocation entry: %s", out)
	}
	// Revocation list (needs a revocation-scope key), then an incremental one.
	rkr := filepath.Join(t.TempDir(), "rkr")
	if _, err := run(t, env, "key", "gen", "--scope", "revocation", "--out", rkr, "--not-before", "2026-01-01"); err != nil {
		t.Fatal(err)
	}
	rkey := onlyKey(t, rkr, ".key")
	if _, err := run(t, env, "revoke", "--key", keyFile, "--lid", "L-x:1", "--out", filepath.Join(t.TempDir(), "x.lic")); err == nil {
		t.Fatal("a paid key signed a revocation list")
	}
	rpub, err := keyring.LoadPubDir(rkr)
	if err != nil {
		t.Fatal(err)
	}
	allKR, err := devKR.Merge(rpub...)
	if err != nil {
		t.Fatal(err)
	}
	env.Keyring = allKR
	crl1 := filepath.Join(t.TempDir(), "crl1.lic")
	if _, err := run(t, env, "revoke", "--key", rkey, "--lid", ol.LID()+":1", "--out", crl1); err != nil {
		t.Fatal(err)
	}
	crl2 := filepath.Join(t.TempDir(), "crl2.lic")
	if _, err := run(t, env, "revoke", "--key", rkey, "--base", crl1, "--lid", "L-other", "--kid", "k4.pid.bad", "--out", crl2); err != nil {
		t.Fatal(err)
	}
	c2 := verifyFile(t, allKR, crl2).Claims()
	if c2.Seq != 2 || len(c2.Revoked) != 2 || c2.Revoked[0].LID != ol.LID() || c2.Revoked[0].RevLE != 1 || c2.Revoked[1].RevLE < 1<<30 ||
		len(c2.RevokedKIDs) != 1 {
		t.Fatalf("crl2: %+v", c2)
	}
	// The revocation list in the licence directory makes verify exit 6 for rev 1, not for rev 2.
	vdir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(vdir, "crl.lic"), mustRead(t, crl2), 0o644))
	venv := &issuer.Env{Connectors: issuer.Connectors(), Keyring: allKR, Dir: vdir, StateDir: t.TempDir(), Host: staticHost{}}
	if _, err := run(t, venv, "verify", lic, "--at", "2026-02-01", "--no-host"); exitCode(err) != licensecli.ExitSuperseded {
		t.Fatalf("revoked: %v", err)
	}
	if _, err := run(t, venv, "verify", tr, "--at", "2026-02-01", "--no-host"); err != nil {
		t.Fatalf("transferred rev 2: %v", err)
	}
	// Dry run explains and writes nothing.
	dry := filepath.Join(t.TempDir(), "dry.lic")
	out, err = run(t, env, "issue", "--key", keyFile, "--connector", "amocrm", "--licensee", "T", "--sub", "c", "--start", "2026-01-31",
		"--months", "1", "--no-host", "--crm", "account_id=31234567", "--crm", "subdomain=romashka", "--seats", "extensions=40,crm_users=25",
		"--out", dry, "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "2026-02 has no day 31") || !strings.Contains(out, "2026-02-28") || !strings.Contains(out, "grace_until 2026-03-06") {
		t.Fatalf("dry run: %s", out)
	}
	if _, err := os.Stat(dry); !os.IsNotExist(err) {
		t.Fatal("dry run wrote a file")
	}
	// Errors: both or neither of --request/--no-host; trial over 14 days; trial key for paid.
	if _, err := run(t, env, "issue", "--key", keyFile, "--connector", "kommo", "--licensee", "T", "--sub", "c", "--start", "2026-01-31",
		"--months", "1", "--out", dry); err == nil {
		t.Fatal("issue without --request or --no-host")
	}
	tkr := filepath.Join(t.TempDir(), "tkr")
	if _, err := run(t, env, "key", "gen", "--scope", "trial", "--out", tkr, "--not-before", "2026-01-01"); err != nil {
		t.Fatal(err)
	}
	tkey := onlyKey(t, tkr, ".key")
	if _, err := run(t, env, "issue", "--key", tkey, "--connector", "kommo", "--licensee", "T", "--sub", "c", "--start", "2026-03-01",
		"--days", "15", "--no-host", "--out", dry); err == nil || !strings.Contains(err.Error(), "exceeds 14") {
		t.Fatalf("15-day trial: %v", err)
	}
	if _, err := run(t, env, "issue", "--key", tkey, "--type", "paid", "--connector", "kommo", "--licensee", "T", "--sub", "c",
		"--start", "2026-03-01", "--months", "1", "--no-host", "--out", dry); err == nil {
		t.Fatal("trial key issued a paid licence")
	}
	if _, err := run(t, env, "issue", "--key", tkey, "--connector", "kommo", "--licensee", "T", "--sub", "c", "--start", "2026-03-01",
		"--days", "14", "--no-host", "--out", dry); err != nil {
		t.Fatalf("14-day trial: %v", err)
	}
	_ = pubFile
}

// TestIssueWithRequest binds to the host of an activation request code produced by
// `license request`, and the result verifies on that host only.
func TestIssueWithRequest(t *testing.T) {
	kr := filepath.Join(t.TempDir(), "kr")
	now := time.Date(2026, 1, 10, 9, 0, 0, 0, time.UTC)
	env := &issuer.Env{Connectors: issuer.Connectors(), Now: func() time.Time { return now }, Host: hostA, Dir: t.TempDir(), StateDir: t.TempDir()}
	if _, err := run(t, env, "key", "gen", "--scope", "paid", "--out", kr, "--not-before", "2026-01-01"); err != nil {
		t.Fatal(err)
	}
	keyFile := onlyKey(t, kr, ".key")
	pubs, _ := keyring.LoadPubDir(kr)
	devKR, _ := keyring.Release().Merge(pubs...)

	var cmd licensecli.Cmd
	var out bytes.Buffer
	denv := &licensecli.Env{Connectors: issuer.Connectors(), Instances: []licensecli.Instance{{Name: "amo", Type: "amocrm"}}, Host: hostA, Stdout: &out, Keyring: devKR, Dir: t.TempDir(), StateDir: t.TempDir(), Version: "1.0.0"}
	p := kong.Must(&cmd)
	kctx, err := p.Parse([]string{"request", "--connector", "amocrm", "--crm", "account_id=31234567"})
	if err != nil {
		t.Fatal(err)
	}
	if err := kctx.Run(denv); err != nil {
		t.Fatal(err)
	}
	code := strings.TrimSpace(out.String())
	lic := filepath.Join(t.TempDir(), "l.lic")
	if _, err := run(t, env, "issue", "--key", keyFile, "--connector", "amocrm", "--licensee", "T", "--sub", "c",
		"--start", "2026-01-15", "--months", "12", "--request", code, "--out", lic); err != nil {
		t.Fatal(err)
	}
	l := verifyFile(t, devKR, lic)
	c := l.Claims()
	if len(c.Hosts) != 1 || c.MinMatch != 3 || c.MinStable != 1 || c.CRM == nil || c.CRM.AccountID != 31234567 {
		t.Fatalf("binding: %+v", c)
	}
	venv := func(h licensing.HostSource) *issuer.Env {
		return &issuer.Env{Connectors: issuer.Connectors(), Keyring: devKR, Host: h, Dir: t.TempDir(), StateDir: t.TempDir()}
	}
	if _, err := run(t, venv(hostA), "verify", lic, "--at", "2026-06-01"); err != nil {
		t.Fatalf("same host: %v", err)
	}
	if _, err := run(t, venv(staticHost{licensing.FactorMachineID: "other"}), "verify", lic, "--at", "2026-06-01"); exitCode(err) != licensecli.ExitMismatch {
		t.Fatalf("other host: %v", err)
	}
	if _, err := run(t, venv(staticHost{licensing.FactorMachineID: "other"}), "verify", lic, "--at", "2026-06-01", "--no-host"); err != nil {
		t.Fatalf("other host with --no-host: %v", err)
	}
	if _, err := run(t, venv(hostA), "verify", lic, "--at", "2026-06-01", "--crm", "account_id=1"); exitCode(err) != licensecli.ExitMismatch {
		t.Fatalf("other CRM account: %v", err)
	}
	// A request for another connector is refused.
	if _, err := run(t, env, "issue", "--key", keyFile, "--connector", "kommo", "--licensee", "T", "--sub", "c",
		"--start", "2026-01-15", "--months", "12", "--request", code, "--out", lic); err == nil {
		t.Fatal("amocrm request used for kommo")
	}
}

func verifyFile(t *testing.T, kr *keyring.Keyring, path string) *licensing.License {
	t.Helper()
	l, err := (&licensing.Verifier{Keyring: kr, Connectors: issuer.Connectors()}).VerifyFile(mustRead(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return l
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
