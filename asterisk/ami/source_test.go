package ami_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

func startPBX(t *testing.T, cfg fakepbx.Config) *fakepbx.Server {
	t.Helper()
	srv, err := fakepbx.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func pbxOptions(srv *fakepbx.Server) ami.Options {
	return ami.Options{
		Name: "lab", Address: srv.Addr(), Username: srv.Username(), Secret: srv.Secret(),
		Events:  "on",
		Backoff: ami.Backoff{Initial: 200 * time.Millisecond, Max: time.Second},
	}
}

// running is a Source running in the background; Stop cancels it and checks Run's result.
type running struct {
	src    *ami.Source
	out    chan asterisk.Event
	cancel context.CancelFunc
	done   chan error
}

func runSource(t *testing.T, o ami.Options) *running {
	t.Helper()
	src, err := ami.NewSource(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{src: src, out: make(chan asterisk.Event, 100000), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, r.out) }()
	t.Cleanup(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

// next returns the next event for which keep is true, failing after timeout.
func (r *running) next(t *testing.T, timeout time.Duration, keep func(asterisk.Event) bool) asterisk.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-r.out:
			if keep == nil || keep(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no matching event within %v", timeout)
		}
	}
}

func ofType(ts ...asterisk.Type) func(asterisk.Event) bool {
	return func(ev asterisk.Event) bool {
		for _, t := range ts {
			if ev.Type == t {
				return true
			}
		}
		return false
	}
}

// expectedNames returns the names of the events a Source forwards for a transcript (known types
// only), in order.
func expectedNames(t *testing.T, scenario string) []string {
	t.Helper()
	return expectedNamesFiltered(t, scenario, true)
}

// expectedNamesFiltered: the names a Source sends for a scenario, through the default read-time
// filter (pbxOptions) or with KeepAllEvents.
func expectedNamesFiltered(t *testing.T, scenario string, filtered bool) []string {
	t.Helper()
	data, err := transcripts.AMI(scenario)
	if err != nil {
		t.Fatal(err)
	}
	r := ami.NewReader(bytes.NewReader(data))
	if filtered {
		r.SetFilter(ami.SourceFilter(nil))
	}
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		f, err := r.ReadFrame()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		ev, ok := ami.ToEvent(f, "lab", time.Now())
		if ok && ev.Type != asterisk.TypeUnknown {
			names = append(names, ev.Name)
		}
	}
}

func TestDialLoginMethods(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{})
	for _, auth := range []string{ami.AuthPlain, ami.AuthMD5} {
		o := pbxOptions(srv)
		o.Auth = auth
		c, err := ami.Dial(context.Background(), o)
		if err != nil {
			t.Fatalf("%s: %v", auth, err)
		}
		if rtt, err := c.Ping(context.Background()); err != nil || rtt <= 0 {
			t.Errorf("%s: ping %v %v", auth, rtt, err)
		}
		if err := c.Logoff(context.Background()); err != nil {
			t.Errorf("%s: logoff: %v", auth, err)
		}
		_ = c.Close()

		o.Secret = "wrong"
		if _, err := ami.Dial(context.Background(), o); !errors.Is(err, ami.ErrAuthFailed) {
			t.Errorf("%s with a wrong secret: got %v, want ErrAuthFailed", auth, err)
		}
	}
}

