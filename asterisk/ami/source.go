package ami

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Source is the AMI implementation of asterisk.Source and asterisk.Originator for one PBX.
//
// Run keeps one logged-in connection, reconnecting with Options.Backoff, and sends on out, in
// wire order and with backpressure (never dropping an event):
//
//   - TypeConnected after every login (Time = login time) with Resync set: a snapshot follows;
//   - the normalised events (ToEvent); events of TypeUnknown only when Options.ForwardUnknown;
//   - after every login, the first one included, the snapshot: one TypeSnapshot per channel of
//     CoreShowChannels
//     and then TypeSnapshotEnd (Vars["channels"] = how many). Live events that arrive while the
//     PBX produces the list are sent in wire order between the snapshot events, exactly as the
//     PBX interleaved them, so a Hangup for a channel that is not in the snapshot may come before
//     TypeSnapshotEnd. If the PBX refuses CoreShowChannels (e.g. the AMI user lacks the
//     "reporting" write permission), TypeSnapshotEnd carries Vars["error"] and the model must not
//     treat missing channels as gone;
//   - TypeDisconnected when the connection is lost (Time = when it was detected, Vars["error"] =
//     why), before the reconnect attempts start. Nothing is sent after ctx is cancelled.
//
// Ready is closed after the first successful login (systemd READY). Status and Originate may be
// called concurrently with Run.
type Source struct {
	opts   Options
	filter *Filter // read-time filter of every connection, nil when Options.KeepAllEvents
	m      *metrics
	log    *slog.Logger
	loop   *transport.Loop
	conn   atomic.Pointer[Conn] // the current connection, nil while down
}

// NewSource validates opts, registers the metrics on opts.Registerer and returns a Source. It
// returns an error only for configuration no retry can fix (bad address, unknown auth method,
// malformed templates, duplicate metrics).
func NewSource(opts Options) (*Source, error) {
	opts = opts.withDefaults()
	if opts.Name == "" {
		opts.Name = opts.Address
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer, opts.Name)
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("pbx", opts.Name)
	return &Source{
		opts:   opts,
		filter: opts.filter(),
		m:      m,
		log:    log,
		loop: transport.NewLoop(transport.LoopConfig{
			Name: opts.Name, Kind: "ami", AddrKey: "address", Addr: opts.Address,
			AuthHint: "login refused: check username and secret in the config and manager.conf",
			Clock:    opts.Clock, Backoff: opts.Backoff, Log: log, Metrics: m.Metrics,
		}),
	}, nil
}

// Name returns the PBX name (Options.Name).
func (s *Source) Name() string { return s.opts.Name }

// Ready is closed once the first login succeeded.
func (s *Source) Ready() <-chan struct{} { return s.loop.Ready() }

// Status returns a point-in-time view for the status page and /readyz.
func (s *Source) Status() asterisk.SourceStatus { return s.loop.Status() }

// Run connects and delivers events until ctx is cancelled; see the type's documentation. It
// returns ctx.Err() after cancellation. It must be called once.
//
// Each connection's reader goroutine translates its frames and sends the events on out itself
// (a pump is the Conn's sink), so an event crosses one goroutine boundary, into the consumer's.
func (s *Source) Run(ctx context.Context, out chan<- asterisk.Event) error {
	return transport.Run(ctx, s.loop, out, transport.Hooks[session]{
		Connect: func(ctx context.Context) (session, error) {
			p := &pump{s: s, ctx: ctx, out: out}
			conn, err := dial(ctx, s.opts, s.m, nil, s.filter, p)
			return session{conn, p}, err
		},
		Stage: func(err error) string {
			var de *dialError
			if errors.As(err, &de) {
				return de.stage
			}
			return "other"
		},
		AuthFailed: func(err error) bool { return errors.Is(err, ErrAuthFailed) },
		Connected: func(sess session) (string, []any) {
			conn := sess.Conn
			s.conn.Store(conn)
			return fmt.Sprintf("connected to %s as %s (%s)", s.opts.Address, s.opts.Username, conn.Banner()),
				[]any{"banner", conn.Banner()}
		},
		// Every login asks for the snapshot, the first one too: calls already in progress when
		// the daemon starts (after a restart or a crash) are learnt from it instead of being
		// half-known from their remaining events.
		Serve: func(ctx context.Context, sess session, _ bool) error { return s.serve(ctx, sess, out, true) },
		Lost:  func() { s.conn.Store(nil) },
	})
}

// session is one connection of a Source and the pump its reader feeds.
type session struct {
	*Conn
	p *pump
}

