package fakepbx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/cdr/cdrtest"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// mariaDB is the private MariaDB server of the CDR table tests (asterisk/cdr/cdrtest), stopped
// before the leak check (its process watcher is a goroutine).
var mariaDB cdrtest.MariaDB

func TestMain(m *testing.M) {
	code := m.Run()
	mariaDB.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func dial(t *testing.T, s *Server, events string) *ami.Conn {
	t.Helper()
	c, err := ami.Dial(context.Background(), ami.Options{
		Address: s.Addr(), Username: s.Username(), Secret: s.Secret(), Events: events, PingInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// collect reads events from c until n frames of the replay arrived (FullyBooted is skipped).
func collect(t *testing.T, c *ami.Conn, n int) []*ami.Frame {
	t.Helper()
	var out []*ami.Frame
	for len(out) < n {
		select {
		case in, ok := <-c.Events():
			if !ok {
				t.Fatalf("connection ended after %d of %d frames: %v", len(out), n, c.Err())
			}
			if in.Frame.Event() != "FullyBooted" {
				out = append(out, in.Frame)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d frames", len(out), n)
		}
	}
	return out
}

// transcriptFrames returns a transcript's event frames as the server replays them.
func transcriptFrames(t *testing.T, name string) []*ami.Frame {
	t.Helper()
	data, err := transcripts.AMI(name)
	if err != nil {
		t.Fatal(err)
	}
	r := ami.NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	var out []*ami.Frame
	for {
		f, err := r.ReadFrame()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev := f.Event(); ev != "" && !sessionEvents[ev] {
			out = append(out, f)
		}
	}
}

var (
	uidRe    = regexp.MustCompile(`\b\d{9,}\.\d+\b`)
	suffixRe = regexp.MustCompile(`-[0-9a-f]{8}\b`)
)

// TestReplayRemapsIDs: a replay keeps every frame and header of the transcript, with every id
// replaced consistently, timestamps shifted to now, and the structure unchanged.
func TestReplayRemapsIDs(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: math.Inf(1)})
	c := dial(t, s, "on")
	orig := transcriptFrames(t, "attended_transfer")
	played, err := s.Play(context.Background(), "attended_transfer")
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, c, len(orig))
	<-played.Done()
	mapping := map[string]string{}
	consistent := func(kind, from, to string) {
		if prev, ok := mapping[kind+from]; ok && prev != to {
			t.Fatalf("%s %s mapped to %s and %s", kind, from, prev, to)
		}
		mapping[kind+from] = to
		if from == to {
			t.Fatalf("%s %s not remapped", kind, from)
		}
	}
	now := time.Now()
	for i := range orig {
		o, g := orig[i], got[i]
		if len(o.Fields) != len(g.Fields) {
			t.Fatalf("frame %d (%s): %d fields, want %d", i, o.Event(), len(g.Fields), len(o.Fields))
		}
		for k := range o.Fields {
			of, gf := o.Fields[k], g.Fields[k]
			if of.Key != gf.Key {
				t.Fatalf("frame %d: key %s, want %s", i, gf.Key, of.Key)
			}
			if of.Key == "Timestamp" {
				ts, err := parseTS(gf.Value)
				if err != nil || now.Sub(ts) > time.Minute || ts.After(now.Add(time.Second)) {
					t.Fatalf("frame %d: timestamp %s not shifted to now", i, gf.Value)
				}
				continue
			}
			ou, gu := uidRe.FindAllString(of.Value, -1), uidRe.FindAllString(gf.Value, -1)
			if len(ou) != len(gu) {
				t.Fatalf("frame %d %s: ids %v vs %v", i, of.Key, ou, gu)
			}
			for j := range ou {
				consistent("uid", ou[j], gu[j])
			}
			os, gs := suffixRe.FindAllString(of.Value, -1), suffixRe.FindAllString(gf.Value, -1)
			if len(os) == len(gs) && strings.Contains(of.Key, "Channel") {
				for j := range os {
					consistent("chan", os[j], gs[j])
				}
			}
			// Apart from ids and times, values are unchanged.
			norm := func(s string) string { return suffixRe.ReplaceAllString(uidRe.ReplaceAllString(s, "U"), "-S") }
			switch of.Key {
			case "EventTime", "StartTime", "AnswerTime", "EndTime", "AppData", "Value", "Extra", "RecordingFile",
				"BridgeUniqueid", "ToBridgeUniqueid", "FromBridgeUniqueid", "OrigBridgeUniqueid",
				"SecondBridgeUniqueid", "DestBridgeUniqueid", "Duration", "BillableSeconds":
				continue // times, bridge ids, and values embedding them
			}
			if norm(of.Value) != norm(gf.Value) {
				t.Fatalf("frame %d %s: %q became %q", i, of.Key, of.Value, gf.Value)
			}
		}
	}
	if played.MapID("1795305907.104") == "" {
		t.Error("MapID does not know the transcript's first channel")
	}
}

func parseTS(s string) (time.Time, error) {
	sec, frac, _ := strings.Cut(s, ".")
	var t time.Time
	secs, err := time.ParseDuration(sec + "s")
	if err != nil {
		return t, err
	}
	us, err := time.ParseDuration(frac + "us")
	if err != nil {
		return t, err
	}
	return time.Unix(0, 0).Add(secs + us), nil
}

// TestConcurrentReplaysNeverCollide: many replays at once share no Uniqueid, Linkedid, channel
// name or bridge id.
func TestConcurrentReplaysNeverCollide(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: math.Inf(1)})
	c := dial(t, s, "on")
	const n = 8
	total := 0
	for range n {
		total += len(transcriptFrames(t, "inbound_ringgroup"))
	}
	for range n {
		if _, err := s.Play(context.Background(), "inbound_ringgroup"); err != nil {
			t.Fatal(err)
		}
	}
	frames := collect(t, c, total)
	owner := map[string]string{} // uniqueid → linkedid
	names := map[string]string{} // channel name → uniqueid
	linked := map[string]bool{}
	for _, f := range frames {
		if f.Event() != "Newchannel" {
			continue
		}
		uid, lid, name := f.Get("Uniqueid"), f.Get("Linkedid"), f.Get("Channel")
		if _, dup := owner[uid]; dup {
			t.Fatalf("uniqueid %s created twice", uid)
		}
		if prev, dup := names[name]; dup {
			t.Fatalf("channel %s used by %s and %s", name, prev, uid)
		}
		owner[uid], names[name] = lid, uid
		linked[lid] = true
	}
	if len(linked) != n {
		t.Errorf("%d distinct calls, want %d", len(linked), n)
	}
}

