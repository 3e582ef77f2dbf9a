package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// The live path of one connector (see liveCalls).
const (
	// liveQueue is how many live events of one call may wait; beyond that the oldest is dropped
	// (reason queue_full).
	liveQueue = 64
	// liveMaxCalls bounds the calls with live work waiting or running per connector; events of
	// further calls are dropped (queue_full), so a flood of calls cannot grow the daemon.
	liveMaxCalls = 4096
	// liveWorkers is how many Live calls of one connector run at once (the adapter's rate
	// limiter decides how many of them talk to the CRM): a fixed pool, so that a slow CRM never
	// multiplies goroutines.
	liveWorkers = 16
	// liveTimeout bounds a ringing or show action; liveHideTimeout a hide (LiveStopRinging,
	// LiveHangup), which may wait longer: a card shown must not stay up for want of a slot.
	liveTimeout     = 10 * time.Second
	liveHideTimeout = 30 * time.Second
	// outboundCardDelay holds back the card of an outbound call for a moment: a call the
	// network refuses at once (busy, congestion: the lab's end within 5 ms of the dial) must not
	// pop up a card after it ended, while a real customer's phone takes seconds to ring.
	outboundCardDelay = 300 * time.Millisecond
	// ringCardDelay holds back every other ringing card by a few milliseconds, for the same
	// reason: an extension found busy at once (the lab's inbound_busy_ext ends 4 ms after the
	// Dial) stops ringing before its card would have left.
	ringCardDelay = 20 * time.Millisecond
	// liveCallMaxAge forgets the live state of a call that never got its LiveHangup (a flushed
	// call; at most the call model's maximum call age).
	liveCallMaxAge = 12 * time.Hour
)

// liveCalls runs the live events of one connector: the events of a call in order, one at a time,
// on a fixed pool of workers that take the calls with work in turn (a call waiting for its card's
// delay or a slow CRM never holds up the others beyond the pool), and with a context per action
// that says when the action is no longer wanted (crm.LiveHandler):
//
//   - LiveRinging of extension X: cancelled when the call ends, X stops ringing or another
//     extension answers; it waits ringCardDelay first (an outbound call's card
//     outboundCardDelay), so that a Dial refused at once never shows a card;
//   - LiveAnswered, LiveTransferred: cancelled when the call ends;
//   - LiveStopRinging, LiveHangup: hides, never cancelled for staleness.
//
// The cancellation happens when the later event is pushed (the call model's goroutine), not
// when it is handled, so an action waiting in the adapter's rate limiter gives up at once. A
// ringing action already stale when its turn comes is dropped without calling the adapter; the
// other kinds reach it (they may carry hides). Drops are counted in
// pbxbridge_live_actions_dropped_total{connector,reason}, and every live request the adapter
// traces goes to the call's timeline through tl (lazily, never blocking the live path).
type liveCalls struct {
	name string
	lh   crm.LiveHandler // nil: the adapter shows nothing live
	m    *metrics
	log  *slog.Logger
	tl   *timelineBuffer // nil: no timeline
	base context.Context // the connector's run context
	now  func() time.Time
	// drop counts dropped events for the status page.
	drop func()

	// ready holds the calls with an event to handle now, each at most once (liveCall.queued);
	// it has room for every call the map may hold.
	ready chan *liveCall
	start sync.Once
	wg    sync.WaitGroup

	mu     sync.Mutex
	calls  map[string]*liveCall
	closed bool
	swept  time.Time
}

// liveCall is the live state of one call key.
type liveCall struct {
	key   string
	items []liveItem
	// queued: in ready; running: a worker handles its first item; deferred: its first item
	// waits for its notBefore on a timer.
	queued, running, deferred bool
	ended                     bool
	touched                   time.Time
	// ctx is cancelled (call_ended) by the call's LiveHangup; rings hold one context per ringing
	// extension, children of ctx.
	ctx    context.Context
	cancel context.CancelCauseFunc
	rings  map[string]ringCtx
}

type ringCtx struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

type liveItem struct {
	ev        call.Live
	ctx       context.Context
	notBefore time.Time
}

func newLiveCalls(base context.Context, name string, adapter crm.Adapter, m *metrics, log *slog.Logger, tl *timelineBuffer) *liveCalls {
	lh, _ := adapter.(crm.LiveHandler)
	return &liveCalls{
		name: name, lh: lh, m: m, log: log, tl: tl, base: base, now: time.Now, drop: func() {},
		ready: make(chan *liveCall, liveMaxCalls), calls: map[string]*liveCall{},
	}
}

