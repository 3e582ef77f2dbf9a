package amocrm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Pop-ups that arrive while one is in flight leave together in the next request, one item per
// number with every user; the first is not held back; each caller gets its request's outcome.
func TestPopupsCoalesce(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var sent [][]api.Event
	p := newPopups(t.Context(), nil, func(_ context.Context, items []api.Event) error {
		mu.Lock()
		sent = append(sent, items)
		n := len(sent)
		mu.Unlock()
		if n == 1 {
			<-release // the first request hangs until the others queued
			return errors.New("first failed")
		}
		return nil
	})
	ev := func(phone string, u int64) api.Event {
		return api.Event{Type: "phone_call", PhoneNumber: phone, Users: []int64{u}}
	}
	first := make(chan error, 1)
	go func() { first <- p.submit(t.Context(), ev("+79001234567", 1)) }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) == 1 })
	errs := make(chan error, 4)
	for _, e := range []api.Event{ev("+79001234567", 2), ev("+79001234567", 3), ev("+79005550000", 1), ev("+79005550000", 1)} {
		go func() { errs <- p.submit(t.Context(), e) }()
	}
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.pending) == 4 })
	close(release)
	if err := <-first; err == nil || err.Error() != "first failed" {
		t.Fatalf("first pop-up: %v", err)
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 2 || fmt.Sprint(sent[0]) != "[{phone_call +79001234567 [1]}]" || len(sent[1]) != 2 {
		t.Fatalf("requests %v", sent)
	}
	users := map[string]string{}
	for _, it := range sent[1] {
		slices.Sort(it.Users)
		users[it.PhoneNumber] = fmt.Sprint(it.Users)
	}
	if users["+79001234567"] != "[2 3]" || users["+79005550000"] != "[1]" {
		t.Fatalf("second request %v", sent[1])
	}
}

