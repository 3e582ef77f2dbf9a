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
	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Source is the ARI implementation of asterisk.Source and asterisk.Originator for one PBX; it
// behaves like the AMI source so that the daemon treats both alike.
//
// Run keeps one events websocket connected, reconnecting with Options.Backoff, and sends on out,
// in wire order and with backpressure (never dropping an event):
//
//   - TypeConnected after every connection (Time = connect time); Resync is true after a
//     reconnect (and after the first connection with Options.SnapshotOnConnect);
//   - after a reconnect (and the first connection with SnapshotOnConnect), before any live event: one TypeSnapshot per channel of GET /channels
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
	opts   Options
	client *Client
	m      *metrics
	log    *slog.Logger
	loop   *transport.Loop

	orig originates
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
	log := opts.Logger.With("pbx", opts.Name)
	s := &Source{
		opts:   opts,
		client: c,
		m:      m,
		log:    log,
		loop: transport.NewLoop(transport.LoopConfig{
			Name: opts.Name, Kind: "ari", AddrKey: "url", Addr: c.BaseURL(),
			AuthHint: "login refused: check username and password in the config and ari.conf",
			Clock:    opts.Clock, Backoff: opts.Backoff, Log: log, Metrics: m.Metrics,
		}),
	}
	s.orig.init()
	return s, nil
}

// Name returns the PBX name (Options.Name).
func (s *Source) Name() string { return s.opts.Name }

// Ready is closed once the first connection succeeded.
func (s *Source) Ready() <-chan struct{} { return s.loop.Ready() }

// Client returns the REST client the source uses (for tools and diagnostics).
func (s *Source) Client() *Client { return s.client }

// Status returns a point-in-time view for the status page and /readyz.
func (s *Source) Status() asterisk.SourceStatus { return s.loop.Status() }

// Run connects and delivers events until ctx is cancelled; see the type's documentation. It
// returns ctx.Err() after cancellation. It must be called once; it closes the REST client's
// idle connections when it returns.
func (s *Source) Run(ctx context.Context, out chan<- asterisk.Event) error {
	defer s.client.tr.CloseIdleConnections()
	return transport.Run(ctx, s.loop, out, transport.Hooks[*Stream]{
		Connect: s.client.Connect,
		Stage: func(err error) string {
			var ce *ConnectError
			if errors.As(err, &ce) {
				return ce.Stage
			}
			return "dial"
		},
		AuthFailed: func(err error) bool { return errors.Is(err, ErrAuthFailed) },
		Connected: func(*Stream) (string, []any) {
			return fmt.Sprintf("connected to %s as %s (app %s)", s.client.BaseURL(), s.opts.Username, s.opts.App),
				[]any{"app", s.opts.App}
		},
		Serve: func(ctx context.Context, st *Stream, reconnect bool) error {
			return s.serve(ctx, st, out, reconnect || s.opts.SnapshotOnConnect)
		},
		Lost: s.orig.connectionLost,
	})
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
		s.loop.SetVersion(info.Version)
	}()

	if !s.loop.Emit(ctx, out, asterisk.Event{
		Type: asterisk.TypeConnected, Name: "Connected", Time: s.loop.Now(), PBX: s.opts.Name, Resync: resync,
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
				s.m.Drop(DropBinary)
				s.log.Warn("ari: binary websocket message ignored")
				continue
			}
			if errors.Is(err, websocket.ErrMessageTooBig) {
				s.m.Drop(DropTooBig)
			}
			return err
		}
		ev, ok, err := ToEvent(msg, s.opts.Name, s.loop.Now())
		if err != nil {
			s.m.Drop(DropInvalid)
			s.log.Warn("ari: message is not a valid event; dropped", "err", err, "message", transport.Truncate(string(msg), 200))
			continue
		}
		if !ok {
			s.m.Drop(DropInvalid)
			s.log.Warn("ari: message without a type; dropped", "message", transport.Truncate(string(msg), 200))
			continue
		}
		s.loop.Count(ev.Type)
		s.orig.observe(&ev)
		if ev.Type == asterisk.TypeUnknown && !s.opts.ForwardUnknown {
			continue
		}
		if !s.loop.Emit(ctx, out, ev) {
			return ctx.Err()
		}
		s.m.SetLag(time.Since(recv))
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
	now := s.loop.Now()
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		s.m.Resync("failed")
		s.log.Warn("ari: resync failed; calls that ended during the outage stay open until their maximum age", "err", err)
		end.Time = now
		end.Vars = map[string]string{"error": err.Error()}
		return s.loop.EmitCounted(ctx, out, end)
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
			s.m.Drop(DropInvalid)
			s.log.Warn("ari: channel in the snapshot is not valid; skipped", "err", err)
			continue
		}
		snaps = append(snaps, ev)
	}
	if !s.linkedids(ctx, snaps) {
		return false
	}
	for i := range snaps {
		if !s.loop.EmitCounted(ctx, out, snaps[i]) {
			return false
		}
	}
	n := len(snaps)
	s.m.Resync("ok")
	end.Time = now
	end.Vars = map[string]string{"channels": strconv.Itoa(n)}
	return s.loop.EmitCounted(ctx, out, end)
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

var (
	_ asterisk.Source     = (*Source)(nil)
	_ asterisk.Originator = (*Source)(nil)
)
