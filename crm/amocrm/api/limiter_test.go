package api

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// maxInWindow returns the most of the sorted times that fall in one closed window of length w.
func maxInWindow(times []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) > w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// Why not a token bucket: x/time/rate at 7/s with burst 1 gives eight back-to-back requests
// permits 1/7 s apart, so the eighth lands exactly one second after the first: eight in one
// closed second, with no jitter at all.
func TestTokenBucketPutsEightInASecond(t *testing.T) {
	t.Parallel()
	lim := rate.NewLimiter(7, 1)
	t0 := time.Unix(1795305600, 0)
	var at []time.Time
	for range 8 {
		at = append(at, t0.Add(lim.ReserveN(t0, 1).DelayFrom(t0)))
	}
	if n := maxInWindow(at, time.Second); n != 8 {
		t.Fatalf("the token bucket put %d requests in one closed second, expected 8", n)
	}
}

// The limiter's bound holds whatever the latency: a simulation on a millisecond clock with a
// saturating load and random delays on the way to the server and back (0–400 ms each) never
// puts more than Requests arrivals in any closed window.
func TestLimiterNeverExceedsTheWindow(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		rng := rand.New(rand.NewPCG(seed, 7))
		clock := time.Unix(1795305600, 0)
		l := NewLimiter(LimiterOptions{Requests: 7, Now: func() time.Time { return clock }})
		type flight struct {
			arrive, answer time.Time
		}
		var inflight []flight
		var arrivals []time.Time
		waiting := 0
		prio := func() Priority {
			if rng.IntN(4) == 0 {
				return PriorityLive
			}
			return PriorityDeliver
		}
		for ms := 0; ms < 60_000; ms++ {
			clock = clock.Add(time.Millisecond)
			// Answers read now release their slots.
			kept := inflight[:0]
			for _, f := range inflight {
				if !f.answer.After(clock) {
					l.mu.Lock()
					l.inflight--
					l.done = append(l.done, f.answer)
					l.mu.Unlock()
					continue
				}
				kept = append(kept, f)
			}
			inflight = kept
			waiting += rng.IntN(3) // a saturating load: ~1 request per ms
			l.mu.Lock()
			for waiting > 0 && l.fitsLocked(clock, prio()) {
				l.inflight++
				waiting--
				arrive := clock.Add(time.Duration(rng.IntN(400)) * time.Millisecond)
				answer := arrive.Add(time.Duration(rng.IntN(400)) * time.Millisecond)
				inflight = append(inflight, flight{arrive, answer})
				arrivals = append(arrivals, arrive)
			}
			l.mu.Unlock()
		}
		sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
		if n := maxInWindow(arrivals, time.Second); n > 7 {
			t.Fatalf("seed %d: %d arrivals in one closed second", seed, n)
		}
		if len(arrivals) < 250 {
			t.Fatalf("seed %d: only %d requests in 60 s: the limiter starves", seed, len(arrivals))
		}
		t.Logf("seed %d: %d requests in 60 s (%.1f/s), at most 7 in any second", seed, len(arrivals), float64(len(arrivals))/60)
	}
}

// Through a real client and server: concurrent requests never exceed the budget in any
// rolling window at the server.
func TestLimiterThroughAServer(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var arrivals []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond) // the server's own latency
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":1,"subdomain":"x"}`))
	}))
	t.Cleanup(srv.Close)
	const window = 150 * time.Millisecond
	lim := NewLimiter(LimiterOptions{Requests: 3, Window: window, Margin: 10 * time.Millisecond})
	c := New(Options{BaseURL: srv.URL, HTTP: httpclient.New(httpclient.Options{RetryMax: -1}), Limiter: lim})
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if _, err := c.Account(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
	if n := maxInWindow(arrivals, window); n > 3 || len(arrivals) != 30 {
		t.Fatalf("%d requests, up to %d in one window of %v", len(arrivals), n, window)
	}
}

