package transport

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// LoopConfig describes the Source a Loop runs for.
type LoopConfig struct {
	Name string // the PBX name: Event.PBX, SourceStatus.Name
	Kind string // "ami" or "ari": SourceStatus.Kind and the prefix of logs and errors
	// AddrKey is the log attribute that names the PBX's address ("address", "url") and Addr
	// its value, also SourceStatus.Address.
	AddrKey, Addr string
	// AuthHint is the status description after a refused login.
	AuthHint string
	Clock    Clock   // nil: SystemClock
	Backoff  Backoff // zero fields take their defaults
	Log      *slog.Logger
	Metrics  *Metrics // nil: nothing is measured
}

// Loop is the transport-independent part of a Source: status, readiness, event counting and
// backpressured delivery, and the reconnect loop (Run). Status, Ready and Connected may be
// called concurrently with Run.
type Loop struct {
	cfg       LoopConfig
	ready     chan struct{}
	readyOnce sync.Once
	ran       atomic.Bool
	events    atomic.Int64

	mu     sync.Mutex
	status asterisk.SourceStatus
}

// NewLoop returns a Loop not connected yet.
func NewLoop(cfg LoopConfig) *Loop {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Backoff = cfg.Backoff.WithDefaults()
	return &Loop{
		cfg:   cfg,
		ready: make(chan struct{}),
		status: asterisk.SourceStatus{
			Name:        cfg.Name,
			Kind:        cfg.Kind,
			Address:     cfg.Addr,
			Since:       cfg.Clock.Now(),
			Description: "not connected yet",
		},
	}
}

// Ready is closed once the first connection succeeded.
func (l *Loop) Ready() <-chan struct{} { return l.ready }

// Status returns a point-in-time view for the status page and /readyz.
func (l *Loop) Status() asterisk.SourceStatus {
	l.mu.Lock()
	st := l.status
	l.mu.Unlock()
	st.Events = l.events.Load()
	return st
}

// Connected reports whether the connection is up now.
func (l *Loop) Connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status.Connected
}

// SetVersion records the PBX version for the status page.
func (l *Loop) SetVersion(v string) {
	l.mu.Lock()
	l.status.PBXVersion = v
	l.mu.Unlock()
}

// Now returns the time of the Loop's clock.
func (l *Loop) Now() time.Time { return l.cfg.Clock.Now() }

// Count counts one event read from the PBX (or produced by the source) of type t.
func (l *Loop) Count(t asterisk.Type) {
	l.cfg.Metrics.Event(t)
	l.events.Add(1)
}

// EmitCounted counts ev and sends it like Emit.
func (l *Loop) EmitCounted(ctx context.Context, out chan<- asterisk.Event, ev asterisk.Event) bool {
	l.Count(ev.Type)
	return l.Emit(ctx, out, ev)
}

// Emit sends ev on out, waiting while out is full (backpressure, measured); false means ctx
// was cancelled.
func (l *Loop) Emit(ctx context.Context, out chan<- asterisk.Event, ev asterisk.Event) bool {
	select {
	case out <- ev:
		return true
	default:
	}
	start := time.Now()
	select {
	case out <- ev:
		l.cfg.Metrics.Blocked(time.Since(start))
		return true
	case <-ctx.Done():
		return false
	}
}

// Session is one connection to the PBX.
type Session interface{ Close() error }

// Hooks plug a transport's connection into Run.
type Hooks[S Session] struct {
	// Connect opens and logs in one connection.
	Connect func(ctx context.Context) (S, error)
	// Stage names the stage at which a Connect error failed (connect_errors_total{stage}).
	Stage func(err error) string
	// AuthFailed reports whether a Connect error is a refused login: the next attempt then
	// waits the backoff's cap.
	AuthFailed func(err error) bool
	// Connected is called once a connection is up, before Serve; it returns the status
	// description and extra attributes for the "connected" log line.
	Connected func(s S) (description string, logAttrs []any)
	// Serve delivers the connection's events until it ends (its error says why) or ctx is
	// cancelled; reconnect is false on the first connection.
	Serve func(ctx context.Context, s S, reconnect bool) error
	// Lost, when set, is called once a connection has ended, before TypeDisconnected is sent.
	Lost func()
}

