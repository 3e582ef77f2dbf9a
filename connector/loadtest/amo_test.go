package loadtest_test

// The amoCRM burst: the daemon (subprocess) against a fake amoCRM that refuses any request that
// would make more than 7 in a rolling second (not a token bucket), replaying the real
// transcripts at the rate of a 105-call burst in 114 s, with the "concurrent" scenario (20 calls
// at once from 20 numbers no contact has) played twice so that unknown numbers call again. The
// full form (the long tier, PBXBRIDGE_TESTS=long) is the 105-call burst itself; the short form (the
// slow tier) a third of it.

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector/loadtest"
)

// amoBurst is one run of the burst.
type amoBurst struct {
	e              *loadtest.Env
	from, to, end  time.Time
	calls          int           // replays of the default mix
	throttle       time.Duration // the fake answered 429 to everything for this long…
	throttledAt    time.Time     // …from then (zero: no throttle)
	recordsChecked int
}

// burstRate is the 105-call burst's: 105 calls in 114 s.
const burstRate = 105.0 / 114

func runAmoBurst(t *testing.T, calls int, throttleAfter, throttle time.Duration) *amoBurst {
	t.Helper()
	e := startEnv(t, loadtest.EnvOptions{
		PBX:    fakepbx.Config{Speed: 1},
		CRM:    loadtest.CRMOptions{AmoRPS: 7, AmoStrictWindow: true, Latency: 30 * time.Millisecond},
		Daemon: loadtest.DaemonOptions{Connectors: []string{loadtest.ConnAmo}},
	})
	b := &amoBurst{e: e, calls: calls, throttle: throttle}
	ctx := context.Background()
	time.Sleep(2 * time.Second) // start-up requests (account, users)
	b.from = time.Now()
	dur := time.Duration(float64(calls) / burstRate * float64(time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: burstRate, Calls: calls, Seed: 105}); err != nil {
			t.Errorf("load: %v", err)
		}
	}()
	// The 20 unknown numbers call at a quarter of the burst and again at two thirds.
	for _, at := range []time.Duration{dur / 4, dur * 2 / 3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(at)
			c, err := e.PBX.Play(ctx, "concurrent")
			if err != nil {
				t.Errorf("concurrent: %v", err)
				return
			}
			<-c.Done()
		}()
	}
	if throttle > 0 {
		time.Sleep(throttleAfter)
		b.throttledAt = time.Now()
		e.CRMs.Amo.ThrottleFor(throttle)
	}
	wg.Wait()
	b.to = time.Now()
	if err := e.WaitNoOpenCalls(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitDrained(ctx, 5*time.Minute, -1); err != nil {
		t.Fatal(err)
	}
	b.end = time.Now()
	b.recordsChecked = assertExactlyOnce(t, waitLogged(t, e, 30*time.Second))
	return b
}

