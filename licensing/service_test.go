package licensing_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

const msk = "Europe/Moscow"

// hostZoneChildEnv makes the test binary run TestDSTAndHostZone itself, as the child process
// with the host's zone set.
const hostZoneChildEnv = "PBXBRIDGE_TEST_HOST_ZONE_CHILD"

// TestGraceTable walks a term 2026-01-15..2026-02-14, grace_until 2026-02-20 (Moscow) day by day:
// end+1 .. grace_until is grace with the connector on; grace_until+1 is expired.
func TestGraceTable(t *testing.T) {
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-01-01 12:00:00"))
	e.register("b24", b24)
	e.write("l.lic", sign(t, keys.paid, paidClaims("L-1", 1, "2026-01-15", "2026-02-14", "2026-02-20", msk)))
	cases := []struct {
		at    string
		state licensing.State
		on    bool
	}{
		{"2026-01-14 23:59:59", licensing.StatePending, false},
		{"2026-01-15 00:00:00", licensing.StateActive, true},
		{"2026-02-14 23:59:59", licensing.StateActive, true},
		{"2026-02-15 00:00:00", licensing.StateGrace, true},
		{"2026-02-18 12:00:00", licensing.StateGrace, true},
		{"2026-02-20 23:59:59", licensing.StateGrace, true},
		{"2026-02-21 00:00:00", licensing.StateExpired, false},
		{"2026-06-01 00:00:00", licensing.StateExpired, false},
	}
	for _, c := range cases {
		// A fresh daemon per row: the persisted high-water mark must not carry over between rows.
		e.state = t.TempDir()
		e.clock.Set(inZone(t, msk, c.at))
		e.svc = e.start()
		e.register("b24", b24)
		cs := e.conn("b24")
		if cs.State != c.state || cs.Allowed != c.on || e.svc.Allowed("b24") != c.on {
			t.Errorf("%s MSK: state %s allowed %v, want %s %v (%s)", c.at, cs.State, cs.Allowed, c.state, c.on, cs.Reason)
		}
	}
}

