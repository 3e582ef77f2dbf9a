package fakepbx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ARIConfig configures an ARIServer. Zero values take the documented defaults.
type ARIConfig struct {
	// Addr to listen on (default "127.0.0.1:0": a free loopback port).
	Addr string
	// Username and Password accepted by HTTP basic auth (default "pbxbridge" / "secret").
	Username string
	Password string
	// Version reported by GET /ari/asterisk/info (default "22.10.1").
	Version string
	// Speed divides the transcripts' timing: 1 (default) is real time, 10 is ten times faster,
	// math.Inf(1) replays without any delay (benchmarks).
	Speed float64
	// TranscriptTiming keeps the transcripts' relative timing in every timestamp and in the
	// fresh channel ids whatever Speed is: the replay is only sent faster. A call then yields
	// exactly the durations of its transcript (comparison tests). Default: timestamps follow
	// the replay (divided by Speed).
	TranscriptTiming bool
	// Seed of the random choices (scenario mix, bridge ids). Default 1.
	Seed uint64
	// Extensions known to GET /endpoints, GET /deviceStates and POST /channels (default 101,
	// 102 and 103: idle, answering). State uses the AMI ExtensionState codes (ami.ExtIdle,
	// ami.ExtBusy, ami.ExtUnavailable, ami.ExtNoHint...).
	Extensions map[string]Ext
	// WriteTimeout: a websocket client that does not read for this long is disconnected
	// (default 5 s).
	WriteTimeout time.Duration
	// DropEvery, when positive, drops every websocket client periodically.
	DropEvery time.Duration
	// Logger (default: discard).
	Logger *slog.Logger
}

// ARIStats are counters of an ARIServer.
type ARIStats struct {
	Sessions      int    // websocket clients connected now
	Connects      uint64 // websocket connections accepted so far
	AuthFailures  uint64 // requests refused with 401
	Requests      uint64 // REST requests served (any status)
	CallsStarted  uint64
	CallsFinished uint64
	EventsSent    uint64 // messages queued to clients (one per client)
	Drops         uint64 // clients dropped by DropClients/DropEvery/Outage
	Originates    uint64 // POST /channels requests received (placed calls), valid or not
}

// ARIServer is a running fake Asterisk REST Interface: HTTP and websocket on loopback with
// basic auth, replaying the embedded .ari.jsonl transcripts with fresh timestamps and ids.
//
// It serves GET /ari/events (websocket; app required, events only with subscribeAll=true, as
// Asterisk sends a subscribeAll-less application nothing of calls it does not control),
// GET /ari/channels and GET /ari/channels/{id} (the channels of the calls in progress, as of
// the events sent so far), GET /ari/channels/{id}/variable for CHANNEL(linkedid) (taken from the
// AMI capture of the same calls, which ARI events lack), GET /ari/bridges, POST /ari/channels (click-to-call: an answering
// extension plays the click_to_call transcript adapted to the requested extension, number and
// variables; other outcomes produce the agent channel and its hangup with the matching cause),
// GET /ari/endpoints/{tech}/{resource}, GET /ari/deviceStates/{name} and
// GET /ari/asterisk/info. Replays keep playing while clients are disconnected (events during an
// outage are lost for them, as on a real PBX).
//
// Knobs for fault tests: DropClients, ARIConfig.DropEvery, Outage (drop the clients and refuse
// connections for a while), StallClients (half-open websockets: nothing read, written or
// ponged), Freeze (hold the replays), SetRESTDelay (slow REST answers), SetExtension.
//
// An ARIServer is safe for concurrent use. Close stops it and waits for its goroutines.
type ARIServer struct {
	pbx[*ariSession]
	cfg       ARIConfig
	ln        net.Listener
	hs        *http.Server
	scenarios map[string]*ariScenario
	orig      *ariScenario

	calls map[*ariInstance]struct{} // guarded by mu
	synth map[string][]byte         // synthetic originate channels alive: id → channel JSON; guarded by mu

	// emitMu orders event emission with the channel and bridge lists; it also guards gate.
	emitMu sync.Mutex
	gate   chan struct{} // not nil while frozen; closed by the resume function

	restDelay atomic.Int64
	connects  atomic.Uint64
	authFails atomic.Uint64
	requests  atomic.Uint64
}