// report logs the figures of BENCHMARKS.md and checks what every run must show: no block, no
// contract violation, nothing over 7 in any rolling second.
func (b *amoBurst) report(t *testing.T) {
	t.Helper()
	fs := b.e.CRMs.Amo.State()
	tm := b.e.Measure(b.from, b.to, b.end)
	perEndpoint := map[string]int{}
	total := 0
	for _, r := range b.e.CRMs.Requests() {
		if r.CRM == loadtest.CRMAmo && !r.Arrived.Before(b.from) {
			perEndpoint[r.Method]++
			total++
		}
	}
	var eps []string
	for k, v := range perEndpoint {
		eps = append(eps, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(eps)
	acks := tm.HangupToAck[loadtest.ConnAmo]
	m, err := b.e.Daemon.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d replays + 2 × concurrent in %v; %d records, each logged once; drained %v after the last call",
		b.calls, b.to.Sub(b.from).Round(time.Second), b.recordsChecked, b.end.Sub(b.to).Round(100*time.Millisecond))
	t.Logf("amoCRM: %d requests (%.2f per call): %v", total, float64(total)/float64(max(1, b.recordsChecked)), eps)
	t.Logf("amoCRM: 429 answers %d (throttled %d), 403 %d, most requests in one rolling second %d (over 7: %d), contract violations %d",
		fs.RateLimited, fs.Throttled, fs.Blocked, fs.MaxPerSecond, fs.OverLimit, fs.Violations)
	t.Logf("hangup→logged %v, max %v; ring→pop-up %v; pop-ups sent %.0f, dropped %.0f; incoming leads %d, notes on them %.0f",
		acks, acks.Quantile(1).Round(time.Millisecond), tm.RingToCard[loadtest.ConnAmo],
		m.Sum("pbxbridge_amocrm_popups_total", `result="sent"`), m.Sum("pbxbridge_amocrm_popups_total", `result="dropped"`),
		len(fs.Accounts[0].Unsorted), m.Sum("pbxbridge_amocrm_unknown_numbers_total", `action="unsorted_repeat"`))
	if fs.Blocked != 0 || fs.Violations != 0 {
		t.Errorf("blocked %d times, %d violations: %v", fs.Blocked, fs.Violations, fs.ViolationList)
	}
	if fs.MaxPerSecond > 7 || fs.OverLimit != 0 {
		t.Errorf("%d requests in one rolling second (%d over the limit)", fs.MaxPerSecond, fs.OverLimit)
	}
	if tm.NoAck[loadtest.ConnAmo] != 0 {
		t.Errorf("%d calls not logged", tm.NoAck[loadtest.ConnAmo])
	}
	if n := len(fs.Accounts[0].Unsorted); n != 20 {
		t.Errorf("%d incoming leads for the 20 unknown numbers that called twice", n)
	}
}

// TestAmoBurst: the burst against the rolling-second fake: no 429 at all.
func TestAmoBurst(t *testing.T) {
	skipSubprocess(t)
	b := runAmoBurst(t, pick(t, 35, 105), 0, 0)
	b.report(t)
	if fs := b.e.CRMs.Amo.State(); fs.RateLimited != 0 {
		t.Errorf("the fake answered 429 %d times", fs.RateLimited)
	}
}

// TestAmoBurst429: the same burst; a third of the way in the fake answers 429 to everything for
// 20 s, advising the time left. The whole account pauses (no request reaches the fake during
// the advised wait once the first 429 was answered), the refused requests go first afterwards,
// and every call is logged once, none later than the advised wait plus 10 s after it ended.
func TestAmoBurst429(t *testing.T) {
	skipSubprocess(t)
	const advised = 20 * time.Second
	calls := pick(t, 35, 105)
	b := runAmoBurst(t, calls, time.Duration(float64(calls)/burstRate/3*float64(time.Second)), advised)
	b.report(t)
	var first429 *loadtest.Request
	reqs := b.e.CRMs.Requests()
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].Arrived.Before(reqs[j].Arrived) })
	for i := range reqs {
		if reqs[i].CRM == loadtest.CRMAmo && reqs[i].Status == 429 {
			first429 = &reqs[i]
			break
		}
	}
	if first429 == nil {
		t.Fatal("no request met the throttle")
	}
	// Requests granted before the client read the first 429 may still arrive just after it.
	grace := first429.Answered.Add(200 * time.Millisecond)
	resume := b.throttledAt.Add(advised)
	var during []string
	var firstAfter time.Time
	for _, r := range reqs {
		if r.CRM != loadtest.CRMAmo {
			continue
		}
		if r.Arrived.After(grace) && r.Arrived.Before(resume) {
			during = append(during, fmt.Sprintf("%s at +%v", r.Method, r.Arrived.Sub(b.throttledAt).Round(time.Millisecond)))
		}
		if !r.Arrived.Before(resume) && firstAfter.IsZero() {
			firstAfter = r.Arrived
		}
	}
	fs := b.e.CRMs.Amo.State()
	t.Logf("throttle %v from +%v: %d requests refused (in flight when it began), %d sent during the advised wait, first request %v after it",
		advised, b.throttledAt.Sub(b.from).Round(time.Second), fs.Throttled, len(during), firstAfter.Sub(resume).Round(time.Millisecond))
	if len(during) > 0 {
		t.Errorf("%d requests were sent while the account was paused: %v", len(during), during)
	}
	tm := b.e.Measure(b.from, b.to, b.end)
	if worst := tm.HangupToAck[loadtest.ConnAmo].Quantile(1); worst > advised+10*time.Second {
		t.Errorf("a call was logged %v after it ended, more than the advised %v + 10 s", worst, advised)
	}
}