// TestSourceDeliversReplay: every event of a replayed transcript arrives, in order, normalised,
// with the fresh ids of the replay.
func TestSourceDeliversReplay(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: math.Inf(1)})
	reg := prometheus.NewRegistry()
	o := pbxOptions(srv)
	o.Registerer = reg
	r := runSource(t, o)
	ev := r.next(t, 5*time.Second, nil)
	if ev.Type != asterisk.TypeConnected || !ev.Resync || ev.PBX != "lab" {
		t.Fatalf("first event %+v, want Connected with the snapshot announced", ev)
	}
	if ev := r.next(t, 5*time.Second, nil); ev.Type != asterisk.TypeSnapshotEnd || ev.Vars["channels"] != "0" {
		t.Fatalf("second event %+v, want the empty snapshot's end", ev)
	}
	select {
	case <-r.src.Ready():
	default:
		t.Fatal("Ready not closed after the first login")
	}
	for _, sc := range []string{"inbound_answered", "attended_transfer"} {
		played, err := srv.Play(context.Background(), sc)
		if err != nil {
			t.Fatal(err)
		}
		want := expectedNames(t, sc)
		linked := played.MapID(firstLinkedid(t, sc))
		for i, name := range want {
			ev := r.next(t, 5*time.Second, nil)
			if ev.Name != name {
				t.Fatalf("%s: event %d is %s, want %s", sc, i, ev.Name, name)
			}
			if ev.Chan.Linkedid != "" && ev.Chan.Linkedid != linked {
				t.Fatalf("%s: event %d Linkedid %q, want the replay's %q", sc, i, ev.Chan.Linkedid, linked)
			}
		}
	}
	st := r.src.Status()
	if !st.Connected || st.Kind != "ami" || st.PBXVersion != "22.10.1" || st.Events == 0 || !st.FirstLogin {
		t.Errorf("status %+v", st)
	}
	if v := testutil.ToFloat64(gauge(t, reg, "pbxbridge_ami_connected")); v != 1 {
		t.Errorf("connected gauge %v", v)
	}
	if n, err := testutil.GatherAndCount(reg, "pbxbridge_ami_events_total"); err != nil || n == 0 {
		t.Errorf("events_total series %d %v", n, err)
	}
	if v := counter(t, reg, "pbxbridge_ami_events_discarded_total"); v == 0 {
		t.Error("no event discarded at read time (CEL, DeviceStateChange)")
	}
}

// TestSourceFilterOptions: KeepAllEvents delivers every event (CEL included) whole; with
// VarSetVariables, a VarSet of a listed variable arrives whole and the others arrive trimmed to
// the channel identity, and are counted.
func TestSourceFilterOptions(t *testing.T) {
	t.Parallel()
	for _, keepAll := range []bool{true, false} {
		srv := startPBX(t, fakepbx.Config{Speed: math.Inf(1)})
		reg := prometheus.NewRegistry()
		o := pbxOptions(srv)
		o.Registerer = reg
		o.KeepAllEvents = keepAll
		o.VarSetVariables = []string{"LAB_DID"}
		r := runSource(t, o)
		for range 2 { // Connected, SnapshotEnd
			r.next(t, 5*time.Second, nil)
		}
		if _, err := srv.Play(context.Background(), "inbound_answered"); err != nil {
			t.Fatal(err)
		}
		want := expectedNamesFiltered(t, "inbound_answered", !keepAll)
		var kept, trimmed int
		for i, name := range want {
			ev := r.next(t, 5*time.Second, nil)
			if ev.Name != name {
				t.Fatalf("keepAll=%v: event %d is %s, want %s", keepAll, i, ev.Name, name)
			}
			if ev.Type != asterisk.TypeVarSet {
				continue
			}
			if ev.Chan.Uniqueid == "" || ev.Chan.Linkedid == "" || ev.Variable == "" {
				t.Fatalf("keepAll=%v: VarSet without its channel or variable: %+v", keepAll, ev)
			}
			switch {
			case ev.Chan.Name != "":
				kept++
			case keepAll || strings.TrimLeft(ev.Variable, "_") == "LAB_DID":
				t.Fatalf("keepAll=%v: VarSet %s trimmed", keepAll, ev.Variable)
			default:
				trimmed++
			}
		}
		discarded := counter(t, reg, "pbxbridge_ami_events_discarded_total")
		trims := counter(t, reg, "pbxbridge_ami_varsets_trimmed_total")
		if keepAll {
			if trimmed != 0 || discarded != 0 || trims != 0 || !slices.Contains(want, "CEL") {
				t.Errorf("KeepAllEvents: %d trimmed, metrics %v discarded %v trimmed, CEL expected: %v", trimmed, discarded, trims, slices.Contains(want, "CEL"))
			}
		} else if kept == 0 || trimmed == 0 || discarded == 0 || float64(trimmed) != trims || slices.Contains(want, "CEL") {
			t.Errorf("filtered: %d VarSets whole, %d trimmed; metrics %v discarded %v trimmed", kept, trimmed, discarded, trims)
		}
	}
}