// Deliveries leave Reserve slots to live requests, and waiting requests go highest priority
// first.
func TestLimiterPriorities(t *testing.T) {
	t.Parallel()
	l := NewLimiter(LimiterOptions{Requests: 2, Reserve: 1, Window: time.Hour})
	ctx := t.Context()
	p1, err := l.Acquire(ctx, PriorityDeliver)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(short, PriorityDeliver); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second delivery took the reserved slot: %v", err)
	}
	p2, err := l.Acquire(ctx, PriorityLive)
	if err != nil {
		t.Fatalf("a live request found no slot: %v", err)
	}
	p1.Cancel() // not sent: its slot is free at once
	p2.Cancel()
	if got := l.Stats().Granted; got != 2 {
		t.Fatalf("granted %d", got)
	}
}

// After a 429 the whole account pauses for the advice (bounded by MaxPause, DefaultPause when
// none), the refused request goes first as the only probe, and a request that cannot wait for
// the pause is refused at once with the time left.
func TestLimiterPausesAfter429(t *testing.T) {
	t.Parallel()
	// Two slots, one reserved for live requests, 100 ms window: after the probe the live request
	// gets the free slot at once, the delivery one window later.
	l := NewLimiter(LimiterOptions{Requests: 2, Reserve: 1, Window: 100 * time.Millisecond, Margin: -1,
		MaxPause: 300 * time.Millisecond, DefaultPause: 100 * time.Millisecond})
	ctx := t.Context()
	p, err := l.Acquire(ctx, PriorityDeliver)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Release(true, 300*time.Second) // advised 5 minutes: bounded to MaxPause
	until := l.PausedUntil()
	if d := until.Sub(start); d < 250*time.Millisecond || d > 350*time.Millisecond {
		t.Fatalf("paused for %v, want MaxPause", d)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	var pe *PausedError
	if _, err := l.Acquire(short, PriorityLive); !errors.As(err, &pe) || pe.RetryAfter <= 0 {
		t.Fatalf("a request that cannot wait: %v", err)
	}
	// Waiting: a delivery, a live request, then the refused one; the refused one goes first and
	// alone (the probe), then the others, live first.
	order := make(chan string, 3)
	var wg sync.WaitGroup
	permits := make(chan *Permit, 3)
	for i, w := range []struct {
		name string
		prio Priority
	}{{"deliver", PriorityDeliver}, {"live", PriorityLive}, {"retry", PriorityRetry}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := l.Acquire(ctx, w.prio)
			if err != nil {
				t.Error(err)
				return
			}
			if time.Now().Before(until) {
				t.Errorf("%s granted during the pause", w.name)
			}
			order <- w.name
			permits <- p
		}()
		waitForWaiters(t, l, i+1)
	}
	probe := <-permits
	if got := <-order; got != "retry" {
		t.Fatalf("first after the pause: %s, want the refused request", got)
	}
	select {
	case name := <-order:
		t.Fatalf("%s was granted while the probe was in flight", name)
	case <-time.After(50 * time.Millisecond):
	}
	probe.Release(false, 0) // the limit is over
	if a := <-order; a != "live" {
		t.Fatalf("after the probe: %s, want the live request", a)
	}
	(<-permits).Release(false, 0)
	if b := <-order; b != "deliver" {
		t.Fatalf("then: %s", b)
	}
	wg.Wait()
	(<-permits).Release(false, 0)
	// A 429 without advice pauses DefaultPause.
	p, err = l.Acquire(ctx, PriorityDeliver)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p.Release(true, 0)
	if d := l.PausedUntil().Sub(now); d < 50*time.Millisecond || d > 150*time.Millisecond {
		t.Fatalf("paused %v without advice, want DefaultPause", d)
	}
	if s := l.Stats(); s.Pauses != 2 || s.Refused != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func (l *Limiter) waitingSnapshot() waiters {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append(waiters(nil), l.waiting...)
}

func waitForWaiters(t *testing.T, l *Limiter, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(l.waitingSnapshot()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests waiting, want %d", len(l.waitingSnapshot()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLimiterFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rps  float64
		n    int
		win  time.Duration
		resv int
	}{{7, 7, time.Second, 1}, {7.9, 7, time.Second, 1}, {1000, 1000, time.Second, 200}, {1, 1, time.Second, 0}, {0.5, 1, 2 * time.Second, 0}} {
		o := NewLimiter(LimiterFor(tc.rps)).Options()
		if o.Requests != tc.n || o.Window != tc.win || o.Reserve != tc.resv {
			t.Errorf("rate %v: %d per %v, reserve %d", tc.rps, o.Requests, o.Window, o.Reserve)
		}
	}
}
