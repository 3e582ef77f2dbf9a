package loadtest_test

// The fault suite: the daemon runs as a subprocess under generated load while things
// break, and every test checks the fake CRMs' state by record key: nothing lost, nothing twice.
// The short form is in the slow tier (PBXBRIDGE_TESTS=slow, never under -race, see
// skipSubprocess); the full form in the long tier (PBXBRIDGE_TESTS=long, make fault).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/loadtest"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fake"
)

// pick returns the short value, or the full one in the long tier.
func pick[T any](t *testing.T, short, long T) T {
	t.Helper()
	if testkit.Selected(t, testkit.Long) {
		return long
	}
	return short
}

// background runs the load of n calls at rate and returns a channel closed when every call has
// finished at the PBX.
func background(t *testing.T, e *loadtest.Env, rate float64, n int, seed uint64) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := e.PBX.Load(context.Background(), fakepbx.LoadOptions{Rate: rate, Calls: n, Seed: seed}); err != nil {
			t.Errorf("load: %v", err)
		}
	}()
	return done
}

func wait(t *testing.T, ch <-chan struct{}, limit time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(limit):
		t.Fatalf("%s did not finish within %v", what, limit)
	}
}

// assertExactlyOnce fails for every record of the given verdicts that a CRM holds other than
// exactly once, and returns how many were checked.
func assertExactlyOnce(t *testing.T, vs []loadtest.Verdict) int {
	t.Helper()
	lost, dup := loadtest.Tally(vs)
	for c, keys := range lost {
		t.Errorf("%s: %d records lost: %v", c, len(keys), head(keys))
	}
	for c, keys := range dup {
		t.Errorf("%s: %d records logged more than once: %v", c, len(keys), head(keys))
	}
	return len(vs)
}

func head(keys []string) []string {
	if len(keys) > 10 {
		return append(keys[:10:10], "…")
	}
	return keys
}

// inFlight is how long before a SIGKILL a call may have ended and still be unknown to the
// restarted daemon's model and ledger: AMI has no replay, so the events in the PBX's send queue
// and the socket buffers, and a finished call not yet committed to the outbox, die with the
// process. A generous bound of that path (PBX → socket → call model → durable commit) on a
// loaded 2-CPU machine. The window runs on until the new process has logged in (the signal takes
// a moment to land; the PBX keeps queueing events to the dying session until its socket closes).
const inFlight = time.Second

// TestFaultKillDuringLoad: the daemon is SIGKILLed repeatedly (3 times; 20 in the full form)
// while the PBX generates calls and writes their CDR, and restarted after a random pause. Every
// call reaches each CRM exactly once, whenever it happened:
//
//   - ended while the daemon was connected, or still in progress when it came back (it learns
//     those from the first login's channel snapshot): from the live model;
//   - rang while it was up and ended while it was dead: finished at the restart from the
//     open-calls ledger (flag ended_unseen), or, when the ledger has no number to log it with
//     (a click-to-call still ringing the agent), from the CDR;
//   - began during the outage, or an outbound attempt nobody answered that ended during it (no
//     live event to keep), or ended in the last second before a kill (its hangup may not have
//     been read or committed): recovered from the CDR after the restart (flag
//     recovered_from_cdr).
//
// The CDR is the PBX's Master.csv; in the full form the kills are run again with FreePBX's
// cdr table in MariaDB.
func TestFaultKillDuringLoad(t *testing.T) {
	skipSubprocess(t)
	t.Run("csv", func(t *testing.T) { faultKill(t, "csv") })
	t.Run("mysql", func(t *testing.T) {
		testkit.Tier(t, testkit.Long) // the kills with FreePBX's cdr table: the full form only
		faultKill(t, "mysql")
	})
}

