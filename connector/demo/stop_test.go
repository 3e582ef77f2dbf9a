package demo_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// waitFor waits until cond holds, re-checking it, or fails the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool, out *testkit.Buffer) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; output:\n%s", limit, what, out.String())
		}
		time.Sleep(10 * time.Millisecond) // re-check the condition
	}
}

// demoRun is a demo program running in the test, with its interrupts in the test's hands.
type demoRun struct {
	out, errOut testkit.Buffer
	signals     chan os.Signal
	code        chan int
	env         chan *demo.Env
}

func startDemo(t *testing.T, started func(*demo.Env), args ...string) *demoRun {
	t.Helper()
	r := &demoRun{signals: make(chan os.Signal, 2), code: make(chan int, 1), env: make(chan *demo.Env, 1)}
	io := demo.IO{Stdout: &r.out, Stderr: &r.errOut, Signals: r.signals, ProgressEvery: 20 * time.Millisecond,
		Started: func(e *demo.Env) {
			if started != nil {
				started(e)
			}
			r.env <- e
		}}
	go func() {
		r.code <- demo.RunIO("test", append([]string{"--listen", "127.0.0.1:0", "--speed", "20", "--rate", "10"}, args...), io)
	}()
	t.Cleanup(func() {
		select {
		case r.signals <- os.Interrupt:
		default:
		}
		select {
		case r.signals <- os.Interrupt:
		default:
		}
		<-r.code
	})
	return r
}

// interrupt presses Ctrl-C once the output says has happened.
func (r *demoRun) interrupt(t *testing.T, has string) {
	t.Helper()
	waitFor(t, 30*time.Second, "output containing "+strconv.Quote(has), func() bool { return strings.Contains(r.out.String(), has) }, &r.out)
	r.signals <- os.Interrupt
}

func (r *demoRun) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-r.code:
		r.code <- code // for Cleanup
		return code
	case <-time.After(60 * time.Second):
		t.Fatalf("the demo did not stop; output:\n%s\nstderr:\n%s", r.out.String(), r.errOut.String())
	}
	return 0
}

var summaryRe = regexp.MustCompile(`(?m)^summary: (\d+) calls played, (\d+) built; delivered amo (\d+), b24 (\d+), kommo (\d+); lost (\d+); dead letters (\d+)(; kept (\d+) in (.+))?$`)

// The first Ctrl-C stops new calls, lets the calls in progress end and waits for every delivery,
// saying what it waits for; then the demo ends with nothing lost.
func TestCtrlCDrains(t *testing.T) {
	testkit.Tier(t, testkit.Slow) // runs the demo
	t.Parallel()
	var b24 *fakecrm.Bitrix24
	r := startDemo(t, func(e *demo.Env) {
		b24 = e.B24
		f := b24.Faults()
		f.Latency = 300 * time.Millisecond // Bitrix24 lags behind: deliveries wait when Ctrl-C comes
		b24.SetFaults(f)
	})
	r.interrupt(t, "answered by")
	waitFor(t, 30*time.Second, "a progress line naming Bitrix24", func() bool {
		return regexp.MustCompile(`(?m)^waiting for .*deliver(y|ies) \(.*b24 \d+.*\)(, about .* to go)?…  Ctrl-C again to stop now$`).MatchString(r.out.String())
	}, &r.out)
	f := b24.Faults()
	f.Latency = 0
	b24.SetFaults(f)
	if code := r.exit(t); code != 0 {
		t.Fatalf("exit %d; output:\n%s\nstderr:\n%s", code, r.out.String(), r.errOut.String())
	}
	out := r.out.String()
	m := summaryRe.FindStringSubmatch(out)
	if m == nil || m[6] != "0" || m[7] != "0" || m[8] != "" {
		t.Fatalf("no summary with lost 0; output:\n%s", out)
	}
	if !strings.Contains(out, "\nCtrl-C: no new calls; the calls in progress end and everything is delivered before the demo stops (Ctrl-C again to stop now)\n") {
		t.Errorf("no line saying what the first Ctrl-C does; output:\n%s", out)
	}
}

// A second Ctrl-C stops at once and says how many calls were not delivered: kept in the state
// folder with --state (and delivered by the next run), lost with the temporary folder otherwise
// (exit status 1).
func TestSecondCtrlCStopsAtOnce(t *testing.T) {
	testkit.Tier(t, testkit.Slow) // runs the demo
	t.Parallel()
	b24Down := func(e *demo.Env) { e.B24.Inject(fakecrm.FaultServerError) }
	stopTwice := func(t *testing.T, r *demoRun) (code int, out string, took time.Duration) {
		t.Helper()
		r.interrupt(t, "answered by") // amoCRM and Kommo deliver; Bitrix24 answers 500
		waitFor(t, 30*time.Second, "a progress line naming Bitrix24", func() bool {
			return regexp.MustCompile(`(?m)^waiting for .*b24 \d+`).MatchString(r.out.String())
		}, &r.out)
		at := time.Now()
		r.signals <- os.Interrupt
		code = r.exit(t)
		return code, r.out.String(), time.Since(at)
	}

	t.Run("temporary", func(t *testing.T) {
		t.Parallel()
		code, out, took := stopTwice(t, startDemo(t, b24Down))
		m := summaryRe.FindStringSubmatch(out)
		if code != 1 || m == nil || m[6] == "0" || m[8] != "" {
			t.Fatalf("exit %d, want 1 with calls lost; output:\n%s", code, out)
		}
		if !regexp.MustCompile(`(?m)^stopped at once: \d+ calls? not delivered yet \((amo \d+, )?b24 \d+(, kommo \d+)?(, \d+ still in progress)?\); they are lost with the demo's temporary folder \(--state DIR keeps them for the next run\)$`).MatchString(out) {
			t.Errorf("no line saying what is lost; output:\n%s", out)
		}
		t.Logf("second Ctrl-C to exit: %v\n%s", took, out)
		if took > 10*time.Second {
			t.Errorf("the second Ctrl-C took %v to stop the demo", took)
		}
	})

	t.Run("state", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "demo-state")
		code, out, _ := stopTwice(t, startDemo(t, b24Down, "--state", dir))
		m := summaryRe.FindStringSubmatch(out)
		if code != 0 || m == nil || m[6] != "0" || m[9] == "" || m[9] == "0" || m[10] != dir {
			t.Fatalf("exit %d, want 0 with calls kept in %s; output:\n%s", code, dir, out)
		}
		if !strings.Contains(out, "; they are kept in "+dir+" and leave with the next `pbxbridge demo --state "+dir+"`\n") {
			t.Errorf("no line saying where the calls are kept; output:\n%s", out)
		}
		kept, _ := strconv.Atoi(m[9])

		// The next run delivers them.
		r := startDemo(t, nil, "--state", dir, "--duration", "1ms")
		if code := r.exit(t); code != 0 {
			t.Fatalf("second run: exit %d; output:\n%s", code, r.out.String())
		}
		m = summaryRe.FindStringSubmatch(r.out.String())
		if b24, _ := strconv.Atoi(m[4]); m == nil || m[6] != "0" || m[7] != "0" || b24 < kept {
			t.Fatalf("second run did not deliver the %d kept calls to Bitrix24; output:\n%s", kept, r.out.String())
		}
	})
}
