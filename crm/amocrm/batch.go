package amocrm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

// batchItem is one call waiting to be logged.
type batchItem struct {
	call api.Call
	ctx  context.Context // the Deliver's context, for tracing
	done chan struct{}

	// Outcome, set before done is closed: placed, or itemErr (a per-item failure such as 263),
	// or err (the whole request failed, already classified).
	placed  *api.PlacedCall
	itemErr *api.ItemError
	err     error
}

// batcher coalesces concurrent calls to POST /api/v4/calls. A call waits at most window for
// others unless a batch is full (sent at once); while a request is in flight, partial batches
// wait for it to finish, so a backlog delivered by many concurrent Deliver calls leaves in full
// batches while a lone call is sent alone after window. Each item gets its own outcome, mapped
// back by request_id; finish is called for every item (in the sending goroutine, whatever
// happened to the waiting Deliver) before its done channel is closed.
type batcher struct {
	send   func(ctx context.Context, calls []api.Call) (*api.CallsResult, error)
	finish func(it *batchItem)
	ctx    context.Context // bounds the requests; cancelled on Close
	max    int
	window time.Duration
	onSize func(n int)

	mu       sync.Mutex
	pending  []*batchItem
	timer    *time.Timer
	inflight int
	size     int // current batch size (shrinks after 504)
	seq      uint64
	wg       sync.WaitGroup
	closed   bool
}

func newBatcher(ctx context.Context, max int, window time.Duration, send func(context.Context, []api.Call) (*api.CallsResult, error), finish func(*batchItem)) *batcher {
	return &batcher{ctx: ctx, send: send, finish: finish, max: max, size: max, window: window, onSize: func(int) {}}
}

var errClosed = errors.New("adapter closed")

// submit queues it and waits for its outcome or ctx. After ctx ends the item may still be sent.
func (b *batcher) submit(ctx context.Context, it *batchItem) error {
	it.done = make(chan struct{})
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errClosed
	}
	b.pending = append(b.pending, it)
	if len(b.pending) >= b.size {
		b.flushLocked()
	} else if b.timer == nil && b.inflight == 0 {
		b.timer = time.AfterFunc(b.window, b.onTimer)
	}
	b.mu.Unlock()
	select {
	case <-it.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *batcher) onTimer() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer = nil
	if len(b.pending) > 0 && b.inflight == 0 {
		b.flushLocked()
	}
}

// flushLocked sends up to size pending items in a new goroutine.
func (b *batcher) flushLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	n := min(len(b.pending), b.size)
	items := make([]*batchItem, n)
	copy(items, b.pending[:n])
	b.pending = append(b.pending[:0], b.pending[n:]...)
	b.inflight++
	b.wg.Add(1)
	go b.run(items)
	if len(b.pending) >= b.size {
		b.flushLocked()
	}
}

func (b *batcher) run(items []*batchItem) {
	defer b.wg.Done()
	b.mu.Lock()
	calls := make([]api.Call, len(items))
	byID := make(map[string]*batchItem, len(items))
	for i, it := range items {
		b.seq++
		id := "c" + strconv.FormatUint(b.seq, 10)
		it.call.RequestID = id
		calls[i] = it.call
		byID[id] = it
	}
	b.mu.Unlock()
	b.onSize(len(items))
	for _, it := range items {
		crm.Trace(it.ctx, "decision", "POST "+api.PathCalls, fmt.Sprintf("sent in a batch of %d calls as %s", len(items), it.call.RequestID))
	}
	ctxs := make([]context.Context, len(items))
	for i, it := range items {
		ctxs[i] = it.ctx
	}
	// The request may wait (for the account's pause after a 429) as long as one of its
	// Deliver calls still waits for it, no longer: the others get the pause left as their
	// retry-after instead of a worker held.
	ctx, cancel := context.WithCancel(b.ctx)
	if dl, ok := latestDeadline(ctxs); ok {
		ctx, cancel = context.WithDeadline(b.ctx, dl)
	}
	// Every call of the batch rode on its requests: each Deliver's request count (the delivered
	// line of its timeline, crm_requests_per_call) includes them.
	var sent atomic.Int64
	res, err := b.send(crm.WithRequestCounter(fanoutTrace(ctx, ctxs), &sent), calls)
	cancel()
	for _, it := range items {
		for range sent.Load() {
			crm.CountRequest(it.ctx)
		}
	}
	b.adapt(err)
	if err != nil {
		var e *api.Error
		if errors.As(err, &e) && e.HTTPStatus == http.StatusBadRequest && len(e.Validation) > 0 {
			// A validation failure rejects the whole request: the items it names are bad, the
			// others were not placed and go again.
			bad := map[string]bool{}
			for _, v := range e.Validation {
				bad[string(v.RequestID)] = true
			}
			for id, it := range byID {
				if bad[id] {
					it.err = crm.Permanent(fmt.Errorf("logging the call: amoCRM rejected it: %w", err))
				} else {
					it.err = crm.Transient(fmt.Errorf("logging the call: not placed, another call of its batch was invalid: %w", err))
				}
			}
		} else {
			cerr := classify(fmt.Errorf("logging the call: %w", err))
			for _, it := range items {
				it.err = cerr
			}
		}
	} else {
		for i := range res.Embedded.Calls {
			pc := &res.Embedded.Calls[i]
			if it := byID[string(pc.RequestID)]; it != nil && it.placed == nil {
				it.placed = pc
			}
		}
		for i := range res.Errors {
			ie := &res.Errors[i]
			if it := byID[string(ie.RequestID)]; it != nil && it.placed == nil {
				it.itemErr = ie
			}
		}
		// An all-failed answer may omit request_id: with one item it is unambiguous.
		if len(items) == 1 && items[0].placed == nil && items[0].itemErr == nil && len(res.Errors) == 1 {
			items[0].itemErr = &res.Errors[0]
		}
		for _, it := range items {
			if it.placed == nil && it.itemErr == nil {
				it.err = crm.Transient(errors.New("logging the call: amoCRM neither placed the call nor reported an error for it"))
			}
		}
	}
	for _, it := range items {
		b.finish(it)
		close(it.done)
	}
	b.mu.Lock()
	b.inflight--
	if len(b.pending) > 0 && b.inflight == 0 && !b.closed {
		if len(b.pending) >= b.size {
			b.flushLocked()
		} else if b.timer == nil {
			b.timer = time.AfterFunc(b.window, b.onTimer)
		}
	}
	b.mu.Unlock()
}

// latestDeadline returns the latest deadline of ctxs, and false when one of them has none.
func latestDeadline(ctxs []context.Context) (time.Time, bool) {
	var latest time.Time
	for _, c := range ctxs {
		dl, ok := c.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return latest, !latest.IsZero()
}

// adapt shrinks the batch after a 504 (amoCRM times out on big batches, B.3) and grows it back
// after successes.
func (b *batcher) adapt(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case api.IsStatus(err, http.StatusGatewayTimeout):
		b.size = max(1, b.size/2)
	case err == nil && b.size < b.max:
		b.size = min(b.max, b.size+5)
	}
}

// close stops accepting items and waits for requests in flight; items still pending fail.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	pending := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, it := range pending {
		it.err = crm.Transient(errClosed)
		close(it.done)
	}
	b.wg.Wait()
}
