package connector

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// blockingLive records live events per call; the first event of the call "slow" waits until an
// event of another call has been handled.
type blockingLive struct {
	mu      sync.Mutex
	seen    map[string][]int
	release chan struct{}
	once    sync.Once
}

func (b *blockingLive) Deliver(context.Context, *call.Record) error { return nil }

func (b *blockingLive) Live(ctx context.Context, ev *call.Live) error {
	if ev.CallID == "slow" && ev.Ext == "0" {
		select {
		case <-b.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var n int
	_, _ = fmt.Sscan(ev.Ext, &n)
	b.mu.Lock()
	b.seen[ev.CallID] = append(b.seen[ev.CallID], n)
	b.mu.Unlock()
	if ev.CallID != "slow" {
		b.once.Do(func() { close(b.release) })
	}
	return nil
}

// TestLiveEventsRunPerCall: a connector's live events are handled concurrently across calls (a
// slow card does not hold up the cards of other calls) and in order within a call.
func TestLiveEventsRunPerCall(t *testing.T) {
	t.Parallel()
	d := &Daemon{log: slog.New(slog.DiscardHandler)}
	d.m = newMetrics(prometheus.NewRegistry(), d, "test")
	a := &blockingLive{seen: map[string][]int{}, release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c := &connRT{name: "crm", adapter: a, log: d.log}
	c.live = newLiveCalls(ctx, "crm", a, d.m, d.log, nil)
	defer func() { cancel(); c.live.close() }()

	calls := []string{"slow", "a", "b", "c", "d", "e", "f", "g", "h", "i"}
	const perCall = 20
	for i := range perCall {
		for _, id := range calls {
			c.pushLive(&call.Live{PBX: "lab", CallID: id, Kind: call.LiveRinging, Ext: fmt.Sprint(i)})
		}
	}
	testkit.Eventually(t, 10*time.Second, "every call's events", func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		done := 0
		for _, id := range calls {
			if len(a.seen[id]) == perCall {
				done++
			}
		}
		if done < len(calls) {
			return fmt.Errorf("only %d of %d calls got all their events (a slow call held up the others?)", done, len(calls))
		}
		return nil
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range calls {
		for i, n := range a.seen[id] {
			if n != i {
				t.Fatalf("call %s: events handled in order %v", id, a.seen[id])
			}
		}
	}
}

var _ crm.LiveHandler = (*blockingLive)(nil)