// Run connects with h and serves until ctx is cancelled, reconnecting with the Loop's Backoff
// (reset after a connection that stayed up StableAfter, straight to the cap after a refused
// login). It keeps the status and the metrics, closes Ready after the first connection, and
// sends TypeDisconnected (Time = when the loss was detected, Vars["error"] = why) on out
// before it waits to reconnect. It returns ctx.Err() after cancellation, and an error if it is
// called twice on one Loop.
func Run[S Session](ctx context.Context, l *Loop, out chan<- asterisk.Event, h Hooks[S]) error {
	kind := l.cfg.Kind
	if !l.ran.CompareAndSwap(false, true) {
		return errors.New(kind + ": Source.Run called twice")
	}
	clock := l.cfg.Clock
	attempt := 0
	connectedBefore := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		sess, err := h.Connect(ctx)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			l.cfg.Metrics.ConnectError(h.Stage(err))
			n := attempt
			if h.AuthFailed(err) {
				n = 64 // straight to Max: do not hammer the PBX's fail2ban with a wrong password
			}
			attempt++
			delay := l.cfg.Backoff.Delay(n)
			l.setFailed(err, h.AuthFailed(err), clock.Now())
			l.cfg.Log.Warn(kind+": connect failed", l.cfg.AddrKey, l.cfg.Addr, "attempt", attempt,
				"retry_in", delay.Round(time.Millisecond), "err", err)
			if err := l.sleep(ctx, delay); err != nil {
				return err
			}
			continue
		}
		connectedAt := clock.Now()
		if connectedBefore {
			l.cfg.Metrics.Reconnect()
		}
		desc, attrs := h.Connected(sess)
		l.setConnected(connectedAt, connectedBefore, desc)
		l.readyOnce.Do(func() { close(l.ready) })
		args := append([]any{l.cfg.AddrKey, l.cfg.Addr}, attrs...)
		l.cfg.Log.Info(kind+": connected", append(args, "resync", connectedBefore)...)

		err = h.Serve(ctx, sess, connectedBefore)
		_ = sess.Close()
		connectedBefore = true
		lostAt := clock.Now()
		l.setDisconnected(err, lostAt)
		if h.Lost != nil {
			h.Lost()
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		l.cfg.Log.Warn(kind+": connection lost", "after", lostAt.Sub(connectedAt).Round(time.Millisecond), "err", err)
		if !l.Emit(ctx, out, asterisk.Event{
			Type: asterisk.TypeDisconnected, Name: "Disconnected", Time: lostAt, PBX: l.cfg.Name,
			Vars: map[string]string{"error": ErrString(err)},
		}) {
			return ctx.Err()
		}
		if lostAt.Sub(connectedAt) >= l.cfg.Backoff.StableAfter {
			attempt = 0
		}
		delay := l.cfg.Backoff.Delay(attempt)
		attempt++
		if err := l.sleep(ctx, delay); err != nil {
			return err
		}
	}
}

func (l *Loop) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-l.cfg.Clock.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Loop) setConnected(at time.Time, reconnect bool, description string) {
	l.cfg.Metrics.SetConnected(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.status
	st.Connected = true
	st.Since = at
	st.LoggedInAt = at
	st.LastError = ""
	st.FirstLogin = true
	if reconnect {
		st.Reconnects++
	}
	st.Description = description
}

func (l *Loop) setDisconnected(err error, at time.Time) {
	l.cfg.Metrics.SetConnected(false)
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.status
	st.Connected = false
	st.Since = at
	st.LastError = ErrString(err)
	st.Description = "connection lost, reconnecting"
}

func (l *Loop) setFailed(err error, authFailed bool, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.status
	if st.Connected {
		st.Since = at
	}
	st.Connected = false
	st.LastError = ErrString(err)
	if authFailed {
		st.Description = l.cfg.AuthHint
	} else {
		st.Description = "cannot connect to " + l.cfg.Addr + ", retrying"
	}
}

// ErrString returns err.Error(), "" for nil.
func ErrString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Truncate shortens s to its first n bytes for messages, marking a cut with "…".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Defaults of the keepalive and connect options both transports have.
const (
	DefaultPingInterval   = 5 * time.Second
	DefaultPingTimeout    = 5 * time.Second
	DefaultConnectTimeout = 10 * time.Second
)

// SetDefaults fills the option fields both transports have: a zero ping interval (negative
// disables keepalive) and a non-positive ping or connect timeout take the defaults above, a nil
// logger discards, a nil clock is the system clock, and the backoff's zero fields take theirs.
func SetDefaults(pingInterval, pingTimeout, connectTimeout *time.Duration, log **slog.Logger, clock *Clock, backoff *Backoff) {
	if *pingInterval == 0 {
		*pingInterval = DefaultPingInterval
	}
	for _, d := range [...]struct {
		p *time.Duration
		v time.Duration
	}{{pingTimeout, DefaultPingTimeout}, {connectTimeout, DefaultConnectTimeout}} {
		if *d.p <= 0 {
			*d.p = d.v
		}
	}
	if *log == nil {
		*log = slog.New(slog.DiscardHandler)
	}
	if *clock == nil {
		*clock = SystemClock{}
	}
	*backoff = backoff.WithDefaults()
}
