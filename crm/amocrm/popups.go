package amocrm

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

// popupTimeout bounds one POST /api/v2/events: a pop-up later than this is useless.
const popupTimeout = 10 * time.Second

// popupMax is the most pop-ups sent in one request.
const popupMax = 100

// popupQueueMax bounds the pop-ups waiting for a request. While amoCRM is slow or down and calls
// keep ringing (Live callers give up after their short deadline, their pop-ups stay queued), a
// pop-up beyond it fails at once with errPopupQueueFull.
const popupQueueMax = 1000

var (
	errPopupQueueFull = errors.New("too many pop-ups are waiting for amoCRM")
	errPopupStale     = errors.New("the pop-up waited too long for amoCRM and was dropped")
)

// popups coalesces concurrent pop-up requests without delaying a lone one: the first is sent at
// once; those that arrive while a request is in flight leave together in the next, with the
// users of pop-ups for the same number merged into one item (a queue ringing five agents is one
// item). Each waiting Live gets the outcome of the request that carried its pop-up. At most
// popupQueueMax pop-ups wait, and one that waited popupTimeout is dropped unsent (too late to
// be useful).
type popups struct {
	send func(ctx context.Context, items []api.Event) error
	ctx  context.Context  // adapter lifetime
	now  func() time.Time // set before the first submit (default time.Now)

	mu       sync.Mutex
	pending  []*popupItem
	inflight bool
}

type popupItem struct {
	ev     api.Event
	queued time.Time
	done   chan struct{}
	err    error
}

func newPopups(ctx context.Context, send func(context.Context, []api.Event) error) *popups {
	return &popups{ctx: ctx, send: send, now: time.Now}
}

// submit queues ev and waits for its request's outcome or ctx. After ctx ends the pop-up may
// still be sent.
func (p *popups) submit(ctx context.Context, ev api.Event) error {
	it := &popupItem{ev: ev, queued: p.now(), done: make(chan struct{})}
	p.mu.Lock()
	if len(p.pending) >= popupQueueMax {
		p.mu.Unlock()
		return errPopupQueueFull
	}
	p.pending = append(p.pending, it)
	if !p.inflight {
		p.inflight = true
		go p.run()
	}
	p.mu.Unlock()
	select {
	case <-it.done:
		return it.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run sends batches until nothing is pending.
func (p *popups) run() {
	for {
		p.mu.Lock()
		n := min(len(p.pending), popupMax)
		if n == 0 {
			p.inflight = false
			p.mu.Unlock()
			return
		}
		batch := slices.Clone(p.pending[:n])
		p.pending = slices.Delete(p.pending, 0, n)
		p.mu.Unlock()

		now := p.now()
		batch = slices.DeleteFunc(batch, func(it *popupItem) bool {
			if now.Sub(it.queued) < popupTimeout {
				return false
			}
			it.err = errPopupStale
			close(it.done)
			return true
		})
		if len(batch) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(p.ctx, popupTimeout)
		err := p.send(ctx, mergePopups(batch))
		cancel()
		for _, it := range batch {
			it.err = err
			close(it.done)
		}
	}
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
