// Package fakepbx is a simulated Asterisk PBX for tests, the demo and the load harness: an AMI
// server on loopback that speaks the real wire protocol and replays the real transcripts of
// package asterisk/transcripts.
//
// It answers the banner, Login (plain and MD5 challenge), Ping, Events, CoreSettings,
// CoreShowChannels (the channels of the calls being replayed right now), ExtensionState and
// Originate (a click-to-call: the click_to_call transcript adapted to the requested extension
// and number, ending the agent leg with an OriginateResponse carrying the client's ActionID), and
// Logoff. Replays get fresh timestamps (shifted to now, relative timing kept, divided by the
// speed factor) and fresh ids: every Uniqueid/Linkedid (also inside recording names and CEL
// JSON), channel-name suffix and bridge id is remapped consistently, so any number of concurrent
// replays never collide. Config.Customers can give each replay other customers: their numbers
// replace the transcript's in every header. Replays keep playing while clients are disconnected
// (events during the outage are lost for them, as on a real PBX). With Config.CDR it also writes
// the Call Detail Records of its calls, as Asterisk does whether or not anybody listens:
// Master.csv rows and, optionally, rows of FreePBX's cdr table (CDRConfig).
//
// Knobs for fault tests: DropClients (close every client connection now), Config.DropEvery,
// Outage (drop the clients and refuse connections for a while), Pause/Resume (freeze the calls),
// UserEvent (a marker in the event stream),
// StallClients (a half-open connection: the socket stays open but nothing is read or written),
// SetExtension (what an extension answers to ExtensionState and Originate).
//
// A Server is safe for concurrent use. Close stops it and waits for its goroutines.
package fakepbx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is what an extension's phone does when an Originate rings it.
type Outcome string

// Outcomes of Ext.Outcome.
const (
	Answer     Outcome = "answer"     // answers: the click_to_call transcript plays
	Busy       Outcome = "busy"       // OriginateResponse Failure, Reason 5
	NoAnswer   Outcome = "noanswer"   // rings out: Reason 3 after the Originate's Timeout
	Congestion Outcome = "congestion" // Reason 8
	Fail       Outcome = "fail"       // the channel cannot be dialled: Reason 0
	Reject     Outcome = "reject"     // the phone hangs up while ringing: Reason 1
)

// Ext describes one extension of the simulated office.
type Ext struct {
	// State is what ExtensionState reports (ami.ExtIdle, ami.ExtInUse, ami.ExtBusy,
	// ami.ExtUnavailable...).
	State int
	// Outcome is what happens when an Originate rings it (default Answer).
	Outcome Outcome
}