func faultKill(t *testing.T, source string) {
	t.Helper()
	kills := pick(t, 3, 20)
	dir := t.TempDir()
	cdrCfg := &fakepbx.CDRConfig{}
	opts := loadtest.DaemonOptions{Dir: dir, Connectors: []string{loadtest.ConnBitrix24, loadtest.ConnAmo, loadtest.ConnFake},
		Unlimited: true, Workers: 4, FakeLog: filepath.Join(dir, "fake.jsonl")}
	switch source {
	case "csv":
		cdrCfg.CSVPath = filepath.Join(dir, "Master.csv")
		opts.CDRCSV = cdrCfg.CSVPath
	case "mysql":
		cdrCfg.MySQLDSN = mariaDB.Database(t, fakepbx.FreePBXCDRSchema)
		opts.CDRMySQL = cdrCfg.MySQLDSN
	}
	e := startEnv(t, loadtest.EnvOptions{
		PBX:    fakepbx.Config{Speed: 4, CDR: cdrCfg},
		CRM:    loadtest.CRMOptions{Latency: 5 * time.Millisecond},
		Daemon: opts,
	})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	const rate = 10
	// Enough calls to outlast the kills (each cycle: up to 3 s alive, up to 1.5 s dead, restart).
	n := int(rate * (float64(kills)*5 + 5))
	loadDone := background(t, e, rate, n, 0)
	type outage struct{ killed, back time.Time }
	var outages []outage
	for i := range kills {
		time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
		logins := e.PBX.Stats().Logins
		o := outage{killed: time.Now()}
		if err := e.Daemon.Kill(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		if err := e.Daemon.Start(ctx); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
		testkit.WaitFor(t, 20*time.Second, fmt.Sprintf("an AMI login after restart %d", i+1), func() bool {
			return e.PBX.Stats().Logins != logins
		})
		o.back = time.Now()
		outages = append(outages, o)
	}
	wait(t, loadDone, 3*time.Minute, "the load")
	if err := e.WaitNoOpenCalls(ctx, 30*time.Second); err != nil {
		t.Error(err)
	}
	// The last restart's recovery runs pbx.cdr.delay after its login.
	time.Sleep(2 * time.Second)
	if err := e.WaitDrained(ctx, 3*time.Minute, -1); err != nil {
		t.Fatal(err)
	}

	// Classify every finished call by when it ended.
	var must, ended, known, window []loadtest.Verdict
	for _, v := range e.Check(nil) {
		tr := traceOf(e, v.Key)
		class := "connected"
		switch {
		case tr == nil:
			t.Fatalf("no trace for %s", v.Key)
		case !tr.HangupSeen:
			class = "down"
			// It rang while the daemon was up (after its previous restart, and long enough
			// before the kill for the ring to be stored): the restart finishes it from the
			// open-calls ledger.
			for i, o := range outages {
				prev := time.Time{}
				if i > 0 {
					prev = outages[i-1].back
				}
				if len(tr.Rings) > 0 && !tr.Hangup.Before(o.killed) && tr.Hangup.Before(o.back) &&
					tr.Rings[0].At.After(prev) && tr.Rings[0].At.Before(o.killed.Add(-inFlight)) {
					class = "known"
				}
			}
		default:
			for _, o := range outages {
				if !tr.Hangup.Before(o.killed.Add(-inFlight)) && tr.Hangup.Before(o.back) {
					class = "window"
				}
			}
		}
		switch class {
		case "connected":
			must = append(must, v)
		case "down":
			ended = append(ended, v)
		case "known":
			known = append(known, v)
		case "window":
			window = append(window, v)
		}
	}
	all := append(append(append(append([]loadtest.Verdict(nil), must...), known...), ended...), window...)
	checked := assertExactlyOnce(t, all)
	records := fakeLog(t, filepath.Join(dir, "fake.jsonl"))
	flagged := func(vs []loadtest.Verdict, flag string) int {
		k := 0
		for _, v := range vs {
			if r, ok := records[v.Key]; ok && r.Record.HasFlag(flag) {
				k++
			}
		}
		return k
	}
	// origin says where the records of a class came from.
	origin := func(vs []loadtest.Verdict) string {
		cdr, ledger := flagged(vs, call.FlagRecoveredFromCDR), flagged(vs, call.FlagEndedUnseen)
		return fmt.Sprintf("%d from the CDR, %d from the open-calls ledger, %d from the live events", cdr, ledger, len(vs)-cdr-ledger)
	}
	if lost, _ := loadtest.Tally(all); len(lost) > 0 {
		for _, v := range all {
			if v.Logged[loadtest.ConnBitrix24] > 0 && v.Logged[loadtest.ConnAmo] > 0 {
				continue
			}
			if r, ok := records[v.Key]; ok {
				t.Logf("the daemon built %s as %s %s customer %q flags %v", v.Key, r.Record.Direction, r.Record.Disposition, r.Record.Customer, r.Record.Flags)
			}
			tr := traceOf(e, v.Key)
			var rel []string
			for _, o := range outages {
				rel = append(rel, fmt.Sprintf("killed %v, back %v", o.killed.Sub(tr.First).Round(time.Millisecond), o.back.Sub(tr.First).Round(time.Millisecond)))
			}
			ring := "no ring"
			if len(tr.Rings) > 0 {
				ring = fmt.Sprintf("first ring at %v", tr.Rings[0].At.Sub(tr.First).Round(time.Millisecond))
			}
			t.Logf("lost %s (%s): lasted %v, %s, hangup seen %v, %d of %d events unseen; relative to its start: %v", v.Key, v.Scenario,
				tr.Last.Sub(tr.First).Round(time.Millisecond), ring, tr.HangupSeen, tr.Unseen, tr.Events, rel)
		}
	}
	if len(must) < n/2 {
		t.Errorf("only %d of %d calls ended while the daemon was connected", len(must), n)
	}
	if m, err := e.Daemon.Metrics(ctx); err == nil && m.Sum("pbxbridge_cdr_recoveries_total") == 0 {
		t.Error("no CDR recovery ran in the last run")
	}
	var downtime time.Duration
	for _, o := range outages {
		downtime += o.back.Sub(o.killed)
	}
	t.Logf("CDR in %s; %d kills (daemon down %v in all); %d calls; %d records, each delivered exactly once to each CRM: "+
		"%d ended while the daemon was connected; %d rang while it was up and ended while it was down (%s); "+
		"%d others ended while it was down (began during the outage, or an outbound attempt nobody answered: %s); "+
		"%d ended from %v before a kill to the restart (%s); %d records recovered from the CDR in all",
		source, len(outages), downtime.Round(time.Millisecond), n, checked, len(must), len(known), origin(known),
		len(ended), origin(ended), len(window), inFlight, origin(window), flagged(all, call.FlagRecoveredFromCDR))
}

func traceOf(e *loadtest.Env, key string) *loadtest.CallTrace {
	for _, tr := range e.PBX.Traces() {
		if _, ok := e.Expected.Keys(&tr)[key]; ok {
			return &tr
		}
	}
	return nil
}

// fakeLog reads the records the fake connector logged, by key.
func fakeLog(t *testing.T, path string) map[string]fake.Line {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fake.Line{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l fake.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("fake connector log: %v", err)
		}
		out[l.Key] = l
	}
	return out
}

