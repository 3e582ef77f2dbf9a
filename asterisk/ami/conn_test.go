package ami

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envBenchServer); mode != "" { // a benchmark's stream server
		os.Exit(benchServerMain(mode))
	}
	goleak.VerifyTestMain(m)
}

// peer is the server side of one scripted AMI connection.
type peer struct {
	t  *testing.T
	nc net.Conn
	r  *Reader
	mu sync.Mutex
}

// send writes raw frames (already in wire format).
func (p *peer) send(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.nc, s); err != nil {
		p.t.Logf("peer write: %v", err)
	}
}

// next reads the next action.
func (p *peer) next() (*Frame, error) { return p.r.ReadFrame() }

// login answers the client's Login with success.
func (p *peer) login() bool {
	f, err := p.next()
	if err != nil {
		p.t.Errorf("peer: reading login: %v", err)
		return false
	}
	if f.Get("Action") != "Login" {
		p.t.Errorf("peer: first action %q, want Login", f.Get("Action"))
		return false
	}
	p.send("Response: Success\r\nActionID: " + f.ActionID() + "\r\nMessage: Authentication accepted\r\n\r\n")
	return true
}

// scripted starts a TCP server that runs script for every connection (banner already sent) and
// returns its address. Everything is torn down at the end of the test.
func scripted(t *testing.T, script func(p *peer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				p := &peer{t: t, nc: nc, r: NewReader(nc)}
				p.send(banner)
				script(p)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func testOptions(addr string) Options {
	return Options{Name: "t", Address: addr, Username: "u", Secret: "s", PingInterval: -1}
}

// drain reads Events() until it is closed and returns the event names.
func drain(t *testing.T, c *Conn, timeout time.Duration) []string {
	t.Helper()
	var names []string
	deadline := time.After(timeout)
	for {
		select {
		case in, ok := <-c.Events():
			if !ok {
				return names
			}
			names = append(names, in.Frame.Event())
		case <-deadline:
			t.Fatalf("events not closed after %v (got %v)", timeout, names)
		}
	}
}

// TestEventsBeforeEOFAreDelivered is goami defect A: events the PBX sent right before closing
// must all be delivered, every time.
func TestEventsBeforeEOFAreDelivered(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		var b strings.Builder
		for i := range 5 {
			fmt.Fprintf(&b, "Event: E%d\r\nUniqueid: 1.%d\r\n\r\n", i, i)
		}
		p.send(b.String())
		// close at once: the deferred Close in scripted
	})
	for run := range 50 {
		c, err := Dial(context.Background(), testOptions(addr))
		if err != nil {
			t.Fatalf("run %d: dial: %v", run, err)
		}
		names := drain(t, c, 5*time.Second)
		if got := strings.Join(names, ","); got != "E0,E1,E2,E3,E4" {
			t.Fatalf("run %d: events %q, want all five", run, got)
		}
		if err := c.Err(); !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("run %d: Err = %v, want ErrConnectionLost", run, err)
		}
		_ = c.Close()
	}
}

// TestLoginWhenServerClosesRightAfterReply: the login response must not be lost to the EOF
// that follows it.
func TestLoginWhenServerClosesRightAfterReply(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) { p.login() })
	for run := range 20 {
		c, err := Dial(context.Background(), testOptions(addr))
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		_ = c.Close()
	}
}

