package amocrm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

// popupTimeout bounds one POST /api/v2/events, and how long a pop-up may wait for one when its
// caller's context has no end of its own: a pop-up later than this is useless.
const popupTimeout = 10 * time.Second

// popupMax is the most pop-ups sent in one request.
const popupMax = 100

// popupQueueMax bounds the pop-ups waiting for a request. While amoCRM is slow or down and calls
// keep ringing, a pop-up beyond it fails at once with errPopupQueueFull.
const popupQueueMax = 1000

var (
	errPopupQueueFull = errors.New("too many pop-ups are waiting for amoCRM")
	errPopupStale     = errors.New("the pop-up waited too long for amoCRM and was dropped")
)

// popups coalesces concurrent pop-up requests without delaying a lone one: a pop-up goes in the
// next request as soon as the account's limiter grants one (with PriorityLive, ahead of every
// delivery); those that arrive meanwhile leave together, with the users of pop-ups for the same
// number merged into one item (a queue ringing five agents is one item).
//
// A pop-up is only sent while its moment lasts: the Live caller's context ends when the phone
// stops ringing (the daemon's contract), and a pop-up whose context ended, or that waited
// popupTimeout, is taken out of the queue unsent and its caller gets an error wrapping
// crm.ErrLiveStale. The request is built only once the limiter has granted it, from the pop-ups
// still alive then. After a 429 the pop-ups of the refused request go back to the head of the
// queue and wait for the account's pause like everything else; whichever still ring when it ends
// go first. At most popupQueueMax pop-ups wait.
type popups struct {
	send  func(ctx context.Context, items []api.Event) error
	limit *api.Limiter     // nil: none
	ctx   context.Context  // adapter lifetime
	now   func() time.Time // set before the first submit (default time.Now)

	mu       sync.Mutex
	pending  []*popupItem
	running  bool
	wake     context.CancelFunc // ends the run's wait for a slot (nothing alive to send)
	retrying bool               // the next request resends pop-ups refused with 429
}

type popupItem struct {
	ev     api.Event
	ctx    context.Context // the Live caller's: traces, and the pop-up's moment
	queued time.Time
	taken  bool // in a request
	done   chan struct{}
	err    error
}

func newPopups(ctx context.Context, limit *api.Limiter, send func(context.Context, []api.Event) error) *popups {
	return &popups{ctx: ctx, limit: limit, send: send, now: time.Now}
}

// submit queues ev and waits for its request's outcome. When ctx ends, or popupTimeout passes,
// before the pop-up was put in a request, it is dropped unsent (crm.ErrLiveStale); once in a
// request, its outcome is awaited.
func (p *popups) submit(ctx context.Context, ev api.Event) error {
	it := &popupItem{ev: ev, ctx: ctx, queued: p.now(), done: make(chan struct{})}
	p.mu.Lock()
	if len(p.pending) >= popupQueueMax {
		p.mu.Unlock()
		return errPopupQueueFull
	}
	p.pending = append(p.pending, it)
	if !p.running {
		p.running = true
		go p.run()
	}
	p.mu.Unlock()
	timer := time.NewTimer(popupTimeout)
	defer timer.Stop()
	var why error
	select {
	case <-it.done:
		return it.err
	case <-ctx.Done():
		why = context.Cause(ctx)
	case <-timer.C:
		why = errPopupStale
	}
	p.mu.Lock()
	if it.taken {
		p.mu.Unlock()
		<-it.done // already in a request: its answer comes within popupTimeout
		return it.err
	}
	p.pending = slices.DeleteFunc(p.pending, func(x *popupItem) bool { return x == it })
	if len(p.pending) == 0 && p.wake != nil {
		p.wake()
	}
	p.mu.Unlock()
	if stale := crm.LiveStale(ctx); stale != nil {
		return stale // the daemon's *StaleError: why the moment passed
	}
	return fmt.Errorf("%w (%w)", crm.ErrLiveStale, why)
}

// run sends requests until nothing is pending.
func (p *popups) run() {
	for {
		p.mu.Lock()
		if len(p.pending) == 0 || p.ctx.Err() != nil {
			p.running = false
			p.mu.Unlock()
			return
		}
		waitCtx, wake := context.WithCancel(p.ctx)
		p.wake = wake
		prio := api.PriorityLive
		if p.retrying {
			prio = api.PriorityRetry
		}
		p.mu.Unlock()

		var permit *api.Permit
		if p.limit != nil {
			var err error
			permit, err = p.limit.Acquire(waitCtx, prio)
			if err != nil {
				wake()
				continue // nothing alive to send any more (or closing): look again
			}
		}
		wake()
		p.mu.Lock()
		p.wake = nil
		n := min(len(p.pending), popupMax)
		batch := slices.Clone(p.pending[:n])
		p.pending = slices.Delete(p.pending, 0, n)
		for _, it := range batch {
			it.taken = true
		}
		p.retrying = false
		p.mu.Unlock()
		if len(batch) == 0 {
			if permit != nil {
				permit.Cancel()
			}
			continue
		}
		ctx := fanoutTrace(p.ctx, contexts(batch))
		ctx = api.WithoutRetry(api.WithPriority(ctx, api.PriorityLive))
		if permit != nil {
			ctx = api.WithPermit(ctx, permit)
		}
		ctx, cancel := context.WithTimeout(ctx, popupTimeout)
		err := p.send(ctx, mergePopups(batch))
		cancel()
		if api.IsStatus(err, http.StatusTooManyRequests) {
			// The account pauses: put them back first in line; those still ringing when it
			// resumes go first.
			p.mu.Lock()
			for _, it := range batch {
				it.taken = false
			}
			p.pending = append(batch, p.pending...)
			p.retrying = true
			p.mu.Unlock()
			for _, it := range batch {
				crm.Trace(it.ctx, "decision", "pop-up waits", "amoCRM answered 429: the pop-up waits for the account's pause and is dropped if the phone stops ringing first")
			}
			continue
		}
		for _, it := range batch {
			it.err = err
			close(it.done)
		}
	}
}

func contexts(batch []*popupItem) []context.Context {
	out := make([]context.Context, len(batch))
	for i, it := range batch {
		out[i] = it.ctx
	}
	return out
}

// fanoutTrace returns base with a trace that records each step in the timeline of every context
// of ctxs that has one: a request made for several calls at once (a batch of calls, merged
// pop-ups) appears in each call's timeline.
func fanoutTrace(base context.Context, ctxs []context.Context) context.Context {
	var tracing []context.Context
	for _, c := range ctxs {
		if c != nil && crm.Tracing(c) {
			tracing = append(tracing, c)
		}
	}
	if len(tracing) == 0 {
		return base
	}
	return crm.WithTrace(base, func(kind, summary, detail string) {
		for _, c := range tracing {
			crm.Trace(c, kind, summary, detail)
		}
	})
}

// mergePopups makes one item per phone number, with the union of the users, in first-seen order.
func mergePopups(batch []*popupItem) []api.Event {
	var out []api.Event
	at := map[string]int{}
	for _, it := range batch {
		i, ok := at[it.ev.PhoneNumber]
		if !ok {
			at[it.ev.PhoneNumber] = len(out)
			out = append(out, api.Event{Type: it.ev.Type, PhoneNumber: it.ev.PhoneNumber, Users: slices.Clone(it.ev.Users)})
			continue
		}
		for _, u := range it.ev.Users {
			if !slices.Contains(out[i].Users, u) {
				out[i].Users = append(out[i].Users, u)
			}
		}
	}
	return out
}