// serve runs one connection until it ends or ctx is cancelled: it sends TypeConnected, asks for
// the snapshot and arms the connection, whose reader then pumps the events to out.
func (s *Source) serve(ctx context.Context, sess session, out chan<- asterisk.Event, resync bool) error {
	conn, p := sess.Conn, sess.p
	var wg sync.WaitGroup
	defer func() {
		_ = conn.Close() // ends the helper below if it still waits for an answer
		wg.Wait()
	}()
	wg.Add(1)
	go func() { // PBX version for the status page; ends when the connection does
		defer wg.Done()
		res, err := conn.CoreSettings(ctx)
		if err == nil && s.current() == conn {
			s.loop.SetVersion(res.Get("AsteriskVersion"))
		}
	}()

	if !s.loop.Emit(ctx, out, asterisk.Event{
		Type: asterisk.TypeConnected, Name: "Connected", Time: s.loop.Now(), PBX: s.opts.Name, Resync: resync,
	}) {
		return ctx.Err()
	}
	if resync {
		id, err := conn.Stream(ctx, Action{Name: "CoreShowChannels"})
		if err != nil {
			return err
		}
		p.rs.id = id // read by the reader only after arm
	}
	conn.arm()
	select {
	case <-conn.Done():
		if p.rs.id != "" { // written by the reader, which has finished
			s.m.Resync("failed")
		}
		return conn.Err()
	case <-ctx.Done():
		s.logoff(conn)
		return ctx.Err()
	}
}

// resyncState tracks the snapshot of one reconnect.
type resyncState struct {
	id       string // ActionID of the CoreShowChannels in progress, "" when none
	channels int
}

// pump is the sink of a Source's connection: in the reader goroutine, it translates each frame
// (ToEvent) and sends the event on out, waiting while out is full (backpressure: the reader then
// reads no more), until ctx is cancelled or the connection closed; after that it drops
// everything, so the reader keeps reading (the Logoff answer) without waiting.
type pump struct {
	s       *Source
	ctx     context.Context
	out     chan<- asterisk.Event
	rs      resyncState // reader goroutine only, once armed
	stopped bool
}

func (p *pump) frame(f *Frame, h header, at time.Time, done <-chan struct{}) {
	if p.stopped {
		return
	}
	if p.rs.id != "" && h.actionID == p.rs.id {
		p.resync(f, &h, at, done)
		return
	}
	ev, ok := ToEvent(f, p.s.opts.Name, at)
	if !ok {
		return // not an event (cannot happen outside a stream; nothing to send)
	}
	p.s.loop.Count(ev.Type)
	if ev.Type == asterisk.TypeUnknown && !p.s.opts.ForwardUnknown {
		return
	}
	p.emit(&ev, at, done)
}

// emit sends ev, read at at, on out, waiting while out is full; false means it gave up (ctx
// cancelled or the connection closed), and the pump is stopped. The reader lag is the time
// since at when it had to wait, else 0 (the microseconds of the translation are not worth a
// clock reading per event).
func (p *pump) emit(ev *asterisk.Event, at time.Time, done <-chan struct{}) bool {
	if p.ctx.Err() != nil { // nothing is sent after ctx is cancelled
		p.stopped = true
		return false
	}
	select {
	case p.out <- *ev:
		p.s.m.SetLag(0)
		return true
	default:
	}
	start := time.Now()
	select {
	case p.out <- *ev:
		now := time.Now()
		p.s.m.Blocked(now.Sub(start))
		p.s.m.SetLag(now.Sub(at))
		return true
	case <-p.ctx.Done():
	case <-done:
	}
	p.stopped = true
	return false
}

func (p *pump) resync(f *Frame, h *header, at time.Time, done <-chan struct{}) {
	s, rs := p.s, &p.rs
	switch {
	case h.isResponse():
		if !failed(h.response) {
			return // "Channels will follow"
		}
		msg := f.Get("Message")
		s.log.Warn("ami: resync refused by the PBX; calls that ended during the outage stay open until their maximum age (grant the AMI user write=reporting)", "message", msg)
		s.m.Resync("failed")
		rs.id = ""
		p.emitCounted(&asterisk.Event{
			Type: asterisk.TypeSnapshotEnd, Name: "CoreShowChannelsComplete", Time: at, PBX: s.opts.Name,
			Vars: map[string]string{"error": "CoreShowChannels refused: " + msg},
		}, at, done)
		return
	case h.isListEnd():
		s.m.Resync("ok")
		n := rs.channels
		*rs = resyncState{}
		p.emitCounted(&asterisk.Event{
			Type: asterisk.TypeSnapshotEnd, Name: h.event, Time: at, PBX: s.opts.Name,
			Vars: map[string]string{"channels": strconv.Itoa(n)},
		}, at, done)
		return
	}
	ev, ok := ToEvent(f, s.opts.Name, at)
	if !ok || ev.Type != asterisk.TypeSnapshot {
		return
	}
	rs.channels++
	p.emitCounted(&ev, at, done)
}

func (p *pump) emitCounted(ev *asterisk.Event, at time.Time, done <-chan struct{}) {
	p.s.loop.Count(ev.Type)
	p.emit(ev, at, done)
}

// logoff says goodbye on shutdown; the pump, stopped by then, drops the events that still
// arrive meanwhile.
func (s *Source) logoff(conn *Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Logoff(ctx)
}

// current returns the connection Originate should use, or nil.
func (s *Source) current() *Conn { return s.conn.Load() }

var (
	_ asterisk.Source     = (*Source)(nil)
	_ asterisk.Originator = (*Source)(nil)
)
