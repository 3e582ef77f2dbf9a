package ari_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// recordingClock runs backoff sleeps at once and records them; its Now is the wall clock plus
// what advance added.
type recordingClock struct {
	mu     sync.Mutex
	delays []time.Duration
	skew   time.Duration
}

func (c *recordingClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.skew)
}

// advance moves Now forward by d.
func (c *recordingClock) advance(d time.Duration) {
	c.mu.Lock()
	c.skew += d
	c.mu.Unlock()
}

func (c *recordingClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.delays = append(c.delays, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}

func (c *recordingClock) sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.delays...)
}

func TestConnectReadyStatusAndMetrics(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Version: "22.4.1"})
	r := runSource(t, fastOptions(srv), 16)
	ev := r.next(t, 5*time.Second)
	if ev.Type != asterisk.TypeConnected || ev.Resync || ev.PBX != "lab" || ev.Time.IsZero() {
		t.Fatalf("first event %+v, want Connected without resync", ev)
	}
	select {
	case <-r.src.Ready():
	default:
		t.Fatal("Ready not closed after the first connection")
	}
	waitFor(t, 5*time.Second, "the PBX version", func() bool { return r.src.Status().PBXVersion == "22.4.1" })
	st := r.src.Status()
	if !st.Connected || st.Kind != "ari" || st.Name != "lab" || !st.FirstLogin || st.Reconnects != 0 ||
		st.Address != srv.URL()+"/ari" || !strings.Contains(st.Description, "connected") {
		t.Errorf("status %+v", st)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_connected", map[string]string{"pbx": "lab"}); v != 1 {
		t.Errorf("pbxbridge_ari_connected = %v", v)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_request_duration_seconds", map[string]string{"request": "GET /events", "code": "101"}); v != 1 {
		t.Errorf("handshake not measured: %v", v)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_request_duration_seconds", map[string]string{"request": "GET /asterisk/info", "code": "200"}); v != 1 {
		t.Errorf("info request not measured: %v", v)
	}
	// Events are counted by type, unknown ones (DeviceStateChanged) too but not forwarded.
	played, err := srv.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	want := int64(messages(t, "inbound_answered"))
	forwarded := 0
	r.drain(t, want, 20*time.Second, func(ev asterisk.Event) {
		if ev.Type == asterisk.TypeUnknown {
			t.Errorf("unknown event %s forwarded", ev.Name)
		}
		forwarded++
	})
	<-played.Done()
	unknown := metricValue(t, r.reg, "pbxbridge_ari_events_total", map[string]string{"type": "unknown"})
	if unknown == 0 || int64(forwarded)+int64(unknown) != want {
		t.Errorf("forwarded %d + unknown %v, want %d messages", forwarded, unknown, want)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_events_total", map[string]string{"type": "hangup"}); v != 4 {
		t.Errorf("hangup events %v, want 4", v)
	}
}

// A wrong password: 401 gives a clear error, is retried with backoff straight at the cap (not
// to trip fail2ban), and the source never becomes ready.
func TestAuthFailureRetriedWithBackoff(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{})
	clock := &recordingClock{}
	opts := fastOptions(srv)
	opts.Password = "wrong"
	opts.Clock = clock
	opts.Backoff = ari.Backoff{Initial: 100 * time.Millisecond, Max: 8 * time.Second, Rand: func() float64 { return 0 }}
	r := runSource(t, opts, 1)
	// The fake counts a refusal when it sends the 401, the source when it has read it: wait for
	// the source's count.
	authErrors := func() float64 {
		return metricValue(t, r.reg, "pbxbridge_ari_connect_errors_total", map[string]string{"stage": "auth"})
	}
	waitFor(t, 10*time.Second, "three attempts", func() bool { return srv.Stats().AuthFailures >= 3 && authErrors() >= 3 })
	st := r.src.Status()
	if st.Connected || st.FirstLogin || !strings.Contains(st.LastError, "authentication refused (HTTP 401)") ||
		!strings.Contains(st.Description, "login refused") {
		t.Errorf("status %+v", st)
	}
	for _, d := range clock.sleeps() {
		if d != 4*time.Second { // Max/2 with no jitter: the cap at once
			t.Errorf("backoff after 401 = %v, want the cap", d)
		}
	}
	select {
	case <-r.src.Ready():
		t.Error("ready with a refused login")
	case ev := <-r.out:
		t.Errorf("event %v with a refused login", ev.Type)
	default:
	}

	// The REST client says the same, in words and with errors.Is.
	c, err := ari.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_, err = c.Channels(context.Background())
	var he *ari.HTTPError
	if !errors.Is(err, ari.ErrAuthFailed) || !errors.As(err, &he) || he.StatusCode != 401 ||
		err.Error() != "ari: GET /channels: HTTP 401: Authentication required" {
		t.Errorf("REST with a wrong password: %v", err)
	}
}