// Config of a Server. Zero values take the documented defaults.
type Config struct {
	// Addr to listen on (default "127.0.0.1:0": a free loopback port).
	Addr string
	// Username and Secret accepted by Login (default "pbxbridge" / "secret").
	Username string
	Secret   string
	// Banner (default "Asterisk Call Manager/11.0.0", as in the transcripts) and the
	// AsteriskVersion reported by CoreSettings (default "22.10.1").
	Banner  string
	Version string
	// Speed divides the transcripts' timing: 1 (default) is real time, 10 is ten times faster,
	// math.Inf(1) replays without any delay (benchmarks).
	Speed float64
	// Seed of the random choices (scenario mix, bridge ids). Default 1.
	Seed uint64
	// FirstID offsets the sequence part of the uniqueids (epoch.seq) the server hands out:
	// tests where two servers stand for one PBX (it moved to another address) give the second
	// one a FirstID past the first's, as the real PBX's sequence would go on.
	FirstID uint64
	// Extensions known to ExtensionState and Originate (default 101, 102 and 103: idle,
	// answering). Unknown extensions report status -1 (no hint) and fail to originate.
	Extensions map[string]Ext
	// WriteTimeout: a client that does not read for this long is disconnected (default 5 s),
	// like Asterisk's writetimeout.
	WriteTimeout time.Duration
	// DropEvery, when positive, drops every client connection periodically.
	DropEvery time.Duration
	// NoTimestamps strips the Timestamp header from events (Asterisk's default is
	// timestampevents=no; the transcripts were recorded with it on).
	NoTimestamps bool
	// ExcludeEvents are call events never sent to any client, as manager.conf's
	// `eventfilter = !Event: NAME` lines make Asterisk do; replays skip them without delay
	// (and without rendering them, so they cost the fake PBX nothing). EventFilter applies
	// real eventfilter lines, such as the whitelist docs/asterisk.md recommends.
	ExcludeEvents []string
	// EventFilter are manager.conf eventfilter lines ("eventfilter = ^Event: ...",
	// "eventfilter(action(include),name(Hangup)) =", see EventFilter) applied, as Asterisk
	// applies them to its AMI user, to every event the server sends to all clients: replayed call
	// events, OriginateResponse and UserEvent. Responses, FullyBooted at login and the
	// CoreShowChannels list are never filtered, as in Asterisk. A filtered-out event is still
	// played (and timed); EmittedEvent.Clients is 0 for it. Start fails on a line Asterisk would
	// refuse.
	EventFilter []string
	// Mutate, when set, rewrites each call event frame (the wire bytes, ending in the blank
	// line) before it is sent: security tests turn the replays into a hostile peer's stream.
	// It must return a whole frame.
	Mutate func(frame []byte) []byte
	// Customers, when set, gives every call that Play and Load replay its own customers: it is
	// called once per replay with the scenario's name and its transcript's customers' numbers in
	// E.164 (+79001234567, ...; in order of first appearance, as Call.Customers lists them) and
	// returns the number to use in place of each, in E.164 ("" or a missing entry keeps the
	// original). Every header that carries a customer's number (CallerIDNum, ConnectedLineNum,
	// Exten, channel and device names, dial strings, recording file names, CEL and Cdr fields)
	// gets the replacement, in the format the transcript wrote it in (+79…, 79…, 89…), so a
	// client sees one number per customer throughout the call. It is called from Play's
	// goroutine (Load: one call at a time). Originate replays need none: their number is the
	// one requested.
	Customers func(scenario string, orig []string) []string
	// Logger (default: discard).
	Logger *slog.Logger
	// CDR, when set, makes the PBX write the Call Detail Records of its calls (CDRConfig).
	CDR *CDRConfig
	// OnEvent, when set, is called after each call event of a replay was queued to the clients,
	// from the replay's goroutine (concurrently for concurrent replays). Load and fault harnesses
	// use it to time what a client does with an event and to know whether any client received
	// it. It must return quickly: the replay waits for it.
	OnEvent func(EmittedEvent)
}

// EmittedEvent describes one call event a replay sent (Config.OnEvent).
type EmittedEvent struct {
	Call        *Call
	Event       string // "Newchannel", "DialBegin", "Hangup", ...
	Linkedid    string
	Uniqueid    string
	Channel     string
	DestChannel string    // the dialled channel of DialBegin/DialEnd, else ""
	At          time.Time // when it was queued to the clients
	// Clients is how many logged-in clients it was queued to (0: nobody saw it, e.g. while the
	// only client was disconnected).
	Clients int
}

// Stats are counters of a Server.
type Stats struct {
	Sessions      int    // clients connected now
	Logins        uint64 // successful logins so far
	CallsStarted  uint64
	CallsFinished uint64
	EventsSent    uint64 // event frames written to clients (one per client)
	Drops         uint64 // client connections dropped by DropClients/DropEvery
	Originates    uint64 // originate requests received (placed calls), valid or not
}

// Server is a running fake PBX.
type Server struct {
	pbx[*session]
	cfg       Config
	ln        net.Listener
	scenarios map[string]*scenario
	orig      *scenario
	excluded  map[string]bool // Config.ExcludeEvents
	cdr       *cdrWriter      // Config.CDR; nil without one
	filter    *EventFilter    // Config.EventFilter, nil when none

	calls map[*instance]struct{} // guarded by mu

	// emitMu orders event emission with CoreShowChannels, so a snapshot reflects exactly the
	// events each client received before it.
	emitMu sync.Mutex

	logins  atomic.Uint64
	cdrOnce sync.Once

	pauseMu sync.Mutex
	pause   atomic.Pointer[pauseState]
}

// pauseState is the replays' clock: paused (gate closed by Resume) or running, and the total
// time spent paused so far.
type pauseState struct {
	gate  chan struct{}
	at    time.Time
	total time.Duration
}

