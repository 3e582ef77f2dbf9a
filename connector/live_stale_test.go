package connector

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// limiterLive is an adapter whose every action waits for a slot of a limiter the test controls
// (as a CRM adapter waits for its rate limiter), giving up when its context ends.
type limiterLive struct {
	slots chan struct{}

	mu      sync.Mutex
	started []string // kind:ext of every action that reached the adapter
	done    []string // kind:ext:result
}

func (a *limiterLive) Deliver(context.Context, *call.Record) error { return nil }

func (a *limiterLive) Live(ctx context.Context, ev *call.Live) error {
	name := string(ev.Kind) + ":" + ev.Ext
	a.mu.Lock()
	a.started = append(a.started, name)
	a.mu.Unlock()
	crm.Trace(ctx, "request", "POST card "+name, "")
	result := "ok"
	var err error
	slots := a.slots
	if ctx.Err() != nil {
		slots = nil // a request is never sent on a cancelled context
	}
	select {
	case <-slots:
	case <-ctx.Done():
		if stale := crm.LiveStale(ctx); stale != nil {
			err = fmt.Errorf("test: %s: %w", name, stale)
			result = "stale:" + crm.StaleReason(stale)
		} else {
			err = ctx.Err()
			result = "error"
		}
	}
	a.mu.Lock()
	a.done = append(a.done, name+":"+result)
	a.mu.Unlock()
	return err
}

func (a *limiterLive) snapshot() (started, done []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.started...), append([]string(nil), a.done...)
}

type liveBed struct {
	d    *Daemon
	a    *limiterLive
	l    *liveCalls
	stop func()
}

func newLiveBed(t *testing.T, tl *timelineBuffer) *liveBed {
	t.Helper()
	d := &Daemon{log: slog.New(slog.DiscardHandler)}
	d.m = newMetrics(prometheus.NewRegistry(), d, "test")
	a := &limiterLive{slots: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	l := newLiveCalls(ctx, "crm", a, d.m, d.log, tl)
	b := &liveBed{d: d, a: a, l: l}
	b.stop = func() { cancel(); l.close() }
	t.Cleanup(b.stop)
	return b
}

// waitFor re-checks cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (b *liveBed) push(id string, kind call.LiveKind, ext string, dir call.Direction) {
	b.l.push(&call.Live{PBX: "lab", CallID: id, Kind: kind, Ext: ext, Direction: dir, Customer: "+79001234567"})
}

