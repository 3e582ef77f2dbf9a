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
	opts      Options
	filter    *Filter // read-time filter of every connection, nil when Options.KeepAllEvents
	m         *metrics
	log       *slog.Logger
	ready     chan struct{}
	readyOnce sync.Once
	ran       atomic.Bool
	events    atomic.Int64

	mu     sync.Mutex
	conn   *Conn // the current connection, nil while down
	status asterisk.SourceStatus
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
	s := &Source{
		opts:   opts,
		filter: opts.filter(),
		m:      m,
		log:    opts.Logger.With("pbx", opts.Name),
		ready:  make(chan struct{}),
	}
	s.status = asterisk.SourceStatus{
		Name:        opts.Name,
		Kind:        "ami",
		Address:     opts.Address,
		Since:       opts.Clock.Now(),
		Description: "not connected yet",
	}
	return s, nil
}

// Name returns the PBX name (Options.Name).
func (s *Source) Name() string { return s.opts.Name }

// Ready is closed once the first login succeeded.
func (s *Source) Ready() <-chan struct{} { return s.ready }

// Status returns a point-in-time view for the status page and /readyz.
func (s *Source) Status() asterisk.SourceStatus {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	st.Events = s.events.Load()
	return st
}

// Run connects and delivers events until ctx is cancelled; see the type's documentation. It
// returns ctx.Err() after cancellation. It must be called once.
func (s *Source) Run(ctx context.Context, out chan<- asterisk.Event) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("ami: Source.Run called twice")
	}
	clock := s.opts.Clock
	attempt := 0
	connectedBefore := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		conn, err := dial(ctx, s.opts, s.m, nil, s.filter)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			stage := "other"
			var de *dialError
			if errors.As(err, &de) {
				stage = de.stage
			}
			s.m.connectError(stage)
			n := attempt
			if errors.Is(err, ErrAuthFailed) {
				n = 64 // straight to Max: do not hammer the PBX's fail2ban with a wrong password
			}
			attempt++
			delay := s.opts.Backoff.Delay(n)
			s.setFailed(err, clock.Now())
			s.log.Warn("ami: connect failed", "address", s.opts.Address, "attempt", attempt, "retry_in", delay.Round(time.Millisecond), "err", err)
			if err := s.sleep(ctx, delay); err != nil {
				return err
			}
			continue
		}
		connectedAt := clock.Now()
		if connectedBefore {
			s.m.reconnect()
		}
		s.setConnected(conn, connectedAt, connectedBefore)
		s.readyOnce.Do(func() { close(s.ready) })
		s.log.Info("ami: connected", "address", s.opts.Address, "banner", conn.Banner(), "resync", connectedBefore)

		// Every login asks for the snapshot, the first one too: calls already in progress when
		// the daemon starts (after a restart or a crash) are learnt from it instead of being
		// half-known from their remaining events.
		err = s.serve(ctx, conn, out, true)
		_ = conn.Close()
		connectedBefore = true
		lostAt := clock.Now()
		s.setDisconnected(err, lostAt)
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		s.log.Warn("ami: connection lost", "after", lostAt.Sub(connectedAt).Round(time.Millisecond), "err", err)
		if !s.emit(ctx, out, asterisk.Event{
			Type: asterisk.TypeDisconnected, Name: "Disconnected", Time: lostAt, PBX: s.opts.Name,
			Vars: map[string]string{"error": errString(err)},
		}) {
			return ctx.Err()
		}
		if lostAt.Sub(connectedAt) >= s.opts.Backoff.StableAfter {
			attempt = 0
		}
		delay := s.opts.Backoff.Delay(attempt)
		attempt++
		if err := s.sleep(ctx, delay); err != nil {
			return err
		}
	}
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
		if err == nil {
			s.mu.Lock()
			if s.conn == conn {
				s.status.PBXVersion = res.Get("AsteriskVersion")
			}
			s.mu.Unlock()
		}
	}()

	if !s.emit(ctx, out, asterisk.Event{
		Type: asterisk.TypeConnected, Name: "Connected", Time: s.opts.Clock.Now(), PBX: s.opts.Name, Resync: resync,
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
					s.m.resync("failed")
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
	s.m.event(ev.Type)
	s.events.Add(1)
	if ev.Type == asterisk.TypeUnknown && !s.opts.ForwardUnknown {
		return true
	}
	s.m.setLag(time.Since(in.At))
	return s.emit(ctx, out, ev)
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
		s.m.resync("failed")
		rs.id = ""
		return s.emitCounted(ctx, out, asterisk.Event{
			Type: asterisk.TypeSnapshotEnd, Name: "CoreShowChannelsComplete", Time: in.At, PBX: s.opts.Name,
			Vars: map[string]string{"error": "CoreShowChannels refused: " + msg},
		})
	case h.isListEnd():
		s.m.resync("ok")
		n := rs.channels
		*rs = resyncState{}
		return s.emitCounted(ctx, out, asterisk.Event{
			Type: asterisk.TypeSnapshotEnd, Name: h.event, Time: in.At, PBX: s.opts.Name,
			Vars: map[string]string{"channels": strconv.Itoa(n)},
		})
	}
	ev, ok := ToEvent(in.Frame, s.opts.Name, in.At)
	if !ok || ev.Type != asterisk.TypeSnapshot {
		return true
	}
	rs.channels++
	return s.emitCounted(ctx, out, ev)
}

func (s *Source) emitCounted(ctx context.Context, out chan<- asterisk.Event, ev asterisk.Event) bool {
	s.m.event(ev.Type)
	s.events.Add(1)
	return s.emit(ctx, out, ev)
}

// emit sends ev on out, waiting while out is full (backpressure); false means ctx was cancelled.
func (s *Source) emit(ctx context.Context, out chan<- asterisk.Event, ev asterisk.Event) bool {
	select {
	case out <- ev:
		return true
	default:
	}
	start := time.Now()
	select {
	case out <- ev:
		s.m.blocked(time.Since(start))
		return true
	case <-ctx.Done():
		return false
	}
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

func (s *Source) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-s.opts.Clock.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Source) setConnected(conn *Conn, at time.Time, reconnect bool) {
	s.m.setConnected(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = conn
	st := &s.status
	st.Connected = true
	st.Since = at
	st.LoggedInAt = at
	st.LastError = ""
	st.FirstLogin = true
	if reconnect {
		st.Reconnects++
	}
	st.Description = fmt.Sprintf("connected to %s as %s (%s)", s.opts.Address, s.opts.Username, conn.Banner())
}

func (s *Source) setDisconnected(err error, at time.Time) {
	s.m.setConnected(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = nil
	st := &s.status
	st.Connected = false
	st.Since = at
	st.LastError = errString(err)
	st.Description = "connection lost, reconnecting"
}

func (s *Source) setFailed(err error, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.status
	if st.Connected {
		st.Since = at
	}
	st.Connected = false
	st.LastError = errString(err)
	if errors.Is(err, ErrAuthFailed) {
		st.Description = "login refused: check username and secret in the config and manager.conf"
	} else {
		st.Description = "cannot connect to " + s.opts.Address + ", retrying"
	}
}

// current returns the connection Originate should use, or nil.
func (s *Source) current() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

var (
	_ asterisk.Source     = (*Source)(nil)
	_ asterisk.Originator = (*Source)(nil)
)
