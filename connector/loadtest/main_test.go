package loadtest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/cdr/cdrtest"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/loadtest"
)

// mariaDB holds FreePBX's cdr table for the fault suite's full form (asterisk/cdr/cdrtest).
var mariaDB cdrtest.MariaDB

// TestMain lets the test binary act as the daemon subprocess of the harness.
func TestMain(m *testing.M) {
	loadtest.RunChildIfRequested()
	code := m.Run()
	mariaDB.Stop()
	os.Exit(code)
}

func expected(t *testing.T) loadtest.Expected {
	t.Helper()
	e, err := loadtest.LoadExpected(filepath.Join("..", "callmodel", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startEnv starts a test bed that is closed at the end of the test; on failure the daemon's log
// tail is printed.
func startEnv(t *testing.T, o loadtest.EnvOptions) *loadtest.Env {
	t.Helper()
	if o.Daemon.Dir == "" {
		o.Daemon.Dir = t.TempDir()
	}
	o.Expected = expected(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := loadtest.StartEnv(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", e.Daemon.LogTail(6000))
		}
		e.Close()
	})
	return e
}

// skipSubprocess marks the tests that run the daemon as a subprocess: the slow tier
// (PBXBRIDGE_TESTS=slow), and never under -race (the race detector slows the pure-Go SQLite
// ~20×; these tests exercise processes and faults, not data races; .ci/run runs them in a
// separate step without -race).
func skipSubprocess(t *testing.T) {
	t.Helper()
	testkit.Tier(t, testkit.Slow)
	if testkit.RaceEnabled {
		t.Skip("subprocess fault test: runs without -race (see .ci/run)")
	}
}

// TestHarnessDeliversEveryScenario: the harness itself: every scenario played once reaches both
// fake CRMs exactly once, through the proxy, and the proxy saw ring and hangup timings.
func TestHarnessDeliversEveryScenario(t *testing.T) {
	skipSubprocess(t)
	e := startEnv(t, loadtest.EnvOptions{
		PBX:    fakepbx.Config{Speed: 8},
		Daemon: loadtest.DaemonOptions{Connectors: []string{loadtest.ConnBitrix24, loadtest.ConnAmo}, Unlimited: true},
	})
	ctx := context.Background()
	n, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: 20, Calls: 40})
	if err != nil || n != 40 {
		t.Fatalf("load: %d calls, %v", n, err)
	}
	if err := e.WaitDrained(ctx, 60*time.Second, e.Records()); err != nil {
		t.Fatal(err)
	}
	vs := waitLogged(t, e, 30*time.Second)
	lost, dup := loadtest.Tally(vs)
	if len(lost) > 0 || len(dup) > 0 {
		t.Fatalf("lost %v, duplicated %v", lost, dup)
	}
	if len(vs) < 25 {
		t.Fatalf("only %d records checked", len(vs))
	}
	reqs := e.CRMs.Requests()
	var reg, calls int
	for _, r := range reqs {
		switch r.Method {
		case "telephony.externalcall.register":
			reg += len(r.Keys)
		case "POST /api/v4/calls":
			calls += len(r.Keys)
		}
	}
	if reg == 0 || calls == 0 {
		t.Fatalf("the proxy saw %d registers and %d amoCRM calls among %d requests", reg, calls, len(reqs))
	}
	t.Logf("%d records checked, %d CRM requests", len(vs), len(reqs))
}

// waitLogged waits, once WaitDrained has returned, until every CRM holds every record of the
// finished calls at least once, and returns the verdicts (e.Check). A drained daemon is not
// proof enough: WaitDrained's conditions can all hold for a moment while a finished call is in
// neither the memory nor the outbox count (the daemon moving it from one to the other,
// connector/intake.go: enqueueLoop), so the test waits on the state it checks. What is still
// missing after limit is logged with the daemon's own account of it (the call's timeline and
// outbox rows, as `pbxbridge calls show` prints them), and the caller's check fails on it.
func waitLogged(t *testing.T, e *loadtest.Env, limit time.Duration) []loadtest.Verdict {
	t.Helper()
	var vs []loadtest.Verdict
	if testkit.Until(limit, func() bool {
		vs = e.Check(nil)
		lost, _ := loadtest.Tally(vs)
		return len(lost) == 0
	}) {
		return e.Check(nil)
	}
	lost, _ := loadtest.Tally(vs)
	seen := map[string]bool{}
	for c, keys := range lost {
		for _, k := range head(keys) {
			if seen[k] || k == "…" {
				continue
			}
			seen[k] = true
			var rep admin.CallReport
			err := admin.NewClient(e.Daemon.Socket).Do(context.Background(), http.MethodGet, "/v1/calls/"+k, nil, &rep)
			b, _ := json.MarshalIndent(rep, "", "  ")
			t.Logf("%s: %s not logged after %v; the daemon's report (%v):\n%s", c, k, limit, err, b)
		}
	}
	return vs
}
