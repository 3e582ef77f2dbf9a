// Package dispatch delivers the outbox to CRM adapters: one Worker per connector instance leases
// due rows, calls the adapter's Deliver, and acknowledges, retries or dead-letters each row by the
// class of the adapter's error (crm.Classify):
//
//   - success: Ack (the row is done);
//   - transient: Retry after exponential backoff with full jitter (BackoffMin doubling up to
//     BackoffMax), or dead-letter once the call is older than GiveUpAfter (when set);
//   - rate-limited: Retry after the adapter's RetryAfter (at least BackoffMin);
//   - permanent: Bury (dead letter) with the reason, visible in `pbxbridge outbox list --dead`;
//   - auth: Retry after AuthPause and pause the connector for AuthPause (the CRM authorisation
//     is broken; records wait without being lost until an admin re-authorises). ResumeAuth
//     (new credentials arrived) ends the pause and makes the waiting rows due at once.
//
// An idle Worker does not poll: after a lease that left nothing due it sleeps until the outbox's
// next due time (a retry, a lease expiry) or until Wake (an enqueue, an operator's requeue). A
// connector whose licence gate is closed leases nothing: its rows wait in the outbox, and the
// gate is asked again every Poll. Run stops leasing when its context ends, lets deliveries in progress finish for up to
// DrainTimeout, then cancels them and releases their rows (a released row is delivered again
// later; adapters are idempotent per record key).
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Queue is the part of the outbox a Worker uses; *outbox.Store implements it.
type Queue interface {
	// LeaseNext leases due rows; with fewer than limit it also says when the next row becomes
	// due (zero: none), else now (outbox.Store.LeaseNext).
	LeaseNext(ctx context.Context, connector string, limit int, ttl time.Duration) ([]outbox.Row, time.Time, error)
	// Ack, Retry and Bury append the timeline entries to the row's call in the same transaction
	// when they succeed.
	Ack(ctx context.Context, row outbox.Row, timeline ...outbox.TimelineEntry) error
	Retry(ctx context.Context, row outbox.Row, next time.Time, errMsg string, timeline ...outbox.TimelineEntry) error
	Bury(ctx context.Context, row outbox.Row, reason string, timeline ...outbox.TimelineEntry) error
	Release(ctx context.Context, rows ...outbox.Row) (int, error)
	AppendTimeline(ctx context.Context, key string, entries ...outbox.TimelineEntry) error
}

