package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// scripted is a CRM whose answers the test decides per call id.
type scripted struct {
	mu      sync.Mutex
	answer  func(rec *call.Record, attempt int) error
	calls   map[string]int
	block   chan struct{} // when set, Deliver waits for it (or ctx)
	started chan string
}

func (s *scripted) Deliver(ctx context.Context, rec *call.Record) error {
	s.mu.Lock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[rec.CallID]++
	n := s.calls[rec.CallID]
	s.mu.Unlock()
	crm.Trace(ctx, "request", "POST /calls "+rec.CallID, "")
	crm.CountRequest(ctx)
	if s.started != nil {
		s.started <- rec.CallID
	}
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.answer == nil {
		return nil
	}
	return s.answer(rec, n)
}

func (s *scripted) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

func openStore(t *testing.T, clock func() time.Time) *outbox.Store {
	t.Helper()
	st, err := outbox.Open(context.Background(), filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func enqueue(t *testing.T, st *outbox.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		rec := call.Record{CallID: id, Direction: call.Inbound, StartedAt: time.Unix(1700000000, 0).UTC()}
		b, _ := json.Marshal(rec)
		if err := st.Enqueue(context.Background(), outbox.Entry{Key: rec.Key(), StartedAt: rec.StartedAt, Payload: b, Connectors: []string{"crm1"}}); err != nil {
			t.Fatal(err)
		}
	}
}

func rowsIn(t *testing.T, st *outbox.Store, state outbox.State) []outbox.Row {
	t.Helper()
	rows, err := st.List(context.Background(), outbox.Filter{Connector: "crm1", State: state})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func runWorker(t *testing.T, w *Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, what, cond)
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	st := openStore(t, nil)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.Init("crm1")
	crmAPI := &scripted{answer: func(rec *call.Record, attempt int) error {
		switch rec.CallID {
		case "ok":
			return nil
		case "perm":
			return crm.Permanent(errors.New("400 bad phone number"))
		case "flaky": // fails twice, then works
			if attempt <= 2 {
				return crm.Transient(errors.New("502 bad gateway"))
			}
			return nil
		case "limited":
			return crm.RateLimited(errors.New("429"), time.Hour)
		}
		return fmt.Errorf("unexpected %s", rec.CallID)
	}}
	w := New(st, Options{Connector: "crm1", Adapter: crmAPI, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond, Poll: 2 * time.Millisecond}, m)
	enqueue(t, st, "ok", "perm", "flaky", "limited")
	stop := runWorker(t, w)
	waitFor(t, "flaky delivered", func() bool { return crmAPI.count("flaky") == 3 && len(rowsIn(t, st, outbox.Done)) == 2 })
	waitFor(t, "limited retried", func() bool { return crmAPI.count("limited") == 1 && len(rowsIn(t, st, outbox.Pending)) == 1 })
	stop()

	dead := rowsIn(t, st, outbox.Dead)
	if len(dead) != 1 || dead[0].Key != "perm" || dead[0].LastError != "400 bad phone number" {
		t.Fatalf("dead letters = %+v", dead)
	}
	pending := rowsIn(t, st, outbox.Pending)
	if len(pending) != 1 || pending[0].Key != "limited" || time.Until(pending[0].NextAttemptAt) < 50*time.Minute {
		t.Fatalf("rate-limited row not deferred by its Retry-After: %+v", pending)
	}
	if got := testutil.ToFloat64(m.deliveries.WithLabelValues("crm1", "delivered")); got != 2 {
		t.Errorf("delivered = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.deliveries.WithLabelValues("crm1", "retry")); got != 2 {
		t.Errorf("retry = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.deliveries.WithLabelValues("crm1", "dead")); got != 1 {
		t.Errorf("dead = %v, want 1", got)
	}
	tl, err := st.Timeline(context.Background(), "flaky")
	if err != nil || len(tl) < 5 {
		t.Fatalf("timeline of flaky = %+v, %v", tl, err)
	}
	if last := tl[len(tl)-1]; last.Kind != "delivered" {
		t.Errorf("last timeline entry %+v, want delivered", last)
	}
}

func TestUnlicensedConnectorWaits(t *testing.T) {
	t.Parallel()
	st := openStore(t, nil)
	crmAPI := &scripted{}
	var allowed atomic.Bool
	var asked atomic.Int32 // Allowed is asked before every lease
	w := New(st, Options{Connector: "crm1", Adapter: crmAPI, Poll: 2 * time.Millisecond, Allowed: func(string) bool {
		asked.Add(1)
		return allowed.Load()
	}}, nil)
	enqueue(t, st, "a", "b")
	stop := runWorker(t, w)
	defer stop()
	waitFor(t, "the worker to go round its loop unlicensed", func() bool { return asked.Load() >= 5 })
	if crmAPI.count("a")+crmAPI.count("b") != 0 {
		t.Fatal("an unlicensed connector delivered")
	}
	if w.Status().Licensed {
		t.Fatal("status says licensed")
	}
	allowed.Store(true)
	waitFor(t, "delivery after licensing", func() bool { return len(rowsIn(t, st, outbox.Done)) == 2 })
}

func TestAuthBrokenPausesConnector(t *testing.T) {
	t.Parallel()
	// The pause is measured on the worker's clock (the outbox shares it, for the rows' next
	// attempt): it ends when the test moves the clock, not after a real 100 ms.
	clock := testkit.NewClock(time.Now())
	st := openStore(t, clock.Now)
	var broken atomic.Bool
	broken.Store(true)
	crmAPI := &scripted{answer: func(*call.Record, int) error {
		if broken.Load() {
			return crm.AuthBroken(errors.New("invalid_grant"))
		}
		return nil
	}}
	var polls atomic.Int32 // Allowed is asked before every lease, paused or not
	w := New(st, Options{Connector: "crm1", Adapter: crmAPI, Poll: 2 * time.Millisecond, AuthPause: time.Minute, Clock: clock.Now,
		Allowed: func(string) bool { polls.Add(1); return true }}, nil)
	enqueue(t, st, "a", "b", "c")
	stop := runWorker(t, w)
	defer stop()
	waitFor(t, "auth failure", func() bool { return w.Status().AuthBroken })
	paused := polls.Load()
	waitFor(t, "the paused worker to go round its loop", func() bool { return polls.Load() >= paused+5 })
	total := crmAPI.count("a") + crmAPI.count("b") + crmAPI.count("c")
	if total > 2 { // at most the in-flight ones of the first lease
		t.Fatalf("a broken authorisation was hammered: %d attempts", total)
	}
	broken.Store(false)
	clock.Advance(time.Minute)
	waitFor(t, "delivery after re-authorisation", func() bool { return len(rowsIn(t, st, outbox.Done)) == 3 })
	if w.Status().AuthBroken {
		t.Fatal("still marked broken")
	}
}

func TestDrainFinishesThenReleases(t *testing.T) {
	t.Parallel()
	st := openStore(t, nil)
	crmAPI := &scripted{block: make(chan struct{}), started: make(chan string, 10)}
	w := New(st, Options{Connector: "crm1", Adapter: crmAPI, Concurrency: 1, Poll: 2 * time.Millisecond, DrainTimeout: 50 * time.Millisecond}, nil)
	enqueue(t, st, "slow")
	stop := runWorker(t, w)
	<-crmAPI.started
	stop() // the delivery never finishes: after the drain timeout it is cancelled and released
	rows := rowsIn(t, st, outbox.Pending)
	if len(rows) != 1 || rows[0].Attempts != 0 {
		t.Fatalf("the cancelled delivery was not released uncounted: %+v", rows)
	}

	// A delivery that finishes within the drain timeout is acknowledged.
	crmAPI2 := &scripted{block: make(chan struct{}), started: make(chan string, 10)}
	w2 := New(st, Options{Connector: "crm1", Adapter: crmAPI2, Concurrency: 1, Poll: 2 * time.Millisecond, DrainTimeout: 5 * time.Second}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w2.Run(ctx) }()
	<-crmAPI2.started
	cancel() // the worker stops leasing and drains
	close(crmAPI2.block)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if done := rowsIn(t, st, outbox.Done); len(done) != 1 {
		t.Fatalf("a delivery finishing during the drain was not acknowledged: %+v", done)
	}
}

func TestGiveUpAfter(t *testing.T) {
	t.Parallel()
	st := openStore(t, nil)
	crmAPI := &scripted{answer: func(*call.Record, int) error { return errors.New("connection refused") }}
	w := New(st, Options{Connector: "crm1", Adapter: crmAPI, Poll: 2 * time.Millisecond, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond, GiveUpAfter: time.Hour}, nil)
	enqueue(t, st, "old") // started in 2023
	stop := runWorker(t, w)
	defer stop()
	waitFor(t, "dead letter", func() bool { return len(rowsIn(t, st, outbox.Dead)) == 1 })
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	for _, r := range []float64{0, 0.5, 0.999} {
		w := New(nil, Options{Adapter: &scripted{}, BackoffMin: time.Second, BackoffMax: time.Minute, Rand: func() float64 { return r }}, nil)
		for attempts := range 40 {
			d := w.backoff(attempts)
			ceil := min(time.Second<<min(attempts, 20), time.Minute)
			if d < 500*time.Millisecond || d > ceil {
				t.Fatalf("backoff(%d) with rand %v = %v, want within [500ms, %v]", attempts, r, d, ceil)
			}
		}
	}
}

// TestResumeAuthDeliversAtOnce: new credentials (an install, an OAuth code) end the pause after
// a broken authorisation at once, and an attempt that failed with the old credentials while
// they arrived is retried without a pause.
func TestResumeAuthDeliversAtOnce(t *testing.T) {
	t.Parallel()
	st := openStore(t, nil)
	var broken atomic.Bool
	broken.Store(true)
	crmAPI := &scripted{answer: func(*call.Record, int) error {
		if broken.Load() {
			return crm.AuthBroken(errors.New("NO_AUTH_FOUND"))
		}
		return nil
	}}
	// An hour's pause: only ResumeAuth can make the calls leave within the test.
	w := New(st, Options{Connector: "crm1", Adapter: crmAPI, Poll: 2 * time.Millisecond, AuthPause: time.Hour}, nil)
	enqueue(t, st, "a", "b", "c")
	stop := runWorker(t, w)
	defer stop()
	waitFor(t, "auth failure", func() bool { return w.Status().AuthBroken })
	if until := w.Status().PausedUntil; time.Until(until) < 50*time.Minute {
		t.Fatalf("paused until %v, want about an hour", until)
	}
	broken.Store(false)
	w.ResumeAuth()
	waitFor(t, "every call delivered after the renewal", func() bool { return len(rowsIn(t, st, outbox.Done)) == 3 })
	if w.Status().AuthBroken || !w.Status().PausedUntil.IsZero() {
		t.Fatalf("after the renewal: %+v", w.Status())
	}

	// An attempt in flight when the credentials change fails with the old ones: it is
	// retried at once, and the connector is not paused.
	st2 := openStore(t, nil)
	release := make(chan struct{})
	started := make(chan string, 2)
	crm2 := &scripted{started: started, block: release, answer: func(_ *call.Record, attempt int) error {
		if attempt == 1 {
			return crm.AuthBroken(errors.New("expired_token")) // the old credentials
		}
		return nil
	}}
	w2 := New(st2, Options{Connector: "crm1", Adapter: crm2, Concurrency: 1, Poll: 2 * time.Millisecond, AuthPause: time.Hour}, nil)
	enqueue(t, st2, "d")
	stop2 := runWorker(t, w2)
	defer stop2()
	<-started
	w2.ResumeAuth() // the new credentials arrive while "d" is on its way with the old ones
	close(release)
	waitFor(t, "d delivered without an hour's pause", func() bool { return len(rowsIn(t, st2, outbox.Done)) == 1 })
	if !w2.Status().PausedUntil.IsZero() {
		t.Fatalf("the connector paused after an attempt with the old credentials: %+v", w2.Status())
	}
}

// countingQueue counts the leases a worker takes.
type countingQueue struct {
	*outbox.Store
	leases atomic.Int64
}

func (q *countingQueue) LeaseNext(ctx context.Context, connector string, limit int, ttl time.Duration) ([]outbox.Row, time.Time, error) {
	q.leases.Add(1)
	return q.Store.LeaseNext(ctx, connector, limit, ttl)
}

// An idle worker does not poll the outbox: it leases when woken, and again when a retry it
// scheduled is due, and not in between.
func TestIdleWorkerDoesNotPoll(t *testing.T) {
	t.Parallel()
	st := openStore(t, nil)
	q := &countingQueue{Store: st}
	crmAPI := &scripted{answer: func(rec *call.Record, attempt int) error {
		if rec.CallID == "flaky" && attempt == 1 {
			return crm.Transient(errors.New("502 bad gateway"))
		}
		return nil
	}}
	// Poll is short: a worker that polled would lease again and again.
	w := New(q, Options{Connector: "crm1", Adapter: crmAPI, Poll: time.Millisecond,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Rand: func() float64 { return 1 }}, nil)
	stop := runWorker(t, w)
	defer stop()
	// asleep: the worker found nothing pending and sleeps until a wake.
	asleep := func() bool { return w.untilDue() > time.Hour }
	waitFor(t, "the first lease", asleep)
	if n := q.leases.Load(); n != 1 {
		t.Fatalf("%d leases while the outbox was empty, want 1", n)
	}

	enqueue(t, st, "ok")
	w.Wake()
	waitFor(t, "the delivery", func() bool { return len(rowsIn(t, st, outbox.Done)) == 1 && asleep() })
	if n := q.leases.Load(); n != 2 {
		t.Fatalf("%d leases after one wake, want 2", n)
	}

	// A failed delivery is retried when its backoff has passed, without a wake.
	enqueue(t, st, "flaky")
	w.Wake()
	waitFor(t, "the retry", func() bool { return crmAPI.count("flaky") == 2 && len(rowsIn(t, st, outbox.Done)) == 2 && asleep() })
	if n := q.leases.Load(); n > 5 {
		t.Fatalf("%d leases in all, want at most 5 (start, two wakes, the retry and the lease its wake may add)", n)
	}
}