// Start compiles the transcripts, listens and serves until Close.
func Start(cfg Config) (*Server, error) {
	defaults(&cfg.Addr, &cfg.Username, &cfg.Secret, &cfg.Version, &cfg.Seed, &cfg.WriteTimeout, &cfg.Logger)
	if cfg.Banner == "" {
		cfg.Banner = "Asterisk Call Manager/11.0.0"
	}
	scs, orig, err := compiled()
	if err != nil {
		return nil, err
	}
	var filter *EventFilter
	if len(cfg.EventFilter) > 0 {
		if filter, err = ParseEventFilter(cfg.EventFilter); err != nil {
			return nil, err
		}
	}
	var cdrw *cdrWriter
	if cfg.CDR != nil {
		log := cfg.Logger
		if cdrw, err = newCDRWriter(*cfg.CDR, func(msg string, args ...any) { log.Warn(msg, args...) }); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		if cdrw != nil {
			cdrw.stop()
		}
		return nil, fmt.Errorf("fakepbx: listening on %s: %w", cfg.Addr, err)
	}
	s := &Server{
		cdr:       cdrw,
		cfg:       cfg,
		ln:        ln,
		scenarios: scs,
		orig:      orig,
		calls:     map[*instance]struct{}{},
		excluded:  map[string]bool{},
		filter:    filter,
	}
	s.init(cfg.Speed, cfg.Seed, cfg.Extensions, cfg.Logger)
	s.uidSeq.Store(cfg.FirstID)
	for _, ev := range cfg.ExcludeEvents {
		s.excluded[ev] = true
	}
	s.pause.Store(&pauseState{})
	s.wg.Add(1)
	go s.acceptLoop()
	if cfg.DropEvery > 0 {
		s.wg.Add(1)
		go s.dropLoop(cfg.DropEvery)
	}
	return s, nil
}

// compiled returns the compiled transcripts. They are compiled once per process and never
// modified afterwards.
func compiled() (map[string]*scenario, *scenario, error) {
	c := compiledOnce()
	return c.scenarios, c.orig, c.err
}

type compiledSet struct {
	scenarios map[string]*scenario
	orig      *scenario
	err       error
}

var compiledOnce = sync.OnceValue(func() compiledSet { //nolint:gochecknoglobals // immutable lazy cache
	scs, orig, err := compileAll()
	return compiledSet{scs, orig, err}
})

// Addr returns the address the server listens on (host:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Username and Secret return the credentials Login accepts.
func (s *Server) Username() string { return s.cfg.Username }

// Secret returns the secret Login accepts.
func (s *Server) Secret() string { return s.cfg.Secret }

// Scenarios lists the scenarios Play and Load can replay, sorted.
func (s *Server) Scenarios() []string { return scenarioNames(s.scenarios) }

// Close stops accepting, closes every client connection, stops the replays and waits for all
// goroutines, then writes the CDR rows still waiting for their Lag. It is idempotent.
func (s *Server) Close() error {
	err := s.shutdown(s.ln.Close)
	s.cdrOnce.Do(func() {
		if s.cdr != nil {
			s.cdr.stop()
		}
	})
	return err
}

// CDRErrors is how many CDR rows could not be written (Config.CDR), for tests to check.
func (s *Server) CDRErrors() int { return s.cdr.errors() }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Sessions:      s.sessionCount(),
		Logins:        s.logins.Load(),
		CallsStarted:  s.started.Load(),
		CallsFinished: s.finished.Load(),
		EventsSent:    s.sent.Load(),
		Drops:         s.drops.Load(),
		Originates:    s.origs.Load(),
	}
}

// Pause stops every replay where it is: no call event is emitted until Resume, and the calls'
// timelines (timestamps included) shift by the pause, as if time had stood still for them.
// Clients stay connected and actions are answered. Tests use it to let a slow consumer catch up
// before a fault.
func (s *Server) Pause() {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	s.emitMu.Lock() // no call event is being sent once Pause returns
	defer s.emitMu.Unlock()
	if cur := s.pause.Load(); cur.gate == nil {
		s.pause.Store(&pauseState{gate: make(chan struct{}), at: time.Now(), total: cur.total})
	}
}

// Resume continues the replays after Pause.
func (s *Server) Resume() {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	if cur := s.pause.Load(); cur.gate != nil {
		s.pause.Store(&pauseState{total: cur.total + time.Since(cur.at)})
		close(cur.gate)
	}
}

// UserEvent sends "Event: UserEvent" with "UserEvent: name" and the given key/value pairs to
// every client, in order with the call events: a marker that tells a test everything sent before
// it has arrived.
func (s *Server) UserEvent(name string, kv ...string) {
	var b []byte
	b = appendHeader(b, "Event", "UserEvent")
	b = appendHeader(b, "Privilege", "user,all")
	if !s.cfg.NoTimestamps {
		b = appendHeader(b, "Timestamp", string(appendTimestamp(nil, time.Now())))
	}
	b = appendHeader(b, "UserEvent", name)
	for i := 0; i+1 < len(kv); i += 2 {
		b = appendHeader(b, kv[i], kv[i+1])
	}
	b = append(b, "\r\n"...)
	s.emit(b, classBits["user"])
}