// TestDSTAndHostZone: dates are compared in the token's zone, whatever the host's zone is. The
// term ends 2026-03-28 in Europe/Berlin; the DST change happens on 2026-03-29 at 02:00.
//
// The host's zone is the process's time.Local, which setting in this process would race with
// every timer of the process (the race detector says so), so the test runs in a child process of
// the test binary with TZ=Asia/Tokyo.
func TestDSTAndHostZone(t *testing.T) {
	if os.Getenv(hostZoneChildEnv) != "1" {
		t.Parallel()
		cmd := exec.Command(os.Args[0], "-test.run=^TestDSTAndHostZone$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), hostZoneChildEnv+"=1", "TZ=Asia/Tokyo")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestDSTAndHostZone") {
			t.Fatalf("the test with the host in Tokyo: %v\n%s", err, out)
		}
		return
	}
	keys := newKeys(t)
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	if _, off := time.Date(2026, 3, 29, 0, 0, 0, 0, time.Local).Zone(); off != 9*3600 {
		t.Fatalf("TZ=Asia/Tokyo: the host zone is %d s east of UTC, want Tokyo's %d", off, 9*3600)
	}
	const berlin = "Europe/Berlin"
	e := newEnv(t, keys, inZone(t, berlin, "2026-03-01 00:00:00"))
	e.register("b24", b24)
	e.write("l.lic", sign(t, keys.paid, paidClaims("L-DST", 1, "2026-02-28", "2026-03-28", "2026-03-29", berlin)))
	cases := []struct {
		at    string
		state licensing.State
	}{
		{"2026-03-28 23:59:59", licensing.StateActive},
		{"2026-03-29 00:00:00", licensing.StateGrace},
		{"2026-03-29 03:30:00", licensing.StateGrace}, // after the 02:00 -> 03:00 jump
		{"2026-03-29 23:59:59", licensing.StateGrace},
		{"2026-03-30 00:00:00", licensing.StateExpired},
	}
	for _, c := range cases {
		e.state = t.TempDir()
		e.clock.Set(inZone(t, berlin, c.at).In(tokyo))
		e.svc = e.start()
		e.register("b24", b24)
		if cs := e.conn("b24"); cs.State != c.state {
			t.Errorf("%s Berlin: %s, want %s", c.at, cs.State, c.state)
		}
	}
	// The metrics' term end is Berlin midnight after the last day (CET, UTC+1).
	l, err := keys.verifier().VerifyFile(sign(t, keys.paid, paidClaims("L-DST", 1, "2026-02-28", "2026-03-28", "2026-03-29", berlin)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.TermEndTime().UTC(), time.Date(2026, 3, 28, 23, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("term end %s, want %s", got, want)
	}
	if got, want := l.GraceEndTime().UTC(), time.Date(2026, 3, 29, 22, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("grace end %s, want %s (CEST)", got, want)
	}
}

// TestDateStartSkippedMidnight: in a zone whose DST change skips local midnight, a day starts at
// the first instant that exists.
func TestDateStartSkippedMidnight(t *testing.T) {
	loc, err := time.LoadLocation("America/Santiago") // 2022-09-11 00:00 did not exist
	if err != nil {
		t.Fatal(err)
	}
	d := date("2022-09-11")
	s := d.Start(loc)
	if got := licensing.DateOf(s.In(loc)); got != d {
		t.Fatalf("Start is on %s", got)
	}
	if got := licensing.DateOf(s.Add(-time.Second).In(loc)); got != d.AddDays(-1) {
		t.Fatalf("the instant before Start is on %s", got)
	}
}

func TestPaidBeatsTrial(t *testing.T) {
	keys := newKeys(t)
	now := inZone(t, msk, "2026-03-05 10:00:00")
	e := newEnv(t, keys, now)
	e.register("b24", b24)
	trial := paidClaims("T-1", 1, "2026-03-01", "2026-03-14", "2026-03-14", msk)
	trial.Typ = keyring.TypeTrial
	e.write("trial.lic", sign(t, keys.trial, trial))
	e.reload()
	if cs := e.conn("b24"); cs.State != licensing.StateTrial || !cs.Allowed {
		t.Fatalf("trial: %s", cs.State)
	}
	e.write("paid.lic", sign(t, keys.paid, paidClaims("L-1", 1, "2026-03-05", "2026-04-04", "2026-04-10", msk)))
	e.reload()
	cs := e.conn("b24")
	if cs.State != licensing.StateActive || cs.License.LID != "L-1" {
		t.Fatalf("paid must take precedence immediately: %s %+v", cs.State, cs.License)
	}
	// A paid licence in grace still beats a running trial.
	e.at(inZone(t, msk, "2026-04-06 10:00:00"))
	trial2 := paidClaims("T-2", 1, "2026-04-01", "2026-04-14", "2026-04-14", msk)
	trial2.Typ = keyring.TypeTrial
	e.write("trial2.lic", sign(t, keys.trial, trial2))
	e.reload()
	if cs := e.conn("b24"); cs.State != licensing.StateGrace || cs.License.LID != "L-1" {
		t.Fatalf("paid in grace vs trial: %s %s", cs.State, cs.License.LID)
	}
}

// TestStackedRenewal: the renewal (same lid and rev, start = previous end + 1) is installed early
// and takes over at midnight with no gap.
func TestStackedRenewal(t *testing.T) {
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-02-10 12:00:00"))
	e.register("b24", b24)
	changes, cancel := e.svc.Subscribe()
	defer cancel()
	e.write("jan.lic", sign(t, keys.paid, paidClaims("L-1", 2, "2026-01-15", "2026-02-14", "2026-02-20", msk)))
	e.write("feb.lic", sign(t, keys.paid, paidClaims("L-1", 2, "2026-02-15", "2026-03-14", "2026-03-20", msk)))
	e.reload()
	cs := e.conn("b24")
	if cs.State != licensing.StateActive || cs.License.End != "2026-02-14" || cs.Next == nil || cs.Next.Start != "2026-02-15" {
		t.Fatalf("before: %s %+v next %+v", cs.State, cs.License, cs.Next)
	}
	drain(changes)
	for _, at := range []string{"2026-02-14 23:59:59", "2026-02-15 00:00:00", "2026-02-15 00:00:01"} {
		e.at(inZone(t, msk, at))
		cs := e.conn("b24")
		if !cs.Allowed || cs.State != licensing.StateActive {
			t.Fatalf("%s: gap: %s allowed=%v", at, cs.State, cs.Allowed)
		}
		wantEnd := "2026-03-14"
		if strings.HasPrefix(at, "2026-02-14") {
			wantEnd = "2026-02-14"
		}
		if cs.License.End != wantEnd {
			t.Fatalf("%s: selected term ends %s, want %s", at, cs.License.End, wantEnd)
		}
	}
	select {
	case <-changes:
		t.Fatal("the gate flickered during the switch")
	default:
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestClockSetBack: the wall clock jumps back 30 days: the licence is evaluated at the floor, the
// rollback counter goes up, the connector stays on. The floor survives a restart (HMAC'd state).
func TestClockSetBack(t *testing.T) {
	keys := newKeys(t)
	reg := prometheus.NewRegistry()
	now := inZone(t, msk, "2026-03-10 12:00:00")
	e := newEnv(t, keys, now, func(o *licensing.Options) { o.Registerer = reg })
	e.register("b24", b24)
	c := paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)
	c.IAT = time.Date(2026, 2, 25, 0, 0, 0, 0, time.UTC)
	e.write("l.lic", sign(t, keys.paid, c))
	e.reload()
	if cs := e.conn("b24"); cs.State != licensing.StateActive {
		t.Fatalf("before: %s", cs.State)
	}
	back := now.AddDate(0, 0, -30) // 2026-02-08: before the term starts
	e.at(back)
	st := e.svc.Status()
	cs := e.conn("b24")
	if !st.ClockSuspect || !st.Now.Equal(now) || cs.State != licensing.StateActive || !e.svc.Allowed("b24") {
		t.Fatalf("after set-back: suspect=%v now=%s state=%s", st.ClockSuspect, st.Now, cs.State)
	}
	if got := testutil.ToFloat64(counter(t, reg, "pbxbridge_license_clock_rollback_total")); got != 1 {
		t.Fatalf("clock_rollback_total = %v", got)
	}
	if !strings.Contains(e.logs.String(), "wall clock is behind the licence time floor") {
		t.Fatal("no ERROR log for the rollback")
	}
	// Restart with the clock still wrong: the persisted high-water mark keeps the floor.
	e.svc.Unregister("b24")
	runAndStop(t, e.svc) // persists the state on return
	svc2 := e.start()
	if err := svc2.Register(licensing.Instance{Name: "b24", Type: b24}); err != nil {
		t.Fatal(err)
	}
	if st := svc2.Status(); !st.Now.Equal(now) || !svc2.Allowed("b24") {
		t.Fatalf("after restart: now=%s allowed=%v", st.Now, svc2.Allowed("b24"))
	}
	// A tampered state file is ignored: the floor falls back to the signed inputs (iat).
	p := filepath.Join(e.state, licensing.StateFile)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), "2026", "2027", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	svc3 := e.start()
	if st := svc3.Status(); !st.Floor.Equal(c.IAT) {
		t.Fatalf("tampered state: floor %s, want the iat %s", st.Floor, c.IAT)
	}
	if !strings.Contains(e.logs.String(), "licence state ignored") {
		t.Fatal("tampering not logged")
	}
}

// runAndStop runs the service's loop briefly and cancels it (Run persists on return).
func runAndStop(t *testing.T, svc *licensing.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestCRMDateProtectsHWM: a wall clock 5 years ahead with a CRM date available does not poison the
// high-water mark; the clock offset is reported.
func TestCRMDateProtectsHWM(t *testing.T) {
	keys := newKeys(t)
	reg := prometheus.NewRegistry()
	wall := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, keys, wall, func(o *licensing.Options) { o.Registerer = reg })
	e.svc.ObserveCRMDate(wall)
	e.clock.Set(wall.AddDate(5, 0, 0))
	e.reload()
	runAndStop(t, e.svc)
	e.clock.Set(wall.Add(time.Hour))
	svc := e.start()
	if f := svc.Status().Floor; f.After(wall.Add(10 * time.Minute)) {
		t.Fatalf("floor poisoned: %s", f)
	}
	// The CRM date itself raises the floor when the wall clock is behind it.
	e.clock.Set(wall.Add(-48 * time.Hour))
	svc.ObserveCRMDate(wall)
	if err := svc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := svc.Status(); !st.ClockSuspect || st.Floor.Before(wall.Add(-5*time.Minute)) {
		t.Fatalf("CRM date: suspect=%v floor=%s", st.ClockSuspect, st.Floor)
	}
}

// TestSupersededAndRevoked: install rev 4, then rev 3: superseded (even after rev 4 is removed,
// because the state remembers); a revocation list applies; a lower-seq list is ignored.
func TestSupersededAndRevoked(t *testing.T) {
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-03-10 12:00:00"))
	e.register("b24", b24)
	e.write("rev4.lic", sign(t, keys.paid, paidClaims("L-7", 4, "2026-03-01", "2026-03-31", "2026-04-06", msk)))
	e.reload()
	e.write("rev3.lic", sign(t, keys.paid, paidClaims("L-7", 3, "2026-03-01", "2026-06-30", "2026-07-06", msk)))
	e.reload()
	if fs := fileStatus(t, e.svc, "rev3.lic"); fs.Result != licensing.FileSuperseded || fs.Reason != licensing.ReasonSuperseded {
		t.Fatalf("rev 3: %+v", fs)
	}
	if cs := e.conn("b24"); cs.License.Rev != 4 {
		t.Fatalf("selected rev %d", cs.License.Rev)
	}
	if err := os.Remove(filepath.Join(e.dir, "rev4.lic")); err != nil {
		t.Fatal(err)
	}
	e.reload()
	if cs := e.conn("b24"); cs.State != licensing.StateNone || cs.Allowed {
		t.Fatalf("rev 3 alone must stay superseded: %s", cs.State)
	}
	// Revocation list seq 2 revokes L-8 up to rev 1.
	e.write("l8.lic", sign(t, keys.paid, paidClaims("L-8", 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)))
	e.reload()
	if cs := e.conn("b24"); cs.State != licensing.StateActive || cs.License.LID != "L-8" {
		t.Fatalf("L-8 before revocation: %s", cs.State)
	}
	rl := licensing.Claims{V: 1, Iss: licensing.Issuer, Typ: keyring.TypeRevocation, IAT: time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC),
		Seq: 2, Revoked: []licensing.Revoked{{LID: "L-8", RevLE: 1}}}
	e.write("crl2.lic", sign(t, keys.revocation, rl))
	e.reload()
	if fs := fileStatus(t, e.svc, "l8.lic"); fs.Result != licensing.FileRevoked {
		t.Fatalf("L-8 after revocation: %+v", fs)
	}
	if e.svc.Allowed("b24") {
		t.Fatal("revoked licence still enables the connector")
	}
	// The revocation persists even when the list file is removed.
	if err := os.Remove(filepath.Join(e.dir, "crl2.lic")); err != nil {
		t.Fatal(err)
	}
	e.reload()
	if fs := fileStatus(t, e.svc, "l8.lic"); fs.Result != licensing.FileRevoked {
		t.Fatalf("L-8 after the list was deleted: %+v", fs)
	}
	// An older list (seq 1) is ignored.
	rl.Seq = 1
	rl.Revoked = nil
	e.write("crl1.lic", sign(t, keys.revocation, rl))
	e.reload()
	if fs := fileStatus(t, e.svc, "crl1.lic"); fs.Result != licensing.FileSuperseded {
		t.Fatalf("seq 1 after seq 2: %+v", fs)
	}
	// A transfer (rev 2) of L-8 is not covered by rev_le 1.
	e.write("l8r2.lic", sign(t, keys.paid, paidClaims("L-8", 2, "2026-03-01", "2026-03-31", "2026-04-06", msk)))
	e.reload()
	if cs := e.conn("b24"); cs.State != licensing.StateActive || cs.License.Rev != 2 {
		t.Fatalf("L-8 rev 2: %s", cs.State)
	}
}

func fileStatus(t *testing.T, svc *licensing.Service, base string) licensing.FileStatus {
	t.Helper()
	for _, f := range svc.Status().Files {
		if filepath.Base(f.Path) == base {
			return f
		}
	}
	t.Fatalf("%s not in status", base)
	return licensing.FileStatus{}
}

// TestCRMBindingAndInstances: several instances of one type, each with its own licence matched by
// CRM account; a mismatching account turns the instance off; a lid serves one instance only.
func TestCRMBindingAndInstances(t *testing.T) {
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-03-10 12:00:00"))
	bound := func(lid, domain string) []byte {
		c := paidClaims(lid, 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)
		c.CRM = &licensing.CRMBinding{Bitrix24Domain: domain, MemberID: "m-" + lid}
		return sign(t, keys.paid, c)
	}
	e.write("a.lic", bound("L-A", "a.bitrix24.ru"))
	e.write("b.lic", bound("L-B", "b.bitrix24.ru"))
	e.reload()
	e.register("portal-a", b24)
	e.register("portal-b", b24)
	e.register("portal-c", b24)
	// Accounts unknown: provisional assignment, every licence used once.
	if !e.svc.Allowed("portal-a") || !e.svc.Allowed("portal-b") || e.svc.Allowed("portal-c") {
		t.Fatalf("provisional: a=%v b=%v c=%v", e.svc.Allowed("portal-a"), e.svc.Allowed("portal-b"), e.svc.Allowed("portal-c"))
	}
	if !strings.Contains(e.conn("portal-a").Reason, "not verified") {
		t.Fatalf("provisional reason: %q", e.conn("portal-a").Reason)
	}
	// Accounts reported (b first so that name order is not what decides).
	must(t, e.svc.SetAccount("portal-b", licensing.Account{Domain: "A.Bitrix24.ru.", MemberID: "m-L-A"}))
	must(t, e.svc.SetAccount("portal-a", licensing.Account{Domain: "b.bitrix24.ru"}))
	if a, b := e.conn("portal-a"), e.conn("portal-b"); a.License.LID != "L-B" || b.License.LID != "L-A" || !a.Allowed || !b.Allowed {
		t.Fatalf("matched by account: a=%s b=%s", a.License.LID, b.License.LID)
	}
	// portal-c reports an account nobody licensed: mismatch would need an unclaimed token; none.
	must(t, e.svc.SetAccount("portal-c", licensing.Account{Domain: "c.bitrix24.ru"}))
	if c := e.conn("portal-c"); c.State != licensing.StateNone || c.Allowed {
		t.Fatalf("portal-c: %s", c.State)
	}
	// A member_id that differs is a mismatch.
	must(t, e.svc.SetAccount("portal-b", licensing.Account{Domain: "a.bitrix24.ru", MemberID: "other"}))
	if b := e.conn("portal-b"); b.State != licensing.StateMismatch || b.Allowed || !strings.Contains(b.Reason, "bound to CRM account") {
		t.Fatalf("member_id mismatch: %s %q", b.State, b.Reason)
	}
	if err := e.svc.SetAccount("nope", licensing.Account{Domain: "x"}); err == nil {
		t.Fatal("unknown instance accepted")
	}
	// amoCRM: account id binding.
	c := paidClaims("L-AMO", 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)
	c.Connector = amoType
	c.CRM = &licensing.CRMBinding{AccountID: 31234567, Subdomain: "romashka"}
	e.write("amo.lic", sign(t, keys.paid, c))
	e.reload()
	e.register("amo", amoType)
	must(t, e.svc.SetAccount("amo", licensing.Account{AccountID: 31234567, Subdomain: "romashka"}))
	if !e.svc.Allowed("amo") {
		t.Fatalf("amo: %+v", e.conn("amo"))
	}
	must(t, e.svc.SetAccount("amo", licensing.Account{AccountID: 99, Subdomain: "romashka"}))
	if e.svc.Allowed("amo") || e.conn("amo").State != licensing.StateMismatch {
		t.Fatal("amo account id mismatch not detected")
	}
	// Other connectors were never affected.
	if !e.svc.Allowed("portal-a") {
		t.Fatal("portal-a affected")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDemoNeedsInvalidAccount: a demo licence enables nothing until the connector reports the
// .invalid account it is bound to, and never a real account.
func TestDemoNeedsInvalidAccount(t *testing.T) {
	keys := newKeys(t)
	reg := prometheus.NewRegistry()
	e := newEnv(t, keys, inZone(t, msk, "2026-12-01 12:00:00"), func(o *licensing.Options) { o.Registerer = reg; o.AllowDemo = true })
	e.write("demo.lic", sign(t, keys.demo, demoClaims("kommo", &licensing.CRMBinding{Subdomain: "demo-kommo.invalid"})))
	e.reload()
	e.register("kommo", kommo)
	if e.svc.Allowed("kommo") || !strings.Contains(e.conn("kommo").Reason, "demo") {
		t.Fatalf("demo before the account: %+v", e.conn("kommo"))
	}
	must(t, e.svc.SetAccount("kommo", licensing.Account{AccountID: 5, Subdomain: "romashka"}))
	if e.svc.Allowed("kommo") || e.conn("kommo").State != licensing.StateMismatch {
		t.Fatal("demo licence unlocked a real account")
	}
	e.reload() // the same mismatch is counted once
	if got := testutil.ToFloat64(counterVec(t, reg, "pbxbridge_license_verify_errors_total", "crm_mismatch")); got != 1 {
		t.Fatalf("crm_mismatch counted %v times", got)
	}
	// Status is a copy: changing it does not leak into the service.
	st := e.svc.Status()
	st.Connectors[0].Account.Subdomain = "changed"
	st.Connectors[0].State = licensing.StateActive
	if cs := e.conn("kommo"); cs.Account.Subdomain != "romashka" || cs.State != licensing.StateMismatch {
		t.Fatal("Status shares memory with the service")
	}
	must(t, e.svc.SetAccount("kommo", licensing.Account{AccountID: 5, Subdomain: "demo-kommo.invalid"}))
	if !e.svc.Allowed("kommo") || e.conn("kommo").License.Type != "demo" {
		t.Fatalf("demo account: %+v", e.conn("kommo"))
	}
}

// TestHostMismatchState: a licence bound to another host puts the connector in mismatch with the
// failing factors, and is counted once in verify_errors_total{reason="host_mismatch"}.
func TestHostMismatchState(t *testing.T) {
	keys := newKeys(t)
	reg := prometheus.NewRegistry()
	e := newEnv(t, keys, inZone(t, msk, "2026-03-10 12:00:00"), func(o *licensing.Options) { o.Registerer = reg })
	e.register("b24", b24)
	other := licensing.FingerprintOf(licensing.RawFactors{licensing.FactorMachineID: "m", licensing.FactorMAC: "x", licensing.FactorDMI: "d"})
	c := paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)
	c.Hosts = []licensing.HostBinding{{FPV: 1, F: other.Factors}}
	e.write("l.lic", sign(t, keys.paid, c))
	e.reload()
	e.reload()
	cs := e.conn("b24")
	if cs.State != licensing.StateMismatch || cs.Allowed || !strings.Contains(cs.Reason, "host matches 0 of 3") {
		t.Fatalf("%s %q", cs.State, cs.Reason)
	}
	if got := testutil.ToFloat64(counterVec(t, reg, "pbxbridge_license_verify_errors_total", "host_mismatch")); got != 1 {
		t.Fatalf("host_mismatch counted %v times", got)
	}
	// The same licence bound to this host works.
	c.Hosts = []licensing.HostBinding{{FPV: 1, F: licensing.FingerprintOf(licensing.RawFactors(hostA)).Factors}}
	e.write("l.lic", sign(t, keys.paid, c))
	e.reload()
	if cs := e.conn("b24"); cs.State != licensing.StateActive || cs.Host == nil || cs.Host.Matched != 5 {
		t.Fatalf("bound to this host: %s %+v", cs.State, cs.Host)
	}
}

// TestSeats: over the limit within ratio and hours is over_limit with full service; after the
// deadline or beyond the ratio only the first `limit` extensions in seat order keep CRM actions.
func TestSeats(t *testing.T) {
	keys := newKeys(t)
	now := inZone(t, msk, "2026-03-10 12:00:00")
	e := newEnv(t, keys, now)
	c := paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)
	c.Seats = &licensing.Seats{Extensions: intPtr(10), CRMUsers: intPtr(2)}
	c.Overage = &licensing.Overage{Ratio: 0.10, Hours: 72}
	e.write("l.lic", sign(t, keys.paid, c))
	e.reload()
	exts := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, strconv.Itoa(100+i))
		}
		return out
	}
	// 10 of 10: fine.
	must(t, e.svc.Register(licensing.Instance{Name: "b24", Type: b24, Extensions: exts(10), CRMUsers: 2}))
	if s := e.conn("b24").Seats; s.OverLimit || s.SuspendedExcess || s.ExtensionsUsed != 10 {
		t.Fatalf("10/10: %+v", s)
	}
	// 11 of 10 (ceil(10*1.1) = 11): over_limit with a deadline 72 h later, all extensions served.
	must(t, e.svc.Register(licensing.Instance{Name: "b24", Type: b24, Extensions: exts(11), CRMUsers: 2}))
	s := e.conn("b24").Seats
	if !s.OverLimit || s.SuspendedExcess || s.Deadline == nil || !s.Deadline.Equal(now.Add(72*time.Hour)) || !e.svc.ExtensionAllowed("b24", "110") {
		t.Fatalf("11/10: %+v", s)
	}
	// The window survives a restart (persisted) ...
	runAndStop(t, e.svc)
	e.clock.Set(now.Add(71 * time.Hour))
	e.svc = e.start()
	must(t, e.svc.Register(licensing.Instance{Name: "b24", Type: b24, Extensions: exts(11), CRMUsers: 2}))
	if s := e.conn("b24").Seats; !s.OverLimit || s.SuspendedExcess || !s.Deadline.Equal(now.Add(72*time.Hour)) {
		t.Fatalf("after restart: %+v", s)
	}
	// ... and when it ends, the excess extension (highest number) is suspended; calls are not
	// blocked, only CRM actions for 110.
	e.at(now.Add(72 * time.Hour))
	s = e.conn("b24").Seats
	if !s.SuspendedExcess || len(s.Suspended) != 1 || s.Suspended[0] != "110" {
		t.Fatalf("after 72 h: %+v", s)
	}
	if !e.svc.Allowed("b24") || e.svc.ExtensionAllowed("b24", "110") || !e.svc.ExtensionAllowed("b24", "109") {
		t.Fatal("suspension must cover exactly the excess")
	}
	// Back at the limit: lifted immediately, window cleared.
	must(t, e.svc.Register(licensing.Instance{Name: "b24", Type: b24, Extensions: exts(10), CRMUsers: 3}))
	s = e.conn("b24").Seats
	if s.SuspendedExcess || !e.svc.ExtensionAllowed("b24", "109") || !s.OverLimit /* crm users 3 > 2 */ {
		t.Fatalf("back under: %+v", s)
	}
	// 12 of 10 is beyond the ratio: suspended at once, priority list first.
	e2 := newEnv(t, keys, now)
	e2.write("l.lic", sign(t, keys.paid, c))
	e2.svc = func() *licensing.Service {
		svc, err := licensing.New(context.Background(), licensing.Config{Dir: e2.dir, SeatPriority: map[string][]string{"b24": {"111", "105"}}},
			licensing.Options{StateDir: e2.state, Clock: e2.clock.Now, Keyring: keys.kr, Host: hostA, Connectors: testConnectors})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}()
	must(t, e2.svc.Register(licensing.Instance{Name: "b24", Type: b24, Extensions: exts(12)}))
	s = e2.conn("b24").Seats
	if !s.SuspendedExcess || strings.Join(s.Suspended, ",") != "109,110" {
		t.Fatalf("12/10 with priority 111,105: %+v", s)
	}
	if !e2.svc.ExtensionAllowed("b24", "111") || !e2.svc.ExtensionAllowed("b24", "105") || e2.svc.ExtensionAllowed("b24", "109") {
		t.Fatal("priority list not honoured")
	}
}