// gauge returns the collector of a metric family with one series, for testutil.ToFloat64.
func gauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 {
				return mf.GetMetric()[0].GetGauge().GetValue()
			})
		}
	}
	t.Fatalf("metric %s not found", name)
	return nil
}

// counter returns the value of a counter family with one series.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// firstLinkedid returns the Linkedid of the first channel of a transcript.
func firstLinkedid(t *testing.T, scenario string) string {
	t.Helper()
	data, _ := transcripts.AMI(scenario)
	r := ami.NewReader(bytes.NewReader(data))
	_, _ = r.ReadBanner()
	for {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("%s: no Newchannel", scenario)
		}
		if f.Event() == "Newchannel" {
			return f.Get("Linkedid")
		}
	}
}

// TestSourceSnapshotOnFirstLogin: calls already in progress when the source starts (a daemon
// restarted or crashed in the middle of them) are in the snapshot of the first login, so the
// call model learns them whole instead of from their remaining events only.
func TestSourceSnapshotOnFirstLogin(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: 4})
	played, err := srv.Play(context.Background(), "attended_transfer") // ~17 s: 4.25 s here
	if err != nil {
		t.Fatal(err)
	}
	for played.Position() < 3*time.Second { // well under way: several channels exist
		time.Sleep(10 * time.Millisecond)
	}
	r := runSource(t, pbxOptions(srv))
	if ev := r.next(t, 5*time.Second, nil); ev.Type != asterisk.TypeConnected || !ev.Resync {
		t.Fatalf("first event %+v, want Connected with the snapshot announced", ev)
	}
	snap, end := collectSnapshot(t, r, map[string]bool{})
	if end.Vars["error"] != "" {
		t.Fatalf("snapshot failed: %v", end.Vars)
	}
	linked := played.MapID(firstLinkedid(t, "attended_transfer"))
	if len(snap) == 0 {
		t.Fatal("the call in progress is missing from the first snapshot")
	}
	for _, ev := range snap {
		if ev.Chan.Linkedid != linked {
			t.Errorf("snapshot channel %s of unknown call %s", ev.Chan.Name, ev.Chan.Linkedid)
		}
	}
}

// TestSourceReconnectsAfterDrop: the fake PBX drops the connection in the middle of a call; the
// source announces the loss, reconnects within 2 s, and resyncs: a snapshot of exactly the
// channels alive at that point, each of which later hangs up.
func TestSourceReconnectsAfterDrop(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: 4})
	r := runSource(t, pbxOptions(srv))
	r.next(t, 5*time.Second, ofType(asterisk.TypeConnected))
	if _, err := srv.Play(context.Background(), "attended_transfer"); err != nil {
		t.Fatal(err)
	}
	alive := map[string]bool{}
	for len(alive) < 4 { // the call is well under way
		ev := r.next(t, 10*time.Second, nil)
		track(alive, ev)
	}
	dropped := time.Now()
	if n := srv.DropClients(); n != 1 {
		t.Fatalf("dropped %d clients", n)
	}
	// Events already in flight may still arrive before the loss is noticed.
	for {
		ev := r.next(t, 5*time.Second, nil)
		if ev.Type == asterisk.TypeDisconnected {
			if ev.Vars["error"] == "" || ev.Time.IsZero() {
				t.Errorf("disconnected event %+v", ev)
			}
			break
		}
		track(alive, ev)
	}
	ev := r.next(t, 5*time.Second, nil)
	if ev.Type != asterisk.TypeConnected || !ev.Resync {
		t.Fatalf("after the drop: %+v, want Connected with Resync", ev)
	}
	if d := time.Since(dropped); d > 2*time.Second {
		t.Errorf("reconnected after %v, want within 2 s", d)
	}
	snap, end := collectSnapshot(t, r, alive)
	if end.Vars["error"] != "" {
		t.Fatalf("snapshot failed: %v", end.Vars)
	}
	if len(snap) == 0 {
		t.Fatal("empty snapshot in the middle of a call")
	}
	// Every channel of the snapshot hangs up later; nothing else reappears.
	for len(snap) > 0 {
		ev := r.next(t, 20*time.Second, nil)
		if ev.Type == asterisk.TypeHangup {
			delete(snap, ev.Chan.Uniqueid)
		}
	}
	if st := r.src.Status(); st.Reconnects != 1 {
		t.Errorf("status reconnects %d", st.Reconnects)
	}
}

