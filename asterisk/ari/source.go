package ari

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// Source is the ARI implementation of asterisk.Source and asterisk.Originator for one PBX; it
// behaves like the AMI source so that the daemon treats both alike.
//
// Run keeps one events websocket connected, reconnecting with Options.Backoff, and sends on out,
// in wire order and with backpressure (never dropping an event):
//
//   - TypeConnected after every connection (Time = connect time); Resync is true after a
//     reconnect;
//   - after a reconnect, before any live event: one TypeSnapshot per channel of GET /channels
//     (ari.Snapshot, with the channel's bridge from GET /bridges and its Linkedid from
//     GET /channels/{id}/variable?variable=CHANNEL(linkedid)) and then TypeSnapshotEnd
//     (Vars["channels"] = how many). The websocket is subscribed before the snapshot is taken,
//     so no event is lost between them; the events of that short window are delivered after
//     TypeSnapshotEnd, and re-applying them on top of the snapshot only moves the model forward
//     to the same state. If the snapshot fails, TypeSnapshotEnd carries Vars["error"] and the
//     model must not treat missing channels as gone;
//   - the normalised events (ToEvent); events of TypeUnknown only when Options.ForwardUnknown.
//     A message that is not an event (invalid JSON, binary) is counted in
//     pbxbridge_ari_messages_dropped_total and logged, never passed on silently;
//   - TypeDisconnected when the connection is lost (Time = when it was detected, Vars["error"]
//     = why), before the reconnect attempts start. Nothing is sent after ctx is cancelled.
//
// Ready is closed after the first successful connection (systemd READY). Status and Originate
// may be called concurrently with Run.
type Source struct {
	opts      Options
	client    *Client
	m         *metrics
	log       *slog.Logger
	ready     chan struct{}
	readyOnce sync.Once
	ran       atomic.Bool
	events    atomic.Int64

	orig originates

	mu     sync.Mutex
	up     bool // the events websocket is connected
	status asterisk.SourceStatus
}

// NewSource validates opts, registers the metrics on opts.Registerer and returns a Source. It
// returns an error only for configuration no retry can fix (bad URL, empty username, malformed
// templates, duplicate metrics).
func NewSource(opts Options) (*Source, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	base, _ := opts.baseURL() // validated
	if opts.Name == "" {
		opts.Name = base.Host
	}
	m, err := newMetrics(opts.Registerer, opts.Name)
	if err != nil {
		return nil, err
	}
	c, err := newClient(opts, m)
	if err != nil {
		return nil, err
	}
	s := &Source{
		opts:   opts,
		client: c,
		m:      m,
		log:    opts.Logger.With("pbx", opts.Name),
		ready:  make(chan struct{}),
	}
	s.orig.init()
	s.status = asterisk.SourceStatus{
		Name:        opts.Name,
		Kind:        "ari",
		Address:     c.BaseURL(),
		Since:       opts.Clock.Now(),
		Description: "not connected yet",
	}
	return s, nil
}

// Name returns the PBX name (Options.Name).
func (s *Source) Name() string { return s.opts.Name }

// Ready is closed once the first connection succeeded.
func (s *Source) Ready() <-chan struct{} { return s.ready }

// Client returns the REST client the source uses (for tools and diagnostics).
func (s *Source) Client() *Client { return s.client }

// Status returns a point-in-time view for the status page and /readyz.
func (s *Source) Status() asterisk.SourceStatus {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	st.Events = s.events.Load()
	return st
}

// Run connects and delivers events until ctx is cancelled; see the type's documentation. It
// returns ctx.Err() after cancellation. It must be called once; it closes the REST client's
// idle connections when it returns.
func (s *Source) Run(ctx context.Context, out chan<- asterisk.Event) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("ari: Source.Run called twice")
	}
	defer s.client.tr.CloseIdleConnections()
	clock := s.opts.Clock
	attempt := 0
	connectedBefore := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := s.client.Connect(ctx)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			stage := "dial"
			var ce *ConnectError
			if errors.As(err, &ce) {
				stage = ce.Stage
			}
			s.m.connectError(stage)
			n := attempt
			if errors.Is(err, ErrAuthFailed) {
				n = 64 // straight to Max: do not hammer the PBX's fail2ban with a wrong password
			}
			attempt++
			delay := s.opts.Backoff.Delay(n)
			s.setFailed(err, clock.Now())
			s.log.Warn("ari: connect failed", "url", s.client.BaseURL(), "attempt", attempt, "retry_in", delay.Round(time.Millisecond), "err", err)
			if err := s.sleep(ctx, delay); err != nil {
				return err
			}
			continue
		}
		connectedAt := clock.Now()
		if connectedBefore {
			s.m.reconnect()
		}
		s.setConnected(connectedAt, connectedBefore)
		s.readyOnce.Do(func() { close(s.ready) })
		s.log.Info("ari: connected", "url", s.client.BaseURL(), "app", s.opts.App, "resync", connectedBefore)

		err = s.serve(ctx, st, out, connectedBefore)
		_ = st.Close()
		connectedBefore = true
		lostAt := clock.Now()
		s.setDisconnected(err, lostAt)
		s.orig.connectionLost()
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		s.log.Warn("ari: connection lost", "after", lostAt.Sub(connectedAt).Round(time.Millisecond), "err", err)
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

