package demo_test

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/demo"
)

// The demo as a new admin runs it, with its defaults, for 10 minutes: it ends with every call
// delivered to every CRM (lost 0, exit 0), the outbox never builds a backlog, and the calls cost
// the CRMs no more requests than the default rate was chosen for (demo.B24RequestsPerCall,
// demo.AmoRequestsPerCall). Long tier: PBXBRIDGE_TESTS=long.
func TestDemoTenMinutes(t *testing.T) {
	testkit.Tier(t, testkit.Long) // 10 minutes of demo
	duration := 10 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("PBXBRIDGE_DEMO_DURATION")); err == nil && d > 0 {
		duration = d // a shorter run while working on the test
	}
	t.Parallel()

	type counts struct{ b24, amo, kommo int }
	requests := func(e *demo.Env) counts {
		sum := func(m map[string]int) (n int) {
			for k, v := range m {
				if k != "oauth/token" && !strings.Contains(k, "access_token") {
					n += v
				}
			}
			return n
		}
		return counts{sum(e.B24.State().Requests), sum(e.Amo.State().Requests), sum(e.Kommo.State().Requests)}
	}
	var (
		mu         sync.Mutex
		env        *demo.Env
		before     counts
		maxBacklog = map[string]int64{}
		sampling   = make(chan struct{})
		sampled    = make(chan struct{})
	)
	var out, errOut testkit.Buffer
	signals := make(chan os.Signal, 2)
	io := demo.IO{Stdout: &out, Stderr: &errOut, Signals: signals, Started: func(e *demo.Env) {
		mu.Lock()
		env, before = e, requests(e)
		mu.Unlock()
		go func() { // the backlog, once a second, until the demo stops
			defer close(sampled)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-sampling:
					return
				case <-tick.C:
				}
				stats, err := e.Daemon.Outbox().Stats(context.Background())
				if err != nil {
					continue
				}
				mu.Lock()
				for _, s := range stats {
					maxBacklog[s.Connector] = max(maxBacklog[s.Connector], s.Pending+s.Leased)
				}
				mu.Unlock()
			}
		}()
	}}
	start := time.Now()
	code := make(chan int, 1)
	go func() {
		code <- demo.RunIO("test", []string{"--listen", "127.0.0.1:0", "--duration", duration.String()}, io)
	}()
	var stopAt time.Time
	waitFor(t, duration+time.Minute, "the end of the calls", func() bool {
		if strings.Contains(out.String(), " passed: no new calls") {
			stopAt = time.Now()
			return true
		}
		return false
	}, &out)
	var exit int
	select {
	case exit = <-code:
	case <-time.After(5 * time.Minute):
		signals <- os.Interrupt
		t.Fatalf("the demo did not drain within 5 minutes of its end; output:\n%s", out.String())
	}
	drain := time.Since(stopAt)
	close(sampling)
	<-sampled

	o := out.String()
	m := summaryRe.FindStringSubmatch(o)
	if exit != 0 || m == nil || m[6] != "0" || m[7] != "0" {
		t.Fatalf("exit %d, want 0 with lost 0; output:\n%s\nstderr:\n%s", exit, o, errOut.String())
	}
	played, _ := strconv.Atoi(m[1])
	mu.Lock()
	defer mu.Unlock()
	after := requests(env)
	perCall := func(n int) float64 { return float64(n) / float64(played) }
	t.Logf("%v of demo (%v with start and drain): %s", duration, time.Since(start).Round(time.Second), m[0])
	t.Logf("requests per call: b24 %.2f (%d), amo %.2f (%d), kommo %.2f (%d); b24 rate limited %d, amo 429 %d",
		perCall(after.b24-before.b24), after.b24-before.b24, perCall(after.amo-before.amo), after.amo-before.amo,
		perCall(after.kommo-before.kommo), after.kommo-before.kommo, env.B24.State().RateLimited, env.Amo.State().RateLimited)
	t.Logf("max backlog: %v; drain after the last call started: %v", maxBacklog, drain.Round(100*time.Millisecond))
	if c := perCall(after.b24 - before.b24); c > demo.B24RequestsPerCall {
		t.Errorf("a call cost Bitrix24 %.2f requests, more than the %.1f the default rate was chosen for", c, demo.B24RequestsPerCall)
	}
	for _, c := range []float64{perCall(after.amo - before.amo), perCall(after.kommo - before.kommo)} {
		if c > demo.AmoRequestsPerCall {
			t.Errorf("a call cost amoCRM/Kommo %.2f requests, more than the %.1f the default rate was chosen for", c, demo.AmoRequestsPerCall)
		}
	}
	// Deliveries keep pace: what waits at any moment is the last few calls, never a backlog.
	for c, n := range maxBacklog {
		if n > 10 {
			t.Errorf("%s had %d deliveries waiting at once", c, n)
		}
	}
	if re := regexp.MustCompile(`(?m)^waiting for `); re.MatchString(o) && drain > 30*time.Second {
		t.Errorf("the drain took %v", drain)
	}
}
