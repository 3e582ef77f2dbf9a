package fakepbx

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
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
	cfg       ARIConfig
	speed     float64
	log       *slog.Logger
	ln        net.Listener
	hs        *http.Server
	scenarios map[string]*ariScenario
	orig      *ariScenario

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[*ariSession]struct{}
	calls    map[*ariInstance]struct{}
	synth    map[string][]byte // synthetic originate channels alive: id → channel JSON
	exts     map[string]Ext
	rng      *rand.Rand

	// emitMu orders event emission with the channel and bridge lists; it also guards gate.
	emitMu sync.Mutex
	gate   chan struct{} // not nil while frozen; closed by the resume function

	uidSeq    atomic.Uint64
	chanSeq   atomic.Uint64
	restDelay atomic.Int64
	refuse    atomic.Int64 // unix nanoseconds until which new connections are closed at once
	connects  atomic.Uint64
	authFails atomic.Uint64
	requests  atomic.Uint64
	started   atomic.Uint64
	finished  atomic.Uint64
	sent      atomic.Uint64
	drops     atomic.Uint64
	booted    time.Time
}

// StartARI compiles the ARI transcripts, listens and serves until Close.
func StartARI(cfg ARIConfig) (*ARIServer, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Username == "" {
		cfg.Username = "pbxbridge"
	}
	if cfg.Password == "" {
		cfg.Password = "secret"
	}
	if cfg.Version == "" {
		cfg.Version = "22.10.1"
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	speed := cfg.Speed
	if speed <= 0 || math.IsNaN(speed) {
		speed = 1
	}
	exts := make(map[string]Ext, len(cfg.Extensions))
	for k, v := range cfg.Extensions {
		if v.Outcome == "" {
			v.Outcome = Answer
		}
		exts[k] = v
	}
	if cfg.Extensions == nil {
		for _, e := range []string{"101", "102", "103"} {
			exts[e] = Ext{State: ami.ExtIdle, Outcome: Answer}
		}
	}
	c := compiledARIOnce()
	if c.err != nil {
		return nil, c.err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("fakepbx: listening on %s: %w", cfg.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &ARIServer{
		cfg:       cfg,
		speed:     speed,
		log:       cfg.Logger,
		scenarios: c.scenarios,
		orig:      c.orig,
		ctx:       ctx,
		cancel:    cancel,
		sessions:  map[*ariSession]struct{}{},
		calls:     map[*ariInstance]struct{}{},
		synth:     map[string][]byte{},
		exts:      exts,
		rng:       rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		booted:    time.Now(),
	}
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
func (s *ARIServer) Scenarios() []string {
	out := make([]string, 0, len(s.scenarios))
	for k := range s.scenarios {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// DefaultMix returns the scenarios Load draws from by default (all but "concurrent", which is
// itself a burst of 20 calls).
func (s *ARIServer) DefaultMix() []string {
	return slices.DeleteFunc(s.Scenarios(), func(n string) bool { return n == "concurrent" })
}

// Close stops serving, closes every client connection, stops the replays and waits for all
// goroutines. It is idempotent.
func (s *ARIServer) Close() error {
	s.cancel()
	s.mu.Lock()
	for ss := range s.sessions {
		ss.close()
	}
	s.mu.Unlock()
	err := s.hs.Close()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Stats returns the server's counters.
func (s *ARIServer) Stats() ARIStats {
	s.mu.Lock()
	n := len(s.sessions)
	s.mu.Unlock()
	return ARIStats{
		Sessions:      n,
		Connects:      s.connects.Load(),
		AuthFailures:  s.authFails.Load(),
		Requests:      s.requests.Load(),
		CallsStarted:  s.started.Load(),
		CallsFinished: s.finished.Load(),
		EventsSent:    s.sent.Load(),
		Drops:         s.drops.Load(),
	}
}

// DropClients closes every websocket client now (the calls keep playing) and returns how many
// were dropped.
func (s *ARIServer) DropClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ss := range s.sessions {
		ss.close()
		n++
	}
	s.drops.Add(uint64(n))
	return n
}

// Outage drops every websocket client and, for d, closes new TCP connections as soon as they
// are accepted (Asterisk unreachable), while the calls keep playing. It returns how many
// clients were dropped.
func (s *ARIServer) Outage(d time.Duration) int {
	s.refuse.Store(time.Now().Add(d).UnixNano())
	return s.DropClients()
}

// StallClients turns every current websocket half-open: the socket stays open, but the server
// neither reads from it (so pings get no pong) nor writes to it any more. New connections work
// normally. It returns how many were stalled.
func (s *ARIServer) StallClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		ss.stalled.Store(true)
		if ss.nc != nil {
			ss.nc.stalled.Store(true)
		}
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

// SetExtension sets what the endpoint, device state and originate requests see for ext.
func (s *ARIServer) SetExtension(ext string, e Ext) {
	if e.Outcome == "" {
		e.Outcome = Answer
	}
	s.mu.Lock()
	s.exts[ext] = e
	s.mu.Unlock()
}

func (s *ARIServer) extension(ext string) (Ext, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.exts[ext]
	return e, ok
}

func (s *ARIServer) dropLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if n := s.DropClients(); n > 0 {
				s.log.Info("fakepbx: dropped ARI clients", "count", n)
			}
		}
	}
}

// track registers a goroutine with the server unless it is closing.
func (s *ARIServer) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.wg.Add(1)
	return true
}

// after runs fn after d unless the server is closed first.
func (s *ARIServer) after(d time.Duration, fn func()) {
	if !s.track() {
		return
	}
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fn()
		case <-s.ctx.Done():
		}
	}()
}

