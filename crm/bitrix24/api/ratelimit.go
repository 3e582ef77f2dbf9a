package api

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
)

// Bucket is the client-side mirror of the portal's leaky bucket (A.1.4): it holds up to Burst
// request slots and refills Rate slots per second. Requests marked with WithPriority (live call
// cards, routing look-ups) may use every slot; other requests leave Reserve slots for them, so a
// backlog of deliveries never delays a ringing card by more than a refill interval.
//
// Normal requests queue in arrival order (a channel semaphore), so that none starves behind
// later ones; priority requests bypass the queue.
//
// A Bucket is safe for concurrent use; waiting is bounded by the request context.
type Bucket struct {
	rate    float64 // slots per second
	burst   float64
	reserve float64
	now     func() time.Time
	queue   chan struct{} // held by the normal request at the head of the queue

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewBucket returns a full bucket. now may be nil (time.Now).
func NewBucket(rate float64, burst, reserve int, now func() time.Time) *Bucket {
	if now == nil {
		now = time.Now
	}
	if burst < 1 {
		burst = 1
	}
	if reserve < 0 || reserve >= burst {
		reserve = 0
	}
	if rate <= 0 {
		rate = 1
	}
	return &Bucket{rate: rate, burst: float64(burst), reserve: float64(reserve), now: now, tokens: float64(burst), last: now(),
		queue: make(chan struct{}, 1)}
}

// take consumes one slot if the priority class may have it, else returns how long until it may.
func (b *Bucket) take(priority bool) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(b.burst, b.tokens+dt*b.rate)
		b.last = now
	}
	need := 1.0
	if !priority {
		need += b.reserve
	}
	if b.tokens >= need {
		b.tokens--
		return 0
	}
	d := time.Duration((need - b.tokens) / b.rate * float64(time.Second))
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return d
}

// Wait blocks until a slot is granted. When ctx has a deadline that comes before the next
// slot, it returns a *LimitError at once instead of sleeping until the deadline.
func (b *Bucket) Wait(ctx context.Context, priority bool) (time.Duration, error) {
	var waited time.Duration
	if !priority {
		start := time.Now()
		select {
		case b.queue <- struct{}{}:
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		}
		defer func() { <-b.queue }()
		waited = time.Since(start)
	}
	for {
		if err := ctx.Err(); err != nil {
			return waited, err
		}
		d := b.take(priority)
		if d == 0 {
			return waited, nil
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return waited, &LimitError{Wait: d}
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return waited, ctx.Err()
		case <-t.C:
			waited += d
		}
	}
}

// Refund gives back a slot taken with Wait that was not used (a batch that found nothing left
// to send).
func (b *Bucket) Refund() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = math.Min(b.burst, b.tokens+1)
}

// Backlog reports whether requests are being held back or soon will be: a normal request waits
// for its slot now, or more than a quarter of the burst is spent (requests come faster than
// the bucket refills). What can wait a moment is then better sent together (docs/crm-apis.md
// A.7).
func (b *Bucket) Backlog() bool {
	return len(b.queue) > 0 || b.Available() < b.burst*3/4
}

// Available returns the slots available now (for metrics and tests).
func (b *Bucket) Available() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	dt := b.now().Sub(b.last).Seconds()
	return math.Min(b.burst, b.tokens+math.Max(dt, 0)*b.rate)
}

type priorityKey struct{}

// WithPriority marks requests made with ctx as urgent (see Bucket).
func WithPriority(ctx context.Context) context.Context {
	return context.WithValue(ctx, priorityKey{}, true)
}

func hasPriority(ctx context.Context) bool {
	v, _ := ctx.Value(priorityKey{}).(bool)
	return v
}

type reservedKey struct{}

// WithReservedSlot tells the Limiter that the caller already took a slot from the Bucket for
// the next request made with ctx (a batcher waits for its slot before it knows what to send):
// the first attempt does not wait again; retries do.
func WithReservedSlot(ctx context.Context) context.Context {
	used := new(atomic.Bool)
	return context.WithValue(ctx, reservedKey{}, used)
}

// takeReserved uses ctx's reserved slot, if it has an unused one.
func takeReserved(ctx context.Context) bool {
	used, ok := ctx.Value(reservedKey{}).(*atomic.Bool)
	return ok && used.CompareAndSwap(false, true)
}

// Limiter is an http.RoundTripper that takes a slot from a Bucket before every request, so
// that every attempt (including the short retries of crm/internal/httpclient) is counted.
//
// The time spent waiting for a slot must not count against the attempt's timeout: give the
// http.Client around it a timeout long enough for the queue (or none) and set AttemptTimeout,
// which starts when the request is actually sent.
type Limiter struct {
	Next   http.RoundTripper
	Bucket *Bucket
	// AttemptTimeout bounds one request from the moment its slot was granted (0: none).
	AttemptTimeout time.Duration
	// OnWait, when set, is told how long each request waited for its slot.
	OnWait func(time.Duration)
}

// RoundTrip implements http.RoundTripper.
//
// A request waiting for its slot gives up when its context ends. Once sent, a request whose
// context is cancelled because a live action became stale (crm.ErrLiveStale as the cause) runs
// on: its answer tells whether a card is now shown, which the hide that follows needs. Other
// cancellations (shutdown, timeouts) still cut it.
func (l *Limiter) RoundTrip(req *http.Request) (*http.Response, error) {
	if !takeReserved(req.Context()) {
		d, err := l.Bucket.Wait(req.Context(), hasPriority(req.Context()))
		if l.OnWait != nil {
			l.OnWait(d)
		}
		if err != nil {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, err
		}
	}
	next := l.Next
	if next == nil {
		next = http.DefaultTransport
	}
	parent := req.Context()
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		if c := context.Cause(parent); !errors.Is(c, crm.ErrLiveStale) {
			cancel(c)
		}
	})
	release := func() { stop(); cancel(nil) }
	if l.AttemptTimeout > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, l.AttemptTimeout)
		prev := release
		release = func() { cancelT(); prev() }
	}
	resp, err := next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: release}
	return resp, nil
}

// cancelBody releases the attempt's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