func (b *liveBed) dropped(reason string) float64 {
	return testutil.ToFloat64(b.d.m.liveDropped.WithLabelValues("crm", reason))
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestLiveRingingCancelledByHangup: a ringing action waiting in the adapter's limiter gives up
// as soon as the call ends; the hangup still reaches the adapter (it hides).
func TestLiveRingingCancelledByHangup(t *testing.T) {
	t.Parallel()
	b := newLiveBed(t, nil)
	b.push("c1", call.LiveRinging, "101", call.Inbound)
	waitFor(t, "the ringing action to wait in the limiter", func() bool { s, _ := b.a.snapshot(); return has(s, "ringing:101") })
	b.push("c1", call.LiveHangup, "", call.Inbound)
	waitFor(t, "the ringing action to give up", func() bool { _, d := b.a.snapshot(); return has(d, "ringing:101:stale:call_ended") })
	waitFor(t, "the hangup to reach the adapter", func() bool { s, _ := b.a.snapshot(); return has(s, "hangup:") })
	b.a.slots <- struct{}{} // the hangup's hide goes through
	waitFor(t, "the hangup to finish", func() bool { _, d := b.a.snapshot(); return has(d, "hangup::ok") })
	if n := b.dropped(crm.LiveDropCallEnded); n != 1 {
		t.Fatalf("dropped{call_ended} = %v, want 1", n)
	}
	waitFor(t, "the call's live state to be forgotten", func() bool { return b.l.pending() == 0 })
}

// TestLiveRingingCancelledPerExtension: X stopping ringing cancels X's card, not Y's; another
// extension answering cancels the cards of those still waiting, not its own; a ringing action
// already stale when its turn comes never reaches the adapter; hides are never cancelled.
func TestLiveRingingCancelledPerExtension(t *testing.T) {
	t.Parallel()
	b := newLiveBed(t, nil)
	b.push("c1", call.LiveRinging, "101", call.Inbound)
	waitFor(t, "101's card to wait", func() bool { s, _ := b.a.snapshot(); return has(s, "ringing:101") })
	b.push("c1", call.LiveRinging, "102", call.Inbound) // queued behind 101's
	b.push("c1", call.LiveRinging, "103", call.Inbound)
	b.push("c1", call.LiveStopRinging, "101", call.Inbound)
	waitFor(t, "101's card to give up", func() bool { _, d := b.a.snapshot(); return has(d, "ringing:101:stale:stopped_ringing") })
	waitFor(t, "102's card to wait", func() bool { s, _ := b.a.snapshot(); return has(s, "ringing:102") })
	b.push("c1", call.LiveAnswered, "102", call.Inbound)
	b.push("c1", call.LiveHangup, "", call.Inbound) // the call ends while 102's card still waits
	waitFor(t, "102's card to give up", func() bool { _, d := b.a.snapshot(); return has(d, "ringing:102:stale:call_ended") })
	close(b.a.slots) // 101's hide and the hangup go through; 102's answered is stale (call ended)
	waitFor(t, "the hangup", func() bool { _, d := b.a.snapshot(); return has(d, "hangup::ok") })
	started, done := b.a.snapshot()
	if has(started, "ringing:103") {
		t.Errorf("103's card reached the adapter after 102 answered: %v", started)
	}
	if !has(done, "stop_ringing:101:ok") {
		t.Errorf("the hide of 101 did not go through: %v", done)
	}
	// 101 stopped ringing; 103 was answered elsewhere before its turn; 102's card and 102's
	// answered (a show) came after the call ended.
	want := map[string]float64{crm.LiveDropStoppedRinging: 1, crm.LiveDropAnsweredElsewhere: 1, crm.LiveDropCallEnded: 2}
	for r, n := range want {
		if got := b.dropped(r); got != n {
			t.Errorf("dropped{%s} = %v, want %v (started %v, done %v)", r, got, n, started, done)
		}
	}
}

// TestLiveOutboundCardWaits: an outbound call's card waits outboundCardDelay; a call refused at
// once (busy) never shows one, a call that rings on shows it.
func TestLiveOutboundCardWaits(t *testing.T) {
	t.Parallel()
	b := newLiveBed(t, nil)
	close(b.a.slots) // an unlimited CRM
	start := time.Now()
	b.push("busy", call.LiveRinging, "101", call.Outbound)
	b.push("busy", call.LiveHangup, "", call.Outbound)
	b.push("rings", call.LiveRinging, "101", call.Outbound)
	waitFor(t, "the ringing outbound call's card", func() bool { _, d := b.a.snapshot(); return has(d, "ringing:101:ok") })
	if took := time.Since(start); took < outboundCardDelay {
		t.Errorf("the outbound card came after %v, before the %v delay", took, outboundCardDelay)
	}
	waitFor(t, "the busy call's hangup", func() bool { _, d := b.a.snapshot(); return has(d, "hangup::ok") })
	started, _ := b.a.snapshot()
	n := 0
	for _, s := range started {
		if s == "ringing:101" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d outbound cards reached the adapter, want 1 (the busy call's must not): %v", n, started)
	}
	if got := b.dropped(crm.LiveDropCallEnded); got != 1 {
		t.Errorf("dropped{call_ended} = %v, want 1", got)
	}
}

// TestLiveQueueFull: events beyond liveQueue for one call drop the oldest, counted.
func TestLiveQueueFull(t *testing.T) {
	t.Parallel()
	b := newLiveBed(t, nil)
	b.push("c1", call.LiveRinging, "0", call.Inbound)
	waitFor(t, "the first action to wait", func() bool { s, _ := b.a.snapshot(); return has(s, "ringing:0") })
	for i := 1; i <= liveQueue+5; i++ {
		b.push("c1", call.LiveTransferred, fmt.Sprint(i), call.Inbound)
	}
	if got := b.dropped(crm.LiveDropQueueFull); got != 5 {
		t.Fatalf("dropped{queue_full} = %v, want 5", got)
	}
}

// TestLiveTimeline: the requests an adapter traces while a call rings, and the drops, reach the
// call's timeline in the outbox (`pbxbridge calls show`).
func TestLiveTimeline(t *testing.T) {
	t.Parallel()
	st, err := outbox.Open(context.Background(), filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	tl := newTimelineBuffer(st, slog.New(slog.DiscardHandler))
	tctx, tcancel := context.WithCancel(context.Background())
	tdone := make(chan struct{})
	go func() { defer close(tdone); tl.run(tctx) }()
	b := newLiveBed(t, tl)
	b.push("c1", call.LiveRinging, "101", call.Inbound)
	b.a.slots <- struct{}{}
	b.push("c1", call.LiveRinging, "102", call.Inbound)
	waitFor(t, "102's card to wait", func() bool { s, _ := b.a.snapshot(); return has(s, "ringing:102") })
	b.push("c1", call.LiveHangup, "", call.Inbound)
	b.a.slots <- struct{}{}
	waitFor(t, "the hangup", func() bool { _, d := b.a.snapshot(); return has(d, "hangup::ok") })
	waitFor(t, "the timeline", func() bool {
		entries, err := st.Timeline(context.Background(), "lab/c1")
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, e := range entries {
			lines = append(lines, e.Kind+" "+e.Summary)
		}
		all := strings.Join(lines, "\n")
		return strings.Contains(all, "request POST card ringing:101") && strings.Contains(all, "request POST card ringing:102") &&
			strings.Contains(all, "live ringing 102 not shown: live action dropped: the call has ended") &&
			strings.Contains(all, "request POST card hangup:")
	})
	tcancel()
	<-tdone
}

var _ crm.LiveHandler = (*limiterLive)(nil)