// ---- HTTP ----

type connKey struct{}

func (s *ARIServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ari/events", s.handleEvents)
	mux.HandleFunc("GET /ari/channels", s.rest(s.handleChannels))
	mux.HandleFunc("POST /ari/channels", s.rest(s.handleOriginate))
	mux.HandleFunc("GET /ari/channels/{id}", s.rest(s.handleChannel))
	mux.HandleFunc("GET /ari/channels/{id}/variable", s.rest(s.handleChannelVar))
	mux.HandleFunc("GET /ari/bridges", s.rest(s.handleBridges))
	mux.HandleFunc("GET /ari/endpoints/{tech}/{resource}", s.rest(s.handleEndpoint))
	mux.HandleFunc("GET /ari/deviceStates/{name...}", s.rest(s.handleDeviceState))
	mux.HandleFunc("GET /ari/asterisk/info", s.rest(s.handleInfo))
	mux.HandleFunc("/", s.rest(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Resource not found"})
	}))
	return mux
}

// authorized checks basic auth and answers 401 when it fails.
func (s *ARIServer) authorized(w http.ResponseWriter, r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	if ok && subtle.ConstantTimeCompare([]byte(u), []byte(s.cfg.Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(p), []byte(s.cfg.Password)) == 1 {
		return true
	}
	s.authFails.Add(1)
	w.Header().Set("WWW-Authenticate", `Basic realm="Asterisk REST Interface"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Authentication required"})
	return false
}

// rest wraps a REST handler: auth, tracking (Close waits for it) and the configured delay.
func (s *ARIServer) rest(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if !s.track() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "shutting down"})
			return
		}
		defer s.wg.Done()
		if !s.authorized(w, r) {
			return
		}
		if d := time.Duration(s.restDelay.Load()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			case <-s.ctx.Done():
				t.Stop()
				return
			}
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"message":"encoding failed"}`)
	}
	writeRawJSON(w, code, b)
}

func writeRawJSON(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (s *ARIServer) handleInfo(w http.ResponseWriter, _ *http.Request) {
	boot := s.booted.UTC().Format(ariTimeLayout)
	writeJSON(w, http.StatusOK, map[string]any{
		"build": map[string]string{"os": "Linux", "kernel": "6.1.0", "machine": "x86_64", "user": "root",
			"date": "2026-10-01 00:00:00 UTC", "options": "BUILD_NATIVE, OPTIONAL_API"},
		"system": map[string]string{"version": s.cfg.Version, "entity_id": "02:fc:00:00:00:01"},
		"config": map[string]any{"name": "fakepbx", "default_language": "en",
			"setid": map[string]string{"user": "asterisk", "group": "asterisk"}},
		"status": map[string]string{"startup_time": boot, "last_reload_time": boot},
	})
}

// handleChannels lists the channels of every call in progress, as of the events sent so far.
func (s *ARIServer) handleChannels(w http.ResponseWriter, _ *http.Request) {
	s.emitMu.Lock()
	buf := []byte{'['}
	n := 0
	for _, in := range s.liveCalls() {
		for _, lc := range in.liveChannels(int(in.pos.Load())) {
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = in.render(buf, in.sc.frames[lc.frame].objs[lc.obj].tpl, "", "", "")
			n++
		}
	}
	s.mu.Lock()
	ids := make([]string, 0, len(s.synth))
	for id := range s.synth {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, s.synth[id]...)
		n++
	}
	s.mu.Unlock()
	s.emitMu.Unlock()
	writeRawJSON(w, http.StatusOK, append(buf, ']'))
}

