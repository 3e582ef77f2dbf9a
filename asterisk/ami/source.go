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
func (s *Source) Run(ctx context.Context, out chan<- asterisk.Event) error {
	return transport.Run(ctx, s.loop, out, transport.Hooks[*Conn]{
		Connect: func(ctx context.Context) (*Conn, error) { return dial(ctx, s.opts, s.m, nil, s.filter) },
		Stage: func(err error) string {
			var de *dialError
			if errors.As(err, &de) {
				return de.stage
			}
			return "other"
		},
		AuthFailed: func(err error) bool { return errors.Is(err, ErrAuthFailed) },
		Connected: func(conn *Conn) (string, []any) {
			s.conn.Store(conn)
			return fmt.Sprintf("connected to %s as %s (%s)", s.opts.Address, s.opts.Username, conn.Banner()),
				[]any{"banner", conn.Banner()}
		},
		// Every login asks for the snapshot, the first one too: calls already in progress when
		// the daemon starts (after a restart or a crash) are learnt from it instead of being
		// half-known from their remaining events.
		Serve: func(ctx context.Context, conn *Conn, _ bool) error { return s.serve(ctx, conn, out, true) },
		Lost:  func() { s.conn.Store(nil) },
	})
}

// serve pumps one connection's frames to out until the connection ends or ctx is cancelled.
func (s *Source) serve(ctx context.Context, conn *Conn, out chan<- asterisk.Event, resync bool) error {
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
	var rs resyncState
	if resync {
		id, err := conn.Stream(ctx, Action{Name: "CoreShowChannels"})
		if err != nil {
			return err
		}
		rs.id = id
	}
	for {
		select {
		case in, ok := <-conn.Events():
			if !ok {
				if rs.id != "" {
					s.m.Resync("failed")
				}
				return conn.Err()
			}
			if !s.handle(ctx, out, in, &rs) {
				return ctx.Err()
			}
		case <-ctx.Done():
			s.logoff(conn)
			return ctx.Err()
		}
	}
}

// resyncState tracks the snapshot of one reconnect.
type resyncState struct {
	id       string // ActionID of the CoreShowChannels in progress, "" when none
	channels int
}

// handle translates and sends one inbound frame; false means ctx was cancelled.
func (s *Source) handle(ctx context.Context, out chan<- asterisk.Event, in Inbound, rs *resyncState) bool {
	if rs.id != "" && in.Frame.ActionID() == rs.id {
		return s.handleResync(ctx, out, in, rs)
	}
	ev, ok := ToEvent(in.Frame, s.opts.Name, in.At)
	if !ok {
		return true // not an event (cannot happen outside a stream; nothing to send)
	}
	s.loop.Count(ev.Type)
	if ev.Type == asterisk.TypeUnknown && !s.opts.ForwardUnknown {
		return true
	}
	s.m.SetLag(time.Since(in.At))
	return s.loop.Emit(ctx, out, ev)
}

func (s *Source) handleResync(ctx context.Context, out chan<- asterisk.Event, in Inbound, rs *resyncState) bool {
	h := scanHeader(in.Frame)
	switch {
	case h.isResponse():
		if !failed(h.response) {
			return true // "Channels will follow"
		}
		msg := in.Frame.Get("Message")
		s.log.Warn("ami: resync refused by the PBX; calls that ended during the outage stay open until their maximum age (grant the AMI user write=reporting)", "message", msg)
		s.m.Resync("failed")
		rs.id = ""
		return s.loop.EmitCounted(ctx, out, asterisk.Event{
			Type: asterisk.TypeSnapshotEnd, Name: "CoreShowChannelsComplete", Time: in.At, PBX: s.opts.Name,
			Vars: map[string]string{"error": "CoreShowChannels refused: " + msg},
		})
	case h.isListEnd():
		s.m.Resync("ok")
		n := rs.channels
		*rs = resyncState{}
		return s.loop.EmitCounted(ctx, out, asterisk.Event{
			Type: asterisk.TypeSnapshotEnd, Name: h.event, Time: in.At, PBX: s.opts.Name,
			Vars: map[string]string{"channels": strconv.Itoa(n)},
		})
	}
	ev, ok := ToEvent(in.Frame, s.opts.Name, in.At)
	if !ok || ev.Type != asterisk.TypeSnapshot {
		return true
	}
	rs.channels++
	return s.loop.EmitCounted(ctx, out, ev)
}

// logoff says goodbye on shutdown, discarding the events that still arrive meanwhile.
func (s *Source) logoff(conn *Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = conn.Logoff(ctx)
	}()
	for {
		select {
		case <-done:
			return
		case _, ok := <-conn.Events():
			if !ok {
				<-done
				return
			}
		}
	}
}

// current returns the connection Originate should use, or nil.
func (s *Source) current() *Conn { return s.conn.Load() }

var (
	_ asterisk.Source     = (*Source)(nil)
	_ asterisk.Originator = (*Source)(nil)
)