// TestFaultAMIDrops: the PBX drops the AMI connection every 10 s of load (every 6 s in the short
// form) while calls go on. Every call is logged exactly once by both CRMs, and its disposition
// and direction are what really happened (the scenario's expected record): the calls the daemon
// saw, and those that began and ended while the connection was down, invisible over AMI and
// recovered from the PBX's Master.csv after the reconnect (flag recovered_from_cdr). A call whose
// answer and hangup both fell into a gap cannot be known as answered; those are counted apart.
func TestFaultAMIDrops(t *testing.T) {
	skipSubprocess(t)
	dir := t.TempDir()
	// The short form drops every 6 s: longer than the AMI source's StableAfter (5 s), as 10 s is.
	every := pick(t, 6*time.Second, 10*time.Second)
	dur := pick(t, 18*time.Second, 2*time.Minute)
	csv := filepath.Join(dir, "Master.csv")
	e := startEnv(t, loadtest.EnvOptions{
		PBX: fakepbx.Config{Speed: 2, DropEvery: every, CDR: &fakepbx.CDRConfig{CSVPath: csv}},
		Daemon: loadtest.DaemonOptions{Dir: dir, Connectors: []string{loadtest.ConnBitrix24, loadtest.ConnAmo, loadtest.ConnFake},
			Unlimited: true, Workers: 4, FakeLog: filepath.Join(dir, "fake.jsonl"), CDRCSV: csv},
	})
	ctx := context.Background()
	const rate = 5
	n := int(rate * dur.Seconds())
	wait(t, background(t, e, rate, n, 0), dur+time.Minute, "the load")
	// Calls whose end fell into a gap are finished by the next reconnect's snapshot, those that
	// began in it too are recovered from the CDR pbx.cdr.delay after it.
	if err := e.WaitNoOpenCalls(ctx, every+30*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := e.WaitDrained(ctx, 2*time.Minute, -1); err != nil {
		t.Fatal(err)
	}
	drops := e.PBX.Stats().Drops
	if drops < uint64(dur/every)-1 {
		t.Fatalf("only %d drops in %v", drops, dur)
	}
	records := fakeLog(t, filepath.Join(dir, "fake.jsonl"))
	var seen []loadtest.Verdict
	invisible, blind, wrong := 0, 0, 0
	for _, v := range e.Check(nil) {
		tr := traceOf(e, v.Key)
		got, ok := records[v.Key]
		switch {
		case !ok:
			t.Errorf("%s (%s, %d of %d events unseen): no record at all", v.Key, v.Scenario, tr.Unseen, tr.Events)
			continue
		case tr.FirstSeen.IsZero():
			// Began and ended while disconnected: from the CDR, and right.
			invisible++
			seen = append(seen, v)
			if !got.Record.HasFlag(call.FlagRecoveredFromCDR) || got.Record.Disposition != v.Record.Disposition ||
				got.Record.Direction != v.Record.Direction {
				t.Errorf("%s (%s, began and ended in a gap): %s %s flags %v, want %s %s recovered from the CDR", v.Key, v.Scenario,
					got.Record.Direction, got.Record.Disposition, got.Record.Flags, v.Record.Direction, v.Record.Disposition)
			}
			continue
		case tr.Unseen > 0:
			blind++
		}
		if got.Record.Direction != v.Record.Direction && tr.Unseen > 0 {
			// Built from part of the call, as another direction: it is not the CRMs' to log.
			wrong++
			t.Logf("unknowable: %s (%s, %d of %d events unseen): built as %s %s, want %s %s", v.Key, v.Scenario, tr.Unseen, tr.Events,
				got.Record.Direction, got.Record.Disposition, v.Record.Direction, v.Record.Disposition)
			continue
		}
		seen = append(seen, v)
		if got.Record.Disposition != v.Record.Disposition || got.Record.Direction != v.Record.Direction {
			msg := fmt.Sprintf("%s (%s, %d of %d events unseen): %s %s, want %s %s", v.Key, v.Scenario, tr.Unseen, tr.Events,
				got.Record.Direction, got.Record.Disposition, v.Record.Direction, v.Record.Disposition)
			if tr.Unseen == 0 {
				t.Error(msg)
			} else {
				wrong++
				t.Log("unknowable: " + msg)
			}
		}
	}
	assertExactlyOnce(t, seen)
	if t.Failed() {
		want := map[string]bool{}
		for _, v := range e.Check(nil) {
			want[v.Key] = true
		}
		for k, l := range records {
			if !want[k] {
				t.Logf("the fake connector logged an unexpected record %s: %+v", k, l.Record)
			}
		}
		if m, err := e.Daemon.Metrics(ctx); err == nil {
			t.Logf("calls open in the daemon: %v", m.Sum("pbxbridge_calls_open"))
		}
	}
	st, err := e.Daemon.Status(ctx)
	if err == nil && len(st.PBX) == 1 {
		t.Logf("%d drops, %d AMI reconnects seen by the daemon", drops, st.PBX[0].Reconnects)
	}
	t.Logf("%d calls; %d records seen by the daemon, each logged once by both CRMs; %d had events in a gap "+
		"(%d of them with a direction or disposition the daemon could not know); %d began and ended inside a gap, recovered from the CDR",
		n, len(seen), blind, wrong, invisible)
}

// TestFaultCRMDown: both CRMs answer 503 to everything for 10 simulated minutes in the middle of
// the load, at their real rate limits (Bitrix24 2 req/s burst 50, amoCRM 7 req/s). Simulated
// time: the outage is 10 s and the dispatcher's backoff cap 10 s (production: 10 minutes each),
// so the retries run through the same backoff states. Afterwards the backlog drains without
// the CRMs refusing a request for their rate limit, and nothing is lost or logged twice.
func TestFaultCRMDown(t *testing.T) {
	skipSubprocess(t)
	outage := pick(t, 10*time.Second, 60*time.Second)
	e := startEnv(t, loadtest.EnvOptions{
		PBX: fakepbx.Config{Speed: 4},
		CRM: loadtest.CRMOptions{B24RPS: 2, B24Burst: 50, AmoRPS: 7, Latency: 20 * time.Millisecond},
		Daemon: loadtest.DaemonOptions{Connectors: []string{loadtest.ConnBitrix24, loadtest.ConnAmo},
			BackoffMin: outage / 120, BackoffMax: outage},
	})
	ctx := context.Background()
	rate := pick(t, 1.0, 2.0)
	n := int(rate * (outage + 10*time.Second).Seconds())
	loadDone := background(t, e, rate, n, 0)
	time.Sleep(5 * time.Second)
	e.CRMs.SetDown(true)
	down := time.Now()
	time.Sleep(outage)
	st, err := e.Daemon.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var backlog int64
	for _, o := range st.Outbox {
		backlog += o.Pending + o.Leased
	}
	e.CRMs.SetDown(false)
	up := time.Now()
	refusedBefore := e.CRMs.B24.State().RateLimited + e.CRMs.Amo.State().RateLimited
	wait(t, loadDone, 2*time.Minute, "the load")
	if err := e.WaitDrained(ctx, 5*time.Minute, e.Records()); err != nil {
		t.Fatal(err)
	}
	drained := time.Since(up)
	n503 := 0
	for _, r := range e.CRMs.Requests() {
		if r.Status == 503 && r.Arrived.After(down) && r.Arrived.Before(up) {
			n503++
		}
	}
	refused := e.CRMs.B24.State().RateLimited + e.CRMs.Amo.State().RateLimited - refusedBefore
	if refused > 0 {
		t.Errorf("the CRMs refused %d requests for their rate limit while the backlog drained", refused)
	}
	if backlog == 0 || n503 == 0 {
		t.Errorf("the outage left no backlog (%d) or saw no request (%d answered 503)", backlog, n503)
	}
	checked := assertExactlyOnce(t, waitLogged(t, e, 30*time.Second))
	t.Logf("%v outage: %d requests answered 503, backlog %d rows at its end; %d records delivered exactly once, drained %v after the CRMs came back",
		outage, n503, backlog, checked, drained.Round(100*time.Millisecond))
}

// TestFaultDiskFull: the state directory is a small tmpfs that fills up during the load. The AMI
// connection is untouched (no drop, no reconnect), the daemon shows the problem (its log, the
// outbox write error counter, the held-records gauge, status HeldCalls), and when space returns
// every held call is stored and delivered: nothing acknowledged is lost. Skipped where tmpfs
// cannot be mounted (not root, or no CAP_SYS_ADMIN in a container).
func TestFaultDiskFull(t *testing.T) {
	skipSubprocess(t)
	if runtime.GOOS != "linux" {
		t.Skip("tmpfs: Linux only")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", state).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the state directory (%v: %s); the disk-full test needs root", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = syscall.Unmount(state, syscall.MNT_DETACH) })
	e := startEnv(t, loadtest.EnvOptions{
		PBX:    fakepbx.Config{Speed: 4},
		Daemon: loadtest.DaemonOptions{Dir: dir, StateDir: state, Connectors: []string{loadtest.ConnBitrix24, loadtest.ConnAmo}, Unlimited: true, Workers: 4},
	})
	ctx := context.Background()
	const rate = 5
	fullFor := pick(t, 10*time.Second, 60*time.Second)
	n := int(rate * (fullFor + 10*time.Second).Seconds())
	loadDone := background(t, e, rate, n, 0)
	time.Sleep(3 * time.Second)

	logins, drops := e.PBX.Stats().Logins, e.PBX.Stats().Drops
	filler := filepath.Join(state, "filler")
	fill(t, filler)
	time.Sleep(fullFor)
	m, err := e.Daemon.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.Daemon.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writeErrors, held := m.Sum("pbxbridge_outbox_write_errors_total"), m.Sum("pbxbridge_intake_held_records")
	if writeErrors == 0 || st.HeldCalls == 0 {
		t.Errorf("disk full not visible: write errors %v, held gauge %v, status held %d", writeErrors, held, st.HeldCalls)
	}
	if log := e.Daemon.Log(); !strings.Contains(log, "cannot store a finished call") || !strings.Contains(log, "disk is full") {
		t.Errorf("the log does not say the disk is full:\n%s", e.Daemon.LogTail(3000))
	}
	if s := e.PBX.Stats(); s.Logins != logins || s.Drops != drops || s.Sessions != 1 {
		t.Errorf("telephony touched: logins %d→%d, drops %d→%d, sessions %d", logins, s.Logins, drops, s.Drops, s.Sessions)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	wait(t, loadDone, 2*time.Minute, "the load")
	if err := e.WaitDrained(ctx, 3*time.Minute, e.Records()); err != nil {
		t.Fatal(err)
	}
	if s := e.PBX.Stats(); s.Logins != logins {
		t.Errorf("the AMI connection was re-established %d times", s.Logins-logins)
	}
	checked := assertExactlyOnce(t, waitLogged(t, e, 30*time.Second))
	t.Logf("disk full for %v: %v outbox write errors, %d calls held in memory at the end of it; %d records delivered exactly once, %v after space returned",
		fullFor, writeErrors, st.HeldCalls, checked, time.Since(freed).Round(100*time.Millisecond))
}

// fill writes path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !strings.Contains(err.Error(), "no space") {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

// TestFaultSlowCRM: both CRMs take 5 s to answer every request. The daemon's goroutines and
// memory stay bounded (sampled every second: the later half of the run may not exceed the
// earlier by much), and once the CRMs are fast again everything is delivered exactly once.
func TestFaultSlowCRM(t *testing.T) {
	skipSubprocess(t)
	e := startEnv(t, loadtest.EnvOptions{
		PBX:    fakepbx.Config{Speed: 4},
		Daemon: loadtest.DaemonOptions{Connectors: []string{loadtest.ConnBitrix24, loadtest.ConnAmo}, Unlimited: true, Workers: 4},
	})
	ctx := context.Background()
	dur := pick(t, 20*time.Second, 2*time.Minute)
	const rate = 10
	e.CRMs.SetDelay(5 * time.Second)
	loadDone := background(t, e, rate, int(rate*dur.Seconds()), 0)
	var gor, rss []float64
	for range int(dur.Seconds()) + 5 {
		time.Sleep(time.Second)
		m, err := e.Daemon.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := e.Daemon.Proc()
		if err != nil {
			t.Fatal(err)
		}
		gor = append(gor, m.Sum("go_goroutines"))
		rss = append(rss, float64(ps.RSS)/(1<<20))
	}
	maxG, maxR := maxOf(gor), maxOf(rss)
	half := len(gor) / 2
	g1, g2 := maxOf(gor[:half]), maxOf(gor[half:])
	r1, r2 := maxOf(rss[:half]), maxOf(rss[half:])
	t.Logf("with a 5 s CRM: goroutines max %.0f (first half %.0f, second %.0f), RSS max %.1f MB (%.1f, %.1f); CRM requests in flight at most %d",
		maxG, g1, g2, maxR, r1, r2, e.CRMs.MaxInFlight())
	if maxG > 400 || g2 > g1*1.25+20 {
		t.Errorf("goroutines not bounded: %v", gor)
	}
	if maxR > 150 || r2 > r1*1.25+10 {
		t.Errorf("memory not bounded (MB): %v", rss)
	}
	e.CRMs.SetDelay(0)
	wait(t, loadDone, 2*time.Minute, "the load")
	if err := e.WaitDrained(ctx, 3*time.Minute, e.Records()); err != nil {
		t.Fatal(err)
	}
	assertExactlyOnce(t, waitLogged(t, e, 30*time.Second))
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