// handleChannel returns one live channel.
func (s *ARIServer) handleChannel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	for _, in := range s.liveCalls() {
		for _, lc := range in.liveChannels(int(in.pos.Load())) {
			if in.uids[lc.uid] == id {
				writeRawJSON(w, http.StatusOK, in.render(nil, in.sc.frames[lc.frame].objs[lc.obj].tpl, "", "", ""))
				return
			}
		}
	}
	s.mu.Lock()
	b, ok := s.synth[id]
	s.mu.Unlock()
	if ok {
		writeRawJSON(w, http.StatusOK, b)
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"message": "Channel not found"})
}

// handleChannelVar answers GET /ari/channels/{id}/variable for CHANNEL(linkedid) and
// CHANNEL(uniqueid), the functions a client needs to tie a snapshot to its calls.
func (s *ARIServer) handleChannelVar(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("id"), r.URL.Query().Get("variable")
	if name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Variable name is required"})
		return
	}
	linkedid := ""
	s.emitMu.Lock()
	for _, in := range s.liveCalls() {
		for _, lc := range in.liveChannels(int(in.pos.Load())) {
			if in.uids[lc.uid] == id {
				linkedid = id
				if l := in.sc.linked[lc.uid]; l >= 0 {
					linkedid = in.uids[l]
				}
			}
		}
	}
	s.mu.Lock()
	if _, ok := s.synth[id]; ok {
		linkedid = id
	}
	s.mu.Unlock()
	s.emitMu.Unlock()
	if linkedid == "" {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Channel not found"})
		return
	}
	switch strings.ToLower(name) {
	case "channel(linkedid)":
		writeJSON(w, http.StatusOK, map[string]string{"value": linkedid})
	case "channel(uniqueid)":
		writeJSON(w, http.StatusOK, map[string]string{"value": id})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Provided variable was not found"})
	}
}

// handleBridges lists the bridges of every call in progress.
func (s *ARIServer) handleBridges(w http.ResponseWriter, _ *http.Request) {
	s.emitMu.Lock()
	buf := []byte{'['}
	n := 0
	for _, in := range s.liveCalls() {
		for _, lb := range in.liveBridges(int(in.pos.Load())) {
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = in.render(buf, in.sc.frames[lb].bridge.tpl, "", "", "")
			n++
		}
	}
	s.emitMu.Unlock()
	writeRawJSON(w, http.StatusOK, append(buf, ']'))
}

// liveCalls returns the replays in progress, oldest first.
func (s *ARIServer) liveCalls() []*ariInstance {
	s.mu.Lock()
	calls := make([]*ariInstance, 0, len(s.calls))
	for in := range s.calls {
		calls = append(calls, in)
	}
	s.mu.Unlock()
	slices.SortFunc(calls, func(a, b *ariInstance) int {
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		return strings.Compare(a.uids[a.sc.uidOrder[0]], b.uids[b.sc.uidOrder[0]])
	})
	return calls
}

func (s *ARIServer) handleEndpoint(w http.ResponseWriter, r *http.Request) {
	tech, res := r.PathValue("tech"), r.PathValue("resource")
	e, ok := s.extension(res)
	if !ok || strings.EqualFold(tech, "Local") || e.State == ami.ExtNoHint || e.State == ami.ExtRemoved {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Endpoint not found"})
		return
	}
	state := "online"
	if e.State >= 0 && e.State&ami.ExtUnavailable != 0 {
		state = "offline"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"technology": tech, "resource": res, "state": state, "channel_ids": []string{},
	})
}