// A pop-up whose caller's context ends before it is put in a request (the phone stopped ringing
// while amoCRM was busy with another) is dropped unsent: ErrLiveStale, never sent late.
func TestPopupsDroppedWhenTheRingEnds(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	var sent [][]api.Event
	p := newPopups(t.Context(), nil, func(_ context.Context, items []api.Event) error {
		mu.Lock()
		sent = append(sent, items)
		n := len(sent)
		mu.Unlock()
		if n == 1 {
			<-release
		}
		return nil
	})
	first := make(chan error, 1)
	go func() {
		first <- p.submit(t.Context(), api.Event{Type: "phone_call", PhoneNumber: "+79001234567", Users: []int64{1}})
	}()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) == 1 })
	ring, stop := context.WithCancel(t.Context())
	second := make(chan error, 1)
	go func() {
		second <- p.submit(ring, api.Event{Type: "phone_call", PhoneNumber: "+79005550000", Users: []int64{2}})
	}()
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.pending) == 1 })
	stop()
	if err := <-second; !errors.Is(err, crm.ErrLiveStale) || !errors.Is(err, context.Canceled) {
		t.Fatalf("pop-up of an ended ring: %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return !p.running })
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 {
		t.Fatalf("requests %v: the dropped pop-up was sent", sent)
	}
}

// While the account pauses after a 429, a pop-up waits for the limiter; if the phone stops
// ringing during the pause it is dropped unsent. One that still rings when the pause ends goes.
func TestPopupsWaitForThePause(t *testing.T) {
	t.Parallel()
	lim := api.NewLimiter(api.LimiterOptions{Requests: 7, MaxPause: time.Hour})
	var mu sync.Mutex
	var sent []api.Event
	p := newPopups(t.Context(), lim, func(ctx context.Context, items []api.Event) error {
		// What Client.do does with a granted permit.
		api.PermitFrom(ctx).Release(false, 0)
		mu.Lock()
		sent = append(sent, items...)
		mu.Unlock()
		return nil
	})
	// Someone got a 429 advising 300 ms.
	permit, err := lim.Acquire(t.Context(), api.PriorityDeliver)
	if err != nil {
		t.Fatal(err)
	}
	permit.Release(true, 300*time.Millisecond)
	ring, stop := context.WithCancel(t.Context())
	dropped := make(chan error, 1)
	go func() {
		dropped <- p.submit(ring, api.Event{Type: "phone_call", PhoneNumber: "+79005550000", Users: []int64{2}})
	}()
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.pending) == 1 && p.running })
	stop()
	if err := <-dropped; !errors.Is(err, crm.ErrLiveStale) {
		t.Fatalf("pop-up dropped during the pause: %v", err)
	}
	if err := p.submit(t.Context(), api.Event{Type: "phone_call", PhoneNumber: "+79001234567", Users: []int64{1}}); err != nil {
		t.Fatal(err)
	}
	if until := lim.PausedUntil(); !until.IsZero() {
		t.Fatalf("the pop-up was sent during the pause (until %v)", until)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 || sent[0].PhoneNumber != "+79001234567" {
		t.Fatalf("sent %v", sent)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Every CRM request of a call is in its timeline: the pop-up's request and answer in the Live
// context's trace, the batched calls request in each Deliver's.
func TestRequestsInTheCallsTimeline(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{longLived: true})
	type entry struct{ kind, summary string }
	var mu sync.Mutex
	timeline := map[string][]entry{}
	traced := func(key string) context.Context {
		return crm.WithTrace(context.Background(), func(kind, summary, _ string) {
			mu.Lock()
			defer mu.Unlock()
			timeline[key] = append(timeline[key], entry{kind, summary})
		})
	}
	ev := &call.Live{Kind: call.LiveRinging, CallID: "1795305782.1", PBX: "office", Direction: call.Inbound, Customer: "+79001234567", Ext: "101"}
	if err := e.a.Live(traced("live"), ev); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 1; i <= 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.a.Deliver(traced(fmt.Sprint(i)), answered(i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	has := func(key string, want entry) bool {
		for _, x := range timeline[key] {
			if x == want {
				return true
			}
		}
		return false
	}
	if !has("live", entry{"request", "POST /api/v2/events"}) || !has("live", entry{"response", "200 POST /api/v2/events"}) {
		t.Errorf("pop-up timeline %v", timeline["live"])
	}
	for _, k := range []string{"1", "2"} {
		if !has(k, entry{"request", "POST /api/v4/calls"}) || !has(k, entry{"response", "200 POST /api/v4/calls"}) {
			t.Errorf("call %s timeline %v", k, timeline[k])
		}
	}
}

// CONTRACT B through Live: a pop-up waiting for the account's pause when the daemon cancels its
// context because the extension stopped ringing returns the daemon's cause (reason kept for
// pbxbridge_live_actions_dropped_total) and is never sent.
func TestLiveDroppedWhenStale(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{longLived: true})
	p, err := e.a.limiter.Acquire(t.Context(), api.PriorityDeliver)
	if err != nil {
		t.Fatal(err)
	}
	p.Release(true, time.Minute) // amoCRM asked for a minute
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.a.Live(ctx, &call.Live{Kind: call.LiveRinging, CallID: "1", Direction: call.Inbound, Customer: "+79001234567", Ext: "101"})
	}()
	waitFor(t, func() bool { e.a.popups.mu.Lock(); defer e.a.popups.mu.Unlock(); return len(e.a.popups.pending) == 1 })
	cancel(&crm.StaleError{Reason: crm.LiveDropStoppedRinging})
	err = <-done
	if !errors.Is(err, crm.ErrLiveStale) || crm.StaleReason(err) != crm.LiveDropStoppedRinging {
		t.Fatalf("stale pop-up: %v (reason %q)", err, crm.StaleReason(err))
	}
	if n := len(e.state().Events); n != 0 {
		t.Fatalf("%d pop-ups sent", n)
	}
}
