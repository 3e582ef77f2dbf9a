package amocrm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

// Pop-ups that arrive while one is in flight leave together in the next request, one item per
// number with every user; the first is not held back; each caller gets its request's outcome.
func TestPopupsCoalesce(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	var sent [][]api.Event
	p := newPopups(t.Context(), func(_ context.Context, items []api.Event) error {
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
	testkit.WaitFor(t, 10*time.Second, "the first request", func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) == 1 })
	errs := make(chan error, 4)
	for _, e := range []api.Event{ev("+79001234567", 2), ev("+79001234567", 3), ev("+79005550000", 1), ev("+79005550000", 1)} {
		go func() { errs <- p.submit(t.Context(), e) }()
	}
	testkit.WaitFor(t, 10*time.Second, "4 pop-ups queued", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.pending) == 4 })
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

// A caller whose context ends stops waiting; the pop-up is still sent.
func TestPopupsCallerGivesUp(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	done := make(chan []api.Event, 1)
	p := newPopups(t.Context(), func(_ context.Context, items []api.Event) error {
		<-release
		done <- items
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := p.submit(ctx, api.Event{Type: "phone_call", PhoneNumber: "+79001234567", Users: []int64{1}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("submit: %v", err)
	}
	close(release)
	if items := <-done; len(items) != 1 {
		t.Fatalf("sent %v", items)
	}
}