// Reconnect delays grow, capped and jittered, and reset after a stable connection.
func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := ari.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0.5 }}
	for n, want := range []time.Duration{75, 150, 300, 600, 750, 750} {
		if got := b.Delay(n); got != want*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want*time.Millisecond)
		}
	}
	b.Rand = func() float64 { return 7 } // out of range: no jitter rather than a longer wait
	if got := b.Delay(0); got != 50*time.Millisecond {
		t.Errorf("bad jitter: %v", got)
	}
	if got := (ari.Backoff{}).Delay(100); got < 15*time.Second || got > 30*time.Second {
		t.Errorf("default cap: %v", got)
	}
}

// The websocket of a stalled Asterisk (half-open: nothing read, written or ponged) is declared
// dead within PingInterval+PingTimeout, and the source reconnects.
func TestDeadPeerDetected(t *testing.T) {
	// Not parallel: it measures real-time keepalive bounds, which a loaded CPU stretches.
	srv := startFake(t, fakepbx.ARIConfig{})
	opts := fastOptions(srv)
	opts.PingInterval, opts.PingTimeout = 100*time.Millisecond, 300*time.Millisecond
	r := runSource(t, opts, 16)
	r.next(t, 5*time.Second)
	if srv.StallClients() != 1 {
		t.Fatal("no client to stall")
	}
	ev := r.next(t, 10*time.Second)
	if ev.Type != asterisk.TypeDisconnected || !strings.Contains(ev.Vars["error"], "keepalive") {
		t.Fatalf("after the stall: %v %v, want a dead-peer disconnect", ev.Type, ev.Vars)
	}
	if ev = r.next(t, 10*time.Second); ev.Type != asterisk.TypeConnected || !ev.Resync {
		t.Fatalf("after the dead peer: %v, want Connected with resync", ev.Type)
	}
}

// A consumer that does not read blocks the source (backpressure) without losing an event,
// and the blocked time does not count as a dead peer.
func TestBackpressureLosesNothing(t *testing.T) {
	// Not parallel: it measures real-time keepalive bounds, which a loaded CPU stretches.
	srv := startFake(t, fakepbx.ARIConfig{Speed: inf})
	opts := fastOptions(srv)
	opts.PingInterval, opts.PingTimeout = 100*time.Millisecond, time.Second
	r := runSource(t, opts, 1)
	r.next(t, 5*time.Second)
	played, err := srv.Play(context.Background(), "concurrent")
	if err != nil {
		t.Fatal(err)
	}
	<-played.Done()
	time.Sleep(2500 * time.Millisecond) // the consumer is away for more than 2 keepalive bounds
	want := int64(messages(t, "concurrent"))
	forwarded := 0
	r.drain(t, want, 20*time.Second, func(ev asterisk.Event) {
		if ev.Type == asterisk.TypeDisconnected {
			t.Fatalf("disconnected while the consumer was slow: %v", ev.Vars)
		}
		forwarded++
	})
	unknown := metricValue(t, r.reg, "pbxbridge_ari_events_total", map[string]string{"type": "unknown"})
	if int64(forwarded)+int64(unknown) != want {
		t.Errorf("forwarded %d + unknown %v, want %d", forwarded, unknown, want)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_out_blocked_seconds_total", nil); v < 2 {
		t.Errorf("out_blocked_seconds_total = %v, want the time the consumer was away", v)
	}
}

