package outbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEnqueueValidation(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	now := time.Now()
	for _, tc := range []struct {
		name  string
		entry Entry
		want  string
	}{
		{"empty key", Entry{StartedAt: now, Connectors: []string{"b24"}}, "empty key"},
		{"zero start", Entry{Key: "k", Connectors: []string{"b24"}}, "zero StartedAt"},
		{"no connectors", Entry{Key: "k", StartedAt: now}, "no connectors"},
		{"empty connector", Entry{Key: "k", StartedAt: now, Connectors: []string{"b24", ""}}, "empty connector"},
		{"duplicate connector", Entry{Key: "k", StartedAt: now, Connectors: []string{"b24", "amo", "b24"}}, `"b24" listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A valid entry in the same call must not be stored either.
			err := s.Enqueue(t.Context(), entry("valid-"+tc.name, now, "b24"), tc.entry)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "outbox: enqueue") {
				t.Fatalf("err = %v, want outbox: enqueue ... ErrInvalid containing %q", err, tc.want)
			}
			if rows, err := s.List(t.Context(), Filter{Key: "valid-" + tc.name}); err != nil || len(rows) != 0 {
				t.Fatalf("valid entry of a refused call stored: %v %v", rows, err)
			}
		})
	}
	if err := s.Enqueue(t.Context()); err != nil {
		t.Fatalf("Enqueue of nothing: %v", err)
	}
}

func TestEnqueueStoresOneRowPerConnector(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	started := time.Date(2026, 11, 21, 11, 59, 0, 123456789, time.FixedZone("MSK", 3*3600))
	e := Entry{Key: "1763768521.12", StartedAt: started, Payload: []byte{0, 1, 2, 0xff}, Connectors: []string{"b24-main", "amo"}}
	mustEnqueue(t, s, e)

	rows, err := s.List(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want 2", len(rows))
	}
	for i, c := range []string{"b24-main", "amo"} {
		r := rows[i]
		want := Row{
			ID: r.ID, Key: e.Key, Connector: c, Payload: e.Payload, StartedAt: started.UTC(),
			EnqueuedAt: clock.Now(), UpdatedAt: clock.Now(), State: Pending, NextAttemptAt: clock.Now(),
		}
		if r.ID <= 0 || !rowsEqual(r, want) {
			t.Errorf("row %d = %+v\nwant %+v", i, r, want)
		}
	}
	if rows[0].ID >= rows[1].ID {
		t.Errorf("ids not increasing: %d, %d", rows[0].ID, rows[1].ID)
	}
}

func TestEnqueueNilPayload(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	mustEnqueue(t, s, Entry{Key: "k", StartedAt: time.Now(), Connectors: []string{"b24"}})
	r := rowByKey(t, s, "k", "b24")
	if r.Payload == nil || len(r.Payload) != 0 {
		t.Fatalf("payload = %#v, want empty non-nil", r.Payload)
	}
}

func TestEnqueueIsIdempotent(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	first := Entry{Key: "call-1", StartedAt: clock.Now(), Payload: []byte("first"), Connectors: []string{"b24", "amo"}}
	mustEnqueue(t, s, first)

	// Deliver it to b24; leave amo pending.
	leased := mustLease(t, s, "b24", 10, 0)
	if len(leased) != 1 {
		t.Fatalf("leased %d, want 1", len(leased))
	}
	if err := s.Ack(t.Context(), leased[0]); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)

	// The daemon re-flushes the call after a crash, with a newer payload and
	// one more connector.
	again := Entry{Key: "call-1", StartedAt: clock.Now(), Payload: []byte("second"), Connectors: []string{"b24", "amo", "kommo"}}
	mustEnqueue(t, s, again)
	mustEnqueue(t, s, again)

	rows, err := s.List(t.Context(), Filter{Key: "call-1"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Row{}
	for _, r := range rows {
		if _, dup := got[r.Connector]; dup {
			t.Fatalf("two rows for connector %s", r.Connector)
		}
		got[r.Connector] = r
	}
	if len(got) != 3 {
		t.Fatalf("rows: %+v, want one per connector b24, amo, kommo", rows)
	}
	if r := got["b24"]; r.State != Done || string(r.Payload) != "first" {
		t.Errorf("b24 row = %s %q, want done with the first payload", r.State, r.Payload)
	}
	if r := got["amo"]; r.State != Pending || string(r.Payload) != "first" || !r.EnqueuedAt.Equal(first.StartedAt) {
		t.Errorf("amo row = %s %q enqueued %s, want the untouched first row", r.State, r.Payload, r.EnqueuedAt)
	}
	if r := got["kommo"]; r.State != Pending || string(r.Payload) != "second" {
		t.Errorf("kommo row = %s %q, want a new pending row", r.State, r.Payload)
	}
}

func TestLeaseDueOrderAndLimit(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	for i := range 5 {
		mustEnqueue(t, s, entry(fmt.Sprintf("c%d", i), clock.Now(), "b24"))
		clock.Advance(time.Second)
	}
	mustEnqueue(t, s, entry("other", clock.Now(), "amo"))

	// c0 fails and is due again in 10s; c1 fails and is due in 2s.
	first := mustLease(t, s, "b24", 2, time.Minute)
	if got := keysOf(first); !slices.Equal(got, []string{"c0", "c1"}) {
		t.Fatalf("first lease = %v, want [c0 c1]", got)
	}
	for _, r := range first {
		if r.State != Leased || r.LeaseID == "" || !r.LeaseExpiresAt.Equal(clock.Now().Add(time.Minute)) {
			t.Fatalf("leased row = %+v", r)
		}
	}
	if first[0].LeaseID != first[1].LeaseID {
		t.Errorf("one Lease call gave two lease ids")
	}
	if err := s.Retry(t.Context(), first[0], clock.Now().Add(10*time.Second), "timeout"); err != nil {
		t.Fatal(err)
	}
	if err := s.Retry(t.Context(), first[1], clock.Now().Add(2*time.Second), "503"); err != nil {
		t.Fatal(err)
	}

	// Now only c2..c4 are due; limit 2 gives the two oldest.
	second := mustLease(t, s, "b24", 2, time.Minute)
	if got := keysOf(second); !slices.Equal(got, []string{"c2", "c3"}) {
		t.Fatalf("second lease = %v, want [c2 c3]", got)
	}
	if second[0].LeaseID == first[0].LeaseID {
		t.Errorf("lease id reused")
	}
	clock.Advance(3 * time.Second) // c1 is due again, c0 not yet
	third := mustLease(t, s, "b24", 10, time.Minute)
	if got := keysOf(third); !slices.Equal(got, []string{"c4", "c1"}) {
		t.Fatalf("third lease = %v, want [c4 c1] (by due time)", got)
	}
	if third[1].Attempts != 1 || third[1].LastError != "503" {
		t.Errorf("retried row = attempts %d, last error %q", third[1].Attempts, third[1].LastError)
	}
	if none := mustLease(t, s, "b24", 10, time.Minute); len(none) != 0 || none == nil {
		t.Fatalf("lease with nothing due = %#v, want empty non-nil", none)
	}
	clock.Advance(10 * time.Second)
	if got := keysOf(mustLease(t, s, "b24", 10, time.Minute)); !slices.Equal(got, []string{"c0"}) {
		t.Fatalf("after c0's due time: %v, want [c0]", got)
	}
	if got := keysOf(mustLease(t, s, "amo", 10, time.Minute)); !slices.Equal(got, []string{"other"}) {
		t.Fatalf("other connector: %v, want [other]", got)
	}
}

func TestLeaseValidation(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	for _, tc := range []struct {
		name      string
		connector string
		limit     int
		ttl       time.Duration
	}{
		{"empty connector", "", 1, 0},
		{"zero limit", "b24", 0, 0},
		{"negative limit", "b24", -1, 0},
		{"negative ttl", "b24", 1, -time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Lease(t.Context(), tc.connector, tc.limit, tc.ttl)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestLeaseDefaultTTL(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now, LeaseTTL: 42 * time.Second})
	mustEnqueue(t, s, entry("k", clock.Now(), "b24"))
	r := mustLease(t, s, "b24", 1, 0)[0]
	if want := clock.Now().Add(42 * time.Second); !r.LeaseExpiresAt.Equal(want) {
		t.Fatalf("lease expires %s, want %s", r.LeaseExpiresAt, want)
	}
}

func TestAckRetryBury(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	mustEnqueue(t, s, entry("ack", clock.Now(), "b24"), entry("retry", clock.Now(), "b24"), entry("bury", clock.Now(), "b24"), entry("retry-now", clock.Now(), "b24"))
	leased := mustLease(t, s, "b24", 10, time.Minute)
	if len(leased) != 4 {
		t.Fatalf("leased %d, want 4", len(leased))
	}
	clock.Advance(5 * time.Second)
	ctx := t.Context()
	if err := s.Ack(ctx, leased[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Retry(ctx, leased[1], clock.Now().Add(time.Hour), "bitrix24: 503 service unavailable"); err != nil {
		t.Fatal(err)
	}
	if err := s.Bury(ctx, leased[2], "bitrix24: 400 invalid phone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Retry(ctx, leased[3], time.Time{}, "reset"); err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	for _, tc := range []struct {
		key       string
		state     State
		attempts  int
		next      time.Time
		lastError string
		doneAt    time.Time
	}{
		{"ack", Done, 1, leased[0].NextAttemptAt, "", now},
		{"retry", Pending, 1, now.Add(time.Hour), "bitrix24: 503 service unavailable", time.Time{}},
		{"bury", Dead, 1, leased[2].NextAttemptAt, "bitrix24: 400 invalid phone", time.Time{}},
		{"retry-now", Pending, 1, now, "reset", time.Time{}},
	} {
		r := rowByKey(t, s, tc.key, "b24")
		if r.State != tc.state || r.Attempts != tc.attempts || !r.NextAttemptAt.Equal(tc.next) ||
			r.LastError != tc.lastError || !r.DoneAt.Equal(tc.doneAt) || r.LeaseID != "" ||
			!r.LeaseExpiresAt.IsZero() || !r.UpdatedAt.Equal(now) {
			t.Errorf("%s: got %+v\nwant state %s attempts %d next %s error %q done %s", tc.key, r,
				tc.state, tc.attempts, tc.next, tc.lastError, tc.doneAt)
		}
	}
	// A finished row cannot be finished again with the same lease.
	for name, err := range map[string]error{
		"ack twice":   s.Ack(ctx, leased[0]),
		"retry done":  s.Retry(ctx, leased[0], time.Time{}, "x"),
		"bury dead":   s.Bury(ctx, leased[2], "x"),
		"ack pending": s.Ack(ctx, leased[1]),
	} {
		if !errors.Is(err, ErrLeaseLost) || !strings.HasPrefix(err.Error(), "outbox: ") {
			t.Errorf("%s: %v, want outbox: ... ErrLeaseLost", name, err)
		}
	}
	for name, err := range map[string]error{
		"no id":    s.Ack(ctx, Row{LeaseID: "x"}),
		"no lease": s.Ack(ctx, Row{ID: leased[0].ID}),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestRetryErrorTextIsBounded(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	mustEnqueue(t, s, entry("k", time.Now(), "b24"))
	r := mustLease(t, s, "b24", 1, 0)[0]
	long := strings.Repeat("я", maxErrorLen) // 2 bytes a rune
	if err := s.Retry(t.Context(), r, time.Time{}, long); err != nil {
		t.Fatal(err)
	}
	got := rowByKey(t, s, "k", "b24").LastError
	if len(got) > maxErrorLen+len("…") || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Fatalf("stored error: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}

func TestExpiredLeaseReturnsWorkAndStaleWorkerCannotFinish(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	mustEnqueue(t, s, entry("a", clock.Now(), "b24"), entry("b", clock.Now(), "b24"))
	stale := mustLease(t, s, "b24", 10, 30*time.Second)
	if len(stale) != 2 {
		t.Fatalf("leased %d, want 2", len(stale))
	}
	clock.Advance(29 * time.Second)
	if got := mustLease(t, s, "b24", 10, 30*time.Second); len(got) != 0 {
		t.Fatalf("rows with a valid lease were leased again: %v", keysOf(got))
	}

	clock.Advance(2 * time.Second) // both leases expired
	// b's stale worker finishes before anyone took the row over: accepted.
	if err := s.Ack(t.Context(), stale[1]); err != nil {
		t.Fatalf("Ack after expiry, row not taken over: %v", err)
	}
	fresh := mustLease(t, s, "b24", 10, 30*time.Second)
	if got := keysOf(fresh); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after expiry leased %v, want [a]", got)
	}
	if fresh[0].LeaseID == stale[0].LeaseID {
		t.Fatal("takeover kept the old lease id")
	}
	for name, err := range map[string]error{
		"ack":   s.Ack(t.Context(), stale[0]),
		"retry": s.Retry(t.Context(), stale[0], time.Time{}, "late"),
		"bury":  s.Bury(t.Context(), stale[0], "late"),
	} {
		if !errors.Is(err, ErrLeaseLost) {
			t.Errorf("stale %s: %v, want ErrLeaseLost", name, err)
		}
	}
	if n, err := s.Release(t.Context(), stale[0]); err != nil || n != 0 {
		t.Errorf("stale Release = %d, %v, want 0, nil", n, err)
	}
	if r := rowByKey(t, s, "a", "b24"); r.State != Leased || r.LeaseID != fresh[0].LeaseID || r.Attempts != 0 {
		t.Fatalf("stale calls changed the row: %+v", r)
	}
	if err := s.Ack(t.Context(), fresh[0]); err != nil {
		t.Fatalf("new owner's Ack: %v", err)
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	mustEnqueue(t, s, entry("a", clock.Now(), "b24"), entry("b", clock.Now(), "b24"))
	leased := mustLease(t, s, "b24", 10, time.Hour)
	n, err := s.Release(t.Context(), leased...)
	if err != nil || n != 2 {
		t.Fatalf("Release = %d, %v, want 2", n, err)
	}
	for _, r := range leased {
		got := rowByKey(t, s, r.Key, "b24")
		if got.State != Pending || got.Attempts != 0 || !got.NextAttemptAt.Equal(r.NextAttemptAt) || got.LeaseID != "" {
			t.Errorf("released row = %+v", got)
		}
	}
	if got := keysOf(mustLease(t, s, "b24", 10, time.Hour)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("released rows not leasable at once: %v", got)
	}
	if n, err := s.Release(t.Context()); err != nil || n != 0 {
		t.Fatalf("Release of nothing = %d, %v", n, err)
	}
}

// Concurrent workers must never hold the same row at once: every row is leased
// exactly once (the lease outlives the test) and every Ack succeeds.
func TestConcurrentWorkersNeverShareARow(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	const total = 300
	var entries []Entry
	for i := range total {
		entries = append(entries, entry(fmt.Sprintf("call-%04d", i), time.Now(), "b24"))
	}
	mustEnqueue(t, s, entries...)

	var (
		mu   sync.Mutex
		seen = map[int64]int{}
		wg   sync.WaitGroup
		errs = make(chan error, 8)
	)
	for w := range 8 {
		wg.Go(func() {
			for {
				rows, err := s.Lease(t.Context(), "b24", 1+w, time.Hour)
				if err != nil {
					errs <- err
					return
				}
				if len(rows) == 0 {
					return
				}
				for _, r := range rows {
					mu.Lock()
					seen[r.ID]++
					mu.Unlock()
					if err := s.Ack(t.Context(), r); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != total {
		t.Fatalf("leased %d distinct rows, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("row %d leased %d times", id, n)
		}
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Done != total || st[0].Pending+st[0].Leased+st[0].Dead != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// Concurrent Enqueue calls share transactions; each caller's rows are there
// when it returns, and the same key from two callers gives one row.
func TestConcurrentEnqueue(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	const goroutines, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				// Goroutines g and g^1 enqueue the same keys.
				key := fmt.Sprintf("call-%d-%d", g/2, i)
				if err := s.Enqueue(t.Context(), entry(key, time.Now(), "b24", "amo")); err != nil {
					errs <- err
					return
				}
				if _, _, err := s.CallState("b24").Get(t.Context(), key, "x"); err != nil {
					errs <- err
					return
				}
				// Read-your-writes through the read pool.
				rows, err := s.List(t.Context(), Filter{Key: key})
				if err != nil {
					errs <- err
					return
				}
				if len(rows) != 2 {
					errs <- fmt.Errorf("%s: %d rows visible after Enqueue returned, want 2", key, len(rows))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := int64(goroutines / 2 * each)
	if len(st) != 2 || st[0].Pending != want || st[1].Pending != want {
		t.Fatalf("stats = %+v, want %d pending for each connector", st, want)
	}
}

func TestCancelledContext(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Enqueue(ctx, entry("k", time.Now(), "b24"))
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "outbox: enqueue") {
		t.Fatalf("err = %v, want outbox: enqueue: context canceled", err)
	}
	if _, err := s.Lease(ctx, "b24", 1, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lease: %v, want context.Canceled", err)
	}
	if rows, err := s.List(t.Context(), Filter{}); err != nil || len(rows) != 0 {
		t.Fatalf("rows after a cancelled Enqueue: %v %v", rows, err)
	}
}

func TestParseState(t *testing.T) {
	t.Parallel()
	for _, st := range []State{Pending, Leased, Done, Dead} {
		got, err := ParseState(string(st))
		if err != nil || got != st {
			t.Errorf("ParseState(%q) = %q, %v", st, got, err)
		}
	}
	for _, bad := range []string{"", "DEAD", "failed", "pending "} {
		if _, err := ParseState(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseState(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// rowsEqual compares rows field by field, times with Equal.
func rowsEqual(a, b Row) bool {
	return a.ID == b.ID && a.Key == b.Key && a.Connector == b.Connector && string(a.Payload) == string(b.Payload) &&
		a.StartedAt.Equal(b.StartedAt) && a.EnqueuedAt.Equal(b.EnqueuedAt) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.State == b.State && a.Attempts == b.Attempts && a.NextAttemptAt.Equal(b.NextAttemptAt) &&
		a.LastError == b.LastError && a.LeaseID == b.LeaseID && a.LeaseExpiresAt.Equal(b.LeaseExpiresAt) &&
		a.DoneAt.Equal(b.DoneAt)
}

// TestTimelineRidesWithTheTransition: Enqueue, Ack, Retry and Bury append their timeline entries
// in the same transaction (one commit per finished call and per delivery attempt); a finish
// whose lease was lost appends nothing; entries without a kind are refused before anything is
// written.
func TestTimelineRidesWithTheTransition(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	ctx := t.Context()
	call := TimelineEntry{At: clock.Now().Add(-time.Minute), Kind: "call", Summary: "inbound call"}
	routing := TimelineEntry{Kind: "routing", Summary: "queued for b24"}
	var es []Entry
	for _, k := range []string{"ack", "retry", "bury"} {
		e := entry(k, clock.Now(), "b24")
		e.Timeline = []TimelineEntry{call, routing}
		es = append(es, e)
	}
	mustEnqueue(t, s, es...)
	leased := mustLease(t, s, "b24", 10, time.Minute)
	if len(leased) != 3 {
		t.Fatalf("leased %d", len(leased))
	}
	trace := TimelineEntry{At: clock.Now(), Connector: "b24", Kind: "request", Summary: "telephony.externalCall.finish"}
	outcome := func(kind string) TimelineEntry { return TimelineEntry{Connector: "b24", Kind: kind} }
	if err := s.Ack(ctx, leased[0], trace, outcome("delivered")); err != nil {
		t.Fatal(err)
	}
	if err := s.Retry(ctx, leased[1], time.Time{}, "503", trace, outcome("retry")); err != nil {
		t.Fatal(err)
	}
	if err := s.Bury(ctx, leased[2], "400", outcome("dead")); err != nil {
		t.Fatal(err)
	}
	// The retried row is leased again by another lease; the old lease finds it lost and
	// appends nothing.
	if err := s.Ack(ctx, leased[1], outcome("late")); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("ack with a lost lease: %v", err)
	}
	for key, want := range map[string][]string{
		"ack":   {"call", "routing", "request", "delivered"},
		"retry": {"call", "routing", "request", "retry"},
		"bury":  {"call", "routing", "dead"},
	} {
		tl, err := s.Timeline(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for i, e := range tl {
			kinds = append(kinds, e.Kind)
			if e.Seq != int64(i+1) {
				t.Errorf("%s: entry %d has seq %d", key, i, e.Seq)
			}
		}
		if !slices.Equal(kinds, want) {
			t.Errorf("%s: timeline %v, want %v", key, kinds, want)
		}
		if !tl[0].At.Equal(call.At) || !tl[1].At.Equal(clock.Now()) {
			t.Errorf("%s: times %v %v", key, tl[0].At, tl[1].At)
		}
	}

	// Invalid entries: nothing is written.
	bad := entry("bad", clock.Now(), "b24")
	bad.Timeline = []TimelineEntry{{Summary: "no kind"}}
	if err := s.Enqueue(ctx, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("enqueue with a kindless entry: %v", err)
	}
	if rows, _ := s.List(ctx, Filter{Key: "bad"}); len(rows) != 0 {
		t.Fatalf("a refused enqueue stored %d rows", len(rows))
	}
	if err := s.AppendTimeline(ctx, "ack", TimelineEntry{Kind: "ok"}, TimelineEntry{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("append with a kindless entry: %v", err)
	}
	if err := s.Ack(ctx, Row{ID: leased[0].ID, LeaseID: "x"}, outcome("x")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ack with entries but no key: %v", err)
	}
	if err := s.AppendTimeline(ctx, "ack"); err != nil {
		t.Fatalf("appending nothing: %v", err)
	}
	if tl, _ := s.Timeline(ctx, "ack"); len(tl) != 4 {
		t.Fatalf("refused appends changed the timeline: %d entries", len(tl))
	}
}

// LeaseNext says when the connector's next row is due: its earliest retry or the expiry of an
// earlier lease, not the rows it just leased; now when it filled its limit; zero when nothing is
// pending or leased.
func TestLeaseNext(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	t0 := clock.Now()
	lease := func(limit int) ([]Row, time.Time) {
		t.Helper()
		rows, next, err := s.LeaseNext(t.Context(), "b24", limit, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return rows, next
	}
	if rows, next := lease(5); len(rows) != 0 || !next.IsZero() {
		t.Fatalf("empty outbox: %d rows, next %v; want none, zero", len(rows), next)
	}
	mustEnqueue(t, s, entry("a", t0, "b24", "amo"), entry("b", t0, "b24"))
	if rows, next := lease(1); len(rows) != 1 || !next.Equal(t0) {
		t.Fatalf("limit reached: %d rows, next %v; want 1, now", len(rows), next)
	}
	rows, next := lease(5)
	if len(rows) != 1 || !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("%d rows, next %v; want 1 and the first lease's expiry %v", len(rows), next, t0.Add(time.Minute))
	}
	if err := s.Retry(t.Context(), rows[0], t0.Add(10*time.Second), "502"); err != nil {
		t.Fatal(err)
	}
	if _, next := lease(5); !next.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("next %v, want the retry at %v", next, t0.Add(10*time.Second))
	}
	clock.Advance(10 * time.Second)
	rows, next = lease(5)
	if len(rows) != 1 || !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("%d rows, next %v; want the retried row and the first lease's expiry", len(rows), next)
	}
}
