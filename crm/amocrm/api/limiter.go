package api

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Priority orders the requests waiting for the account's Limiter.
type Priority int

// Priorities, lowest first.
const (
	// PriorityDeliver: logging calls and what goes with it (incoming leads, tasks, look-ups for
	// a delivery), user listings, token refreshes. The default.
	PriorityDeliver Priority = iota
	// PriorityLive: someone is waiting for the answer now: a pop-up for a ringing phone, a
	// responsible-manager or caller-name look-up for the dialplan, a click-to-call check.
	PriorityLive
	// PriorityRetry: a request amoCRM refused with 429, sent again first when sending resumes
	// (Client.do uses it for the request it resends; a caller that resends itself passes it).
	PriorityRetry
)

func (p Priority) String() string {
	switch p {
	case PriorityDeliver:
		return "deliver"
	case PriorityLive:
		return "live"
	case PriorityRetry:
		return "retry"
	}
	return fmt.Sprintf("priority(%d)", int(p))
}

type priorityKey struct{}

// WithPriority returns a context whose requests wait for the limiter with priority p.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityOf returns the priority WithPriority set on ctx (PriorityDeliver when none).
func PriorityOf(ctx context.Context) Priority {
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok {
		return p
	}
	return PriorityDeliver
}

// LimiterOptions configure a Limiter. Zero values take the defaults.
type LimiterOptions struct {
	// Requests is the most requests the account may receive in any rolling Window (default 7,
	// amoCRM's documented limit per second, docs/crm-apis.md B.4).
	Requests int
	// Window is the rolling window (default 1 s).
	Window time.Duration
	// Margin is added to Window (default 50 ms): the server's own clock and processing.
	Margin time.Duration
	// Reserve is how many of the Requests only live requests may take, so that a pop-up never
	// waits behind a delivery backlog (default: a fifth, at least 1; 0 when Requests is 1).
	// Use -1 for none.
	Reserve int
	// MaxPause bounds the pause after a 429 (default 60 s): a longer retry_after is answered
	// by probing again after MaxPause.
	MaxPause time.Duration
	// DefaultPause is the pause after a 429 that advises no wait (default 10 s).
	DefaultPause time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// LimiterFor returns the options of a client-side limit of rps requests per second (rate_limit):
// floor(rps) requests per second, or one request per 1/rps seconds below 1/s.
func LimiterFor(rps float64) LimiterOptions {
	if rps >= 1 {
		return LimiterOptions{Requests: int(math.Min(math.Floor(rps), 1e6))}
	}
	if rps <= 0 {
		return LimiterOptions{}
	}
	return LimiterOptions{Requests: 1, Window: time.Duration(float64(time.Second) / rps)}
}

// Limiter keeps the requests to one amoCRM/Kommo account within its rate limit as the server
// counts it: never more than Requests in any rolling Window, and after a 429 nothing at all for
// the advised time. It is shared by every request of the account (Client.do waits on it).
//
// Why not a token bucket: golang.org/x/time/rate at 7/s with burst 1 spaces permits exactly 1/7 s
// apart, so eight fit in one closed second (t, t+1/7, …, t+7/7), and a request held up on its way
// (scheduling, a new connection) arrives closer than 1/7 s to the next: a fake amoCRM counting
// rolling seconds saw 8 requests in one of them 9 to 20 times in a run of 105 calls.
//
// Sliding window over answers: a request holds a slot from the moment it is granted until
// Window+Margin after its answer was read (or it failed). amoCRM receives a request between the
// moment it is sent and the moment its answer is read, so of any Requests+1 requests it receives
// within one window, the one granted last would have found Requests slots held: it is never
// granted. The bound holds whatever the latency or its jitter; the price is that a slot turns over
// every Window+latency, not every Window (7 slots, 150 ms answers: about 6 requests per second).
//
// Priorities: waiting requests are granted highest priority first, then in arrival order;
// PriorityDeliver requests may hold at most Requests−Reserve slots, so live requests (pop-ups)
// go first and find a slot free even during a backlog.
//
// After a 429 (Release with throttled): the whole account pauses for the advised wait, bounded
// by MaxPause (DefaultPause when none was advised); then a single request goes first, the one
// that was refused (it waits with PriorityRetry), as a probe; the others wait until its answer
// shows the limit is over. Another 429 pauses again. A request whose context would end before
// the pause does is refused at once with a *PausedError, so that its caller can retry later
// rather than hold a worker.
//
// A Limiter is safe for concurrent use.
type Limiter struct {
	o LimiterOptions

	mu          sync.Mutex
	inflight    int
	done        []time.Time // answer times still within Window+Margin, oldest first
	pausedUntil time.Time
	probing     bool // after a pause: one request at a time until an answer without 429
	waiting     waiters
	seq         uint64
	timer       *time.Timer
	timerAt     time.Time
	stats       LimiterStats
}

// LimiterStats are a Limiter's counters.
type LimiterStats struct {
	Granted int           // requests let through
	Pauses  int           // pauses started by a 429
	Paused  time.Duration // total pause length started
	Refused int           // requests refused at once because the pause outlasts their context
}

// PausedError is returned by Acquire for a request whose context ends before the pause after a
// 429 does: it was not sent; RetryAfter is how long the pause still lasts.
type PausedError struct {
	RetryAfter time.Duration
}

func (e *PausedError) Error() string {
	return fmt.Sprintf("not sent: the account is paused after a 429 for %v more", e.RetryAfter.Round(time.Second))
}

// NewLimiter returns a Limiter.
func NewLimiter(o LimiterOptions) *Limiter {
	if o.Requests <= 0 {
		o.Requests = 7
	}
	if o.Window <= 0 {
		o.Window = time.Second
	}
	if o.Margin == 0 {
		o.Margin = 50 * time.Millisecond
	}
	o.Margin = max(o.Margin, 0)
	switch {
	case o.Reserve < 0 || o.Requests == 1:
		o.Reserve = 0
	case o.Reserve == 0:
		o.Reserve = max(1, o.Requests/5)
	}
	o.Reserve = min(o.Reserve, o.Requests-1)
	if o.MaxPause <= 0 {
		o.MaxPause = time.Minute
	}
	if o.DefaultPause <= 0 {
		o.DefaultPause = 10 * time.Second
	}
	o.DefaultPause = min(o.DefaultPause, o.MaxPause)
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Limiter{o: o}
}

// Options returns the options in force (defaults applied).
func (l *Limiter) Options() LimiterOptions { return l.o }

// Stats returns the counters so far.
func (l *Limiter) Stats() LimiterStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// PausedUntil returns when the pause after a 429 ends (zero when not paused).
func (l *Limiter) PausedUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.o.Now().Before(l.pausedUntil) {
		return time.Time{}
	}
	return l.pausedUntil
}

