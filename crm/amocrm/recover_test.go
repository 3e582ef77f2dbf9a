package amocrm

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// testClock is a settable clock shared by the adapter and the fake.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *testClock { return &testClock{now: time.Now()} }

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *testClock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

func (e *env) callState(key string) string {
	e.t.Helper()
	v, _, err := e.store.Get(context.Background(), key, fieldCall)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// A calls request whose answer is lost after amoCRM placed the call: the redelivery waits for
// the request to settle, finds the call among the call notes and does not log it again.
func TestLostAnswerIsNotLoggedTwice(t *testing.T) {
	clock := newClock()
	e := newEnv(t, TypeAmoCRM, envOpt{now: clock.Now})
	r := answered(1)
	e.fake.LoseAnswers("POST /api/v4/calls", 1)
	if err := e.a.Deliver(context.Background(), r); err == nil {
		t.Fatal("a lost answer was taken for success")
	}
	if st := e.callState(r.Key()); !strings.HasPrefix(st, stateUnsure) {
		t.Fatalf("after a lost answer the call state is %q, want an unsure marker", st)
	}
	// Right away: the call may not be visible yet, so the record waits.
	err := e.a.Deliver(context.Background(), r)
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.ClassTransient || !strings.Contains(err.Error(), "may still be running") {
		t.Fatalf("redelivery within the settle time: %v", err)
	}
	clock.Add(settle + time.Second)
	e.deliver(r)
	st := e.state()
	if n := e.fake.Logged(r.Key()); n != 1 {
		t.Fatalf("logged %d times", n)
	}
	if n := count(st.Requests, "POST /api/v4/calls"); n != 1 {
		t.Fatalf("%d calls requests, want 1", n)
	}
	if got := e.callState(r.Key()); got != "logged:leads:1" {
		t.Fatalf("call state %q", got)
	}
	if n := testutil.ToFloat64(e.a.m.calls.WithLabelValues("recovered")); n != 1 {
		t.Fatalf("recovered = %v", n)
	}
	// Settled records are not looked up again.
	before := count(e.state().Requests, "GET /api/v4/contacts/notes")
	e.deliver(r)
	if after := count(e.state().Requests, "GET /api/v4/contacts/notes"); after != before {
		t.Fatalf("a logged record was looked up again (%d → %d)", before, after)
	}
}

// The daemon was killed between sending a batch and storing its answer: after the restart the
// records carry a sent marker; one scan of the notes settles the whole batch without resending.
func TestKilledBatchIsNotLoggedTwice(t *testing.T) {
	clock := newClock()
	// The fake's limiter runs on the frozen test clock: no limit here.
	e := newEnv(t, TypeAmoCRM, envOpt{now: clock.Now, fake: fakecrm.AmoOptions{RateLimit: -1}})
	var keys []string
	for i := range 20 {
		r := answered(i)
		e.deliver(r)
		keys = append(keys, r.Key())
	}
	sent := clock.Now()
	for _, k := range keys { // the answer never reached the call store
		if err := e.store.Set(context.Background(), k, fieldCall, markerState(stateSent, sent)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(2 * time.Second)
	e.a = e.open() // the restart
	clock.Add(settle)
	before := e.state().Requests
	for i := range 20 {
		e.deliver(answered(i))
	}
	st := e.state()
	for _, k := range keys {
		if n := e.fake.Logged(k); n != 1 {
			t.Errorf("%s logged %d times", k, n)
		}
	}
	if n := count(st.Requests, "POST /api/v4/calls") - count(before, "POST /api/v4/calls"); n != 0 {
		t.Errorf("%d calls requests after the restart, want 0", n)
	}
	if n := count(st.Requests, "GET /api/v4/leads/notes") - count(before, "GET /api/v4/leads/notes"); n != 1 {
		t.Errorf("%d scans of the leads' notes for the batch, want 1", n)
	}
}

// An earlier request whose outcome was unknown had not placed the call: the look-up finds
// nothing and the call is sent again, once.
func TestUnplacedCallIsSentAfterLookup(t *testing.T) {
	clock := newClock()
	e := newEnv(t, TypeAmoCRM, envOpt{now: clock.Now})
	r := answered(1)
	if err := e.store.Set(context.Background(), r.Key(), fieldCall, markerState(stateUnsure, clock.Now())); err != nil {
		t.Fatal(err)
	}
	clock.Add(settle + time.Second)
	e.deliver(r)
	if n := e.fake.Logged(r.Key()); n != 1 {
		t.Fatalf("logged %d times", n)
	}
	if n := testutil.ToFloat64(e.a.m.calls.WithLabelValues("resent")); n != 1 {
		t.Fatalf("resent = %v", n)
	}
}

// amoCRM's own 500 placed nothing: the retry sends at once.
func TestServerErrorNeedsNoLookup(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	r := answered(1)
	e.fake.Inject(fakecrm.FaultServerError)
	if err := e.a.Deliver(context.Background(), r); err == nil {
		t.Fatal("a 500 was taken for success")
	}
	if st := e.callState(r.Key()); st != "" {
		t.Fatalf("after a 500 the call state is %q, want none", st)
	}
}

// A refusal from amoCRM (429) placed nothing: the marker is cleared and the retry sends at
// once, without a look-up.
func TestRefusedCallNeedsNoLookup(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{fake: fakecrm.AmoOptions{RetryAfterInBody: true, RetryAfter: 1}})
	r := answered(1)
	e.fake.Inject(fakecrm.FaultRateLimited)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.a.Deliver(ctx, r); err == nil {
		t.Fatal("a 429 was taken for success")
	}
	if st := e.callState(r.Key()); st != "" {
		t.Fatalf("after a 429 the call state is %q, want none", st)
	}
	e.fake.Inject(fakecrm.FaultNone)
	e.deliver(r)
	st := e.state()
	if n := count(st.Requests, "GET /api/v4/leads/notes") + count(st.Requests, "GET /api/v4/contacts/notes"); n != 0 {
		t.Fatalf("%d look-ups after a refusal", n)
	}
	if n := e.fake.Logged(r.Key()); n != 1 {
		t.Fatalf("logged %d times", n)
	}
}

func TestMarkerParsing(t *testing.T) {
	for _, s := range []string{"", "logged:leads:1", "sent:", "sent:x", "unsure:-", "skipped:anonymous"} {
		if _, _, ok := marker(s); ok {
			t.Errorf("%q parsed as a marker", s)
		}
	}
	at := time.Unix(1795305782, 0)
	for _, k := range []string{stateSent, stateUnsure} {
		kind, got, ok := marker(markerState(k, at))
		if !ok || kind != k || !got.Equal(at) {
			t.Errorf("%s round trip: %q %v %v", k, kind, got, ok)
		}
	}
}

// After a restore from a backup the call store has forgotten a call logged since: Uncertain
// marks it, and the next Deliver finds it among the notes instead of logging it again. A call
// the store knows as logged, or marked earlier, keeps its state.
func TestUncertainAfterRestore(t *testing.T) {
	clock := newClock()
	e := newEnv(t, TypeAmoCRM, envOpt{now: clock.Now})
	ctx := context.Background()
	backupAt := clock.Now()
	clock.Add(time.Minute)
	r := answered(1)
	e.deliver(r) // logged after the backup
	logged := e.callState(r.Key())
	// The restore: the call store is back as it was at the backup (no state for r).
	e.store = newMemStore()
	e.a = e.open()
	clock.Add(time.Minute)
	var rc crm.Reconciler = e.a
	if err := rc.Uncertain(ctx, r.Key(), backupAt); err != nil {
		t.Fatal(err)
	}
	if st := e.callState(r.Key()); st != markerState(stateUnsure, backupAt) {
		t.Fatalf("call state after Uncertain %q", st)
	}
	e.deliver(r)
	if n := e.fake.Logged(r.Key()); n != 1 {
		t.Fatalf("logged %d times after the restore, want 1", n)
	}
	if got := e.callState(r.Key()); got != logged {
		t.Errorf("call state %q, want %q", got, logged)
	}
	// Logged stays logged; an earlier marker stays.
	if err := rc.Uncertain(ctx, r.Key(), backupAt); err != nil || e.callState(r.Key()) != logged {
		t.Errorf("Uncertain changed a logged call: %q, %v", e.callState(r.Key()), err)
	}
	early := markerState(stateSent, backupAt.Add(-time.Hour))
	if err := e.store.Set(ctx, "lab/other", fieldCall, early); err != nil {
		t.Fatal(err)
	}
	if err := rc.Uncertain(ctx, "lab/other", backupAt); err != nil || e.callState("lab/other") != early {
		t.Errorf("Uncertain replaced an earlier marker: %q, %v", e.callState("lab/other"), err)
	}
}