func (s *ARIServer) handleDeviceState(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	state := "INVALID"
	if m := channelExt.FindStringSubmatch(name); m != nil {
		if e, ok := s.extension(m[1]); ok {
			state = deviceState(e.State)
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": name, "state": state})
}

// deviceState maps an AMI ExtensionState code to an Asterisk device state name.
func deviceState(st int) string {
	switch {
	case st < 0:
		return "INVALID"
	case st&ami.ExtUnavailable != 0:
		return "UNAVAILABLE"
	case st&ami.ExtBusy != 0:
		return "BUSY"
	case st&ami.ExtRinging != 0 && st&ami.ExtInUse != 0:
		return "RINGINUSE"
	case st&ami.ExtRinging != 0:
		return "RINGING"
	case st&ami.ExtOnHold != 0:
		return "ONHOLD"
	case st&ami.ExtInUse != 0:
		return "INUSE"
	}
	return "NOT_INUSE"
}

// handleOriginate answers POST /ari/channels (see the type's documentation).
func (s *ARIServer) handleOriginate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	endpoint, exten := q.Get("endpoint"), q.Get("extension")
	if endpoint == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Endpoint must be specified"})
		return
	}
	if exten == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Application or extension must be specified"})
		return
	}
	m := channelExt.FindStringSubmatch(endpoint)
	if m == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Endpoint is not valid"})
		return
	}
	var body struct {
		Variables map[string]string `json:"variables"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Invalid JSON body: " + err.Error()})
			return
		}
	}
	vars := make([]ami.Field, 0, len(body.Variables))
	for k, v := range body.Variables {
		vars = append(vars, ami.Field{Key: k, Value: v})
	}
	slices.SortFunc(vars, func(a, b ami.Field) int { return strings.Compare(a.Key, b.Key) })
	timeout := 30 * time.Second
	if n, err := strconv.Atoi(q.Get("timeout")); err == nil && n > 0 {
		timeout = time.Duration(n) * time.Second
	}
	ext := m[1]
	e, known := s.extension(ext)
	if !known {
		s.originateFailure(w, endpoint, ext, exten, q.Get("context"), 1, 50*time.Millisecond)
		return
	}
	switch e.Outcome {
	case Answer:
		in := s.newInstance(s.orig, time.Now())
		in.ext, in.num, in.vars = ext, exten, vars
		agent := &s.orig.frames[s.orig.agent]
		var resp []byte
		for _, ob := range agent.objs {
			if ob.idx == agent.create {
				resp = in.render(nil, ob.tpl, "", "", "")
			}
		}
		if !s.startInstance(context.Background(), in) {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "shutting down"})
			return
		}
		writeRawJSON(w, http.StatusOK, resp)
	case Busy:
		s.originateFailure(w, endpoint, ext, exten, q.Get("context"), 17, 300*time.Millisecond)
	case Congestion:
		s.originateFailure(w, endpoint, ext, exten, q.Get("context"), 34, 300*time.Millisecond)
	case Reject:
		s.originateFailure(w, endpoint, ext, exten, q.Get("context"), 21, time.Second)
	case NoAnswer:
		s.originateFailure(w, endpoint, ext, exten, q.Get("context"), 19, timeout)
	default: // Fail
		s.originateFailure(w, endpoint, ext, exten, q.Get("context"), 20, 50*time.Millisecond)
	}
}

var causeTexts = map[int]string{
	1: "Unallocated (unassigned) number", 17: "User busy", 19: "No answer", 20: "Subscriber absent",
	21: "Call Rejected", 34: "Circuit/channel congestion",
}

// ariChannel is the JSON form of an ARI channel, for the synthetic originate channels.
type ariChannel struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	State       string      `json:"state"`
	ProtocolID  string      `json:"protocol_id"`
	Caller      ariParty    `json:"caller"`
	Connected   ariParty    `json:"connected"`
	AccountCode string      `json:"accountcode"`
	Dialplan    ariDialplan `json:"dialplan"`
	Created     string      `json:"creationtime"`
	Language    string      `json:"language"`
}

type ariParty struct {
	Name   string `json:"name"`
	Number string `json:"number"`
}

type ariDialplan struct {
	Context  string `json:"context"`
	Exten    string `json:"exten"`
	Priority int    `json:"priority"`
	AppName  string `json:"app_name"`
	AppData  string `json:"app_data"`
}

// originateFailure creates the agent's channel, lets it ring (unless the phone refuses at once)
// and destroys it after delay with cause: what Asterisk shows when the agent's phone does not
// answer.
func (s *ARIServer) originateFailure(w http.ResponseWriter, endpoint, ext, exten, dialContext string, cause int, delay time.Duration) {
	now := time.Now()
	seq := s.uidSeq.Add(1)
	name := fmt.Sprintf("%s-%08x", endpoint, uint32(s.chanSeq.Add(1)))
	if strings.HasPrefix(endpoint, "Local/") {
		if i := strings.IndexByte(endpoint[6:], '/'); i >= 0 { // options such as /n
			name = fmt.Sprintf("%s-%08x", endpoint[:6+i], uint32(s.chanSeq.Load()))
		}
		name += ";1"
	}
	ch := ariChannel{
		ID: fmt.Sprintf("%d.%d", now.Unix(), seq), Name: name, State: "Down",
		Caller: ariParty{Number: ext}, Connected: ariParty{Number: exten},
		Dialplan: ariDialplan{Context: dialContext, Exten: exten, Priority: 1},
		Created:  now.UTC().Format(ariTimeLayout), Language: "en",
	}
	if s.speed > 1 {
		delay = time.Duration(float64(delay) / s.speed)
	}
	created, _ := json.Marshal(ch)
	s.emitSynthetic(ch.ID, map[string]any{"type": "ChannelCreated", "channel": ch}, created, false)
	if cause != 17 && cause != 20 && cause != 1 {
		ch.State = "Ringing"
		b, _ := json.Marshal(ch)
		s.emitSynthetic(ch.ID, map[string]any{"type": "ChannelStateChange", "channel": ch}, b, false)
	}
	s.after(delay, func() {
		s.emitSynthetic(ch.ID, map[string]any{"type": "ChannelHangupRequest", "cause": cause, "channel": ch}, nil, false)
		s.emitSynthetic(ch.ID, map[string]any{"type": "ChannelDestroyed", "cause": cause,
			"cause_txt": causeTexts[cause], "channel": ch}, nil, true)
	})
	writeRawJSON(w, http.StatusOK, created)
}

// emitSynthetic sends one synthetic event and updates the synthetic channel table (state: the
// channel's JSON now; gone: the channel was destroyed).
func (s *ARIServer) emitSynthetic(id string, msg map[string]any, state []byte, gone bool) {
	msg["timestamp"] = time.Now().UTC().Format(ariTimeLayout)
	msg["asterisk_id"] = "02:fc:00:00:00:01"
	b, err := json.Marshal(msg)
	if err != nil || len(b) < 2 {
		return
	}
	prefix := b[:len(b)-1] // without the closing brace
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	switch {
	case gone:
		delete(s.synth, id)
	case state != nil:
		s.synth[id] = state
	}
	s.mu.Unlock()
	s.broadcastLocked(func(dst []byte, app string) []byte {
		dst = append(dst, prefix...)
		dst = append(dst, `,"application":"`...)
		dst = appendJSONContent(dst, app)
		return append(dst, `"}`...)
	})
}