// Permit is a granted slot. Exactly one of Release and Cancel must be called.
type Permit struct {
	l    *Limiter
	once sync.Once
}

// Release returns the slot after the request was sent: it stays held for Window+Margin from
// now. throttled says amoCRM answered 429, with the advised wait retryAfter (0: none advised):
// the whole account pauses.
func (p *Permit) Release(throttled bool, retryAfter time.Duration) {
	p.once.Do(func() { p.l.release(true, throttled, retryAfter) })
}

// Cancel returns the slot of a request that was not sent after all.
func (p *Permit) Cancel() {
	p.once.Do(func() { p.l.release(false, false, 0) })
}

// release and cancel are Release and Cancel on a permit that may be nil (no limiter).
func (p *Permit) release(throttled bool, retryAfter time.Duration) {
	if p != nil {
		p.Release(throttled, retryAfter)
	}
}

func (p *Permit) cancel() {
	if p != nil {
		p.Cancel()
	}
}

type waiter struct {
	prio    Priority
	seq     uint64
	ready   chan struct{} // closed when granted
	granted bool
	index   int
}

type waiters []*waiter

func (w waiters) Len() int { return len(w) }
func (w waiters) Less(i, j int) bool {
	if w[i].prio != w[j].prio {
		return w[i].prio > w[j].prio
	}
	return w[i].seq < w[j].seq
}
func (w waiters) Swap(i, j int) { w[i], w[j] = w[j], w[i]; w[i].index = i; w[j].index = j }
func (w *waiters) Push(x any) {
	it := x.(*waiter) //nolint:forcetypeassert // only *waiter is pushed
	it.index = len(*w)
	*w = append(*w, it)
}
func (w *waiters) Pop() any {
	old := *w
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*w = old[:n-1]
	return it
}

