package fakepbx

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

func ariLines(tb testing.TB, name string) [][]byte {
	tb.Helper()
	data, err := transcripts.ARI(name)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, l := range bytes.Split(data, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// identity returns a replay of sc that uses the transcript's own ids, times and names.
func identity(sc *ariScenario) *ariInstance {
	in := &ariInstance{sc: sc, start: sc.t0, speed: 1, keepTime: true, freshIDs: freshIDs{
		uids: make([]string, len(sc.uidEpoch)), chans: make([]string, sc.nChans), bridges: make([]string, sc.nBridges)}}
	for orig, k := range sc.uidIndex {
		in.uids[k] = orig
	}
	for orig, k := range sc.chanIndex {
		in.chans[k] = orig
	}
	for orig, k := range sc.bridgeIndex {
		in.bridges[k] = orig
	}
	return in
}

// The templates lose nothing: rendered with the original ids, times and application name,
// every message of every transcript comes out byte for byte.
func TestARITemplatesReproduceTranscripts(t *testing.T) {
	t.Parallel()
	for _, name := range transcripts.Scenarios() {
		lines := ariLines(t, name)
		sc, err := compileARI(name, bytes.Join(lines, []byte("\n")), "", "")
		if err != nil {
			t.Fatal(err)
		}
		in := identity(sc)
		if len(sc.frames) != len(lines) {
			t.Fatalf("%s: %d frames for %d lines", name, len(sc.frames), len(lines))
		}
		for i, fr := range sc.frames {
			if got := in.render(nil, fr.tpl, "lab", "", ""); !bytes.Equal(got, lines[i]) {
				t.Fatalf("%s line %d:\n got %s\nwant %s", name, i+1, got, lines[i])
			}
		}
		if sc.nBridges == 0 && name != "inbound_busy_ext" && name != "inbound_missed" &&
			!strings.HasPrefix(name, "outbound_") {
			t.Errorf("%s: no bridge id found", name)
		}
	}
}

// FuzzARITemplate: the transcript compiler never panics, and whatever it accepts it reproduces
// exactly when rendered with the original values.
func FuzzARITemplate(f *testing.F) {
	for _, name := range []string{"inbound_answered", "attended_transfer", "click_to_call"} {
		lines := ariLines(f, name)
		f.Add(bytes.Join(lines[:min(6, len(lines))], []byte("\n")))
	}
	f.Add([]byte(`{"type":"X","timestamp":"2026-01-01T00:00:00.000+0300","s":"a\"b 1795305782.1","n":[1,"1795305782.1"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		sc, err := compileARI("fuzz", data, "", "")
		if err != nil {
			return
		}
		var lines [][]byte
		for _, l := range bytes.Split(data, []byte("\n")) {
			if l = bytes.TrimSpace(l); len(l) > 0 {
				lines = append(lines, l)
			}
		}
		in := identity(sc)
		for i, fr := range sc.frames {
			want := lines[i]
			if got := in.render(nil, fr.tpl, "lab", "", ""); !bytes.Equal(got, want) && !hasApplication(want) {
				t.Fatalf("line %d:\n got %s\nwant %s", i+1, got, want)
			}
		}
	})
}

// hasApplication: the application value is the subscriber's, not the recorded one.
func hasApplication(line []byte) bool { return bytes.Contains(line, []byte(`"application"`)) }

// ariClient is a raw websocket subscriber of the fake.
type ariClient struct {
	ws   *websocket.Conn
	msgs chan map[string]any
	raw  chan []byte
	done chan struct{}
}

func ariSubscribe(t *testing.T, s *ARIServer, query string) *ariClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://"+s.Addr()+"/ari/events?"+query, &websocket.DialOptions{ //nolint:bodyclose // closed by the library
		HTTPHeader: http.Header{"Authorization": {basic(s.Username(), s.Password())}},
	})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	ws.SetReadLimit(1 << 20)
	c := &ariClient{ws: ws, msgs: make(chan map[string]any, 100000), raw: make(chan []byte, 100000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Errorf("message is not JSON: %v: %s", err, b)
			}
			c.raw <- b
			c.msgs <- m
		}
	}()
	t.Cleanup(func() { _ = ws.CloseNow(); <-c.done })
	return c
}

func (c *ariClient) take(t *testing.T, n int, limit time.Duration) [][]byte {
	t.Helper()
	var out [][]byte
	deadline := time.After(limit)
	for len(out) < n {
		select {
		case b := <-c.raw:
			<-c.msgs
			out = append(out, b)
		case <-deadline:
			t.Fatalf("got %d messages, want %d", len(out), n)
		}
	}
	return out
}

func basic(u, p string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	r.SetBasicAuth(u, p)
	return r.Header.Get("Authorization")
}

func ariGet(t *testing.T, s *ARIServer, method, path string, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.Addr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(s.Username(), s.Password())
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func startARI(t *testing.T, cfg ARIConfig) *ARIServer {
	t.Helper()
	s, err := StartARI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		_ = s.Close() // idempotent
		http.DefaultClient.CloseIdleConnections()
		// Leaks are checked once all the (parallel) tests are done: TestMain.
	})
	return s
}

var ariUIDRe = regexp.MustCompile(`\b\d{9,}\.\d+\b`)

// Two concurrent replays of one transcript: every message arrives, valid, with the
// subscriber's application name, fresh timestamps, and ids that are neither the transcript's
// nor shared between the replays.
func TestARIReplayFreshIDs(t *testing.T) {
	t.Parallel()
	s := startARI(t, ARIConfig{Speed: math.Inf(1)})
	c := ariSubscribe(t, s, "app=crm&subscribeAll=true")
	lines := ariLines(t, "attended_transfer")
	orig := map[string]bool{}
	for _, l := range lines {
		for _, id := range ariUIDRe.FindAllString(string(l), -1) {
			orig[id] = true
		}
	}
	a, err := s.Play(context.Background(), "attended_transfer")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Play(context.Background(), "attended_transfer")
	if err != nil {
		t.Fatal(err)
	}
	msgs := c.take(t, 2*len(lines), 20*time.Second)
	ids := map[string]int{} // fresh id → replay
	for k, played := range []*ARICall{a, b} {
		for o, fresh := range played.IDs() {
			if fresh == o || fresh == "" {
				t.Errorf("id %s not refreshed", o)
			}
			if prev, ok := ids[fresh]; ok && prev != k {
				t.Errorf("replays share id %s", fresh)
			}
			ids[fresh] = k
		}
	}
	now := time.Now()
	for _, m := range msgs {
		for _, id := range ariUIDRe.FindAllString(string(m), -1) {
			if orig[id] {
				t.Fatalf("original id %s in %s", id, m)
			}
		}
		for o := range a.IDs() {
			if len(o) == 36 && bytes.Contains(m, []byte(o)) { // bridge ids
				t.Fatalf("original bridge id %s in %s", o, m)
			}
		}
		var h struct {
			App string `json:"application"`
			TS  string `json:"timestamp"`
		}
		_ = json.Unmarshal(m, &h)
		ts, err := time.Parse(ariTimeLayout, h.TS)
		if h.App != "crm" || err != nil || ts.Sub(now).Abs() > time.Minute {
			t.Fatalf("application %q timestamp %q in %s", h.App, h.TS, m)
		}
	}
	if st := s.Stats(); st.CallsStarted != 2 || st.EventsSent != uint64(2*len(lines)) || st.Connects != 1 {
		t.Errorf("stats %+v", st)
	}
}

// GET /channels and /bridges show the calls in progress as of the events sent so far.
func TestARIChannelsAndBridgesReflectCalls(t *testing.T) {
	t.Parallel()
	s := startARI(t, ARIConfig{Speed: 4})
	c := ariSubscribe(t, s, "app=t&subscribeAll=true")
	played, err := s.Play(context.Background(), "blind_transfer")
	if err != nil {
		t.Fatal(err)
	}
	alive := map[string]bool{}
	bridged := map[string]bool{}
	for len(bridged) < 2 { // 101 answered: a bridge with two channels
		var m struct {
			Type    string `json:"type"`
			Channel struct {
				ID string `json:"id"`
			} `json:"channel"`
			Bridge struct {
				Channels []string `json:"channels"`
			} `json:"bridge"`
		}
		select {
		case b := <-c.raw:
			<-c.msgs
			_ = json.Unmarshal(b, &m)
		case <-time.After(10 * time.Second):
			t.Fatal("no bridge")
		}
		switch m.Type {
		case "ChannelCreated":
			alive[m.Channel.ID] = true
		case "ChannelDestroyed":
			delete(alive, m.Channel.ID)
		case "ChannelEnteredBridge":
			bridged = map[string]bool{}
			for _, id := range m.Bridge.Channels {
				bridged[id] = true
			}
		}
	}
	resume := s.Freeze()
	defer resume()
	time.Sleep(50 * time.Millisecond)
	for len(c.raw) > 0 { // what was sent before the freeze
		var m struct {
			Type    string `json:"type"`
			Channel struct {
				ID string `json:"id"`
			} `json:"channel"`
		}
		_ = json.Unmarshal(<-c.raw, &m)
		<-c.msgs
		switch m.Type {
		case "ChannelCreated":
			alive[m.Channel.ID] = true
		case "ChannelDestroyed":
			delete(alive, m.Channel.ID)
		}
	}
	code, body := ariGet(t, s, http.MethodGet, "/ari/channels", "")
	var chans []struct {
		ID, Name, State string
	}
	if err := json.Unmarshal(body, &chans); code != 200 || err != nil {
		t.Fatalf("GET /ari/channels: %d %v %s", code, err, body)
	}
	got := map[string]bool{}
	for _, ch := range chans {
		got[ch.ID] = true
		if ch.Name == "" || ch.State == "" {
			t.Errorf("channel %+v", ch)
		}
	}
	if len(got) != len(alive) {
		t.Errorf("GET /ari/channels lists %v, the events say %v", got, alive)
	}
	for id := range alive {
		if !got[id] {
			t.Errorf("channel %s missing", id)
		}
	}
	code, body = ariGet(t, s, http.MethodGet, "/ari/bridges", "")
	var bridges []struct {
		ID       string
		Channels []string
	}
	if err := json.Unmarshal(body, &bridges); code != 200 || err != nil || len(bridges) != 1 {
		t.Fatalf("GET /ari/bridges: %d %v %s", code, err, body)
	}
	if slices.Sort(bridges[0].Channels); len(bridges[0].Channels) != 2 || !bridged[bridges[0].Channels[0]] || !bridged[bridges[0].Channels[1]] {
		t.Errorf("bridge %+v, want %v", bridges[0], bridged)
	}
	one := chans[0].ID
	if code, body = ariGet(t, s, http.MethodGet, "/ari/channels/"+one, ""); code != 200 || !bytes.Contains(body, []byte(one)) {
		t.Errorf("GET /ari/channels/%s: %d %s", one, code, body)
	}
	resume()
	<-played.Done()
	if _, body = ariGet(t, s, http.MethodGet, "/ari/channels", ""); string(body) != "[]" {
		t.Errorf("channels after the call: %s", body)
	}
	if _, body = ariGet(t, s, http.MethodGet, "/ari/bridges", ""); string(body) != "[]" {
		t.Errorf("bridges after the call: %s", body)
	}
	if code, _ = ariGet(t, s, http.MethodGet, "/ari/channels/"+one, ""); code != 404 {
		t.Errorf("ended channel: %d", code)
	}
}

func TestARIRESTResources(t *testing.T) {
	t.Parallel()
	s := startARI(t, ARIConfig{Version: "20.1.0", Extensions: map[string]Ext{
		"101": {State: ami.ExtIdle}, "102": {State: ami.ExtUnavailable}, "103": {State: ami.ExtInUse},
		"104": {State: ami.ExtBusy}, "105": {State: ami.ExtRinging | ami.ExtInUse}, "106": {State: ami.ExtNoHint},
	}})
	for _, path := range []string{"/ari/channels", "/ari/bridges", "/ari/asterisk/info", "/ari/endpoints/PJSIP/101", "/ari/events"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+path, nil)
		req.SetBasicAuth("pbxbridge", "wrong")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s with a wrong password: %d", path, resp.StatusCode)
		}
	}
	if _, body := ariGet(t, s, http.MethodGet, "/ari/asterisk/info", ""); !bytes.Contains(body, []byte(`"version":"20.1.0"`)) {
		t.Errorf("info %s", body)
	}
	for path, want := range map[string]string{
		"/ari/endpoints/PJSIP/101":          `"state":"online"`,
		"/ari/endpoints/PJSIP/102":          `"state":"offline"`,
		"/ari/deviceStates/PJSIP%2F101":     `"state":"NOT_INUSE"`,
		"/ari/deviceStates/PJSIP%2F102":     `"state":"UNAVAILABLE"`,
		"/ari/deviceStates/PJSIP%2F103":     `"state":"INUSE"`,
		"/ari/deviceStates/PJSIP%2F104":     `"state":"BUSY"`,
		"/ari/deviceStates/PJSIP%2F105":     `"state":"RINGINUSE"`,
		"/ari/deviceStates/PJSIP%2F106":     `"state":"INVALID"`,
		"/ari/deviceStates/PJSIP%2F999":     `"state":"INVALID"`,
		"/ari/deviceStates/Local%2F101@x/n": `"state":"NOT_INUSE"`,
	} {
		if code, body := ariGet(t, s, http.MethodGet, path, ""); code != 200 || !bytes.Contains(body, []byte(want)) {
			t.Errorf("%s: %d %s, want %s", path, code, body, want)
		}
	}
	for _, path := range []string{"/ari/endpoints/PJSIP/999", "/ari/endpoints/PJSIP/106", "/ari/endpoints/Local/101", "/ari/nothing", "/ari/channels/1.2"} {
		if code, body := ariGet(t, s, http.MethodGet, path, ""); code != 404 || !bytes.Contains(body, []byte(`"message"`)) {
			t.Errorf("%s: %d %s, want 404 with a message", path, code, body)
		}
	}
	// The websocket needs an application name; without subscribeAll it gets no call events.
	if code, _ := ariGet(t, s, http.MethodGet, "/ari/events", ""); code != 400 {
		t.Errorf("events without app: %d", code)
	}
}

// POST /ari/channels: an answering extension plays click_to_call with the requested extension,
// number and variables; other outcomes show the agent channel ending with the matching cause.
func TestARIOriginate(t *testing.T) {
	t.Parallel()
	s := startARI(t, ARIConfig{Speed: math.Inf(1), Extensions: map[string]Ext{
		"201": {Outcome: Answer}, "202": {Outcome: Busy},
	}})
	c := ariSubscribe(t, s, "app=t&subscribeAll=true")
	code, body := ariGet(t, s, http.MethodPost,
		"/ari/channels?endpoint=PJSIP/201&extension=89005556677&context=from-internal&timeout=20",
		`{"variables":{"__PBXBRIDGE_ORIGINATE_ID":"abc \"q\"","__X":"1"}}`)
	var ch struct{ ID, Name string }
	if err := json.Unmarshal(body, &ch); code != 200 || err != nil || ch.ID == "" || !strings.Contains(ch.Name, "201") {
		t.Fatalf("originate: %d %v %s", code, err, body)
	}
	want := len(ariLines(t, "click_to_call"))
	// Every recorded __CRM_ORIGINATE_ID set becomes two sets: one per requested variable.
	sets := 0
	for _, l := range ariLines(t, "click_to_call") {
		if bytes.Contains(l, []byte(`"variable":"__CRM_ORIGINATE_ID"`)) {
			sets++
		}
	}
	msgs := c.take(t, want+sets, 10*time.Second)
	all := string(bytes.Join(msgs, []byte("\n")))
	for _, w := range []string{`"variable":"__PBXBRIDGE_ORIGINATE_ID","value":"abc \"q\""`, `"variable":"__X","value":"1"`,
		"Local/89005556677@pstn-", `"id":"` + ch.ID + `"`, "Local/201@phones"} {
		if !strings.Contains(all, w) {
			t.Errorf("replay lacks %s", w)
		}
	}
	for _, w := range []string{"89001234567", "crm-c2c-0001", "__CRM_ORIGINATE_ID", "Local/101@"} {
		if strings.Contains(all, w) {
			t.Errorf("replay still has the recorded %s", w)
		}
	}

	code, body = ariGet(t, s, http.MethodPost, "/ari/channels?endpoint=PJSIP/202&extension=1", "")
	if err := json.Unmarshal(body, &ch); code != 200 || err != nil {
		t.Fatalf("busy originate: %d %s", code, body)
	}
	msgs = c.take(t, 3, 10*time.Second)
	if !bytes.Contains(msgs[0], []byte(`"type":"ChannelCreated"`)) || !bytes.Contains(msgs[2], []byte(`"type":"ChannelDestroyed"`)) ||
		!bytes.Contains(msgs[2], []byte(`"cause":17`)) || !bytes.Contains(msgs[2], []byte(ch.ID)) {
		t.Errorf("busy agent: %s", bytes.Join(msgs, []byte("\n")))
	}
	for q, body := range map[string]string{
		"extension=1":                        "",
		"endpoint=PJSIP/201":                 "",
		"endpoint=%40&extension=1":           "",
		"endpoint=PJSIP/201&extension=1&x=y": "{not json",
	} {
		if code, _ := ariGet(t, s, http.MethodPost, "/ari/channels?"+q, body); code != 400 {
			t.Errorf("POST /ari/channels?%s %q: %d, want 400", q, body, code)
		}
	}
}

func TestARILoadAndKnobs(t *testing.T) {
	t.Parallel()
	s := startARI(t, ARIConfig{Speed: math.Inf(1), Seed: 7})
	c := ariSubscribe(t, s, "app=t&subscribeAll=true")
	quiet := ariSubscribe(t, s, "app=q") // no subscribeAll: no call events
	var started []string
	n, err := s.Load(context.Background(), ARILoadOptions{Rate: 200, Calls: 10, OnStart: func(c *ARICall) { started = append(started, c.Scenario) }})
	if err != nil || n != 10 || len(started) != 10 {
		t.Fatalf("load: %d %v %v", n, err, started)
	}
	if slices.Contains(started, "concurrent") {
		t.Error("the default mix has the concurrent burst")
	}
	want := 0
	for _, sc := range started {
		want += len(ariLines(t, sc))
	}
	c.take(t, want, 20*time.Second)
	if len(quiet.raw) != 0 {
		t.Errorf("a subscriber without subscribeAll got %d messages", len(quiet.raw))
	}
	if st := s.Stats(); st.CallsStarted != 10 || st.CallsFinished != 10 {
		t.Errorf("stats %+v", st)
	}
	// The same seed draws the same mix.
	var again []string
	if _, err := s.Load(context.Background(), ARILoadOptions{Calls: 10, Seed: 7, OnStart: func(c *ARICall) { again = append(again, c.Scenario) }}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(started, again) {
		t.Errorf("seeded mix differs: %v / %v", started, again)
	}
	if _, err := s.Load(context.Background(), ARILoadOptions{Calls: 1, Scenarios: []string{"nope"}}); err == nil {
		t.Error("unknown scenario accepted")
	}
	if _, err := s.Play(context.Background(), "nope"); err == nil {
		t.Error("unknown scenario played")
	}
	if n := s.DropClients(); n != 2 {
		t.Errorf("dropped %d clients, want 2", n)
	}
	<-c.done
	s.Outage(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, _, err := websocket.Dial(ctx, "ws://"+s.Addr()+"/ari/events?app=t", nil); err == nil { //nolint:bodyclose // no body on error
		t.Error("connection accepted during an outage")
	}
}

// CHANNEL(linkedid) comes from the AMI capture of the same calls.
func TestARIChannelLinkedid(t *testing.T) {
	t.Parallel()
	s := startARI(t, ARIConfig{Speed: 1})
	played, err := s.Play(context.Background(), "inbound_ringgroup")
	if err != nil {
		t.Fatal(err)
	}
	var chans []struct{ ID string }
	deadline := time.Now().Add(5 * time.Second)
	for len(chans) < 4 && time.Now().Before(deadline) { // the call's first channels exist
		time.Sleep(20 * time.Millisecond)
		_, body := ariGet(t, s, http.MethodGet, "/ari/channels", "")
		_ = json.Unmarshal(body, &chans)
	}
	want := played.MapID("1795305823.39") // the Linkedid of the call (its AMI capture)
	if want == "" {
		t.Fatal("transcript id not found")
	}
	for _, ch := range chans {
		code, body := ariGet(t, s, http.MethodGet, "/ari/channels/"+ch.ID+"/variable?variable=CHANNEL(linkedid)", "")
		if code != 200 || string(body) != `{"value":"`+want+`"}` {
			t.Errorf("linkedid of %s: %d %s, want %s", ch.ID, code, body, want)
		}
	}
	if code, _ := ariGet(t, s, http.MethodGet, "/ari/channels/"+chans[0].ID+"/variable?variable=NOPE", ""); code != 404 {
		t.Errorf("unknown variable: %d", code)
	}
	if code, _ := ariGet(t, s, http.MethodGet, "/ari/channels/1.2/variable?variable=CHANNEL(linkedid)", ""); code != 404 {
		t.Errorf("unknown channel: %d", code)
	}
}
