package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// finishes counts the finish commands the portal received, alone or inside batches.
func finishes(s fakecrm.B24State) int {
	return s.Requests["telephony.externalcall.finish"] + s.BatchCommands["telephony.externalcall.finish"]
}

// TestFinishBatchedUnderBacklog: while the rate limit holds deliveries back, the finishes of
// the calls waiting go together in batch requests; each call is still finished exactly once,
// with its own user, duration and status.
func TestFinishBatchedUnderBacklog(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.RateLimit = RateLimitConfig{RPS: 20, Burst: 3, LiveReserve: 1}
	})
	if err := e.a.users.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	var recs []*call.Record
	for i := range e.a.DeliverConcurrency() { // as many as the dispatcher runs at once: no linger
		_, rec := missedCall(fmt.Sprintf("1795320%03d.1", i), float64(1795320000+i))
		rec.Rang = []string{[]string{"101", "102", "103"}[i%3]}
		recs = append(recs, rec)
	}
	errs := deliverAll(e.a, recs, len(recs))
	for _, err := range errs {
		t.Error(err)
	}
	s := f.State()
	mustf(t, s.Requests["batch"] > 0 && s.BatchCommands["telephony.externalcall.finish"] > 0,
		"no finish went in a batch: requests %v, batched %v", s.Requests, s.BatchCommands)
	mustf(t, finishes(s) == len(recs), "%d finish commands for %d calls", finishes(s), len(recs))
	users := map[string]int{"101": 1269, "102": 1270, "103": 1271}
	for _, r := range recs {
		c := onlyCall(t, s, r.Key())
		mustf(t, c.State == "finished" && c.FinishUserID == users[r.Rang[0]] && c.StatusCode == "304",
			"call %s: %+v", r.Key(), c)
	}
	perCall := float64(totalRequests(s)-1) / float64(len(recs)) // minus the user.get of the cache
	t.Logf("%d missed calls: %d requests (%.2f per call), %d batches, %v", len(recs), totalRequests(s), perCall, s.Requests["batch"], s.Requests)
	mustf(t, perCall < 1.7, "%.2f requests per missed call, want register + a share of a batch", perCall)
}

// TestFinishLookedUpBeforeResend: a finish whose answer does not decode (it ran) is not sent
// again: the next attempt finds the call in the telephony statistics. Without the permission
// to read them, the finish is sent again and its "Call is not found" is checked the old way.
func TestFinishLookedUpBeforeResend(t *testing.T) {
	t.Parallel()
	for _, denied := range []bool{false, true} {
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f)
		rec := answeredInbound(e, fmt.Sprintf("1795321000.%v", denied), "101")
		f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, GarbleMethods: []string{"telephony.externalCall.finish"}, StatisticDenied: denied})
		err := e.a.Deliver(context.Background(), rec)
		if c, _ := crm.Classify(err); c != crm.ClassTransient {
			t.Fatalf("deliver with an unreadable finish answer: %v, want transient", err)
		}
		mustf(t, f.Logged(rec.Key()) == 1, "the fake did not finish the call")
		for range 3 { // the answers stay unreadable: nothing must loop
			if err := e.a.Deliver(context.Background(), rec); err == nil {
				break
			}
		}
		s := f.State()
		c := onlyCall(t, s, rec.Key())
		mustf(t, c.Record != nil, "denied=%v: recording not attached", denied)
		mustf(t, f.Logged(rec.Key()) == 1 && len(s.Calls) == 1, "denied=%v: call logged %d times, %d calls", denied, f.Logged(rec.Key()), len(s.Calls))
		lookups := s.Requests["voximplant.statistic.get"]
		if denied {
			mustf(t, lookups == 1 && finishes(s) == 2, "denied: %d look-ups, %d finishes, want 1 refused look-up and the finish sent again", lookups, finishes(s))
			mustf(t, testutil.ToFloat64(e.a.m.finishLookups.WithLabelValues("unavailable")) == 1, "unavailable look-up not counted")
		} else {
			mustf(t, lookups == 1 && finishes(s) == 1, "%d look-ups, %d finishes, want 1 look-up and no second finish", lookups, finishes(s))
			mustf(t, testutil.ToFloat64(e.a.m.finishLookups.WithLabelValues("finished")) == 1, "look-up not counted")
		}
	}
}