// track maintains the set of live channels from the event stream.
func track(alive map[string]bool, ev asterisk.Event) {
	switch ev.Type {
	case asterisk.TypeNewChannel:
		alive[ev.Chan.Uniqueid] = true
	case asterisk.TypeHangup:
		delete(alive, ev.Chan.Uniqueid)
	}
}

// collectSnapshot reads events up to TypeSnapshotEnd and checks the snapshot against what the
// stream said before the outage: a snapshot channel unknown before the outage must have been
// created during it. It returns the snapshot's channels (by Uniqueid).
func collectSnapshot(t *testing.T, r *running, aliveBefore map[string]bool) (map[string]asterisk.Event, asterisk.Event) {
	t.Helper()
	snap := map[string]asterisk.Event{}
	for {
		ev := r.next(t, 5*time.Second, nil)
		switch ev.Type {
		case asterisk.TypeSnapshot:
			if ev.Chan.Uniqueid == "" || ev.Chan.Name == "" || ev.Chan.Linkedid == "" {
				t.Errorf("snapshot entry without ids: %+v", ev.Chan)
			}
			snap[ev.Chan.Uniqueid] = ev
		case asterisk.TypeSnapshotEnd:
			if !strings.Contains(ev.Vars["channels"], "") || ev.Vars["channels"] == "" && ev.Vars["error"] == "" {
				t.Errorf("snapshot end %+v", ev.Vars)
			}
			return snap, ev
		case asterisk.TypeHangup:
			delete(snap, ev.Chan.Uniqueid) // interleaved live events keep wire order
		}
	}
}

// TestSourceResyncAfterOutage: calls that end while AMI is unreachable are absent from the
// snapshot; calls still up are present.
func TestSourceResyncAfterOutage(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: 4})
	r := runSource(t, pbxOptions(srv))
	r.next(t, 5*time.Second, ofType(asterisk.TypeConnected))
	short, err := srv.Play(context.Background(), "inbound_answered") // ~5 s: 1.25 s here
	if err != nil {
		t.Fatal(err)
	}
	long, err := srv.Play(context.Background(), "attended_transfer") // ~17 s: 4.25 s here
	if err != nil {
		t.Fatal(err)
	}
	alive := map[string]bool{}
	for len(alive) < 4 {
		track(alive, r.next(t, 10*time.Second, nil))
	}
	srv.Outage(1500 * time.Millisecond)
	for {
		ev := r.next(t, 5*time.Second, nil)
		if ev.Type == asterisk.TypeDisconnected {
			break
		}
		track(alive, ev)
	}
	select {
	case <-short.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("short call did not finish")
	}
	ev := r.next(t, 10*time.Second, ofType(asterisk.TypeConnected))
	if !ev.Resync {
		t.Fatal("Connected without Resync")
	}
	snap, _ := collectSnapshot(t, r, alive)
	shortLinked := short.MapID(firstLinkedid(t, "inbound_answered"))
	longLinked := long.MapID(firstLinkedid(t, "attended_transfer"))
	for _, ev := range snap {
		if ev.Chan.Linkedid == shortLinked {
			t.Errorf("snapshot has channel %s of the call that ended during the outage", ev.Chan.Name)
		}
		if ev.Chan.Linkedid != longLinked {
			t.Errorf("snapshot channel %s of unknown call %s", ev.Chan.Name, ev.Chan.Linkedid)
		}
	}
	if len(snap) == 0 {
		t.Error("the long call is missing from the snapshot")
	}
}

