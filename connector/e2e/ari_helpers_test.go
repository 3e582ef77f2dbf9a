package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/connector/replay"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// labOptions are the call model options of the lab transcripts.
func labOptions(tb testing.TB) callmodel.Options {
	tb.Helper()
	norm := numbers.MustNew(numbers.Config{DefaultRegion: "RU"})
	o, err := demo.LabCalls().Compile(norm.Normalize)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// ariRig is fake ARI server → ari.Source → callmodel.Builder, the way the daemon wires them,
// with a consumer goroutine applying the events and keeping what the tests wait on. It is the
// callmodel.Output of its builder.
type ariRig struct {
	srv *fakepbx.ARIServer
	src *ari.Source

	mu      sync.Mutex
	b       *callmodel.Builder
	records []call.Record
	links   []asterisk.Event // Connected, Disconnected and SnapshotEnd, in order
	read    int64            // events made from the PBX's messages (unknown ones too)
	counted int64            // events the source counts: read, Snapshot and SnapshotEnd
	applied int64            // events applied to the builder
	last    time.Time        // time of the last event applied
	watch   func(*asterisk.Event)
	changed chan struct{}
}

// startARIRig starts a fake ARI server with cfg, closed at the end of the test, and a rig
// named "lab" on it; edit, when not nil, changes the source's options.
func startARIRig(tb testing.TB, cfg fakepbx.ARIConfig, edit func(*ari.Options)) *ariRig {
	tb.Helper()
	srv, err := fakepbx.StartARI(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Close() }) // after the rig's cleanup
	return newARIRig(tb, srv, "lab", edit)
}

// another starts a second rig, named name, on p's fake server.
func (p *ariRig) another(tb testing.TB, name string, edit func(*ari.Options)) *ariRig {
	tb.Helper()
	return newARIRig(tb, p.srv, name, edit)
}

// newARIRig runs a Source on srv named name (with quick reconnects and keepalive; edit, when
// not nil, changes its options) and a Builder with the lab options, until the test ends, and
// waits until the source is connected. Unknown events are forwarded so that the rig can count
// every message, but not applied: the daemon's sources do not forward them.
func newARIRig(tb testing.TB, srv *fakepbx.ARIServer, name string, edit func(*ari.Options)) *ariRig {
	tb.Helper()
	opts := ari.Options{
		Name: name, URL: srv.URL(), Username: srv.Username(), Password: srv.Password(),
		PingInterval:   500 * time.Millisecond,
		PingTimeout:    5 * time.Second, // a loaded CI machine must not look like a dead peer
		Backoff:        ari.Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond},
		ForwardUnknown: true,
		Registerer:     prometheus.NewRegistry(),
		Logger:         slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&opts)
	}
	src, err := ari.NewSource(opts)
	if err != nil {
		tb.Fatal(err)
	}
	p := &ariRig{srv: srv, src: src, changed: make(chan struct{}, 1)}
	p.b = callmodel.NewBuilder(labOptions(tb), p)
	events := make(chan asterisk.Event, 256)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := src.Run(ctx, events); !errors.Is(err, context.Canceled) {
			tb.Errorf("source: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case ev := <-events:
				p.take(&ev)
			case <-ctx.Done():
				return
			}
		}
	}()
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	p.until(tb, "connected", 10*time.Second, func() bool { return len(p.links) > 0 })
	return p
}

// take applies one event of the source.
func (p *ariRig) take(ev *asterisk.Event) {
	p.mu.Lock()
	switch ev.Type {
	case asterisk.TypeConnected, asterisk.TypeDisconnected, asterisk.TypeSnapshotEnd:
		p.links = append(p.links, *ev)
	case asterisk.TypeSnapshot:
	default:
		p.read++
	}
	if ev.Type != asterisk.TypeConnected && ev.Type != asterisk.TypeDisconnected {
		p.counted++
	}
	if p.watch != nil {
		p.watch(ev)
	}
	if ev.Type != asterisk.TypeUnknown {
		p.b.Apply(ev)
		p.applied++
		p.last = ev.Time
	}
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// watchEvents has fn called with every event before it is applied, in the consumer goroutine
// with p.mu held: it may act on the fake server at a precise point of a call, and share state
// with conditions of until.
func (p *ariRig) watchEvents(fn func(*asterisk.Event)) {
	p.mu.Lock()
	p.watch = fn
	p.mu.Unlock()
}

// Live implements callmodel.Output; the builder calls it with p.mu held.
func (p *ariRig) Live(*call.Live) {}

// Record implements callmodel.Output; the builder calls it with p.mu held.
func (p *ariRig) Record(r *call.Record) { p.records = append(p.records, *r) }

// until waits until ok, called with p.mu held after every event and every 20 ms, is true, or
// fails the test after limit.
func (p *ariRig) until(tb testing.TB, what string, limit time.Duration, ok func() bool) {
	tb.Helper()
	deadline := time.After(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		done := ok()
		p.mu.Unlock()
		if done {
			return
		}
		select {
		case <-p.changed:
		case <-tick.C:
		case <-deadline:
			tb.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}

// caughtUp reports whether every event the source has read so far was applied; call it with
// p.mu held (in a condition of until).
func (p *ariRig) caughtUp() bool { return p.counted == p.src.Status().Events }

// all returns the records so far.
func (p *ariRig) all() []call.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.records)
}

// open returns the number of calls in progress.
func (p *ariRig) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.b.Open()
}