// Messages that are not events are counted and logged, never passed on, and do not end the
// connection; a message over MaxMessageSize ends it (and is counted).
func TestInvalidMessagesCounted(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", ari.MaxMessageSize+10)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ari/events" {
			http.NotFound(w, r)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer func() { _ = ws.CloseNow() }()
		ctx := r.Context()
		_ = ws.Write(ctx, websocket.MessageText, []byte(`{not json`))
		_ = ws.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3})
		_ = ws.Write(ctx, websocket.MessageText, []byte(`{"no":"type"}`))
		_ = ws.Write(ctx, websocket.MessageText, []byte(`{"type":"ChannelCreated","channel":{"id":"1.1","name":"PJSIP/101-00000001","state":"Ring"}}`))
		_ = ws.Write(ctx, websocket.MessageText, []byte(big))
		_, _, _ = ws.Read(ctx)
	}))
	defer hs.Close()
	opts := ari.Options{Name: "bad", URL: hs.URL, Username: "u", Password: "p",
		Backoff: ari.Backoff{Initial: time.Hour}}
	r := runSource(t, opts, 16)
	if ev := r.next(t, 5*time.Second); ev.Type != asterisk.TypeConnected {
		t.Fatalf("first %v", ev.Type)
	}
	if ev := r.next(t, 5*time.Second); ev.Type != asterisk.TypeNewChannel || ev.Chan.Name != "PJSIP/101-00000001" {
		t.Fatalf("second %+v, want the valid event", ev)
	}
	if ev := r.next(t, 5*time.Second); ev.Type != asterisk.TypeDisconnected || !strings.Contains(ev.Vars["error"], "too big") {
		t.Fatalf("third %v %v, want a disconnect for the oversized message", ev.Type, ev.Vars)
	}
	for reason, want := range map[string]float64{ari.DropInvalid: 2, ari.DropBinary: 1, ari.DropTooBig: 1} {
		if v := metricValue(t, r.reg, "pbxbridge_ari_messages_dropped_total", map[string]string{"reason": reason}); v != want {
			t.Errorf("dropped{reason=%s} = %v, want %v", reason, v, want)
		}
	}
}

// Every REST call is bounded by RequestTimeout.
func TestRESTTimeoutHonoured(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{})
	srv.SetRESTDelay(5 * time.Second)
	opts := fastOptions(srv)
	opts.RequestTimeout = 100 * time.Millisecond
	c, err := ari.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	calls := map[string]func() error{
		"channels": func() error { _, err := c.Channels(context.Background()); return err },
		"bridges":  func() error { _, err := c.Bridges(context.Background()); return err },
		"info":     func() error { _, err := c.Info(context.Background()); return err },
		"endpoint": func() error { _, err := c.Endpoint(context.Background(), "PJSIP", "101"); return err },
		"device":   func() error { _, err := c.DeviceState(context.Background(), "PJSIP/101"); return err },
		"channel":  func() error { _, err := c.Channel(context.Background(), "1.1"); return err },
		"originate": func() error {
			_, err := c.Originate(context.Background(), ari.OriginateParams{Endpoint: "PJSIP/101", Extension: "1"})
			return err
		},
	}
	for name, played := range calls {
		err := played()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 100ms") {
			t.Errorf("%s with a slow PBX: %v", name, err)
		}
	}
	// The caller's own deadline is honoured too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Channels(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// A PBX that accepts TCP but never answers the handshake: the connect attempt ends at
// ConnectTimeout and is retried; cancelling the context stops Run at once.
func TestConnectTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	opts := ari.Options{Name: "mute", URL: "http://" + ln.Addr().String(), Username: "u",
		ConnectTimeout: 150 * time.Millisecond, Backoff: ari.Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond},
		Registerer: prometheus.NewRegistry()}
	src, err := ari.NewSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, make(chan asterisk.Event, 1)) }()
	waitFor(t, 10*time.Second, "two timed-out attempts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(conns) >= 2
	})
	if st := src.Status(); !strings.Contains(st.LastError, "no connection within 150ms") {
		t.Errorf("status %+v", st)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
	if err := src.Run(context.Background(), nil); err == nil {
		t.Error("second Run accepted")
	}
}

