package outbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fixture fills s with rows in every state. Calls start one hour apart from
// base: c0 at base, c1 at base+1h, ...
//
//	c0: b24 done,    amo pending
//	c1: b24 dead,    amo done
//	c2: b24 pending, amo leased
//	c3: b24 done
func fixture(t *testing.T, s *Store, base time.Time) map[string]Row {
	t.Helper()
	mustEnqueue(t, s,
		entry("c0", base, "b24", "amo"),
		entry("c1", base.Add(time.Hour), "b24", "amo"),
		entry("c2", base.Add(2*time.Hour), "b24", "amo"),
		entry("c3", base.Add(3*time.Hour), "b24"))
	b24 := mustLease(t, s, "b24", 10, time.Hour) // c0 c1 c2 c3
	amo := mustLease(t, s, "amo", 10, time.Hour) // c0 c1 c2
	ctx := t.Context()
	for _, err := range []error{
		s.Ack(ctx, b24[0]), s.Bury(ctx, b24[1], "400 bad phone"), s.Retry(ctx, b24[2], time.Time{}, "503"), s.Ack(ctx, b24[3]),
		s.Retry(ctx, amo[0], time.Time{}, "timeout"), s.Ack(ctx, amo[1]),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]Row{}
	rows, err := s.List(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		out[r.Key+"/"+r.Connector] = r
	}
	return out
}

func names(rows []Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Key + "/" + r.Connector
	}
	return out
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	base := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	rows := fixture(t, s, base)
	id := func(n string) int64 { return rows[n].ID }

	for _, tc := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"all", Filter{}, []string{"c0/b24", "c0/amo", "c1/b24", "c1/amo", "c2/b24", "c2/amo", "c3/b24"}},
		{"dead", Filter{State: Dead}, []string{"c1/b24"}},
		{"pending", Filter{State: Pending}, []string{"c0/amo", "c2/b24"}},
		{"leased", Filter{State: Leased}, []string{"c2/amo"}},
		{"done b24", Filter{State: Done, Connector: "b24"}, []string{"c0/b24", "c3/b24"}},
		{"key", Filter{Key: "c2"}, []string{"c2/b24", "c2/amo"}},
		{"ids", Filter{IDs: []int64{id("c3/b24"), id("c0/amo")}}, []string{"c0/amo", "c3/b24"}},
		{"ids and state", Filter{IDs: []int64{id("c3/b24"), id("c0/amo")}, State: Done}, []string{"c3/b24"}},
		{"since inclusive", Filter{Since: base.Add(2 * time.Hour)}, []string{"c2/b24", "c2/amo", "c3/b24"}},
		{"until exclusive", Filter{Until: base.Add(time.Hour)}, []string{"c0/b24", "c0/amo"}},
		{"range amo", Filter{Connector: "amo", Since: base.Add(time.Hour), Until: base.Add(3 * time.Hour)}, []string{"c1/amo", "c2/amo"}},
		{"limit", Filter{Limit: 2}, []string{"c0/b24", "c0/amo"}},
		{"page", Filter{AfterID: id("c0/amo"), Limit: 2}, []string{"c1/b24", "c1/amo"}},
		{"unknown connector", Filter{Connector: "kommo"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.List(t.Context(), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(names(got), tc.want) {
				t.Fatalf("List(%+v) = %v, want %v", tc.f, names(got), tc.want)
			}
		})
	}
	if r := rows["c1/b24"]; r.LastError != "400 bad phone" || r.Attempts != 1 {
		t.Errorf("dead row = %+v", r)
	}
}