// TestCoreShowChannelsReflectsReplays: mid-call, CoreShowChannels lists exactly the channels
// created and not yet hung up in the events the client received before the list. The list is
// streamed (ami.Conn.Stream), so it arrives in wire order with the events.
func TestCoreShowChannelsReflectsReplays(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: 4})
	c := dial(t, s, "on")
	if _, err := s.Play(context.Background(), "attended_transfer"); err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	listed := map[string]bool{}
	asked := time.After(2 * time.Second) // the transfer is in progress by then
	var id string
	for {
		select {
		case <-asked:
			var err error
			if id, err = c.Stream(context.Background(), ami.Action{Name: "CoreShowChannels"}); err != nil {
				t.Fatal(err)
			}
			continue
		case in, ok := <-c.Events():
			if !ok {
				t.Fatalf("connection ended: %v", c.Err())
			}
			f := in.Frame
			switch {
			case id != "" && f.ActionID() == id && f.Event() == "CoreShowChannel":
				if f.Get("Linkedid") == "" || f.Get("Duration") == "" || f.Get("ChannelStateDesc") == "" {
					t.Errorf("incomplete entry %v", f.Fields)
				}
				listed[f.Get("Uniqueid")] = true
			case id != "" && f.ActionID() == id && f.Event() == "CoreShowChannelsComplete":
				if len(listed) == 0 {
					t.Fatal("nothing listed in the middle of a call")
				}
				for u := range listed {
					if !live[u] {
						t.Errorf("listed channel %s is not alive", u)
					}
				}
				for u := range live {
					if !listed[u] {
						t.Errorf("live channel %s is not listed", u)
					}
				}
				if got := f.Get("ListItems"); got != fmt.Sprint(len(listed)) {
					t.Errorf("ListItems %s, listed %d", got, len(listed))
				}
				return
			case f.Event() == "Newchannel":
				live[f.Get("Uniqueid")] = true
			case f.Event() == "Hangup":
				delete(live, f.Get("Uniqueid"))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no list")
		}
	}
}