// TestSourceDetectsHalfOpen: the PBX stops answering without closing the socket; keepalive
// detects it and the source reconnects.
func TestSourceDetectsHalfOpen(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: math.Inf(1)})
	o := pbxOptions(srv)
	o.PingInterval, o.PingTimeout = 150*time.Millisecond, 150*time.Millisecond
	r := runSource(t, o)
	r.next(t, 5*time.Second, ofType(asterisk.TypeConnected))
	stalled := time.Now()
	if n := srv.StallClients(); n != 1 {
		t.Fatalf("stalled %d", n)
	}
	ev := r.next(t, 5*time.Second, ofType(asterisk.TypeDisconnected))
	if !strings.Contains(ev.Vars["error"], "keepalive") {
		t.Errorf("disconnect reason %q", ev.Vars["error"])
	}
	t.Logf("half-open connection detected after %v (bound %v)", time.Since(stalled), o.PingInterval+o.PingTimeout)
	ev = r.next(t, 5*time.Second, ofType(asterisk.TypeConnected))
	if !ev.Resync {
		t.Error("reconnect without resync")
	}
	r.next(t, 5*time.Second, ofType(asterisk.TypeSnapshotEnd))
}

// TestSourceRetriesRejectedLogin: a wrong secret is reported in Status and retried (slowly);
// Run still ends cleanly on cancel.
func TestSourceRetriesRejectedLogin(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{})
	o := pbxOptions(srv)
	o.Secret = "wrong"
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	r := runSource(t, o)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := r.src.Status()
		if strings.Contains(st.LastError, "authentication failed") {
			if st.Connected || st.FirstLogin || !strings.Contains(st.Description, "login refused") {
				t.Errorf("status %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never reported the rejected login: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-r.src.Ready():
		t.Error("Ready closed without a login")
	default:
	}
}

func TestSourceOptionsAndDuplicateMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	o := ami.Options{Name: "a", Address: "127.0.0.1:5038", Username: "u", Registerer: reg}
	if _, err := ami.NewSource(o); err != nil {
		t.Fatal(err)
	}
	if _, err := ami.NewSource(o); err == nil || !strings.Contains(err.Error(), "duplicate pbx name") {
		t.Errorf("second source with the same name: %v", err)
	}
	o.Name = "b"
	if _, err := ami.NewSource(o); err != nil {
		t.Errorf("second PBX on the same registry: %v", err)
	}
	if _, err := ami.NewSource(ami.Options{Address: "nope", Username: "u"}); err == nil {
		t.Error("bad address accepted")
	}
	src, _ := ami.NewSource(ami.Options{Name: "c", Address: "127.0.0.1:5038", Username: "u"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := src.Run(ctx, make(chan asterisk.Event)); !errors.Is(err, context.Canceled) {
		t.Errorf("Run on a cancelled ctx: %v", err)
	}
	if err := src.Run(context.Background(), make(chan asterisk.Event)); err == nil {
		t.Error("second Run accepted")
	}
}

// TestSourceBackpressure: a consumer that stops reading slows the source down; nothing is
// dropped and the connection survives.
func TestSourceBackpressure(t *testing.T) {
	// Not parallel: it measures real-time keepalive bounds, which a loaded CPU stretches.
	srv := startPBX(t, fakepbx.Config{Speed: math.Inf(1)})
	o := pbxOptions(srv)
	o.PingInterval, o.PingTimeout = 250*time.Millisecond, 250*time.Millisecond
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	src, err := ami.NewSource(o)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan asterisk.Event) // unbuffered: every send waits for us
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = src.Run(ctx, out) }()
	defer func() { cancel(); wg.Wait() }()
	if ev := <-out; ev.Type != asterisk.TypeConnected {
		t.Fatalf("first %v", ev.Type)
	}
	if _, err := srv.Play(context.Background(), "concurrent"); err != nil {
		t.Fatal(err)
	}
	want := len(expectedNames(t, "concurrent"))
	time.Sleep(2 * time.Second) // four keepalive bounds without reading
	for i := range want {
		select {
		case ev := <-out:
			if ev.Type == asterisk.TypeDisconnected || ev.Type == asterisk.TypeConnected {
				t.Fatalf("event %d: connection cycled under backpressure: %+v", i, ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d events", i, want)
		}
	}
	// The reader waited for us (in the reader goroutine itself) and says so.
	if blocked := counter(t, reg, "pbxbridge_ami_out_blocked_seconds_total"); blocked < 1.5 {
		t.Errorf("out_blocked_seconds_total %v, want the ~2 s we did not read", blocked)
	}
}