// transitions returns the Connected, Disconnected and SnapshotEnd events so far.
func (p *ariRig) transitions() []asterisk.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.links)
}

// finished reports whether every replay has sent its last message.
func finished(calls ...*fakepbx.ARICall) bool {
	for _, c := range calls {
		select {
		case <-c.Done():
		default:
			return false
		}
	}
	return true
}

// transcript returns the ARI messages of a scenario, one a line.
func transcript(tb testing.TB, scenario string) []byte {
	tb.Helper()
	data, err := transcripts.ARI(scenario)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// lines counts the messages of an ARI transcript.
func lines(tb testing.TB, scenario string) int64 {
	tb.Helper()
	return int64(bytes.Count(bytes.TrimSpace(transcript(tb, scenario)), []byte("\n")) + 1)
}

// fileRecords replays a transcript file with replay.ARI.
func fileRecords(tb testing.TB, scenario string) []call.Record {
	tb.Helper()
	var out bytes.Buffer
	if err := replay.ARI(bytes.NewReader(transcript(tb, scenario)), labOptions(tb), &out); err != nil {
		tb.Fatal(err)
	}
	var recs []call.Record
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r call.Record
		if err := dec.Decode(&r); err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

var uidRE = regexp.MustCompile(`\d{9,}\.\d+`)

// unmap turns a record of a replay back into the transcript's ids and times, using the fresh →
// original id map and the replay's time shift.
func unmap(r call.Record, back map[string]string, shift time.Duration) call.Record {
	mapID := func(s string) string {
		if o, ok := back[s]; ok {
			return o
		}
		return s
	}
	r.CallID = mapID(r.CallID)
	r.Recording = uidRE.ReplaceAllStringFunc(r.Recording, mapID)
	r.StartedAt = r.StartedAt.Add(-shift)
	r.EndedAt = r.EndedAt.Add(-shift)
	if r.AnsweredAt != nil {
		t := r.AnsweredAt.Add(-shift)
		r.AnsweredAt = &t
	}
	r.Legs = slices.Clone(r.Legs)
	for i := range r.Legs {
		l := &r.Legs[i]
		if l.AnsweredAt != nil {
			t := l.AnsweredAt.Add(-shift)
			l.AnsweredAt = &t
		}
		if l.EndedAt != nil {
			t := l.EndedAt.Add(-shift)
			l.EndedAt = &t
		}
	}
	r.Transfers = slices.Clone(r.Transfers)
	for i := range r.Transfers {
		r.Transfers[i].At = r.Transfers[i].At.Add(-shift)
	}
	return r
}

func sortRecords(rs []call.Record) {
	slices.SortFunc(rs, func(a, b call.Record) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.CallID, b.CallID)
	})
}

// outcome is what a call must come out as whatever happened to the connection: everything
// but times, durations and the "resynced" flag.
type outcome struct {
	Direction   call.Direction
	Disposition call.Disposition
	AnsweredBy  string
	Customer    string
	Line        string
	Rang        string
	Legs        string
	Transfers   string
	HangupCause int
	Flags       string
	CallerExt   string
}

func outcomeOf(r call.Record) outcome {
	var legs, trs []string
	for _, l := range r.Legs {
		legs = append(legs, l.Ext)
	}
	for _, tr := range r.Transfers {
		trs = append(trs, tr.Kind+":"+tr.From+">"+tr.To)
	}
	flags := slices.DeleteFunc(slices.Clone(r.Flags), func(f string) bool { return f == call.FlagResynced })
	return outcome{r.Direction, r.Disposition, r.AnsweredBy, r.Customer, r.Line,
		strings.Join(r.Rang, ","), strings.Join(legs, ","), strings.Join(trs, ","), r.HangupCause,
		strings.Join(flags, ","), r.CallerExt}
}

func sortOutcomes(o []outcome) []outcome {
	o = slices.Clone(o)
	slices.SortFunc(o, func(a, b outcome) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return o
}

// wantOutcomes replays the transcripts' files.
func wantOutcomes(t *testing.T, scenarios []string) map[string][]outcome {
	t.Helper()
	want := map[string][]outcome{}
	for _, sc := range scenarios {
		for _, r := range fileRecords(t, sc) {
			want[sc] = append(want[sc], outcomeOf(r))
		}
	}
	return want
}

// gotOutcomes groups the model's records by the scenario whose replay made them.
func gotOutcomes(t *testing.T, recs []call.Record, calls []*fakepbx.ARICall) (map[string][]outcome, int) {
	t.Helper()
	scenarioOf := map[string]string{}
	for _, c := range calls {
		for _, fresh := range c.IDs() {
			scenarioOf[fresh] = c.Scenario
		}
	}
	got := map[string][]outcome{}
	resynced := 0
	for _, rec := range recs {
		sc, ok := scenarioOf[rec.CallID]
		if !ok {
			t.Errorf("record of a call no replay made: %+v", rec)
			continue
		}
		got[sc] = append(got[sc], outcomeOf(rec))
		if rec.HasFlag(call.FlagResynced) {
			resynced++
		}
	}
	return got, resynced
}

func compareOutcomes(t *testing.T, want, got map[string][]outcome) {
	t.Helper()
	for sc, w := range want {
		if g := got[sc]; !slices.Equal(sortOutcomes(w), sortOutcomes(g)) {
			t.Errorf("%s:\n got %+v\nwant %+v", sc, sortOutcomes(g), sortOutcomes(w))
		}
	}
}