// scheduleLocked puts lc in the ready queue unless it is there, being handled or waiting for
// its timer. The queue never blocks: it has room for liveMaxCalls calls and each is in it once.
func (l *liveCalls) scheduleLocked(lc *liveCall) {
	if lc.queued || lc.running || lc.deferred || len(lc.items) == 0 {
		return
	}
	lc.queued = true
	l.ready <- lc
}

// worker handles ready calls, one event at a time, until the connector stops.
func (l *liveCalls) worker() {
	defer l.wg.Done()
	for {
		select {
		case <-l.base.Done():
			return
		case lc := <-l.ready:
			l.step(lc)
		}
	}
}

// step handles the first event of lc (or puts it on its timer), then schedules lc again if it
// has more, or forgets it once it ended and has nothing left.
func (l *liveCalls) step(lc *liveCall) {
	l.mu.Lock()
	lc.queued = false
	if len(lc.items) == 0 {
		l.forgetLocked(lc)
		l.mu.Unlock()
		return
	}
	it := lc.items[0]
	if d := it.notBefore.Sub(l.now()); d > 0 && it.ctx.Err() == nil {
		lc.deferred = true
		l.mu.Unlock()
		time.AfterFunc(d, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			lc.deferred = false
			if len(lc.items) > 0 && lc.items[0].notBefore.Equal(it.notBefore) {
				lc.items[0].notBefore = time.Time{}
			}
			if !l.closed {
				l.scheduleLocked(lc)
			}
		})
		return
	}
	lc.items[0] = liveItem{}
	lc.items = lc.items[1:]
	lc.running = true
	l.mu.Unlock()
	l.handle(lc.key, &it)
	l.mu.Lock()
	lc.running = false
	if len(lc.items) > 0 && !l.closed {
		l.scheduleLocked(lc)
	} else {
		l.forgetLocked(lc)
	}
	l.mu.Unlock()
}

// forgetLocked removes an ended call with nothing left to do.
func (l *liveCalls) forgetLocked(lc *liveCall) {
	if !lc.ended || len(lc.items) > 0 || lc.running || lc.deferred {
		return
	}
	if l.calls[lc.key] == lc {
		delete(l.calls, lc.key)
	}
	lc.cancel(&crm.StaleError{Reason: crm.LiveDropCallEnded})
}