// Options configure a Worker.
type Options struct {
	Connector string      // instance name: the outbox rows' connector and the metrics label
	Adapter   crm.Adapter // required

	Concurrency     int           // deliveries in flight at once (default 2)
	Batch           int           // rows leased at once (default Concurrency)
	BackoffMin      time.Duration // default 5s
	BackoffMax      time.Duration // default 10m
	GiveUpAfter     time.Duration // dead-letter transient failures of calls older than this (0 = never)
	DeliveryTimeout time.Duration // one attempt (default 60s)
	LeaseTTL        time.Duration // default 2×DeliveryTimeout + 30s
	DrainTimeout    time.Duration // graceful stop (default 10s)
	Poll            time.Duration // how often a closed licence gate is asked again, and the wait after a failed lease (default 1s)
	AuthPause       time.Duration // default 1m

	// Limiter, when set, spaces deliveries (a client-side rate limit on top of the adapter's).
	Limiter *rate.Limiter
	// Allowed is the licence gate; nil allows everything. It is called before every lease.
	Allowed func(connector string) bool
	// Skip, when set, is asked about every record before delivery; a non-empty reason skips the
	// CRM actions for that record (licence seats exceeded): the row is acknowledged and the
	// reason goes to the timeline.
	Skip func(connector string, rec *call.Record) (reason string)

	// OnDelivered, when set, is called after each successful delivery.
	OnDelivered func(connector string, rec *call.Record, attempts int)

	Clock  func() time.Time
	Rand   func() float64 // in [0,1), for jitter
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 2
	}
	if o.Batch <= 0 {
		o.Batch = o.Concurrency
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 5 * time.Second
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(10*time.Minute, o.BackoffMin)
	}
	if o.DeliveryTimeout <= 0 {
		o.DeliveryTimeout = 60 * time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2*o.DeliveryTimeout + 30*time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.AuthPause <= 0 {
		o.AuthPause = time.Minute
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Status is a Worker's state for the status page.
type Status struct {
	Connector   string    `json:"connector"`
	Licensed    bool      `json:"licensed"`
	InFlight    int64     `json:"in_flight"`
	Delivered   int64     `json:"delivered"`
	Failed      int64     `json:"failed"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	AuthBroken  bool      `json:"auth_broken"`
	PausedUntil time.Time `json:"paused_until,omitzero"`
}

// Worker delivers one connector's rows.
type Worker struct {
	q   Queue
	o   Options
	m   *Metrics
	log *slog.Logger

	wake chan struct{}
	// due is when the outbox has a row due next as far as the worker knows (zero: now, lease).
	dueMu sync.Mutex
	due   time.Time

	t *time.Timer // Run's sleep until due (Run's goroutine only)

	inFlight  atomic.Int64
	delivered atomic.Int64
	failed    atomic.Int64

	mu          sync.Mutex
	lastErr     string
	lastErrAt   time.Time
	authBroken  bool
	pausedUntil time.Time
	licensed    bool

	// authEpoch counts ResumeAuth calls: an attempt that started before the latest one and
	// failed on authorisation used the old credentials, so it is retried at once.
	authEpoch atomic.Uint64
	resume    atomic.Bool // ResumeAuth asked Run to make the waiting rows due
}

// dueNower is implemented by queues that can make a connector's waiting rows due at once
// (*outbox.Store).
type dueNower interface {
	RetryNow(ctx context.Context, connector string) (int64, error)
}

// ResumeAuth tells the worker that new CRM credentials arrived: the pause after a broken
// authorisation ends and the rows waiting for a later attempt become due. It never blocks.
func (w *Worker) ResumeAuth() {
	w.mu.Lock()
	w.pausedUntil = time.Time{}
	w.mu.Unlock()
	w.authEpoch.Add(1)
	w.resume.Store(true)
	w.Wake()
}

// New returns a Worker; m may be shared by all workers (nil disables metrics).
func New(q Queue, o Options, m *Metrics) *Worker {
	o.defaults()
	return &Worker{
		q:    q,
		o:    o,
		m:    m,
		log:  o.Logger.With("connector", o.Connector),
		wake: make(chan struct{}, 1),
	}
}

// Wake tells the worker new rows may be due (after an enqueue). It never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// dueBy makes the worker lease again by t at the latest (a retry it scheduled, a lease it could
// not settle).
func (w *Worker) dueBy(t time.Time) {
	w.dueMu.Lock()
	if !w.due.IsZero() && t.Before(w.due) {
		w.due = t
	}
	w.dueMu.Unlock()
	w.Wake()
}

// setDue records when the next row is due after a lease (zero next: none is pending).
func (w *Worker) setDue(next time.Time) {
	if next.IsZero() {
		next = time.Unix(1<<62/int64(time.Second), 0) // nothing pending: only Wake
	}
	w.dueMu.Lock()
	w.due = next
	w.dueMu.Unlock()
}

// untilDue returns how long to wait before the next lease (0: lease now).
func (w *Worker) untilDue() time.Duration {
	w.dueMu.Lock()
	defer w.dueMu.Unlock()
	if w.due.IsZero() {
		return 0
	}
	return w.due.Sub(w.o.Clock())
}

// leaseNow makes the next lease happen at once (after a wake).
func (w *Worker) leaseNow() {
	w.dueMu.Lock()
	w.due = time.Time{}
	w.dueMu.Unlock()
}

// Status returns the worker's current state.
func (w *Worker) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Status{
		Connector:   w.o.Connector,
		Licensed:    w.licensed,
		InFlight:    w.inFlight.Load(),
		Delivered:   w.delivered.Load(),
		Failed:      w.failed.Load(),
		LastError:   w.lastErr,
		LastErrorAt: w.lastErrAt,
		AuthBroken:  w.authBroken,
		PausedUntil: w.pausedUntil,
	}
}

// Run delivers until ctx ends, then drains (see the package comment). It returns nil after a
// clean drain.
func (w *Worker) Run(ctx context.Context) error {
	// hard ends the deliveries in progress once the drain timeout has passed.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	sem := make(chan struct{}, w.o.Concurrency)
	var wg sync.WaitGroup
	defer func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		t := time.NewTimer(w.o.DrainTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			w.log.Warn("drain timeout: cancelling deliveries in progress; their calls stay queued", "in_flight", w.inFlight.Load())
			cancelHard()
			<-done
		}
	}()

	for {
		if ctx.Err() != nil {
			return nil
		}
		if wait := w.pause(); wait > 0 {
			if !sleep(ctx, wait, nil) {
				return nil
			}
			continue
		}
		if w.resume.Swap(false) {
			w.retryNow(ctx)
			w.leaseNow() // the rows made due are not in the last lease's next-due time
		}
		// Wait for a free delivery slot before leasing, so leased rows never wait for a worker.
		free := w.o.Concurrency - len(sem)
		if free == 0 {
			select {
			case sem <- struct{}{}:
				<-sem
			case <-ctx.Done():
				return nil
			}
			continue
		}
		// Nothing due yet: sleep until the next row is, or until a wake (an enqueue).
		if d := w.untilDue(); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-w.wake:
				w.leaseNow()
			case <-w.timer(d):
			}
			continue
		}
		// A wake that comes during the lease leases again; the lease may have missed its row.
		select {
		case <-w.wake:
		default:
		}
		limit := min(free, w.o.Batch)
		rows, next, err := w.q.LeaseNext(ctx, w.o.Connector, limit, w.o.LeaseTTL)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.log.Error("leasing from the outbox", "err", err)
			if !sleep(ctx, w.o.Poll, nil) {
				return nil
			}
			continue
		}
		if len(rows) < limit {
			w.setDue(next)
		}
		for _, row := range rows {
			sem <- struct{}{}
			wg.Add(1)
			w.inFlight.Add(1)
			go func() {
				defer func() { <-sem; wg.Done(); w.inFlight.Add(-1) }()
				w.deliver(hard, row)
			}()
		}
	}
}

// retryNow makes the rows that wait for a later attempt due, after ResumeAuth.
func (w *Worker) retryNow(ctx context.Context) {
	dn, ok := w.q.(dueNower)
	if !ok {
		return
	}
	n, err := dn.RetryNow(ctx, w.o.Connector)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error("CRM authorisation renewed, but the waiting calls could not be made due; they leave at their next attempt", "err", err)
		}
		return
	}
	w.log.Info("CRM authorisation renewed: waiting calls leave now", "calls", n)
}

// pause returns how long the worker must wait before leasing: while unlicensed or after a
// broken authorisation.
func (w *Worker) pause() time.Duration {
	allowed := w.o.Allowed == nil || w.o.Allowed(w.o.Connector)
	w.mu.Lock()
	defer w.mu.Unlock()
	if allowed != w.licensed {
		w.licensed = allowed
		if allowed {
			w.log.Info("licence allows delivery")
		} else {
			w.log.Warn("no valid licence: calls stay queued until one is installed")
		}
	}
	if !allowed {
		return w.o.Poll
	}
	if now := w.o.Clock(); now.Before(w.pausedUntil) {
		return min(w.pausedUntil.Sub(now), w.o.Poll)
	}
	return 0
}

// timer returns a channel that receives after d, reusing the worker's timer.
func (w *Worker) timer(d time.Duration) <-chan time.Time {
	if w.t == nil {
		w.t = time.NewTimer(d)
	} else {
		w.t.Reset(d)
	}
	return w.t.C
}

// sleep waits for d, ctx or wake; it reports false when ctx ended.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C:
	}
	return true
}

// deliver runs one attempt for row and records the outcome. The adapter's trace and the
// outcome go to the call's timeline in the same transaction as the row's transition: one durable
// commit per attempt.
func (w *Worker) deliver(hard context.Context, row outbox.Row) {
	// Outbox writes must happen even while draining.
	bg := context.WithoutCancel(hard)
	rec, err := decode(row.Payload)
	if err != nil {
		w.finish(bg, row, "dead", nil, func(tl []outbox.TimelineEntry) error {
			return w.q.Bury(bg, row, "undecodable record: "+err.Error(), tl...)
		})
		return
	}
	if w.o.Skip != nil {
		if reason := w.o.Skip(w.o.Connector, rec); reason != "" {
			w.finish(bg, row, "skipped", []outbox.TimelineEntry{w.entry("skipped", reason, "")},
				func(tl []outbox.TimelineEntry) error { return w.q.Ack(bg, row, tl...) })
			return
		}
	}
	if w.o.Limiter != nil {
		if err := w.o.Limiter.Wait(hard); err != nil {
			w.release(bg, row)
			return
		}
	}

	var traces []outbox.TimelineEntry
	var tmu sync.Mutex
	var requests atomic.Int64
	ctx, cancel := context.WithTimeout(hard, w.o.DeliveryTimeout)
	ctx = crm.WithRequestCounter(ctx, &requests)
	ctx = crm.WithTrace(ctx, func(kind, summary, detail string) {
		tmu.Lock()
		traces = append(traces, outbox.TimelineEntry{At: w.o.Clock(), Connector: w.o.Connector, Kind: kind, Summary: summary, Detail: detail})
		tmu.Unlock()
	})
	start := w.o.Clock()
	epoch := w.authEpoch.Load()
	err = w.o.Adapter.Deliver(ctx, rec)
	cancel()
	elapsed := w.o.Clock().Sub(start)
	if w.m != nil {
		w.m.duration.WithLabelValues(w.o.Connector).Observe(elapsed.Seconds())
	}
	tmu.Lock()
	tl := traces
	traces = nil // a trace call after Deliver returned (a stray goroutine) is dropped
	tmu.Unlock()

	if err == nil {
		if w.m != nil {
			w.m.requestsPerCall.WithLabelValues(w.o.Connector).Observe(float64(requests.Load()))
		}
		w.delivered.Add(1)
		w.setAuth(false)
		tl = append(tl, w.entry("delivered", fmt.Sprintf("delivered on attempt %d (%d CRM requests, %v)", row.Attempts+1, requests.Load(), elapsed.Round(time.Millisecond)), ""))
		w.finish(bg, row, "delivered", tl, func(tl []outbox.TimelineEntry) error { return w.q.Ack(bg, row, tl...) })
		if w.o.OnDelivered != nil {
			w.o.OnDelivered(w.o.Connector, rec, row.Attempts+1)
		}
		return
	}

	if hard.Err() != nil && errors.Is(err, context.Canceled) {
		// Shutdown cut the attempt short: not the CRM's fault, do not count it.
		w.appendTimeline(bg, row, tl)
		w.release(bg, row)
		return
	}
	w.failed.Add(1)
	w.noteError(err)
	class, retryAfter := crm.Classify(err)
	now := w.o.Clock()
	msg := err.Error()
	switch class {
	case crm.ClassPermanent:
		w.log.Error("delivery failed permanently: dead letter", "call", row.Key, "attempt", row.Attempts+1, "err", err)
		tl = append(tl, w.entry("dead", "dead letter: "+msg, ""))
		w.finish(bg, row, "dead", tl, func(tl []outbox.TimelineEntry) error { return w.q.Bury(bg, row, msg, tl...) })
	case crm.ClassAuth:
		if w.authEpoch.Load() != epoch {
			// New credentials arrived while this attempt ran with the old ones.
			tl = append(tl, w.entry("retry", "CRM authorisation renewed during the attempt: retrying now", msg))
			w.finish(bg, row, "retry", tl, func(tl []outbox.TimelineEntry) error { return w.q.Retry(bg, row, now, msg, tl...) })
			return
		}
		w.setAuth(true)
		w.log.Error("CRM authorisation broken: calls stay queued until it is renewed", "call", row.Key, "err", err)
		tl = append(tl, w.entry("retry", "CRM authorisation broken, waiting: "+msg, ""))
		next := now.Add(w.o.AuthPause)
		w.mu.Lock()
		w.pausedUntil = next
		w.mu.Unlock()
		w.finish(bg, row, "auth", tl, func(tl []outbox.TimelineEntry) error { return w.q.Retry(bg, row, next, msg, tl...) })
		w.dueBy(next)
	case crm.ClassRateLimited:
		d := max(retryAfter, w.o.BackoffMin)
		w.log.Warn("CRM rate limit: retrying later", "call", row.Key, "after", d)
		tl = append(tl, w.entry("retry", fmt.Sprintf("rate limited, retry in %v", d.Round(time.Second)), msg))
		w.finish(bg, row, "rate_limited", tl, func(tl []outbox.TimelineEntry) error { return w.q.Retry(bg, row, now.Add(d), msg, tl...) })
		w.dueBy(now.Add(d))
	default:
		if w.o.GiveUpAfter > 0 && now.Sub(row.StartedAt) > w.o.GiveUpAfter {
			reason := fmt.Sprintf("gave up after %d attempts over %v: %s", row.Attempts+1, w.o.GiveUpAfter, msg)
			w.log.Error("delivery keeps failing: dead letter", "call", row.Key, "err", err)
			tl = append(tl, w.entry("dead", reason, ""))
			w.finish(bg, row, "dead", tl, func(tl []outbox.TimelineEntry) error { return w.q.Bury(bg, row, reason, tl...) })
			return
		}
		d := w.backoff(row.Attempts)
		w.log.Warn("delivery failed: retrying", "call", row.Key, "attempt", row.Attempts+1, "in", d.Round(time.Second), "err", err)
		tl = append(tl, w.entry("retry", fmt.Sprintf("attempt %d failed, retry in %v", row.Attempts+1, d.Round(time.Second)), msg))
		w.finish(bg, row, "retry", tl, func(tl []outbox.TimelineEntry) error { return w.q.Retry(bg, row, now.Add(d), msg, tl...) })
		w.dueBy(now.Add(d))
	}
}

// backoff is capped exponential backoff with full jitter: a random wait in [min/2, cap] where
// cap = BackoffMin·2^attempts, limited to BackoffMax.
func (w *Worker) backoff(attempts int) time.Duration {
	ceil := w.o.BackoffMax
	if attempts < 30 {
		if c := w.o.BackoffMin << attempts; c > 0 && c < ceil {
			ceil = c
		}
	}
	floor := w.o.BackoffMin / 2
	return floor + time.Duration(w.o.Rand()*float64(ceil-floor))
}

func (w *Worker) release(ctx context.Context, row outbox.Row) {
	if _, err := w.q.Release(ctx, row); err != nil {
		w.log.Error("releasing a lease", "call", row.Key, "err", err)
		w.dueBy(row.LeaseExpiresAt)
	} else {
		w.dueBy(w.o.Clock())
	}
	w.count("released")
}

// finish applies the outbox transition with the timeline entries and counts the result. When
// the row's lease was lost meanwhile, the entries still go to the timeline, on their own.
func (w *Worker) finish(ctx context.Context, row outbox.Row, result string, tl []outbox.TimelineEntry, apply func([]outbox.TimelineEntry) error) {
	if err := apply(tl); err != nil {
		// The lease will expire and the row will be delivered again; adapters are idempotent.
		w.log.Error("recording a delivery result in the outbox", "call", row.Key, "result", result, "err", err)
		w.dueBy(row.LeaseExpiresAt)
		if errors.Is(err, outbox.ErrLeaseLost) {
			w.appendTimeline(ctx, row, tl)
		}
	}
	w.count(result)
}

func (w *Worker) count(result string) {
	if w.m != nil {
		w.m.deliveries.WithLabelValues(w.o.Connector, result).Inc()
	}
}

// entry is a timeline entry of this connector, dated by the outbox when it is written.
func (w *Worker) entry(kind, summary, detail string) outbox.TimelineEntry {
	return outbox.TimelineEntry{Connector: w.o.Connector, Kind: kind, Summary: summary, Detail: detail}
}

func (w *Worker) appendTimeline(ctx context.Context, row outbox.Row, tl []outbox.TimelineEntry) {
	if err := w.q.AppendTimeline(ctx, row.Key, tl...); err != nil {
		w.log.Warn("writing the call timeline", "call", row.Key, "err", err)
	}
}

func (w *Worker) noteError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr = err.Error()
	w.lastErrAt = w.o.Clock()
}

func (w *Worker) setAuth(broken bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.authBroken = broken
	if w.m != nil {
		v := 1.0
		if broken {
			v = 0
		}
		w.m.authOK.WithLabelValues(w.o.Connector).Set(v)
	}
}

func decode(payload []byte) (*call.Record, error) {
	var rec call.Record
	if err := json.Unmarshal(payload, &rec); err != nil {
		return nil, err
	}
	if rec.CallID == "" {
		return nil, errors.New("record without call_id")
	}
	return &rec, nil
}
