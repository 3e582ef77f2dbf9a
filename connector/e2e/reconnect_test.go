package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"go.uber.org/goleak"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/internal/golden"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

func TestMain(m *testing.M) {
	testkit.SetParallel(8) // the tests wait on replayed calls, not on the CPU
	goleak.VerifyTestMain(m)
}

// labOptions loads the call-model configuration of the lab transcripts.
func labOptions(t *testing.T) callmodel.Options {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "callmodel", "testdata", "lab.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var fc struct {
		Numbers   numbers.Config   `yaml:"numbers"`
		CallModel callmodel.Config `yaml:"callmodel"`
	}
	if err := yaml.UnmarshalWithOptions(data, &fc, yaml.Strict()); err != nil {
		t.Fatal(err)
	}
	n, err := numbers.New(fc.Numbers)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := fc.CallModel.Compile(n.Normalize)
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// expected returns the golden records of a scenario (written from its .meta.json by the model's
// owners), by call id.
func expected(t *testing.T, scenario string) map[string]call.Record {
	t.Helper()
	out := map[string]call.Record{}
	for _, r := range golden.Records(t, scenario) {
		out[r.CallID] = r
	}
	return out
}

// sink collects the Builder's records.
type sink struct {
	mu      sync.Mutex
	records []call.Record
}

func (s *sink) Live(*call.Live) {}
func (s *sink) Record(r *call.Record) {
	s.mu.Lock()
	s.records = append(s.records, *r)
	s.mu.Unlock()
}

// pipeline is fake PBX → ami.Source → callmodel.Builder, the way the daemon wires them.
type pipeline struct {
	srv    *fakepbx.Server
	src    *ami.Source
	out    *sink
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	b           *callmodel.Builder
	transitions []asterisk.Event     // Connected / Disconnected / SnapshotEnd, in order
	latest      map[string]time.Time // per Linkedid, the time of the last event applied
	markers     map[string]bool      // UserEvent markers applied
	changed     chan struct{}
}

func newPipeline(t *testing.T, speed float64) *pipeline {
	t.Helper()
	srv, err := fakepbx.Start(fakepbx.Config{Speed: speed})
	if err != nil {
		t.Fatal(err)
	}
	return newPipelineOn(t, srv)
}