// TestMetrics checks the §3.12 series for an active licence.
func TestMetrics(t *testing.T) {
	keys := newKeys(t)
	reg := prometheus.NewRegistry()
	now := inZone(t, msk, "2026-03-10 12:00:00")
	e := newEnv(t, keys, now, func(o *licensing.Options) { o.Registerer = reg })
	c := paidClaims("L-1", 3, "2026-03-01", "2026-03-31", "2026-04-06", msk)
	c.Seats = &licensing.Seats{Extensions: intPtr(40)}
	c.Hosts = []licensing.HostBinding{{FPV: 1, F: licensing.FingerprintOf(licensing.RawFactors(hostA)).Factors}}
	c.MinMatch, c.MinStable = 3, 1
	e.write("l.lic", sign(t, keys.paid, c))
	e.write("bad.lic", []byte("garbage"))
	e.reload()
	e.register("b24", b24, "101", "102")
	termEnd := inZone(t, msk, "2026-04-01 00:00:00")
	expected := `
# HELP pbxbridge_license_info The licence token currently selected for a connector (value 1).
# TYPE pbxbridge_license_info gauge
pbxbridge_license_info{connector="b24",kid="` + keys.paid.Key.KID + `",lid="L-1",rev="3",type="paid"} 1
# HELP pbxbridge_license_term_end_timestamp_seconds First instant after the paid term's last day, in the token's zone.
# TYPE pbxbridge_license_term_end_timestamp_seconds gauge
pbxbridge_license_term_end_timestamp_seconds{connector="b24"} ` + strconv.Itoa(int(termEnd.Unix())) + `
# HELP pbxbridge_license_seats_limit Seat limit of the selected licence (absent when unlimited).
# TYPE pbxbridge_license_seats_limit gauge
pbxbridge_license_seats_limit{connector="b24",kind="extensions"} 40
# HELP pbxbridge_license_host_factors_matched Host factors matching the licence binding.
# TYPE pbxbridge_license_host_factors_matched gauge
pbxbridge_license_host_factors_matched{connector="b24"} 5
# HELP pbxbridge_license_verify_errors_total Licence files rejected, by reason (counted once per distinct file content).
# TYPE pbxbridge_license_verify_errors_total counter
pbxbridge_license_verify_errors_total{reason="bad_format"} 1
pbxbridge_license_verify_errors_total{reason="bad_signature"} 0
pbxbridge_license_verify_errors_total{reason="crm_mismatch"} 0
pbxbridge_license_verify_errors_total{reason="demo_only"} 0
pbxbridge_license_verify_errors_total{reason="host_mismatch"} 0
pbxbridge_license_verify_errors_total{reason="revoked"} 0
pbxbridge_license_verify_errors_total{reason="schema"} 0
pbxbridge_license_verify_errors_total{reason="superseded"} 0
pbxbridge_license_verify_errors_total{reason="unknown_key"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "pbxbridge_license_info", "pbxbridge_license_term_end_timestamp_seconds",
		"pbxbridge_license_seats_limit", "pbxbridge_license_host_factors_matched", "pbxbridge_license_verify_errors_total"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(gaugeVec(t, reg, "pbxbridge_license_state", map[string]string{"connector": "b24", "state": "active"})); got != 1 {
		t.Fatalf("state active = %v", got)
	}
	left := testutil.ToFloat64(gaugeVec(t, reg, "pbxbridge_license_remaining_seconds", map[string]string{"connector": "b24"}))
	if want := termEnd.Sub(now).Seconds(); left != want {
		t.Fatalf("remaining_seconds %v, want %v", left, want)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems { // promtool check metrics runs the same lint
		t.Errorf("lint: %v", p)
	}
}

// TestWarningsLogged: 14/7/3/1 days left, grace and expiry are logged once each.
func TestWarningsLogged(t *testing.T) {
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-03-01 12:00:00"))
	e.register("b24", b24)
	e.write("l.lic", sign(t, keys.paid, paidClaims("L-1", 1, "2026-02-01", "2026-03-31", "2026-04-06", msk)))
	for d := 1; d <= 40; d++ {
		e.at(inZone(t, msk, "2026-03-01 12:00:00").AddDate(0, 0, d))
		e.reload() // twice a day: no duplicate warnings
	}
	logs := e.logs.String()
	for _, left := range []string{"days_left=14 ", "days_left=7 ", "days_left=3 ", "days_left=1 "} {
		if n := strings.Count(logs, left); n != 1 {
			t.Errorf("%s logged %d times", left, n)
		}
	}
	if n := strings.Count(logs, "licence in grace"); n != 6 {
		t.Errorf("grace warnings: %d, want one per grace day (6)", n)
	}
	if n := strings.Count(logs, "licence expired"); n != 4 {
		t.Errorf("expired errors: %d, want one per day (4)", n)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return gathered(t, reg, name, nil)
}

func counterVec(t *testing.T, reg *prometheus.Registry, name, reason string) prometheus.Collector {
	t.Helper()
	return gathered(t, reg, name, map[string]string{"reason": reason})
}

func gaugeVec(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	return gathered(t, reg, name, labels)
}

// gathered finds one sample and wraps it as a collector for testutil.ToFloat64.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return v })
		}
	}
	t.Fatalf("%s%v not found", name, labels)
	return nil
}