func TestFilterValidation(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	now := time.Now()
	tooMany := make([]int64, maxFilterIDs+1)
	for i := range tooMany {
		tooMany[i] = int64(i + 1)
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want string
	}{
		{"bad state", Filter{State: "failed"}, `unknown state "failed"`},
		{"empty range", Filter{Since: now, Until: now}, "is not before until"},
		{"reversed range", Filter{Since: now, Until: now.Add(-time.Hour)}, "is not before until"},
		{"zero id", Filter{IDs: []int64{1, 0}}, "id 0"},
		{"too many ids", Filter{IDs: tooMany}, "at most 10000"},
		{"negative limit", Filter{Limit: -1}, "negative limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.List(t.Context(), tc.f)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "outbox: list") {
				t.Fatalf("List: %v, want outbox: list ... ErrInvalid containing %q", err, tc.want)
			}
			if tc.name == "negative limit" {
				return // only List has a limit
			}
			for op, fn := range map[string]func(context.Context, Filter) (int64, error){"requeue": s.Requeue, "redeliver": s.Redeliver, "drop": s.Drop} {
				f := tc.f
				f.Key = "k" // narrows, so only the bad field can fail
				if op != "drop" {
					f.State = "" // Requeue/Redeliver set their own state
				}
				if tc.name == "bad state" {
					f.State = tc.f.State
				}
				if _, err := fn(t.Context(), f); !errors.Is(err, ErrInvalid) {
					t.Errorf("%s: %v, want ErrInvalid", op, err)
				}
			}
		})
	}
}

func TestListLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want int }{
		{0, DefaultListLimit}, {1, 1}, {MaxListLimit, MaxListLimit}, {MaxListLimit + 1, MaxListLimit},
	} {
		if got, err := listLimit(tc.in); err != nil || got != tc.want {
			t.Errorf("listLimit(%d) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
	s := openTest(t, Options{})
	var entries []Entry
	for i := range DefaultListLimit + 5 {
		entries = append(entries, entry(fmt.Sprintf("c%05d", i), time.Now(), "b24"))
	}
	mustEnqueue(t, s, entries...)
	def, err := s.List(t.Context(), Filter{})
	if err != nil || len(def) != DefaultListLimit {
		t.Fatalf("List with limit 0: %d rows, %v, want %d", len(def), err, DefaultListLimit)
	}
	all, err := s.List(t.Context(), Filter{Limit: MaxListLimit + 100})
	if err != nil || len(all) != DefaultListLimit+5 {
		t.Fatalf("List with a huge limit: %d rows, %v, want %d", len(all), err, DefaultListLimit+5)
	}
}

// Acceptance 4 at the store level: a dead-lettered record is listed as dead
// and requeued; it is then delivered.
func TestRequeueDeadLetter(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	rows := fixture(t, s, clock.Now())
	mustEnqueue(t, s, entry("c4", clock.Now(), "amo"))
	c4 := mustLease(t, s, "amo", 10, time.Hour)
	if len(c4) != 2 { // c0 (retry due now) and c4
		t.Fatalf("leased %v", keysOf(c4))
	}
	if err := s.Bury(t.Context(), c4[1], "401 token revoked"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(t.Context(), c4[0]); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)

	dead, err := s.List(t.Context(), Filter{State: Dead})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(dead); !slices.Equal(got, []string{"c1/b24", "c4/amo"}) {
		t.Fatalf("dead = %v", got)
	}
	if _, err := s.Requeue(t.Context(), Filter{State: Done}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Requeue of done rows: %v, want ErrInvalid", err)
	}
	// Requeue by id; a live row among the ids is not touched.
	n, err := s.Requeue(t.Context(), Filter{IDs: []int64{rows["c1/b24"].ID, rows["c2/b24"].ID}})
	if err != nil || n != 1 {
		t.Fatalf("Requeue by id = %d, %v, want 1", n, err)
	}
	r := rowByKey(t, s, "c1", "b24")
	if r.State != Pending || r.Attempts != 0 || !r.NextAttemptAt.Equal(clock.Now()) || r.LastError != "400 bad phone" {
		t.Fatalf("requeued row = %+v", r)
	}
	if got := keysOf(mustLease(t, s, "b24", 10, time.Hour)); !slices.Equal(got, []string{"c2", "c1"}) {
		t.Fatalf("leasable after requeue: %v, want [c2 c1]", got)
	}
	// An empty filter requeues every dead row.
	n, err = s.Requeue(t.Context(), Filter{})
	if err != nil || n != 1 {
		t.Fatalf("Requeue all = %d, %v, want 1 (c4/amo)", n, err)
	}
	if rows, _ := s.List(t.Context(), Filter{State: Dead}); len(rows) != 0 {
		t.Fatalf("dead rows left: %v", names(rows))
	}
}

func TestDrop(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	rows := fixture(t, s, time.Now())
	if _, err := s.Drop(t.Context(), Filter{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Drop with an empty filter: %v, want ErrInvalid", err)
	}
	if _, err := s.Drop(t.Context(), Filter{State: Dead}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Drop with only a state: %v, want ErrInvalid", err)
	}
	leased := rows["c2/amo"]
	n, err := s.Drop(t.Context(), Filter{IDs: []int64{rows["c1/b24"].ID, leased.ID}})
	if err != nil || n != 2 {
		t.Fatalf("Drop = %d, %v, want 2", n, err)
	}
	if got, _ := s.List(t.Context(), Filter{IDs: []int64{rows["c1/b24"].ID, leased.ID}}); len(got) != 0 {
		t.Fatalf("dropped rows still listed: %v", names(got))
	}
	if err := s.Ack(t.Context(), leased); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Ack of a dropped row: %v, want ErrLeaseLost", err)
	}
	n, err = s.Drop(t.Context(), Filter{Connector: "b24", State: Done})
	if err != nil || n != 2 {
		t.Fatalf("Drop done b24 = %d, %v, want 2", n, err)
	}
	left, _ := s.List(t.Context(), Filter{})
	if got := names(left); !slices.Equal(got, []string{"c0/amo", "c1/amo", "c2/b24"}) {
		t.Fatalf("left after drops: %v", got)
	}
}

func TestRedeliver(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	base := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	fixture(t, s, base)
	clock.Advance(time.Hour)
	if _, err := s.Redeliver(t.Context(), Filter{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Redeliver with an empty filter: %v, want ErrInvalid", err)
	}
	if _, err := s.Redeliver(t.Context(), Filter{Connector: "b24", State: Dead}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Redeliver of dead rows: %v, want ErrInvalid", err)
	}
	// b24 calls of [base+1h, base+4h): c1 is dead, c2 pending, c3 done: only c3 moves.
	n, err := s.Redeliver(t.Context(), Filter{Connector: "b24", Since: base.Add(time.Hour), Until: base.Add(4 * time.Hour)})
	if err != nil || n != 1 {
		t.Fatalf("Redeliver = %d, %v, want 1", n, err)
	}
	r := rowByKey(t, s, "c3", "b24")
	if r.State != Pending || r.Attempts != 0 || !r.DoneAt.IsZero() || !r.NextAttemptAt.Equal(clock.Now()) {
		t.Fatalf("redelivered row = %+v", r)
	}
	if r := rowByKey(t, s, "c0", "b24"); r.State != Done {
		t.Fatalf("row outside the range changed: %+v", r)
	}
	if r := rowByKey(t, s, "c1", "amo"); r.State != Done {
		t.Fatalf("row of another connector changed: %+v", r)
	}
	// It is delivered again like a new row.
	leased := mustLease(t, s, "b24", 10, time.Hour)
	if got := keysOf(leased); !slices.Contains(got, "c3") {
		t.Fatalf("redelivered row not leasable: %v", got)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	if st, err := s.Stats(t.Context()); err != nil || len(st) != 0 {
		t.Fatalf("Stats of an empty outbox = %v, %v", st, err)
	}
	start := clock.Now()
	fixture(t, s, start) // all enqueued at start
	clock.Advance(90 * time.Second)
	mustEnqueue(t, s, entry("c9", clock.Now(), "kommo"))
	k := mustLease(t, s, "kommo", 1, 0)
	if err := s.Ack(t.Context(), k[0]); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)

	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []ConnectorStats{
		{Connector: "amo", Pending: 1, Leased: 1, Done: 1, OldestPending: start, OldestPendingAge: 100 * time.Second},
		{Connector: "b24", Pending: 1, Done: 2, Dead: 1, OldestPending: start, OldestPendingAge: 100 * time.Second},
		{Connector: "kommo", Done: 1},
	}
	if len(st) != len(want) {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	for i := range want {
		g, w := st[i], want[i]
		if g.Connector != w.Connector || g.Pending != w.Pending || g.Leased != w.Leased || g.Done != w.Done ||
			g.Dead != w.Dead || !g.OldestPending.Equal(w.OldestPending) || g.OldestPendingAge != w.OldestPendingAge {
			t.Errorf("Stats[%d] = %+v\nwant %+v", i, g, w)
		}
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now, Retention: 7 * 24 * time.Hour})
	s.pruneChunk = 10
	ctx := t.Context()
	b24 := s.CallState("b24")

	// Old calls, delivered (done), failed (dead) and still pending.
	var old []Entry
	for i := range 25 { // several prune chunks
		old = append(old, entry(fmt.Sprintf("old-%04d", i), clock.Now(), "b24"))
	}
	mustEnqueue(t, s, old...)
	mustEnqueue(t, s, entry("old-dead", clock.Now(), "b24"), entry("old-pending", clock.Now(), "amo"))
	for {
		rows := mustLease(t, s, "b24", 100, time.Hour)
		if len(rows) == 0 {
			break
		}
		for _, r := range rows {
			var err error
			if r.Key == "old-dead" {
				err = s.Bury(ctx, r, "400")
			} else {
				err = s.Ack(ctx, r)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, kv := range [][3]string{{"b24", "old-0001", "call_id"}, {"b24", "old-dead", "call_id"}, {"amo", "old-pending", "lead"}, {"b24", "orphan", "call_id"}} {
		if err := s.CallState(kv[0]).Set(ctx, kv[1], kv[2], "v-"+kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"old-0001", "old-dead", "old-pending", "orphan"} {
		if err := s.AppendTimeline(ctx, key, TimelineEntry{Kind: "enqueued", Summary: key}); err != nil {
			t.Fatal(err)
		}
	}

	clock.Advance(7*24*time.Hour - time.Second)
	// A recent call: delivered just before pruning.
	mustEnqueue(t, s, entry("new", clock.Now(), "b24"))
	nr := mustLease(t, s, "b24", 1, 0)
	if err := s.Ack(ctx, nr[0]); err != nil {
		t.Fatal(err)
	}
	if err := b24.Set(ctx, "new", "call_id", "v-new"); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTimeline(ctx, "new", TimelineEntry{Kind: "delivered"}); err != nil {
		t.Fatal(err)
	}

	if res, err := s.Prune(ctx); err != nil || res != (PruneResult{}) {
		t.Fatalf("Prune before retention = %+v, %v, want nothing", res, err)
	}
	clock.Advance(2 * time.Second) // old rows are now past retention, new ones are not
	res, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (PruneResult{Rows: 25, CallState: 2, Timeline: 2}); res != want {
		t.Fatalf("Prune = %+v, want %+v", res, want)
	}
	left, err := s.List(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(left); !slices.Equal(got, []string{"old-dead/b24", "old-pending/amo", "new/b24"}) {
		t.Fatalf("rows left = %v", got)
	}
	for _, kv := range []struct {
		connector, key, field string
		kept                  bool
	}{
		{"b24", "old-0001", "call_id", false}, // its row was pruned
		{"b24", "orphan", "call_id", false},   // never had a row
		{"b24", "old-dead", "call_id", true},  // its row is dead, kept
		{"amo", "old-pending", "lead", true},  // its row is pending
		{"b24", "new", "call_id", true},       // recent
	} {
		_, ok, err := s.CallState(kv.connector).Get(ctx, kv.key, kv.field)
		if err != nil || ok != kv.kept {
			t.Errorf("call state %s/%s kept = %v (%v), want %v", kv.connector, kv.key, ok, err, kv.kept)
		}
	}
	for key, kept := range map[string]bool{"old-0001": false, "orphan": false, "old-dead": true, "old-pending": true, "new": true} {
		tl, err := s.Timeline(ctx, key)
		if err != nil || (len(tl) == 1) != kept {
			t.Errorf("timeline %s: %d entries (%v), kept want %v", key, len(tl), err, kept)
		}
	}
}

// TestPing: Ping answers on an empty and a filled outbox and fails once it is closed.
func TestPing(t *testing.T) {
	t.Parallel()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping of an empty outbox: %v", err)
	}
	mustEnqueue(t, s, entry("c1", time.Now(), "b24"))
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close: %v, want ErrClosed", err)
	}
}