// newPipelineOn starts the source and the builder on a running fake PBX, which the pipeline
// closes at the end of the test.
func newPipelineOn(t *testing.T, srv *fakepbx.Server) *pipeline {
	t.Helper()
	src, err := ami.NewSource(ami.Options{
		Name: "lab", Address: srv.Addr(), Username: srv.Username(), Secret: srv.Secret(),
		Backoff: ami.Backoff{Initial: 200 * time.Millisecond, Max: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{srv: srv, src: src, out: &sink{}, latest: map[string]time.Time{}, markers: map[string]bool{}, changed: make(chan struct{}, 1)}
	p.b = callmodel.NewBuilder(labOptions(t), p.out)
	events := make(chan asterisk.Event, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		if err := src.Run(ctx, events); !errors.Is(err, context.Canceled) {
			t.Errorf("source: %v", err)
		}
	}()
	go func() {
		defer p.wg.Done()
		for {
			select {
			case ev := <-events:
				p.mu.Lock()
				p.b.Apply(&ev)
				switch ev.Type {
				case asterisk.TypeConnected, asterisk.TypeDisconnected, asterisk.TypeSnapshotEnd:
					p.transitions = append(p.transitions, ev)
				}
				if l := ev.Chan.Linkedid; l != "" && ev.Time.After(p.latest[l]) {
					p.latest[l] = ev.Time
				}
				if ev.Type == asterisk.TypeUserEvent {
					p.markers[ev.Vars["UserEvent"]] = true
				}
				p.mu.Unlock()
				select {
				case p.changed <- struct{}{}:
				default:
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		p.cancel()
		p.wg.Wait()
		_ = srv.Close()
	})
	return p
}

// sync waits until everything the fake PBX sent so far has been applied to the builder.
func (p *pipeline) sync(t *testing.T, name string) {
	t.Helper()
	p.srv.UserEvent(name)
	p.waitUntil(t, "marker "+name, 30*time.Second, func() bool { return p.markers[name] })
}

// waitFor waits until the transitions satisfy ok.
func (p *pipeline) waitFor(t *testing.T, what string, timeout time.Duration, ok func([]asterisk.Event) bool) []asterisk.Event {
	t.Helper()
	var tr []asterisk.Event
	p.waitUntil(t, what, timeout, func() bool {
		tr = append([]asterisk.Event(nil), p.transitions...)
		return ok(tr)
	})
	return tr
}

// waitUntil waits until ok (called with p.mu held) is true.
func (p *pipeline) waitUntil(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		done := ok()
		tr := types(p.transitions)
		p.mu.Unlock()
		if done {
			return
		}
		select {
		case <-p.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; transitions %v", what, tr)
		}
	}
}

func types(evs []asterisk.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type.String()
	}
	return out
}

// snapshotAfterReconnect reports whether a snapshot ended after the second login.
func snapshotAfterReconnect(evs []asterisk.Event) bool {
	logins := 0
	for _, ev := range evs {
		switch ev.Type {
		case asterisk.TypeConnected:
			logins++
		case asterisk.TypeSnapshotEnd:
			if logins >= 2 {
				return true
			}
		}
	}
	return false
}

func count(evs []asterisk.Event, typ asterisk.Type) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// scenarios whose outcome is decided before the connection drops at ~3.6 s of call time
// (answered, or ringing out), so the model can get the disposition right whatever is lost.
var scenarios = []string{"inbound_answered", "outbound_answered", "inbound_missed",
	"attended_transfer", "blind_transfer", "outbound_no_answer"}

// TestAMIReconnectMidCall: the fake PBX drops the AMI connection in the
// middle of calls; the source reconnects within 2 s; those calls still come out with the right
// disposition, and no open call is left behind. The "outage" case keeps AMI unreachable for
// 6 s of call time, so several calls end while the connection is down and are finished from
// the post-reconnect snapshot.
func TestAMIReconnectMidCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		outage time.Duration // 0: a plain drop, the PBX accepts the reconnect at once
	}{
		{"drop", 0},
		{"outage", 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const speed = 4
			p := newPipeline(t, speed)
			p.waitFor(t, "first login", 5*time.Second, func(tr []asterisk.Event) bool {
				return count(tr, asterisk.TypeConnected) == 1
			})
			calls := map[string]*fakepbx.Call{}
			for _, sc := range scenarios {
				c, err := p.srv.Play(context.Background(), sc)
				if err != nil {
					t.Fatal(err)
				}
				calls[sc] = c
			}
			// Freeze the calls once every one has reached 3.6 s of its own time (all up, their
			// outcome decided), let the builder catch up, then drop and let the calls go on: the
			// drop loses what happens next, however slow the machine (-race, shared CPUs).
			waitPosition(t, calls, 3600*time.Millisecond)
			p.srv.Pause()
			p.sync(t, "before-drop")
			dropped := time.Now()
			if tc.outage > 0 {
				p.srv.Outage(tc.outage)
			} else {
				p.srv.DropClients()
			}
			p.srv.Resume() // the calls go on while the connection is down
			tr := p.waitFor(t, "reconnect", 10*time.Second, func(tr []asterisk.Event) bool {
				return count(tr, asterisk.TypeConnected) == 2
			})
			// When the source logged in again (the event may reach the builder later, behind
			// the events before it).
			var reconnect time.Duration
			for _, ev := range tr {
				if ev.Type == asterisk.TypeConnected && ev.Resync {
					reconnect = ev.Time.Sub(dropped)
				}
			}
			if tc.outage == 0 && reconnect > 2*time.Second {
				t.Errorf("reconnected after %v, want within 2 s", reconnect)
			}
			t.Logf("reconnected %v after the drop; transitions %v", reconnect.Round(time.Millisecond), types(tr))
			// The snapshot that follows the reconnect (the first login may have had one too: the
			// condition looks only after the second connect, so it cannot miss or miscount).
			p.waitFor(t, "resync snapshot", 10*time.Second, func(tr []asterisk.Event) bool {
				return snapshotAfterReconnect(tr)
			})
			for sc, c := range calls {
				select {
				case <-c.Done():
				case <-time.After(20 * time.Second):
					t.Fatalf("%s did not finish", sc)
				}
			}
			p.sync(t, "after-calls")
			p.mu.Lock()
			p.b.Flush(time.Now(), false)
			open := p.b.Open()
			p.mu.Unlock()
			if open != 0 {
				t.Errorf("%d calls left open", open)
			}

			p.out.mu.Lock()
			got := map[string]call.Record{}
			for _, r := range p.out.records {
				if _, dup := got[r.CallID]; dup {
					t.Errorf("call %s finished twice", r.CallID)
				}
				got[r.CallID] = r
			}
			p.out.mu.Unlock()
			resynced := 0
			for sc, c := range calls {
				for origID, want := range expected(t, sc) {
					id := c.MapID(origID)
					r, ok := got[id]
					if !ok {
						t.Errorf("%s: no record for call %s (was %s)", sc, id, origID)
						continue
					}
					if r.Disposition != want.Disposition || r.Direction != want.Direction || r.AnsweredBy != want.AnsweredBy {
						t.Errorf("%s: %s %s answered by %q, want %s %s answered by %q", sc,
							r.Direction, r.Disposition, r.AnsweredBy, want.Direction, want.Disposition, want.AnsweredBy)
					}
					if r.HasFlag("resynced") {
						resynced++
					}
					t.Logf("%s: %s %s by %q, flags %v, ended %v after the drop", sc, r.Direction, r.Disposition,
						r.AnsweredBy, r.Flags, r.EndedAt.Sub(dropped).Round(time.Millisecond))
				}
			}
			if len(got) != len(scenarios) {
				t.Errorf("%d records for %d calls", len(got), len(scenarios))
			}
			t.Logf("%d of %d calls were finished or completed across the outage (flag resynced)", resynced, len(got))
		})
	}
}

