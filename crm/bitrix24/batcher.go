package bitrix24

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// Batch classes: deliveries' finishes, and live cards' show and hide.
const (
	classDeliver = 0
	classLive    = 1
)

// batcher sends the commands that can wait for a rate-limit slot — finish (deliveries), show
// and hide (live cards) — together: while a backlog holds them back, every command waiting when
// a slot comes goes in one `batch` request (docs/crm-apis.md A.7: up to 50 commands, counted
// once by the portal), so the backlog drains up to 50 times faster. Without a backlog the slot
// is there at once and the command goes alone, as a plain request: nothing waits on purpose.
//
// Each class has a flusher goroutine while it has commands queued: it waits for a slot (live
// cards with the bucket's priority), then takes every queued command, its own class first, up
// to 50. A command whose context ends while it is queued is withdrawn (a stale show is never
// sent); once taken it is sent and its caller gets the answer, whatever happened to its
// context meanwhile (a hide must know whether the show went through). attachRecord and register
// never go through here: uploads cannot be batched, and register must give the card at once.
type batcher struct {
	a *Adapter

	mu      sync.Mutex
	q       []*batchItem
	count   [2]int
	running [2]bool
	// waiting cancels a flusher's wait for a slot when its class has nothing left.
	waiting [2]context.CancelFunc
	seq     atomic.Uint64
}

type batchItem struct {
	ctx    context.Context
	class  int
	method string
	params any        // JSON form, for a command sent alone
	values url.Values // query form, for a command inside a batch
	taken  bool
	done   chan batchOutcome
}

type batchOutcome struct {
	raw json.RawMessage
	err error
}

func newBatcher(a *Adapter) *batcher { return &batcher{a: a} }

// do sends one command through the batcher and returns its raw result. ctx bounds the wait
// while the command is queued; its values (trace, request counter) follow the command.
func (b *batcher) do(ctx context.Context, class int, method string, params any, values url.Values) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", method, context.Cause(ctx))
	}
	it := &batchItem{ctx: ctx, class: class, method: method, params: params, values: values, done: make(chan batchOutcome, 1)}
	b.mu.Lock()
	b.q = append(b.q, it)
	b.count[class]++
	if !b.running[class] {
		b.running[class] = true
		b.a.wg.Add(1)
		go b.flusher(class)
	}
	b.mu.Unlock()
	select {
	case out := <-it.done:
		return out.raw, out.err
	case <-ctx.Done():
		b.mu.Lock()
		if !it.taken {
			b.removeLocked(it)
			b.mu.Unlock()
			return nil, fmt.Errorf("%s: %w", method, context.Cause(ctx))
		}
		b.mu.Unlock()
		out := <-it.done // already sent: its answer decides
		return out.raw, out.err
	}
}

func (b *batcher) removeLocked(it *batchItem) {
	for i, x := range b.q {
		if x == it {
			b.q = append(b.q[:i], b.q[i+1:]...)
			b.count[it.class]--
			if b.count[it.class] == 0 && b.waiting[it.class] != nil {
				b.waiting[it.class]()
			}
			return
		}
	}
}

// flusher sends the queued commands of its class (and whatever else is queued then) each time
// it gets a slot, until its class has nothing queued.
func (b *batcher) flusher(class int) {
	defer b.a.wg.Done()
	for {
		b.mu.Lock()
		if b.count[class] == 0 {
			b.running[class] = false
			b.mu.Unlock()
			return
		}
		bg := b.a.background()
		wctx, cancel := context.WithCancel(bg)
		b.waiting[class] = cancel
		b.mu.Unlock()
		_, err := b.a.bucket.Wait(wctx, class == classLive)
		b.mu.Lock()
		b.waiting[class] = nil
		b.mu.Unlock()
		cancel()
		if err != nil {
			if bg.Err() != nil {
				b.failAll(class, fmt.Errorf("bitrix24: stopping: %w", bg.Err()))
			}
			continue // nothing left of this class while it waited
		}
		items := b.take(class)
		if len(items) == 0 {
			b.a.bucket.Refund()
			continue
		}
		b.send(bg, items)
	}
}