// StartARI compiles the ARI transcripts, listens and serves until Close.
func StartARI(cfg ARIConfig) (*ARIServer, error) {
	defaults(&cfg.Addr, &cfg.Username, &cfg.Password, &cfg.Version, &cfg.Seed, &cfg.WriteTimeout, &cfg.Logger)
	c := compiledARIOnce()
	if c.err != nil {
		return nil, c.err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("fakepbx: listening on %s: %w", cfg.Addr, err)
	}
	s := &ARIServer{
		cfg:       cfg,
		scenarios: c.scenarios,
		orig:      c.orig,
		calls:     map[*ariInstance]struct{}{},
		synth:     map[string][]byte{},
	}
	s.init(cfg.Speed, cfg.Seed, cfg.Extensions, cfg.Logger)
	s.ln = &stallListener{Listener: ln, srv: s}
	s.hs = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.hs.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("fakepbx: ARI server", "err", err)
		}
	}()
	if cfg.DropEvery > 0 {
		s.wg.Add(1)
		go s.dropLoop(cfg.DropEvery)
	}
	return s, nil
}

type compiledARISet struct {
	scenarios map[string]*ariScenario
	orig      *ariScenario
	err       error
}

var compiledARIOnce = sync.OnceValue(func() compiledARISet { //nolint:gochecknoglobals // immutable lazy cache
	scs, orig, err := compileAllARI()
	return compiledARISet{scs, orig, err}
})

// Addr returns the address the server listens on (host:port).
func (s *ARIServer) Addr() string { return s.ln.Addr().String() }

// URL returns the server's base URL, e.g. "http://127.0.0.1:34567" (the ARI URL of a daemon
// configuration; REST lives under /ari).
func (s *ARIServer) URL() string { return "http://" + s.Addr() }

// Username returns the user basic auth accepts.
func (s *ARIServer) Username() string { return s.cfg.Username }

// Password returns the password basic auth accepts.
func (s *ARIServer) Password() string { return s.cfg.Password }

// Scenarios lists the scenarios Play and Load can replay, sorted.
func (s *ARIServer) Scenarios() []string { return scenarioNames(s.scenarios) }

// DefaultMix returns the scenarios Load draws from by default (all but "concurrent", which is
// itself a burst of 20 calls).
func (s *ARIServer) DefaultMix() []string { return defaultMix(s.Scenarios()) }

// Close stops serving, closes every client connection, stops the replays and waits for all
// goroutines. It is idempotent.
func (s *ARIServer) Close() error { return s.shutdown(s.hs.Close) }

// Stats returns the server's counters.
func (s *ARIServer) Stats() ARIStats {
	return ARIStats{
		Sessions:      s.sessionCount(),
		Connects:      s.connects.Load(),
		AuthFailures:  s.authFails.Load(),
		Requests:      s.requests.Load(),
		CallsStarted:  s.started.Load(),
		CallsFinished: s.finished.Load(),
		EventsSent:    s.sent.Load(),
		Drops:         s.drops.Load(),
		Originates:    s.origs.Load(),
	}
}

// StallClients turns every current websocket half-open: the socket stays open, but the server
// neither reads from it (so pings get no pong) nor writes to it any more. New connections work
// normally. It returns how many were stalled.
func (s *ARIServer) StallClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		ss.stall()
	}
	return len(s.sessions)
}

// Freeze holds every replay before its next message until resume is called (idempotent).
// Time keeps running: messages that fall due meanwhile are sent at once on resume, with the
// timestamps they would have had. Click-to-call outcomes of POST /ari/channels are not held.
// With the replays frozen, a client that reconnects misses nothing, so tests can check a
// resync against exactly known state.
func (s *ARIServer) Freeze() (resume func()) {
	s.emitMu.Lock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
	g := s.gate
	s.emitMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.emitMu.Lock()
			if s.gate == g {
				close(g)
				s.gate = nil
			}
			s.emitMu.Unlock()
		})
	}
}

// SetRESTDelay delays every REST answer by d (0: none), to test client timeouts.
func (s *ARIServer) SetRESTDelay(d time.Duration) { s.restDelay.Store(int64(d)) }