// TestAMIStartMidCall: the daemon starts (after a restart or a crash) while calls are in
// progress. The first login's snapshot makes them known whole: each still comes out once, with
// the right disposition, flagged resynced.
func TestAMIStartMidCall(t *testing.T) {
	t.Parallel()
	srv, err := fakepbx.Start(fakepbx.Config{Speed: 4})
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]*fakepbx.Call{}
	for _, sc := range scenarios {
		c, err := srv.Play(context.Background(), sc)
		if err != nil {
			t.Fatal(err)
		}
		calls[sc] = c
	}
	waitPosition(t, calls, 3600*time.Millisecond)
	srv.Pause() // the snapshot sees the calls exactly where they are
	p := newPipelineOn(t, srv)
	p.waitFor(t, "first snapshot", 10*time.Second, func(tr []asterisk.Event) bool {
		return count(tr, asterisk.TypeSnapshotEnd) >= 1
	})
	srv.Resume()
	for sc, c := range calls {
		select {
		case <-c.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not finish", sc)
		}
	}
	p.sync(t, "after-calls")
	p.mu.Lock()
	p.b.Flush(time.Now(), false)
	open := p.b.Open()
	p.mu.Unlock()
	if open != 0 {
		t.Errorf("%d calls left open", open)
	}
	p.out.mu.Lock()
	got := map[string]call.Record{}
	for _, r := range p.out.records {
		if _, dup := got[r.CallID]; dup {
			t.Errorf("call %s finished twice", r.CallID)
		}
		got[r.CallID] = r
	}
	p.out.mu.Unlock()
	for sc, c := range calls {
		for origID, want := range expected(t, sc) {
			id := c.MapID(origID)
			r, ok := got[id]
			if !ok {
				t.Errorf("%s: no record for call %s (was %s)", sc, id, origID)
				continue
			}
			if r.Disposition != want.Disposition || r.Direction != want.Direction {
				t.Errorf("%s: %s %s, want %s %s", sc, r.Direction, r.Disposition, want.Direction, want.Disposition)
			}
			// Who answered first is history the snapshot cannot tell once a transfer has
			// happened (blind_transfer: 101 answered, 102 talks at 3.6 s): it must be one of the
			// extensions that talked.
			if talked := legExts(want); r.AnsweredBy != want.AnsweredBy && !talked[r.AnsweredBy] {
				t.Errorf("%s: answered by %q, want %q or another leg %v", sc, r.AnsweredBy, want.AnsweredBy, talked)
			}
			if !r.HasFlag("resynced") {
				t.Errorf("%s: record not flagged resynced: %v", sc, r.Flags)
			}
			if r.Customer != want.Customer {
				t.Errorf("%s: customer %q, want %q", sc, r.Customer, want.Customer)
			}
		}
	}
	if len(got) != len(scenarios) {
		t.Errorf("%d records for %d calls", len(got), len(scenarios))
	}
}

// waitPosition waits until every call has reached at least at of its own time.
func waitPosition(t *testing.T, calls map[string]*fakepbx.Call, at time.Duration) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, fmt.Sprintf("the calls to reach %v", at), func() bool {
		for _, c := range calls {
			if c.Position() < at {
				return false
			}
		}
		return true
	})
}

// legExts is the set of extensions that talked in a record.
func legExts(r call.Record) map[string]bool {
	out := map[string]bool{}
	for _, l := range r.Legs {
		out[l.Ext] = true
	}
	return out
}