// Acquire waits for a slot for a request of priority p (PriorityOf(ctx) is not consulted: pass
// it). It returns ctx's error when ctx ends first, or a *PausedError at once when the account is
// paused after a 429 and ctx's deadline comes before the pause ends.
func (l *Limiter) Acquire(ctx context.Context, p Priority) (*Permit, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	now := l.o.Now()
	if now.Before(l.pausedUntil) {
		if dl, ok := ctx.Deadline(); ok && dl.Before(l.pausedUntil) {
			left := l.pausedUntil.Sub(now)
			l.stats.Refused++
			l.mu.Unlock()
			return nil, &PausedError{RetryAfter: left}
		}
	}
	l.seq++
	w := &waiter{prio: p, seq: l.seq, ready: make(chan struct{})}
	heap.Push(&l.waiting, w)
	l.grantLocked(now)
	l.mu.Unlock()

	select {
	case <-w.ready:
		return &Permit{l: l}, nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			// Granted as ctx ended: give the slot back untouched.
			l.inflight--
			l.grantLocked(l.o.Now())
			l.mu.Unlock()
			return nil, ctx.Err()
		}
		heap.Remove(&l.waiting, w.index)
		l.grantLocked(l.o.Now())
		l.mu.Unlock()
		return nil, ctx.Err()
	}
}

// fitsLocked reports whether a request of priority p may be granted at now.
func (l *Limiter) fitsLocked(now time.Time, p Priority) bool {
	if now.Before(l.pausedUntil) || (l.probing && l.inflight > 0) {
		return false
	}
	limit := l.o.Requests
	if p == PriorityDeliver {
		limit -= l.o.Reserve
	}
	return l.inflight+l.recentLocked(now) < limit
}

// recentLocked drops answers older than Window+Margin and counts the others.
func (l *Limiter) recentLocked(now time.Time) int {
	hold := l.o.Window + l.o.Margin
	i := 0
	for i < len(l.done) && now.Sub(l.done[i]) > hold {
		i++
	}
	if i > 0 {
		l.done = append(l.done[:0], l.done[i:]...)
	}
	return len(l.done)
}

// grantLocked grants waiting requests in order while they fit, then arms the timer for the
// next moment a slot frees or the pause ends.
func (l *Limiter) grantLocked(now time.Time) {
	for len(l.waiting) > 0 {
		w := l.waiting[0]
		if !l.fitsLocked(now, w.prio) {
			break
		}
		heap.Pop(&l.waiting)
		w.granted = true
		l.inflight++
		l.stats.Granted++
		close(w.ready)
	}
	if len(l.waiting) == 0 {
		return
	}
	var at time.Time
	switch {
	case now.Before(l.pausedUntil):
		at = l.pausedUntil
	case len(l.done) > 0 && (!l.probing || l.inflight == 0):
		at = l.done[0].Add(l.o.Window + l.o.Margin + time.Millisecond)
	default:
		return // a release will come
	}
	if l.timer != nil && l.timerAt.Equal(at) {
		return
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timerAt = at
	l.timer = time.AfterFunc(max(at.Sub(now), 0), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.timer = nil
		l.grantLocked(l.o.Now())
	})
}

func (l *Limiter) release(sent, throttled bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.o.Now()
	l.inflight--
	if sent {
		l.done = append(l.done, now)
	}
	switch {
	case throttled:
		d := retryAfter
		if d <= 0 {
			d = l.o.DefaultPause
		}
		d = min(d, l.o.MaxPause)
		if until := now.Add(d); until.After(l.pausedUntil) {
			if !now.Before(l.pausedUntil) {
				l.stats.Pauses++
				l.stats.Paused += d
			} else {
				l.stats.Paused += until.Sub(l.pausedUntil)
			}
			l.pausedUntil = until
		}
		l.probing = true
	case sent && l.probing && !now.Before(l.pausedUntil):
		l.probing = false
	}
	l.grantLocked(now)
}
