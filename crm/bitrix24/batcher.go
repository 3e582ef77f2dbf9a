package bitrix24

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

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
// once by the portal), so the backlog drains up to 50 times faster. While a backlog holds (or
// more than a quarter of the burst is spent: api.Bucket.Backlog) a flusher first lingers a
// moment (liveLinger, finishLinger) for company. Without one the slot is there at once and the
// command goes alone, as a plain request: nothing waits on purpose.
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
	// waiting cancels a flusher's wait for a slot when its class has nothing left; joined tells
	// a lingering flusher that a command of its class was queued.
	waiting [2]context.CancelFunc
	joined  [2]chan struct{}
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

func newBatcher(a *Adapter) *batcher {
	return &batcher{a: a, joined: [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}}
}

// cmd is one command for the batcher.
type cmd struct {
	method string
	params any        // JSON form, for the command sent alone
	values url.Values // query form, inside a batch
}

// do sends one command through the batcher and returns its raw result. ctx bounds the wait
// while the command is queued; its values (trace, request counter) follow the command.
func (b *batcher) do(ctx context.Context, class int, c cmd) (json.RawMessage, error) {
	out := b.doAll(ctx, class, c)
	return out[0].raw, out[0].err
}

// doAll queues commands together (they go in the same request when a batch is sent) and waits
// for every answer.
func (b *batcher) doAll(ctx context.Context, class int, cmds ...cmd) []batchOutcome {
	out := make([]batchOutcome, len(cmds))
	if err := ctx.Err(); err != nil {
		for i, c := range cmds {
			out[i].err = fmt.Errorf("%s: %w", c.method, context.Cause(ctx))
		}
		return out
	}
	items := make([]*batchItem, len(cmds))
	b.mu.Lock()
	for i, c := range cmds {
		items[i] = &batchItem{ctx: ctx, class: class, method: c.method, params: c.params, values: c.values, done: make(chan batchOutcome, 1)}
		b.q = append(b.q, items[i])
		b.count[class]++
	}
	if !b.running[class] {
		b.running[class] = true
		b.a.wg.Add(1)
		go b.flusher(class)
	}
	b.mu.Unlock()
	select {
	case b.joined[class] <- struct{}{}:
	default:
	}
	for i, it := range items {
		out[i].raw, out[i].err = b.wait(ctx, it)
	}
	return out
}

// wait waits for the answer of a queued command; when ctx ends first, the command is withdrawn
// unless it was already taken to be sent (then its answer decides).
func (b *batcher) wait(ctx context.Context, it *batchItem) (json.RawMessage, error) {
	method := it.method
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
		n := len(b.q)
		b.mu.Unlock()
		if n < api.MaxBatch && b.a.bucket.Backlog() {
			// While requests are held back (or the burst is being spent), what can wait a
			// moment waits for company: what queues meanwhile (other calls' finishes, other
			// cards) goes in the same request.
			b.linger(wctx, class)
		}
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

// linger waits for company: liveLinger or finishLinger, or until a full batch is queued, or
// (finishes) until as many finishes wait as deliveries the dispatcher runs at once: nothing more
// can join then. (Fewer deliveries in progress is the usual case at a steady rate: their
// finishes are worth the wait, the bucket refills meanwhile.)
func (b *batcher) linger(ctx context.Context, class int) {
	d, enough := finishLinger, deliverConcurrency
	if class == classLive {
		d, enough = liveLinger, api.MaxBatch
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		b.mu.Lock()
		full := len(b.q) >= api.MaxBatch || b.count[class] >= enough
		b.mu.Unlock()
		if full {
			return
		}
		select {
		case <-t.C:
			return
		case <-ctx.Done():
			return
		case <-b.joined[class]:
		}
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
		if crm.Tracing(it.ctx) { // the summary and the redacted form cost more than a call without a timeline
			crm.Trace(it.ctx, "request", fmt.Sprintf("POST batch: %s (with %d other commands)", it.method, len(items)-1),
				httpclient.Redact(it.values.Encode()))
		}
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
		switch {
		case !crm.Tracing(it.ctx):
		case out.err != nil:
			crm.Trace(it.ctx, "error", it.method+" (batch): "+out.err.Error(), "")
		default:
			crm.Trace(it.ctx, "response", it.method+" (batch): ok", httpclient.Redact(string(out.raw)))
		}
		it.done <- out
	}
}

// How long commands wait for company while requests are held back (Bucket.Backlog): a show or
// hide a few hundred milliseconds, a finish a few seconds (shows and hides that go meanwhile
// take the finishes waiting along).
const (
	liveLinger   = 250 * time.Millisecond
	finishLinger = 5 * time.Second
)

// finish sends telephony.externalCall.finish through the batcher.
func (b *batcher) finish(ctx context.Context, p api.FinishParams) (*api.FinishResult, error) {
	raw, err := b.do(ctx, classDeliver, cmd{api.MethodFinish, p, p.Values()})
	if err != nil {
		return nil, err
	}
	return api.DecodeFinish(raw)
}

// showHideCmd is telephony.externalCall.show or hide as a batcher command.
func showHideCmd(method, callID string, users []int) cmd {
	p := map[string]any{"CALL_ID": callID}
	switch len(users) {
	case 0:
	case 1:
		p["USER_ID"] = users[0]
	default:
		p["USER_ID"] = users
	}
	return cmd{method, p, api.ShowHideValues(callID, users)}
}

// showHide sends telephony.externalCall.show or hide through the batcher, as a live command.
func (b *batcher) showHide(ctx context.Context, method, callID string, users []int) (bool, error) {
	raw, err := b.do(ctx, classLive, showHideCmd(method, callID, users))
	if err != nil {
		return false, err
	}
	return api.DecodeBool(method, raw)
}

// deliverConcurrency is how many deliveries the dispatcher runs at once for Bitrix24
// (crm.ConcurrencyHinter): while a backlog holds them back, the finishes of all of them wait
// together and go in one batch. The rate limiter, not this number, bounds the requests; it
// also bounds the connections and goroutines a slow portal can tie up.
const deliverConcurrency = 16

// DeliverConcurrency implements crm.ConcurrencyHinter.
func (a *Adapter) DeliverConcurrency() int { return deliverConcurrency }

var _ crm.ConcurrencyHinter = (*Adapter)(nil)
