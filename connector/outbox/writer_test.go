package outbox

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

// One op failing inside a group commit must leave no trace of itself and
// must not fail the ops that share its transaction.
func TestFailedWriteDoesNotFailItsBatch(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx := t.Context()

	// Hold the writer inside a first batch so that the next ops queue up and
	// run together in the second one.
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.write(ctx, func(wtx, time.Time) error {
			close(held)
			<-hold
			return nil
		})
	}()
	<-held

	boom := errors.New("boom")
	const n = 6
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i] = s.write(ctx, func(tx wtx, now time.Time) error {
				if _, err := tx.exec(sqlEnqueue, fmt.Sprintf("k%d", i), "b24", []byte{}, now.UnixNano(), now.UnixNano()); err != nil {
					return err
				}
				if i == 2 {
					return boom // after its insert: the insert must be undone
				}
				return nil
			})
		})
	}
	// Let all n ops reach the queue before the writer moves on.
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%d queued writes", n), func() bool { return len(s.ops) >= n })
	close(hold)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, err := range results {
		switch {
		case i == 2 && !errors.Is(err, boom):
			t.Errorf("failing op: %v, want its own error", err)
		case i != 2 && err != nil:
			t.Errorf("op %d failed with its batch mate: %v", i, err)
		}
	}
	rows, err := s.List(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	got := keysOf(rows)
	slices.Sort(got)
	if want := []string{"k0", "k1", "k3", "k4", "k5"}; !slices.Equal(got, want) {
		t.Fatalf("rows = %v, want %v: the failed op's insert undone, the others kept", got, want)
	}
}

// syncMode reads the writer connection's synchronous setting from inside a transaction.
func syncMode(tx wtx) (int, error) {
	var mode int
	err := tx.query("PRAGMA synchronous", nil, func(r *sql.Rows) (bool, error) {
		return false, r.Scan(&mode)
	})
	return mode, err
}

// Leases and open-call changes alone commit without an fsync (synchronous=NORMAL); any
// transaction that holds a durable write runs at FULL, lazy writes sharing it included, and
// the mode is switched back for the next durable write.
func TestLazyCommits(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx := t.Context()
	const full, normal = 2, 1
	expect := func(what string, lazy bool, want int) {
		t.Helper()
		var got int
		fn := func(tx wtx, _ time.Time) (err error) { got, err = syncMode(tx); return err }
		var err error
		if lazy {
			err = s.writeLazy(ctx, fn)
		} else {
			err = s.write(ctx, fn)
		}
		if err != nil || got != want {
			t.Fatalf("%s: synchronous=%d (%v), want %d", what, got, err, want)
		}
	}
	expect("durable write", false, full)
	expect("lazy write alone", true, normal)
	expect("durable write after a lazy one", false, full)
	expect("lazy write again", true, normal)

	// A lazy op that shares its transaction with a durable one is fsync'd with it.
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.writeLazy(ctx, func(wtx, time.Time) error { close(held); <-hold; return nil })
	}()
	<-held
	modes := make([]int, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, lazy := range []bool{true, false} {
		wg.Go(func() {
			fn := func(tx wtx, _ time.Time) (err error) { modes[i], err = syncMode(tx); return err }
			if lazy {
				errs[i] = s.writeLazy(ctx, fn)
			} else {
				errs[i] = s.write(ctx, fn)
			}
		})
	}
	testkit.WaitFor(t, 10*time.Second, "2 queued writes", func() bool { return len(s.ops) >= 2 })
	close(hold)
	wg.Wait()
	if err := errors.Join(<-first, errors.Join(errs...)); err != nil {
		t.Fatal(err)
	}
	if modes[0] != full || modes[1] != full {
		t.Fatalf("mixed batch: synchronous %v, want FULL for both", modes)
	}

	// After a failed PRAGMA the mode is unknown: the next durable write sets FULL even though
	// the bookkeeping says the connection is already there (the connection is at NORMAL here).
	if err := s.writeLazy(ctx, func(wtx, time.Time) error { s.lazySync, s.syncUnknown = false, true; return nil }); err != nil {
		t.Fatal(err)
	}
	expect("durable write after a failed switch", false, full)

	// The public operations: Enqueue and Ack are durable, Lease and PutOpenCalls lazy.
	before := s.WriterStats()
	mustEnqueue(t, s, entry("k1", time.Now(), "b24"))
	rows := mustLease(t, s, "b24", 1, time.Minute)
	if err := s.PutOpenCalls(ctx, []OpenCall{{Key: "k2", PBX: "pbx", Data: []byte("{}")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, rows[0]); err != nil {
		t.Fatal(err)
	}
	after := s.WriterStats()
	if d, l, w := after.DurableCommits-before.DurableCommits, after.LazyCommits-before.LazyCommits, after.Writes-before.Writes; d != 2 || l != 2 || w != 4 {
		t.Fatalf("durable %d, lazy %d commits for %d writes; want 2, 2, 4", d, l, w)
	}
	if after.CommitTime <= before.CommitTime {
		t.Fatalf("commit time did not grow: %v -> %v", before.CommitTime, after.CommitTime)
	}
}
