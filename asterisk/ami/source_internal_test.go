package ami

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// fakeClock records the backoff sleeps, returns at once, and moves time forward by step on
// every Now (so every connection seems to last step).
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	step   time.Duration
	sleeps []time.Duration
	limit  int
	stop   context.CancelFunc
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	if len(c.sleeps) >= c.limit {
		c.stop()
	}
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// runWithClock runs a Source until the clock recorded limit sleeps and returns them.
func runWithClock(t *testing.T, o Options, step time.Duration, limit int) []time.Duration {
	t.Helper()
	return runWithBackoff(t, o, Backoff{Initial: 100 * time.Millisecond, Max: time.Second, StableAfter: 30 * time.Second,
		Rand: func() float64 { return 0 }}, step, limit)
}

// runWithBackoff is runWithClock with a given reconnect policy.
func runWithBackoff(t *testing.T, o Options, b Backoff, step time.Duration, limit int) []time.Duration {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := &fakeClock{now: time.Unix(1e9, 0), step: step, limit: limit, stop: cancel}
	o.Clock = clk
	o.Backoff = b
	src, err := NewSource(o)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan asterisk.Event, 1000)
	if err := src.Run(ctx, out); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	clk.mu.Lock()
	defer clk.mu.Unlock()
	return slices.Clone(clk.sleeps)
}

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestBackoffWhenPBXIsDown(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	_ = ln.Close()
	got := runWithClock(t, testOptions(addr), 0, 6)
	if want := ms(50, 100, 200, 400, 500, 500); !slices.Equal(got, want) {
		t.Errorf("sleeps %v, want %v", got, want)
	}
}

func TestBackoffOnRejectedLoginGoesToMax(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) {
		f, err := p.next()
		if err == nil {
			p.send("Response: Error\r\nActionID: " + f.ActionID() + "\r\nMessage: Authentication failed\r\n\r\n")
		}
	})
	got := runWithClock(t, testOptions(addr), 0, 3)
	if want := ms(500, 500, 500); !slices.Equal(got, want) {
		t.Errorf("sleeps %v, want %v", got, want)
	}
}

// TestBackoffResetsAfterStablePeriod: connections that drop right after login back off more
// and more; connections that stayed up for StableAfter start again from Initial.
func TestBackoffResetsAfterStablePeriod(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) { p.login() }) // log in, then hang up
	flapping := runWithClock(t, testOptions(addr), 0, 4)
	if want := ms(50, 100, 200, 400); !slices.Equal(flapping, want) {
		t.Errorf("flapping: sleeps %v, want %v", flapping, want)
	}
	stable := runWithClock(t, testOptions(addr), time.Minute, 4)
	if want := ms(50, 50, 50, 50); !slices.Equal(stable, want) {
		t.Errorf("stable: sleeps %v, want %v", stable, want)
	}
}

// TestBackoffAfterPeriodicDrops: with the default StableAfter, a PBX that drops a working
// session every 10 s is reconnected to after the initial delay every time (it used to climb to
// Max, leaving the daemon blind for most of each period).
func TestBackoffAfterPeriodicDrops(t *testing.T) {
	t.Parallel()
	addr := scripted(t, func(p *peer) { p.login() })
	b := Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, Rand: func() float64 { return 0 }}
	got := runWithBackoff(t, testOptions(addr), b, 10*time.Second, 6)
	if want := ms(50, 50, 50, 50, 50, 50); !slices.Equal(got, want) {
		t.Errorf("sleeps %v, want %v", got, want)
	}
}

// TestResyncRefused: a PBX that refuses CoreShowChannels after a reconnect yields a
// TypeSnapshotEnd carrying the error, so the model knows the snapshot is unusable.
func TestResyncRefused(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	conns := 0
	addr := scripted(t, func(p *peer) {
		mu.Lock()
		conns++
		n := conns
		mu.Unlock()
		if !p.login() || n == 1 {
			return // the first connection drops right after login
		}
		for {
			f, err := p.next()
			if err != nil {
				return
			}
			switch f.Get("Action") {
			case "CoreShowChannels":
				p.send("Event: Newchannel\r\nChannel: PJSIP/101-00000001\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n" +
					"Response: Error\r\nActionID: " + f.ActionID() + "\r\nMessage: Permission denied\r\n\r\n")
			default:
				p.send("Response: Error\r\nActionID: " + f.ActionID() + "\r\nMessage: Permission denied\r\n\r\n")
			}
		}
	})
	o := testOptions(addr)
	o.Backoff = Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond}
	src, err := NewSource(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan asterisk.Event, 100)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	var got []asterisk.Type
	for {
		select {
		case ev := <-out:
			got = append(got, ev.Type)
			if ev.Type != asterisk.TypeSnapshotEnd {
				continue
			}
			if ev.Vars["error"] == "" {
				t.Errorf("snapshot end without error: %+v", ev.Vars)
			}
			want := []asterisk.Type{asterisk.TypeConnected, asterisk.TypeDisconnected, asterisk.TypeConnected,
				asterisk.TypeNewChannel, asterisk.TypeSnapshotEnd}
			if !slices.Equal(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
			return
		case <-time.After(5 * time.Second):
			t.Fatalf("no snapshot end; events %v", got)
		}
	}
}