// StallClients turns every current client connection half-open: the socket stays open, but the
// server neither reads its actions nor writes anything to it any more. New connections work
// normally. It returns how many were stalled.
func (s *Server) StallClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		ss.stalled.Store(true)
	}
	return len(s.sessions)
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("fakepbx: accept", "err", err)
			}
			return
		}
		if s.refusing() {
			_ = nc.Close()
			continue
		}
		ss := newSession(s, nc)
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			_ = nc.Close()
			return
		}
		s.sessions[ss] = struct{}{}
		s.mu.Unlock()
		ss.start()
	}
}

// emit sends one frame that belongs to no replay to every logged-in client whose event mask
// includes the frame's classes.
func (s *Server) emit(frame []byte, classes uint32) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.broadcastLocked(frame, classes)
}

// emitCall sends frame number pos of replay in, unless the replays are paused (false). It
// returns how many clients it was queued to and when.
func (s *Server) emitCall(in *instance, pos int32, frame []byte, classes uint32) (ok bool, clients int, at time.Time) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	if s.pause.Load().gate != nil {
		return false, 0, time.Time{}
	}
	in.pos.Store(pos)
	n := s.broadcastLocked(frame, classes)
	return true, n, time.Now()
}

// broadcastLocked copies frame to the clients and returns how many took it; emitMu must be held.
func (s *Server) broadcastLocked(frame []byte, classes uint32) int {
	if !s.filter.Pass(frame) {
		return 0
	}
	targets := s.clients(func(ss *session) bool { return ss.wantsEvents(classes) })
	if len(targets) == 0 {
		return 0
	}
	b := slices.Clone(frame)
	n := 0
	for _, ss := range targets {
		if ss.enqueue(b) {
			s.sent.Add(1)
			n++
		}
	}
	return n
}

// coreShowChannels builds the complete answer to CoreShowChannels (response, one
// CoreShowChannel per live channel of every replay, completion event) and queues it for ss as
// one write, under emitMu so it is consistent with the events ss received.
func (s *Server) coreShowChannels(ss *session, actionID string) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	calls := make([]*instance, 0, len(s.calls))
	for in := range s.calls {
		calls = append(calls, in)
	}
	s.mu.Unlock()
	slices.SortFunc(calls, func(a, b *instance) int { return a.start.Compare(b.start) })
	now := time.Now()
	buf := responseHead(nil, "Success", actionID)
	buf = appendHeader(buf, "EventList", "start")
	buf = appendHeader(buf, "Message", "Channels will follow")
	buf = append(buf, "\r\n"...)
	n := 0
	for _, in := range calls {
		for _, lc := range in.channels(int(in.pos.Load())) {
			buf = in.coreShowChannel(buf, lc, actionID, now)
			n++
		}
	}
	buf = append(buf, "Event: CoreShowChannelsComplete\r\n"...)
	if actionID != "" {
		buf = appendHeader(buf, "ActionID", actionID)
	}
	buf = appendHeader(buf, "EventList", "Complete")
	buf = appendHeader(buf, "ListItems", fmt.Sprint(n))
	buf = append(buf, "\r\n"...)
	ss.enqueue(buf)
}

// Play starts one replay of scenario name now and returns at once. The replay stops early when
// ctx is cancelled or the server is closed.
func (s *Server) Play(ctx context.Context, name string) (*Call, error) {
	sc, ok := s.scenarios[name]
	if !ok {
		return nil, fmt.Errorf("fakepbx: unknown scenario %q", name)
	}
	cust, err := s.customersFor(sc)
	if err != nil {
		return nil, err
	}
	in := s.newInstance(sc, time.Now())
	in.cust = cust
	s.startInstance(ctx, in)
	return in.call, nil
}

func (s *Server) startInstance(ctx context.Context, in *instance) {
	s.mu.Lock()
	s.calls[in] = struct{}{}
	s.mu.Unlock()
	unlist := func() {
		s.mu.Lock()
		delete(s.calls, in)
		s.mu.Unlock()
	}
	run := func(ctx context.Context) {
		in.run(ctx)
		unlist()
	}
	if !s.spawn(ctx, run, func() { close(in.done) }) {
		unlist()
		close(in.done) // the server is closed: the replay ends at once
	}
}