// TestFinishLookupNotFinished: when the statistics do not have the call, the finish is sent
// again.
func TestFinishLookupNotFinished(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	_, rec := missedCall("1795321100.1", 1795321100)
	// The first finish fails before it runs (500): its outcome is unknown to the adapter.
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, FailRate: 1, FailMethods: []string{"telephony.externalCall.finish"}})
	if err := e.a.Deliver(context.Background(), rec); err == nil {
		t.Fatal("deliver succeeded with every finish failing")
	}
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true})
	e.deliver(rec)
	s := f.State()
	mustf(t, f.Logged(rec.Key()) == 1, "logged %d times", f.Logged(rec.Key()))
	mustf(t, s.Requests["voximplant.statistic.get"] == 1, "look-ups %d", s.Requests["voximplant.statistic.get"])
	mustf(t, testutil.ToFloat64(e.a.m.finishLookups.WithLabelValues("not_finished")) == 1, "not counted")
}

// badRecordings refuses every recording as the daemon's recordings server refuses a path
// outside recordings.dir.
type badRecordings struct{}

func (badRecordings) URL(string) string { return "" }
func (badRecordings) Open(p string) (crm.Recording, error) {
	return nil, fmt.Errorf("recordings: path %q is not inside the recordings directory /srv/rec: %w", p, errors.New("relative path element"))
}

// TestRecordingOutsideDir: a recording pbxbridge cannot open (recordings.dir does not hold the
// PBX's files) is retried for recordings.wait after the call, then skipped with a warning in the
// timeline and a metric, and the call counts as delivered: it never stays pending.
func TestRecordingOutsideDir(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	now := time.Date(2026, 11, 22, 0, 3, 8, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, f, func(p *crm.Params, _ *Config) { p.Recordings = badRecordings{}; p.Now = clock })
	rec := answeredInbound(e, "1795321200.1", "101")
	err := e.a.Deliver(context.Background(), rec)
	mustf(t, err != nil && !errors.Is(err, fs.ErrNotExist), "within recordings.wait: %v, want a retry", err)
	mustf(t, f.Logged(rec.Key()) == 1, "the call was not finished before the recording")
	mu.Lock()
	now = now.Add(e.a.cfg.Recordings.Wait)
	mu.Unlock()
	var warnings []string
	ctx := crm.WithTrace(context.Background(), func(kind, summary, _ string) {
		if kind == "decision" {
			warnings = append(warnings, summary)
		}
	})
	if err := e.a.Deliver(ctx, rec); err != nil {
		t.Fatalf("after recordings.wait: %v, want delivered without the recording", err)
	}
	mustf(t, len(warnings) == 1 && strings.Contains(warnings[0], "recording not attached") && strings.Contains(warnings[0], "recordings.dir"),
		"timeline warnings %q", warnings)
	mustf(t, testutil.ToFloat64(e.a.m.recordings.WithLabelValues("skipped_unreadable")) == 1, "skip not counted")
	mustf(t, finishes(f.State()) == 1, "finish sent %d times", finishes(f.State()))
}