// TestSourceEventsBeforeArm: events the PBX sends right after the login, before the Source has
// sent TypeConnected and asked for the snapshot, come after TypeConnected, in wire order, and
// before the snapshot the PBX sent after them.
func TestSourceEventsBeforeArm(t *testing.T) {
	t.Parallel()
	sent := make(chan struct{})
	addr := scripted(t, func(p *peer) {
		if !p.login() {
			return
		}
		for i := 1; i <= 3; i++ {
			p.send("Event: Newchannel\r\nChannel: PJSIP/10" + strconv.Itoa(i) + "-1\r\nUniqueid: 1." + strconv.Itoa(i) + "\r\n\r\n")
		}
		close(sent)
		for {
			f, err := p.next()
			if err != nil {
				return
			}
			id := f.ActionID()
			if f.Get("Action") != "CoreShowChannels" {
				p.send("Response: Error\r\nActionID: " + id + "\r\nMessage: no\r\n\r\n")
				continue
			}
			p.send("Response: Success\r\nActionID: " + id + "\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n" +
				"Event: CoreShowChannel\r\nActionID: " + id + "\r\nChannel: PJSIP/101-1\r\nUniqueid: 1.1\r\n\r\n" +
				"Event: CoreShowChannelsComplete\r\nActionID: " + id + "\r\nEventList: Complete\r\nListItems: 1\r\n\r\n")
		}
	})
	src, err := NewSource(testOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan asterisk.Event) // unbuffered: the reader has the events before TypeConnected is taken
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	<-sent
	var got []string
	for len(got) < 6 {
		select {
		case ev := <-out:
			got = append(got, ev.Type.String()+" "+ev.Chan.Uniqueid)
		case <-time.After(5 * time.Second):
			t.Fatalf("events so far %v", got)
		}
	}
	want := []string{"connected ", "new_channel 1.1", "new_channel 1.2", "new_channel 1.3", "snapshot 1.1", "snapshot_end "}
	if !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

// blockingSink hands each frame's event name to got, waiting until it is taken or the Conn is
// closed.
type blockingSink struct{ got chan string }

func (s *blockingSink) frame(_ *Frame, h header, _ time.Time, done <-chan struct{}) {
	select {
	case s.got <- h.event:
	case <-done:
	}
}

// TestSinkCloseUnblocks: Close returns while the reader waits, before arm, at its first event
// or, after arm, for a sink that waits for its consumer; no goroutine is left behind (TestMain).
func TestSinkCloseUnblocks(t *testing.T) {
	t.Parallel()
	for _, armed := range []bool{false, true} {
		addr := scripted(t, func(p *peer) {
			if p.login() {
				p.send("Event: A\r\n\r\nEvent: B\r\n\r\nEvent: C\r\n\r\n")
				_, _ = p.next() // until the client goes away
			}
		})
		sink := &blockingSink{got: make(chan string)}
		c, err := dial(context.Background(), testOptions(addr).withDefaults(), nil, nil, nil, sink)
		if err != nil {
			t.Fatal(err)
		}
		if armed {
			c.arm()
			if ev := <-sink.got; ev != "A" {
				t.Fatalf("first event %q", ev)
			}
		}
		closed := make(chan struct{})
		go func() { _ = c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("armed %v: Close blocked", armed)
		}
		select {
		case ev := <-sink.got:
			t.Fatalf("armed %v: event %q after Close", armed, ev)
		default:
		}
		if _, ok := <-c.Events(); ok {
			t.Fatalf("armed %v: Events() not closed", armed)
		}
	}
}