// Cancelling the context while connected ends Run with ctx.Err(), sends nothing more, and
// leaves no goroutine (TestMain's goleak).
func TestCancelWhileConnected(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 2})
	r := runSource(t, fastOptions(srv), 4)
	r.next(t, 5*time.Second)
	if _, err := srv.Play(context.Background(), "attended_transfer"); err != nil {
		t.Fatal(err)
	}
	r.next(t, 5*time.Second) // events flowing; the channel soon full
	r.cancel()
	select {
	case err := <-r.done:
		close(r.done)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	if st := r.src.Status(); st.Connected {
		t.Errorf("still connected after Run returned: %+v", st)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_connected", nil); v != 0 {
		t.Errorf("connected gauge %v after Run returned", v)
	}
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	good := ari.Options{URL: "http://127.0.0.1:8088", Username: "u"}
	cases := map[string]func(*ari.Options){
		"no url":             func(o *ari.Options) { o.URL = "" },
		"ftp scheme":         func(o *ari.Options) { o.URL = "ftp://pbx:8088" },
		"no host":            func(o *ari.Options) { o.URL = "http:///ari" },
		"credentials in url": func(o *ari.Options) { o.URL = "http://u:p@pbx:8088" },
		"query":              func(o *ari.Options) { o.URL = "http://pbx:8088/?api_key=x" },
		"no username":        func(o *ari.Options) { o.Username = "" },
		"colon in username":  func(o *ari.Options) { o.Username = "a:b" },
		"newline password":   func(o *ari.Options) { o.Password = "a\nb" },
		"template":           func(o *ari.Options) { o.Originate.Channel = "PJSIP/101" },
		"no technology":      func(o *ari.Options) { o.Originate.Channel = "{ext}" },
		"precheck":           func(o *ari.Options) { o.Originate.Precheck = "hint" },
		"bad variable":       func(o *ari.Options) { o.Originate.Variables = map[string]string{"A=B": "1"} },
	}
	for name, mutate := range cases {
		o := good
		mutate(&o)
		if _, err := ari.NewSource(o); err == nil || !strings.HasPrefix(err.Error(), "ari: ") {
			t.Errorf("%s: NewSource error %v, want an ari: error", name, err)
		}
	}
	for _, u := range []string{"http://pbx:8088", "http://pbx:8088/", "http://pbx:8088/ari", "https://pbx/asterisk/ari/", "ws://pbx:8088"} {
		o := good
		o.URL = u
		c, err := ari.NewClient(o)
		if err != nil {
			t.Errorf("%s: %v", u, err)
			continue
		}
		if !strings.HasSuffix(c.BaseURL(), "/ari") || strings.HasSuffix(c.BaseURL(), "/ari/ari") {
			t.Errorf("%s: base %s", u, c.BaseURL())
		}
		_ = c.Close()
		_ = c.Close() // idempotent
		if _, err := c.Info(context.Background()); !errors.Is(err, ari.ErrClosed) {
			t.Errorf("request after Close: %v", err)
		}
	}
	// Two sources with one name on one registry: the second is refused in plain words.
	reg := prometheus.NewRegistry()
	o := good
	o.Name, o.Registerer = "dup", reg
	if _, err := ari.NewSource(o); err != nil {
		t.Fatal(err)
	}
	if _, err := ari.NewSource(o); err == nil || !strings.Contains(err.Error(), "duplicate pbx name") {
		t.Errorf("duplicate metrics: %v", err)
	}
	// The password never shows in logs.
	o.Password = "s3cret"
	if v := o.LogValue().String(); strings.Contains(v, "s3cret") {
		t.Errorf("LogValue shows the password: %s", v)
	}
}

// Stream.Close is idempotent and safe while Next waits.
func TestStreamCloseIdempotent(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{})
	c, err := ari.NewClient(fastOptions(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	st, err := c.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := st.Next(context.Background())
		errc <- err
	}()
	// Close while Next waits or before it starts: either way Next returns ErrClosed.
	_ = st.Close()
	_ = st.Close()
	if err := <-errc; !errors.Is(err, ari.ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	if _, err := st.Next(context.Background()); !errors.Is(err, ari.ErrClosed) {
		t.Errorf("Next on a closed stream: %v", err)
	}
}

// The reconnect delay starts over after a connection that stayed up for StableAfter, and
// grows after one that did not.
func TestBackoffResetsAfterStableConnection(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{})
	clock := &recordingClock{}
	opts := fastOptions(srv)
	opts.Clock = clock
	opts.Backoff = ari.Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, StableAfter: 2 * time.Second,
		Rand: func() float64 { return 0 }}
	r := runSource(t, opts, 64) // room for every transport event of the test
	waitFor(t, 5*time.Second, "connected", func() bool { return r.src.Status().Connected })
	clock.advance(2500 * time.Millisecond) // stable
	srv.DropClients()
	waitFor(t, 10*time.Second, "second connection", func() bool { return srv.Stats().Connects == 2 && r.src.Status().Connected })
	srv.DropClients() // at once: not stable
	waitFor(t, 10*time.Second, "third connection", func() bool { return srv.Stats().Connects == 3 && r.src.Status().Connected })
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond} // Delay(0), Delay(1) without jitter
	if got := clock.sleeps(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("reconnect delays %v, want %v", got, want)
	}
}