// TestLiveStaleShowGivesUp: a ringing register or show waiting for its rate-limit slot gives up
// when the daemon cancels it as stale, returns an error wrapping crm.ErrLiveStale, and sends
// nothing; a hide of a card that was shown still goes out.
func TestLiveStaleShowGivesUp(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.RateLimit = RateLimitConfig{RPS: 0.5, Burst: 2, LiveReserve: 1}
	})
	sc := scenarios()[1]                                            // inbound_ringgroup: 101 and 102 ring, 102 answers
	if err := e.a.users.refresh(context.Background()); err != nil { // takes a slot
		t.Fatal(err)
	}
	e.live(sc.live[0]) // register for 101: the last slot
	before := f.State()
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.a.Live(ctx, &sc.live[1]) }() // show to 102: waits about 2 s for a slot
	waitCond(t, "the show to wait for its slot", func() bool {
		n, err := testutil.GatherAndCount(e.reg, "pbxbridge_bitrix24_limiter_wait_seconds")
		return err == nil && n > 0 && e.a.bucket.Available() < 1
	})
	cancel(&crm.StaleError{Reason: crm.LiveDropAnsweredElsewhere})
	err := <-done
	mustf(t, errors.Is(err, crm.ErrLiveStale) && crm.StaleReason(err) == crm.LiveDropAnsweredElsewhere, "stale show: %v", err)
	after := f.State()
	mustf(t, totalRequests(after) == totalRequests(before), "the stale show sent requests: %v -> %v", before.Requests, after.Requests)
	// 101 stops ringing: its card was shown, so the hide goes out, whatever the wait.
	ev := sc.live[2]
	ev.Kind, ev.Ext = call.LiveStopRinging, "101"
	e.live(ev)
	var hidden bool
	for _, ce := range f.State().Cards {
		hidden = hidden || (ce.Action == "hide" && len(ce.Users) == 1 && ce.Users[0] == 1269)
	}
	mustf(t, hidden, "101's card was not hidden: %+v", f.State().Cards)
}

// waitCond re-checks cond until it holds or the deadline passes.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestBucketPrecedenceUnderBacklog: with a backlog of deliveries queued in the bucket, a live
// request gets the next slot (it never waits behind them), and the bucket never grants more
// than Burst plus the refills of the elapsed time.
func TestBucketPrecedenceUnderBacklog(t *testing.T) {
	t.Parallel()
	const rate, burst, reserve = 50.0, 5, 2
	b := api.NewBucket(rate, burst, reserve, nil)
	var mu sync.Mutex
	var grants []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 40 { // the backlog: 40 deliveries, 0.8 s of slots
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Wait(ctx, false); err == nil {
				mu.Lock()
				grants = append(grants, time.Now())
				mu.Unlock()
			}
		}()
	}
	waitCond(t, "a backlog", func() bool { mu.Lock(); defer mu.Unlock(); return len(grants) >= burst-reserve+3 })
	var worst time.Duration
	for range 5 {
		t0 := time.Now()
		if _, err := b.Wait(ctx, true); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		grants = append(grants, time.Now())
		mu.Unlock()
		worst = max(worst, time.Since(t0))
	}
	wg.Wait()
	// A live request waits at most one refill (20 ms), with scheduling slack; the deliveries
	// queued before it would take 0.8 s.
	mustf(t, worst < 200*time.Millisecond, "a live request waited %v behind the backlog", worst)
	mu.Lock()
	defer mu.Unlock()
	for i := range grants {
		for j := i; j < len(grants); j++ {
			window := grants[j].Sub(grants[i])
			if allowed := float64(burst) + rate*window.Seconds() + 1; float64(j-i+1) > allowed {
				t.Fatalf("%d grants within %v, more than burst + refills (%.1f)", j-i+1, window, allowed)
			}
		}
	}
}

// TestLiveStaleShowInFlight: a show already sent when its moment passes is left to finish: its
// answer says the card is up, so the hide that follows goes out.
func TestLiveStaleShowInFlight(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	sc := scenarios()[1] // inbound_ringgroup: 101 and 102 ring, 102 answers
	e.live(sc.live[0])   // register for 101
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, Latency: 300 * time.Millisecond})
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.a.Live(ctx, &sc.live[1]) }() // show to 102
	waitCond(t, "the show to reach the portal", func() bool { return f.State().Requests["telephony.externalcall.show"] == 1 })
	cancel(&crm.StaleError{Reason: crm.LiveDropCallEnded})
	if err := <-done; err != nil {
		t.Fatalf("a show in flight when it became stale: %v, want its answer", err)
	}
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true})
	ev := sc.live[1]
	ev.Kind = call.LiveStopRinging
	e.live(ev)
	var hidden bool
	for _, ce := range f.State().Cards {
		hidden = hidden || (ce.Action == "hide" && len(ce.Users) == 1 && ce.Users[0] == 1270)
	}
	mustf(t, hidden, "102's card was not hidden: %+v", f.State().Cards)
}