// push queues a live event without blocking (the call model's goroutine calls it) and cancels
// the actions the event makes stale.
func (l *liveCalls) push(ev *call.Live) {
	if l.lh == nil {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.base.Err() != nil {
		return
	}
	l.start.Do(func() { // the pool starts with the first event (a connector without calls has none)
		l.wg.Add(liveWorkers)
		for range liveWorkers {
			go l.worker()
		}
	})
	key := ev.Key()
	l.sweepLocked(now)
	lc := l.calls[key]
	if lc == nil {
		if len(l.calls) >= liveMaxCalls {
			l.droppedLocked(key, ev, crm.LiveDropQueueFull)
			return
		}
		ctx, cancel := context.WithCancelCause(l.base)
		lc = &liveCall{key: key, ctx: ctx, cancel: cancel, rings: map[string]ringCtx{}}
		l.calls[key] = lc
	}
	lc.touched = now
	it := liveItem{ev: *ev, ctx: lc.ctx}
	switch ev.Kind {
	case call.LiveRinging:
		r, ok := lc.rings[ev.Ext]
		if !ok || r.ctx.Err() != nil {
			ctx, cancel := context.WithCancelCause(lc.ctx)
			r = ringCtx{ctx: ctx, cancel: cancel}
			lc.rings[ev.Ext] = r
		}
		it.ctx = r.ctx
		it.notBefore = now.Add(ringCardDelay)
		if ev.Direction == call.Outbound {
			it.notBefore = now.Add(outboundCardDelay)
		}
	case call.LiveAnswered:
		for ext, r := range lc.rings {
			if ext != ev.Ext {
				r.cancel(&crm.StaleError{Reason: crm.LiveDropAnsweredElsewhere})
				delete(lc.rings, ext)
			}
		}
	case call.LiveStopRinging:
		if r, ok := lc.rings[ev.Ext]; ok {
			r.cancel(&crm.StaleError{Reason: crm.LiveDropStoppedRinging})
			delete(lc.rings, ev.Ext)
		}
		it.ctx = l.base
	case call.LiveHangup:
		lc.cancel(&crm.StaleError{Reason: crm.LiveDropCallEnded})
		lc.ended = true
		it.ctx = l.base
	}
	if len(lc.items) >= liveQueue {
		old := lc.items[0]
		lc.items[0] = liveItem{}
		lc.items = lc.items[1:]
		l.droppedLocked(key, &old.ev, crm.LiveDropQueueFull)
	}
	lc.items = append(lc.items, it)
	l.scheduleLocked(lc)
}

// handle runs one live action.
func (l *liveCalls) handle(key string, it *liveItem) {
	ev := &it.ev
	if l.base.Err() != nil {
		return
	}
	if ev.Kind == call.LiveRinging {
		if stale := crm.LiveStale(it.ctx); stale != nil {
			l.dropped(key, ev, crm.StaleReason(stale))
			return
		}
	}
	timeout := liveTimeout
	if ev.Kind == call.LiveStopRinging || ev.Kind == call.LiveHangup {
		timeout = liveHideTimeout
	}
	ctx, cancel := context.WithTimeout(it.ctx, timeout)
	defer cancel()
	if l.tl != nil {
		ctx = crm.WithTrace(ctx, func(kind, summary, detail string) {
			l.tl.add(key, outbox.TimelineEntry{At: l.now(), Connector: l.name, Kind: kind, Summary: summary, Detail: detail})
		})
	}
	err := l.lh.Live(ctx, ev)
	switch {
	case err == nil:
		l.m.live.WithLabelValues(l.name, "ok").Inc()
	case errors.Is(err, crm.ErrLiveStale) || crm.LiveStale(ctx) != nil:
		reason := crm.StaleReason(err)
		if reason == "" {
			reason = crm.StaleReason(context.Cause(ctx))
		}
		if reason == "" {
			reason = "other"
		}
		l.dropped(key, ev, reason)
	default:
		l.m.live.WithLabelValues(l.name, "error").Inc()
		if l.base.Err() == nil {
			l.log.Warn("live call event failed", "call", key, "kind", ev.Kind, "ext", ev.Ext, "err", err)
			l.trace(key, "error", fmt.Sprintf("live %s %s failed: %v", ev.Kind, ev.Ext, err))
		}
	}
}

func (l *liveCalls) dropped(key string, ev *call.Live, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.droppedLocked(key, ev, reason)
}

func (l *liveCalls) droppedLocked(key string, ev *call.Live, reason string) {
	l.m.live.WithLabelValues(l.name, "dropped").Inc()
	l.m.liveDropped.WithLabelValues(l.name, reason).Inc()
	l.drop()
	what := string(ev.Kind)
	if ev.Ext != "" {
		what += " " + ev.Ext
	}
	l.trace(key, "decision", fmt.Sprintf("live %s not shown: %s", what, (&crm.StaleError{Reason: reason}).Error()))
}

func (l *liveCalls) trace(key, kind, summary string) {
	if l.tl != nil {
		l.tl.add(key, outbox.TimelineEntry{At: l.now(), Connector: l.name, Kind: kind, Summary: summary})
	}
}

// sweepLocked forgets calls idle for liveCallMaxAge (no LiveHangup ever came), at most once a
// minute.
func (l *liveCalls) sweepLocked(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, lc := range l.calls {
		if !lc.running && !lc.queued && !lc.deferred && now.Sub(lc.touched) > liveCallMaxAge {
			lc.cancel(&crm.StaleError{Reason: crm.LiveDropCallEnded})
			delete(l.calls, k)
		}
	}
}

// close stops taking events and waits for the actions in progress (the connector's run context
// is cancelled by then, so they end promptly).
func (l *liveCalls) close() {
	l.mu.Lock()
	l.closed = true
	for _, lc := range l.calls {
		if !lc.running {
			lc.cancel(&crm.StaleError{Reason: crm.LiveDropCallEnded})
		}
	}
	l.mu.Unlock()
	l.wg.Wait()
	l.mu.Lock()
	for _, lc := range l.calls {
		lc.cancel(&crm.StaleError{Reason: crm.LiveDropCallEnded})
	}
	l.mu.Unlock()
}

// pending returns how many calls have live state (tests).
func (l *liveCalls) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}