func TestLoginRejected(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) {
		f, err := p.next()
		if err != nil {
			return
		}
		p.send("Response: Error\r\nActionID: " + f.ActionID() + "\r\nMessage: Authentication failed\r\n\r\n")
	})
	_, err := Dial(context.Background(), testOptions(addr))
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("got %v, want ErrAuthFailed", err)
	}
	if strings.Contains(err.Error(), "s\"") || strings.Contains(err.Error(), "Secret") {
		t.Errorf("error mentions the secret: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	// Nothing listens: connection refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	_ = ln.Close()
	if _, err := Dial(context.Background(), testOptions(addr)); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	// Not an AMI port.
	addr = func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := l.Accept()
			if err == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
				_ = c.Close()
			}
		}()
		t.Cleanup(func() { _ = l.Close(); <-done })
		return l.Addr().String()
	}()
	if _, err := Dial(context.Background(), testOptions(addr)); err == nil || !strings.Contains(err.Error(), "unexpected banner") {
		t.Fatalf("got %v, want unexpected banner", err)
	}
	// A server that never answers the login: bounded by ConnectTimeout.
	addr = scripted(t, func(p *peer) { _, _ = p.next(); _, _ = p.next() })
	o := testOptions(addr)
	o.ConnectTimeout = 200 * time.Millisecond
	start := time.Now()
	if _, err := Dial(context.Background(), o); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial took %v", d)
	}
	// Bad options.
	for _, o := range []Options{
		{Address: "nohostport", Username: "u"},
		{Address: "127.0.0.1:0", Username: "u"},
		{Address: "127.0.0.1:5038"},
		{Address: "127.0.0.1:5038", Username: "u", Auth: "kerberos"},
		{Address: "127.0.0.1:5038", Username: "u\r\nAction: Logoff"},
		{Address: "127.0.0.1:5038", Username: "u", Originate: OriginateOptions{Channel: "PJSIP/101"}},
		{Address: "127.0.0.1:5038", Username: "u", Originate: OriginateOptions{Precheck: "maybe"}},
	} {
		if _, err := Dial(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

// TestActionsWhileEventsStream: many concurrent actions while the PBX streams events before,
// between and after the responses. Responses never reach the event stream and events never
// break an action.
func TestActionsWhileEventsStream(t *testing.T) {
	t.Parallel()
	const pings = 200
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		n := 0
		for {
			f, err := p.next()
			if err != nil {
				return
			}
			id := f.ActionID()
			switch f.Get("Action") {
			case "Ping":
				n++
				p.send(fmt.Sprintf("Event: Noise\r\nN: %d\r\n\r\nResponse: Success\r\nActionID: %s\r\nPing: Pong\r\n\r\nEvent: Noise\r\nN: %d\r\n\r\n", n, id, n))
			case "CoreShowChannels":
				p.send("Response: Success\r\nActionID: " + id + "\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n" +
					"Event: CoreShowChannel\r\nActionID: " + id + "\r\nChannel: PJSIP/101-00000001\r\n\r\n" +
					"Event: Noise\r\n\r\n" +
					"Event: CoreShowChannel\r\nActionID: " + id + "\r\nChannel: PJSIP/102-00000002\r\n\r\n" +
					"Event: CoreShowChannelsComplete\r\nActionID: " + id + "\r\nEventList: Complete\r\nListItems: 2\r\n\r\n")
			case "Logoff":
				p.send("Response: Goodbye\r\nActionID: " + id + "\r\n\r\n")
				return
			}
		}
	})
	c, err := Dial(context.Background(), testOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	got := make(chan []string, 1)
	go func() { got <- drain(t, c, 20*time.Second) }()

	var wg sync.WaitGroup
	errs := make(chan error, pings+1)
	for range pings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Action(context.Background(), Action{Name: "Ping"})
			if err == nil && res.Get("Ping") != "Pong" {
				err = fmt.Errorf("ping answered %v", res.Fields)
			}
			errs <- err
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		chans, err := c.CoreShowChannels(context.Background())
		if err == nil && (len(chans) != 2 || chans[1].Get("Channel") != "PJSIP/102-00000002") {
			err = fmt.Errorf("channels %d", len(chans))
		}
		errs <- err
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Logoff(context.Background()); err != nil {
		t.Fatal(err)
	}
	names := <-got
	noise := 0
	for _, n := range names {
		if n != "Noise" {
			t.Fatalf("unexpected frame in the event stream: %q", n)
		}
		noise++
	}
	if noise != 2*pings+1 {
		t.Errorf("noise events %d, want %d", noise, 2*pings+1)
	}
}

// TestLateAndOrphanFrames: a response that arrives after its action gave up, and list events of
// an abandoned list, are dropped and counted, never delivered as events.
func TestLateAndOrphanFrames(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		f, err := p.next()
		if err != nil {
			return
		}
		<-release
		id := f.ActionID()
		p.send("Response: Success\r\nActionID: " + id + "\r\nEventList: start\r\n\r\n" +
			"Event: CoreShowChannel\r\nActionID: " + id + "\r\n\r\n" +
			"Event: CoreShowChannelsComplete\r\nActionID: " + id + "\r\nEventList: Complete\r\n\r\n" +
			"Response: Success\r\nMessage: no ActionID at all\r\n\r\n" +
			"Event: OriginateResponse\r\nActionID: other-client-1\r\nResponse: Success\r\n\r\n" +
			"Event: Last\r\n\r\n")
		_, _ = p.next()
	})
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(addr).withDefaults()
	c, err := dial(context.Background(), o, m, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = c.Action(ctx, Action{Name: "CoreShowChannels"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	close(release)
	var names []string
	for in := range c.Events() {
		names = append(names, in.Frame.Event())
		if in.Frame.Event() == "Last" {
			break
		}
	}
	if got := strings.Join(names, ","); got != "OriginateResponse,Last" {
		t.Errorf("events %q, want another client's OriginateResponse and Last only", got)
	}
	want := `
# HELP pbxbridge_ami_frames_dropped_total AMI frames dropped, by reason (too_large, orphan_response, late_list_event, list_overflow).
# TYPE pbxbridge_ami_frames_dropped_total counter
pbxbridge_ami_frames_dropped_total{pbx="t",reason="late_list_event"} 2
pbxbridge_ami_frames_dropped_total{pbx="t",reason="orphan_response"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pbxbridge_ami_frames_dropped_total"); err != nil {
		t.Error(err)
	}
}

// TestKeepaliveDetectsDeadPeer: a PBX that stops answering (half-open TCP) is detected within
// PingInterval + PingTimeout.
func TestKeepaliveDetectsDeadPeer(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		for { // read actions, never answer
			if _, err := p.next(); err != nil {
				return
			}
		}
	})
	o := testOptions(addr)
	o.PingInterval, o.PingTimeout = 100*time.Millisecond, 100*time.Millisecond
	c, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	start := time.Now()
	drain(t, c, 5*time.Second)
	if err := c.Err(); !errors.Is(err, ErrConnectionLost) || !strings.Contains(err.Error(), "keepalive") {
		t.Fatalf("Err = %v, want a keepalive timeout", err)
	}
	t.Logf("dead peer detected after %v", time.Since(start))
}

// TestSlowConsumerIsNotADeadPeer: while the consumer does not drain Events() the reader waits;
// that time must not count against the keepalive.
func TestSlowConsumerIsNotADeadPeer(t *testing.T) {
	// Not parallel: it measures real-time keepalive bounds, which a loaded CPU stretches.
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		go func() {
			for i := range 50 {
				p.send(fmt.Sprintf("Event: E\r\nN: %d\r\n\r\n", i))
			}
		}()
		for {
			f, err := p.next()
			if err != nil {
				return
			}
			if f.Get("Action") == "Ping" {
				p.send("Response: Success\r\nActionID: " + f.ActionID() + "\r\nPing: Pong\r\n\r\n")
			}
		}
	})
	o := testOptions(addr)
	o.PingInterval, o.PingTimeout = 200*time.Millisecond, 200*time.Millisecond
	o.EventBuffer = 1
	c, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	time.Sleep(1500 * time.Millisecond) // several keepalive bounds without draining
	for i := range 50 {
		select {
		case in, ok := <-c.Events():
			if !ok {
				t.Fatalf("connection ended after %d events: %v", i, c.Err())
			}
			_ = in
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d not delivered", i)
		}
	}
	if err := c.Err(); err != nil {
		t.Fatalf("connection ended: %v", err)
	}
}

func TestCloseIsIdempotentAndUnblocks(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		for i := range 10000 {
			p.send(fmt.Sprintf("Event: E\r\nN: %d\r\n\r\n", i))
		}
		_, _ = p.next()
	})
	o := testOptions(addr)
	o.EventBuffer = 1
	c, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	<-c.Events() // the reader is now blocked on a full channel
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Close() }()
	}
	wg.Wait()
	_ = c.Close()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed", c.Err())
	}
	if _, err := c.Action(context.Background(), Action{Name: "Ping"}); !errors.Is(err, ErrClosed) {
		t.Errorf("action after close: %v", err)
	}
}

func TestActionRefusedAndInjection(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		for {
			f, err := p.next()
			if err != nil {
				return
			}
			if f.Get("Action") != "Ping" {
				p.t.Errorf("unexpected action on the wire: %v", f.Fields)
			}
			p.send("Response: Error\r\nActionID: " + f.ActionID() + "\r\nMessage: Permission denied\r\n\r\n")
		}
	})
	c, err := Dial(context.Background(), testOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_, err = c.Action(context.Background(), Action{Name: "Originate"}.Set("CallerID", "x\r\n\r\nAction: Hangup"))
	if !errors.Is(err, ErrInvalidHeader) {
		t.Fatalf("injection: got %v", err)
	}
	_, err = c.Action(context.Background(), Action{Name: "Ping"})
	var re *ResponseError
	if !errors.As(err, &re) || re.Message != "Permission denied" {
		t.Fatalf("got %v, want a ResponseError", err)
	}
	if !strings.HasPrefix(err.Error(), "ami: ping: ") {
		t.Errorf("error not prefixed: %v", err)
	}
}

// TestReadDelay: after a small read the reader waits ReadDelay before the next one (a lower
// bound, which a loaded machine cannot break); after a read of readDelayBelow bytes or more it
// reads again at once, without arming the timer.
func TestReadDelay(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() {
		_, _ = server.Write(make([]byte, readDelayBelow)) // one big read
		for range 3 {
			if _, err := server.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	const delay = 30 * time.Millisecond
	d := &deadlineReader{nc: client}
	d.delay.Store(int64(delay))
	d.last = readDelayBelow // as after a big read: no wait before the first
	buf := make([]byte, 2*readDelayBelow)
	if n, err := io.ReadFull(d, buf[:readDelayBelow]); err != nil || n != readDelayBelow {
		t.Fatalf("big read: %d %v", n, err)
	}
	if d.timer != nil {
		t.Fatal("the timer was armed after big reads")
	}
	if _, err := d.Read(buf); err != nil { // follows a big read: at once
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := d.Read(buf); err != nil { // follows a one-byte read: waits
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < delay {
		t.Fatalf("read after a small one came after %v, want at least %v", waited, delay)
	}
	// 1 ms unless set (negative: none).
	if o := testOptions("127.0.0.1:1").withDefaults(); o.ReadDelay != DefaultReadDelay {
		t.Errorf("default ReadDelay %v", o.ReadDelay)
	}
}
