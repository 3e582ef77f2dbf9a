package fakepbx

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
)

// connKey carries the accepted (stallable) connection in a request's context.
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
	s.origs.Add(1)
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

// broadcastLocked renders a message once per application name and queues it to every
// subscribed client; emitMu must be held.
func (s *ARIServer) broadcastLocked(render func(dst []byte, app string) []byte) {
	targets := s.clients(func(ss *ariSession) bool { return ss.all && !ss.stalled.Load() })
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
