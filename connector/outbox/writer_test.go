package outbox

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// One op failing inside a group commit must leave no trace of itself and
// must not fail the ops that share its transaction.
func TestFailedWriteDoesNotFailItsBatch(t *testing.T) {
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
	for len(s.ops) < n {
		time.Sleep(time.Millisecond)
	}
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