// handleEvents upgrades GET /ari/events to the events websocket.
func (s *ARIServer) handleEvents(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if !s.authorized(w, r) {
		return
	}
	q := r.URL.Query()
	app := q.Get("app")
	if app == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Invalid application provided in param [app]."})
		return
	}
	all := false
	switch strings.ToLower(q.Get("subscribeAll")) {
	case "true", "yes", "1":
		all = true
	}
	nc, _ := r.Context().Value(connKey{}).(*stallConn)
	// Subscribe before the handshake completes, as Asterisk does: no event may slip between
	// the client's 101 Switching Protocols and the subscription.
	ss := &ariSession{srv: s, nc: nc, app: app, all: all, out: make(chan []byte, 4096), closed: make(chan struct{})}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "shutting down"})
		return
	}
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("fakepbx: websocket accept", "err", err)
		ss.close()
		s.removeSession(ss)
		return
	}
	ss.setConn(ws)
	s.connects.Add(1)
	if !s.track() {
		ss.close()
		s.removeSession(ss)
		return
	}
	go ss.writeLoop()
	ss.readLoop()
}

func (s *ARIServer) removeSession(ss *ariSession) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

// broadcastLocked renders a message once per application name and queues it to every
// subscribed client; emitMu must be held.
func (s *ARIServer) broadcastLocked(render func(dst []byte, app string) []byte) {
	s.mu.Lock()
	targets := make([]*ariSession, 0, len(s.sessions))
	for ss := range s.sessions {
		if ss.all && !ss.stalled.Load() {
			targets = append(targets, ss)
		}
	}
	s.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	var lastApp string
	var b []byte
	for _, ss := range targets {
		if b == nil || ss.app != lastApp {
			b, lastApp = render(nil, ss.app), ss.app
		}
		if ss.enqueue(b) {
			s.sent.Add(1)
		}
	}
}