func TestLoginEventMaskAndTimestamps(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: math.Inf(1), NoTimestamps: true})
	cdrOnly := dial(t, s, "cdr")
	all := dial(t, s, "on")
	off := dial(t, s, "off")
	orig := transcriptFrames(t, "inbound_answered")
	cdrs := 0
	for _, f := range orig {
		if f.Event() == "Cdr" {
			cdrs++
		}
	}
	if _, err := s.Play(context.Background(), "inbound_answered"); err != nil {
		t.Fatal(err)
	}
	for _, f := range collect(t, all, len(orig)) {
		if _, has := f.Lookup("Timestamp"); has {
			t.Fatal("Timestamp sent with NoTimestamps")
		}
	}
	for _, f := range collect(t, cdrOnly, cdrs) {
		if f.Event() != "Cdr" {
			t.Fatalf("mask cdr received %s", f.Event())
		}
	}
	if _, err := off.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-off.Events():
		if in.Frame.Event() != "FullyBooted" {
			t.Errorf("events off received %s", in.Frame.Event())
		}
	default:
	}
}

func TestLoadGeneratesCalls(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: math.Inf(1), Seed: 7})
	var mu sync.Mutex
	seen := map[string]int{}
	n, err := s.Load(context.Background(), LoadOptions{Rate: 200, Calls: 40, OnStart: func(c *Call) {
		mu.Lock()
		seen[c.Scenario]++
		mu.Unlock()
	}})
	if err != nil || n != 40 {
		t.Fatalf("load: %d %v", n, err)
	}
	st := s.Stats()
	if st.CallsStarted != 40 || st.CallsFinished != 40 {
		t.Errorf("stats %+v", st)
	}
	if len(seen) < 5 || seen["concurrent"] != 0 {
		t.Errorf("mix %v", seen)
	}
	if _, err := s.Load(context.Background(), LoadOptions{Scenarios: []string{"nope"}}); err == nil {
		t.Error("unknown scenario accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Load(ctx, LoadOptions{Rate: 50}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("endless load: %v", err)
	}
}

func TestDropAndRefuse(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	c1 := dial(t, s, "on")
	c2 := dial(t, s, "on")
	if n := s.Outage(300 * time.Millisecond); n != 2 {
		t.Fatalf("dropped %d", n)
	}
	for _, c := range []*ami.Conn{c1, c2} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("client not dropped")
		}
	}
	if _, err := ami.Dial(context.Background(), ami.Options{Address: s.Addr(), Username: s.Username(), Secret: s.Secret()}); err == nil {
		t.Error("connection accepted during the outage")
	}
	time.Sleep(350 * time.Millisecond)
	dial(t, s, "on")
	if st := s.Stats(); st.Drops != 2 || st.Sessions != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnknownActionsAndAuth(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	c := dial(t, s, "on")
	_, err := c.Action(context.Background(), ami.Action{Name: "Frobnicate"})
	var re *ami.ResponseError
	if !errors.As(err, &re) || re.Message != "Invalid/unknown command" {
		t.Errorf("unknown action: %v", err)
	}
	st, err := c.ExtensionState(context.Background(), "101", "from-internal")
	if err != nil || st.Status != ami.ExtIdle || st.Hint != "PJSIP/101" || st.StatusText != "Idle" {
		t.Errorf("extension state %+v %v", st, err)
	}
	st, err = c.ExtensionState(context.Background(), "555", "from-internal")
	if err != nil || st.Status != ami.ExtNoHint {
		t.Errorf("unknown extension %+v %v", st, err)
	}
}