// take removes up to api.MaxBatch commands from the queue: those of class first, then the
// others, each in arrival order. Commands whose context already ended are answered at once.
func (b *batcher) take(class int) []*batchItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*batchItem
	keep := b.q[:0]
	for _, pass := range []bool{true, false} {
		for _, it := range b.q {
			if it.taken || (it.class == class) != pass {
				continue
			}
			if it.ctx.Err() != nil {
				it.taken = true
				b.count[it.class]--
				it.done <- batchOutcome{err: fmt.Errorf("%s: %w", it.method, context.Cause(it.ctx))}
				continue
			}
			if len(out) < api.MaxBatch {
				it.taken = true
				b.count[it.class]--
				out = append(out, it)
			}
		}
	}
	for _, it := range b.q {
		if !it.taken {
			keep = append(keep, it)
		}
	}
	clear(b.q[len(keep):])
	b.q = keep
	return out
}

func (b *batcher) failAll(class int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := b.q[:0]
	for _, it := range b.q {
		if it.class == class {
			b.count[class]--
			it.taken = true
			it.done <- batchOutcome{err: err}
			continue
		}
		keep = append(keep, it)
	}
	clear(b.q[len(keep):])
	b.q = keep
}

// send sends the commands taken with a slot already reserved: one alone as a plain request, more
// as one batch.
func (b *batcher) send(bg context.Context, items []*batchItem) {
	if len(items) == 1 {
		it := items[0]
		ctx := api.WithReservedSlot(it.ctx)
		if it.class == classLive {
			ctx = api.WithPriority(ctx)
		}
		if it.method != api.MethodFinish {
			ctx = httpclient.Idempotent(ctx) // show and hide can be repeated
		}
		var raw json.RawMessage
		_, err := b.a.client.Call(ctx, it.method, it.params, &raw)
		it.done <- batchOutcome{raw: raw, err: err}
		return
	}
	ctx := api.WithReservedSlot(bg)
	cmds := make([]api.BatchCmd, len(items))
	keys := make([]string, len(items))
	live := false
	for i, it := range items {
		// Keys sort in sending order (the fake runs commands in key order, Bitrix24 in cmd
		// order).
		keys[i] = fmt.Sprintf("c%06d", b.seq.Add(1)%1000000)
		cmds[i] = api.BatchCmd{Key: keys[i], Method: it.method, Params: it.values}
		live = live || it.class == classLive
		crm.Trace(it.ctx, "request", fmt.Sprintf("POST batch: %s (with %d other commands)", it.method, len(items)-1),
			httpclient.Redact(it.values.Encode()))
		addShare(it.ctx, len(items))
	}
	if live {
		ctx = api.WithPriority(ctx)
	}
	res, err := b.a.client.BatchWrite(ctx, cmds)
	b.a.m.batched.Observe(float64(len(items)))
	for i, it := range items {
		var out batchOutcome
		switch {
		case err != nil:
			out.err = fmt.Errorf("batch of %d commands: %w", len(items), err)
		case res.Errors[keys[i]] != nil:
			out.err = res.Errors[keys[i]]
		default:
			raw, ok := res.Result[keys[i]]
			if !ok {
				out.err = fmt.Errorf("%s: the batch answer has no result for it", it.method)
			}
			out.raw = raw
		}
		if out.err != nil {
			crm.Trace(it.ctx, "error", it.method+" (batch): "+out.err.Error(), "")
		} else {
			crm.Trace(it.ctx, "response", it.method+" (batch): ok", httpclient.Redact(string(out.raw)))
		}
		it.done <- out
	}
}

// finish sends telephony.externalCall.finish through the batcher.
func (b *batcher) finish(ctx context.Context, p api.FinishParams) (*api.FinishResult, error) {
	raw, err := b.do(ctx, classDeliver, api.MethodFinish, p, p.Values())
	if err != nil {
		return nil, err
	}
	return api.DecodeFinish(raw)
}

// showHide sends telephony.externalCall.show or hide through the batcher, as a live command.
func (b *batcher) showHide(ctx context.Context, method, callID string, users []int) (bool, error) {
	p := map[string]any{"CALL_ID": callID}
	switch len(users) {
	case 0:
	case 1:
		p["USER_ID"] = users[0]
	default:
		p["USER_ID"] = users
	}
	raw, err := b.do(ctx, classLive, method, p, api.ShowHideValues(callID, users))
	if err != nil {
		return false, err
	}
	return api.DecodeBool(method, raw)
}

// deliverConcurrency is how many deliveries the dispatcher runs at once for Bitrix24
// (crm.ConcurrencyHinter): while a backlog holds them back, the finishes of all of them wait
// together and go in one batch. The rate limiter, not this number, bounds the requests.
const deliverConcurrency = 32

// DeliverConcurrency implements crm.ConcurrencyHinter.
func (a *Adapter) DeliverConcurrency() int { return deliverConcurrency }

var _ crm.ConcurrencyHinter = (*Adapter)(nil)