// serve pumps one connection's messages to out until the connection ends or ctx is cancelled.
func (s *Source) serve(ctx context.Context, st *Stream, out chan<- asterisk.Event, resync bool) error {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Add(1)
	go func() { // PBX version for the status page; ends with the connection
		defer wg.Done()
		info, err := s.client.Info(sctx)
		if err != nil {
			if sctx.Err() == nil {
				s.log.Debug("ari: asterisk info", "err", err)
			}
			return
		}
		s.mu.Lock()
		s.status.PBXVersion = info.Version
		s.mu.Unlock()
	}()

	if !s.emit(ctx, out, asterisk.Event{
		Type: asterisk.TypeConnected, Name: "Connected", Time: s.opts.Clock.Now(), PBX: s.opts.Name, Resync: resync,
	}) {
		return ctx.Err()
	}
	if resync && !s.resync(ctx, out) {
		return ctx.Err()
	}
	for {
		msg, err := st.Next(ctx)
		recv := time.Now()
		if err != nil {
			if errors.Is(err, ErrBinaryMessage) {
				s.m.drop(DropBinary)
				s.log.Warn("ari: binary websocket message ignored")
				continue
			}
			if errors.Is(err, websocket.ErrMessageTooBig) {
				s.m.drop(DropTooBig)
			}
			return err
		}
		ev, ok, err := ToEvent(msg, s.opts.Name, s.opts.Clock.Now())
		if err != nil {
			s.m.drop(DropInvalid)
			s.log.Warn("ari: message is not a valid event; dropped", "err", err, "message", truncate(string(msg), 200))
			continue
		}
		if !ok {
			s.m.drop(DropInvalid)
			s.log.Warn("ari: message without a type; dropped", "message", truncate(string(msg), 200))
			continue
		}
		s.m.event(ev.Type)
		s.events.Add(1)
		s.orig.observe(&ev)
		if ev.Type == asterisk.TypeUnknown && !s.opts.ForwardUnknown {
			continue
		}
		if !s.emit(ctx, out, ev) {
			return ctx.Err()
		}
		s.m.setLag(time.Since(recv))
	}
}

// resync sends the snapshot of the channels that exist now; false means ctx was cancelled.
func (s *Source) resync(ctx context.Context, out chan<- asterisk.Event) bool {
	end := asterisk.Event{Type: asterisk.TypeSnapshotEnd, Name: "ChannelsSnapshotEnd", PBX: s.opts.Name}
	chans, err := s.client.Channels(ctx)
	var bridges []Bridge
	if err == nil {
		bridges, err = s.client.Bridges(ctx)
	}
	now := s.opts.Clock.Now()
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		s.m.resync("failed")
		s.log.Warn("ari: resync failed; calls that ended during the outage stay open until their maximum age", "err", err)
		end.Time = now
		end.Vars = map[string]string{"error": err.Error()}
		return s.emitCounted(ctx, out, end)
	}
	inBridge := make(map[string]string)
	for _, b := range bridges {
		for _, id := range b.Channels {
			inBridge[id] = b.ID
		}
	}
	snaps := make([]asterisk.Event, 0, len(chans))
	for _, raw := range chans {
		var id struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &id) // Snapshot reports a bad object
		ev, err := Snapshot(raw, inBridge[id.ID], s.opts.Name, now)
		if err != nil {
			s.m.drop(DropInvalid)
			s.log.Warn("ari: channel in the snapshot is not valid; skipped", "err", err)
			continue
		}
		snaps = append(snaps, ev)
	}
	if !s.linkedids(ctx, snaps) {
		return false
	}
	for i := range snaps {
		if !s.emitCounted(ctx, out, snaps[i]) {
			return false
		}
	}
	n := len(snaps)
	s.m.resync("ok")
	end.Time = now
	end.Vars = map[string]string{"channels": strconv.Itoa(n)}
	return s.emitCounted(ctx, out, end)
}

// linkedidWorkers bounds the concurrent CHANNEL(linkedid) requests of a resync.
const linkedidWorkers = 8

// linkedids fills Chan.Linkedid of the snapshot events from CHANNEL(linkedid): ARI channel
// objects lack it, and without it a channel created while the connection was down cannot be
// tied to its call. A channel gone meanwhile, or an error, leaves it empty (the model then
// groups the channel as it can). false means ctx was cancelled.
func (s *Source) linkedids(ctx context.Context, snaps []asterisk.Event) bool {
	jobs := make(chan int)
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	for range min(linkedidWorkers, len(snaps)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				l, err := s.client.ChannelVar(ctx, snaps[i].Chan.Uniqueid, "CHANNEL(linkedid)")
				switch {
				case err == nil:
					snaps[i].Chan.Linkedid = l
				case !errors.Is(err, ErrNotFound):
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for i := range snaps {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if ctx.Err() != nil {
		return false
	}
	if n := failures.Load(); n > 0 {
		s.log.Warn("ari: resync: CHANNEL(linkedid) unavailable; channels created during the outage may be reported as separate calls",
			"channels", n, "err", firstErr.Load())
	}
	return true
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

func (s *Source) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-s.opts.Clock.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Source) setConnected(at time.Time, reconnect bool) {
	s.m.setConnected(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up = true
	st := &s.status
	st.Connected = true
	st.Since = at
	st.LoggedInAt = at
	st.LastError = ""
	st.FirstLogin = true
	if reconnect {
		st.Reconnects++
	}
	st.Description = fmt.Sprintf("connected to %s as %s (app %s)", s.client.BaseURL(), s.opts.Username, s.opts.App)
}

func (s *Source) setDisconnected(err error, at time.Time) {
	s.m.setConnected(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up = false
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
		st.Description = "login refused: check username and password in the config and ari.conf"
	} else {
		st.Description = "cannot connect to " + s.client.BaseURL() + ", retrying"
	}
}

// connected reports whether the events websocket is up (Originate needs it to see outcomes).
func (s *Source) connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up
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