// TestPauseResumeAndMarker: while paused no call event is sent; a UserEvent marker arrives in
// order; after Resume the replay completes with every frame, timestamps still increasing.
func TestPauseResumeAndMarker(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: 4})
	c := dial(t, s, "on")
	want := len(transcriptFrames(t, "inbound_answered"))
	played, err := s.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, c, 20)
	s.Pause()
	s.UserEvent("sync", "Seq", "1")
	for {
		f := collect(t, c, 1)[0]
		if f.Event() == "UserEvent" {
			if f.Get("UserEvent") != "sync" || f.Get("Seq") != "1" {
				t.Fatalf("marker %v", f.Fields)
			}
			break
		}
		got = append(got, f)
	}
	select {
	case in := <-c.Events():
		t.Fatalf("event %s while paused", in.Frame.Event())
	case <-time.After(300 * time.Millisecond):
	}
	s.Resume()
	got = append(got, collect(t, c, want-len(got))...)
	<-played.Done()
	var last time.Time
	for i, f := range got {
		ts, err := parseTS(f.Get("Timestamp"))
		if err != nil {
			t.Fatal(err)
		}
		if ts.Before(last) {
			t.Fatalf("frame %d: timestamp went back", i)
		}
		last = ts
	}
}

// TestOnEventReportsEveryCallEvent: the hook sees every frame of a replay, with the replay's
// fresh ids, the wire time, and how many clients received it (none before anyone connects).
func TestOnEventReportsEveryCallEvent(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []EmittedEvent
	s := start(t, Config{Speed: math.Inf(1), OnEvent: func(ev EmittedEvent) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}})
	want := transcriptFrames(t, "inbound_answered")

	unseen, err := s.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	<-unseen.Done()
	c := dial(t, s, "on")
	before := time.Now()
	seen, err := s.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	frames := collect(t, c, len(want))
	<-seen.Done()

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2*len(want) {
		t.Fatalf("%d events reported, want %d", len(got), 2*len(want))
	}
	linked := frames[0].Get("Linkedid")
	for i, ev := range got {
		played, k := unseen, i
		if i >= len(want) {
			played, k = seen, i-len(want)
		}
		if ev.Call != played || ev.Event != want[k].Event() {
			t.Fatalf("event %d: %s of %p, want %s of %p", i, ev.Event, ev.Call, want[k].Event(), played)
		}
		if played == unseen && ev.Clients != 0 {
			t.Errorf("event %d reached %d clients before anyone connected", i, ev.Clients)
		}
		if played != seen {
			continue
		}
		if ev.Clients != 1 || ev.At.Before(before) {
			t.Errorf("event %d: clients %d at %v", i, ev.Clients, ev.At)
		}
		f := frames[k]
		if ev.Linkedid != f.Get("Linkedid") || ev.Uniqueid != f.Get("Uniqueid") || ev.Channel != f.Get("Channel") ||
			ev.DestChannel != f.Get("DestChannel") {
			t.Errorf("event %d %s: ids %+v, the wire has Linkedid %q Uniqueid %q Channel %q DestChannel %q", i, ev.Event,
				ev, f.Get("Linkedid"), f.Get("Uniqueid"), f.Get("Channel"), f.Get("DestChannel"))
		}
		if ev.Linkedid != "" && ev.Linkedid != linked {
			t.Errorf("event %d: Linkedid %q, want %q", i, ev.Linkedid, linked)
		}
	}
}

// ExcludeEvents drops those events from replays, as manager.conf eventfilter lines do, and
// keeps every other frame in order.
func TestExcludeEvents(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: math.Inf(1), ExcludeEvents: []string{"CEL", "DeviceStateChange"}})
	c := dial(t, s, "on")
	var want []string
	for _, f := range transcriptFrames(t, "inbound_answered") {
		if ev := f.Event(); ev != "CEL" && ev != "DeviceStateChange" {
			want = append(want, ev)
		}
	}
	if len(want) == 0 {
		t.Fatal("no frames left")
	}
	played, err := s.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	<-played.Done()
	var got []string
	for _, f := range collect(t, c, len(want)) {
		got = append(got, f.Event())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	// Nothing else follows: a Ping's answer comes before any further event.
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-c.Events():
		t.Fatalf("extra event %s", in.Frame.Event())
	default:
	}
}