// TestAMIStartAnyMoment: the daemon may start at any moment of a call (after a restart or a
// crash). For every scenario and several moments of its timeline, the call still comes out
// once, with its direction, customer (a CRM needs both) and disposition. The lab's busy and
// congestion calls are left out: they last 4-8 ms in the transcripts (the simulated far end
// refuses at once), no daemon starts inside them. Two moments per call in the quick tier, every
// tenth of the call in the long tier.
func TestAMIStartAnyMoment(t *testing.T) {
	t.Parallel()
	const speed = 16
	fracs := []float64{0.3, 0.7}
	if testkit.Selected(t, testkit.Long) {
		fracs = []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
	}
	for _, sc := range []string{"inbound_answered", "inbound_missed", "inbound_ringgroup",
		"inbound_ringgroup_or_queue", "outbound_answered", "outbound_no_answer",
		"blind_transfer", "redirect_transfer", "attended_transfer", "click_to_call", "click_to_call_noopt", "click_to_call_norec"} {
		for _, frac := range fracs {
			t.Run(fmt.Sprintf("%s@%.0f%%", sc, frac*100), func(t *testing.T) {
				t.Parallel()
				offsets := eventOffsets(t, sc)
				at := time.Duration(float64(offsets[len(offsets)-1]) * frac)
				// The replay pauses itself right after the last event before the moment (from
				// its own goroutine, before it sends the next one), so the daemon starts at that
				// moment however late this goroutine runs. A replay may send an event up to 200
				// µs early (3.2 ms of the call at speed 16): hence the 5 ms.
				var before time.Duration
				for _, o := range offsets {
					if o < at {
						before = o
					}
				}
				var (
					srv    *fakepbx.Server
					once   sync.Once
					paused = make(chan struct{})
				)
				srv, err := fakepbx.Start(fakepbx.Config{Speed: speed, OnEvent: func(ev fakepbx.EmittedEvent) {
					if ev.Call.Position() >= before-5*time.Millisecond {
						once.Do(func() { srv.Pause(); close(paused) })
					}
				}})
				if err != nil {
					t.Fatal(err)
				}
				c, err := srv.Play(context.Background(), sc)
				if err != nil {
					t.Fatal(err)
				}
				select {
				case <-paused:
				case <-c.Done():
					t.Fatalf("the call ended before %v", at)
				}
				p := newPipelineOn(t, srv)
				p.waitFor(t, "first snapshot", 10*time.Second, func(tr []asterisk.Event) bool {
					return count(tr, asterisk.TypeSnapshotEnd) >= 1
				})
				srv.Resume()
				<-c.Done()
				p.sync(t, "after")
				p.mu.Lock()
				p.b.Flush(time.Now(), false)
				open := p.b.Open()
				p.mu.Unlock()
				if open != 0 {
					t.Errorf("%d calls left open", open)
				}
				p.out.mu.Lock()
				defer p.out.mu.Unlock()
				for origID, want := range expected(t, sc) {
					id := c.MapID(origID)
					var got []call.Record
					for _, r := range p.out.records {
						if r.CallID == id {
							got = append(got, r)
						}
					}
					if len(got) != 1 {
						t.Errorf("%d records for call %s: %+v", len(got), id, got)
						continue
					}
					r := got[0]
					if r.Direction != want.Direction || r.Customer != want.Customer || r.Disposition != want.Disposition {
						t.Errorf("%s %s customer %q, want %s %s customer %q", r.Direction, r.Disposition, r.Customer,
							want.Direction, want.Disposition, want.Customer)
					}
				}
			})
		}
	}
}

// eventOffsets are the times of a scenario's call events from its first one, in order (the
// recorder's session events are not replayed); the last is how long the call lasts.
func eventOffsets(t *testing.T, sc string) []time.Duration {
	t.Helper()
	data, err := transcripts.AMI(sc)
	if err != nil {
		t.Fatal(err)
	}
	var (
		first, last time.Time
		offsets     []time.Duration
	)
	for _, frame := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n\n") {
		var event, stamp string
		for _, line := range strings.Split(frame, "\n") {
			if v, ok := strings.CutPrefix(line, "Event: "); ok {
				event = v
			}
			if v, ok := strings.CutPrefix(line, "Timestamp: "); ok {
				stamp = v
			}
		}
		if event == "" || stamp == "" || event == "FullyBooted" || event == "SuccessfulAuth" || event == "ChallengeSent" {
			continue
		}
		f, err := strconv.ParseFloat(stamp, 64)
		if err != nil {
			continue
		}
		ts := time.Unix(0, int64(f*1e9))
		if first.IsZero() {
			first = ts
		}
		if ts.Before(last) {
			ts = last // the replay keeps the events in order and never goes back in time
		}
		last = ts
		offsets = append(offsets, ts.Sub(first))
	}
	if len(offsets) == 0 {
		t.Fatalf("%s: no call events", sc)
	}
	return offsets
}