// ---- websocket sessions ----

type ariSession struct {
	srv     *ARIServer
	ws      atomic.Pointer[websocket.Conn] // nil until the handshake is done
	nc      *stallConn
	app     string
	all     bool
	out     chan []byte
	closed  chan struct{}
	once    sync.Once
	stalled atomic.Bool
}

// setConn attaches the websocket once the handshake is done (closing it at once when the
// session was closed meanwhile).
func (ss *ariSession) setConn(ws *websocket.Conn) {
	ss.ws.Store(ws)
	select {
	case <-ss.closed:
		_ = ws.CloseNow()
	default:
	}
}

func (ss *ariSession) close() {
	ss.once.Do(func() {
		close(ss.closed)
		if ws := ss.ws.Load(); ws != nil {
			_ = ws.CloseNow()
		}
		if ss.nc != nil {
			ss.nc.release()
		}
	})
}

// enqueue queues a message; a client that does not drain its queue within the write timeout is
// disconnected.
func (ss *ariSession) enqueue(b []byte) bool {
	select {
	case ss.out <- b:
		return true
	case <-ss.closed:
		return false
	default:
	}
	t := time.NewTimer(ss.srv.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case ss.out <- b:
		return true
	case <-ss.closed:
		return false
	case <-t.C:
		ss.srv.log.Warn("fakepbx: ARI client too slow, disconnecting")
		ss.close()
		return false
	}
}

func (ss *ariSession) writeLoop() {
	defer ss.srv.wg.Done()
	defer ss.close()
	for {
		var b []byte
		select {
		case b = <-ss.out:
		case <-ss.closed:
			return
		}
		ctx, cancel := context.WithTimeout(ss.srv.ctx, ss.srv.cfg.WriteTimeout)
		err := ss.ws.Load().Write(ctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			return
		}
	}
}

// readLoop reads (and discards) what the client sends, so pings are answered, until the
// connection ends. It runs in the handler's goroutine.
func (ss *ariSession) readLoop() {
	defer func() {
		ss.close()
		ss.srv.removeSession(ss)
	}()
	ws := ss.ws.Load()
	for {
		if _, _, err := ws.Read(ss.srv.ctx); err != nil {
			return
		}
	}
}

// stallListener wraps accepted connections so they can be stalled, and refuses connections
// during an Outage.
type stallListener struct {
	net.Listener
	srv *ARIServer
}

func (l *stallListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if time.Now().UnixNano() < l.srv.refuse.Load() {
			_ = c.Close()
			continue
		}
		return &stallConn{Conn: c, gone: make(chan struct{})}, nil
	}
}

// stallConn is a connection that, once stalled, neither delivers what it reads nor writes
// anything until it is closed.
type stallConn struct {
	net.Conn
	stalled atomic.Bool
	gone    chan struct{}
	once    sync.Once
}

func (c *stallConn) Read(p []byte) (int, error) {
	if c.stalled.Load() {
		<-c.gone
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if c.stalled.Load() {
		<-c.gone
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *stallConn) Write(p []byte) (int, error) {
	if c.stalled.Load() {
		<-c.gone
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *stallConn) release() { c.once.Do(func() { close(c.gone) }) }

func (c *stallConn) Close() error {
	c.release()
	return c.Conn.Close()
}
