package ami_test

import (
	"bytes"
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// BenchmarkSourceEndToEnd measures events/s from the fake PBX over a real loopback socket
// through a Source (reader, routing, ToEvent, metrics) to the consumer's channel. The fake PBX
// replays the "concurrent" transcript without delays, in a loop, in the same process: its CPU
// is part of the figure.
func BenchmarkSourceEndToEnd(b *testing.B) {
	srv, err := fakepbx.Start(fakepbx.Config{Speed: math.Inf(1)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	o := ami.Options{
		Name: "bench", Address: srv.Addr(), Username: srv.Username(), Secret: srv.Secret(),
		Events: "on", ForwardUnknown: true,
	}
	src, err := ami.NewSource(o)
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan asterisk.Event, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = src.Run(ctx, out) }()
	defer func() { cancel(); wg.Wait() }()
	if ev := <-out; ev.Type != asterisk.TypeConnected {
		b.Fatalf("first event %v", ev.Type)
	}
	// Keep the PBX busy until the benchmark has what it needs.
	pctx, stop := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for pctx.Err() == nil {
			c, err := srv.Play(pctx, "concurrent")
			if err != nil {
				return
			}
			<-c.Done()
		}
	}()
	b.ReportAllocs() // of the whole process: client and fake PBX
	b.ResetTimer()
	start, cpu0 := time.Now(), ami.CPUTime()
	for i := 0; i < b.N; i++ {
		<-out
	}
	elapsed, cpu := time.Since(start), ami.CPUTime()-cpu0
	b.StopTimer()
	stop()
	pwg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	if cpu > 0 {
		// CPU of the whole process: client and fake PBX together.
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "events/cpu-s")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
	}
}

// BenchmarkSourceCalls measures, per call, what the manager.conf event filter saves: the fake
// PBX replays every scenario in turn (one op = one scenario: one call, or a few for the
// transfers and concurrent), without delays, to a Source with the daemon's defaults (read-time
// filter on, the default variables kept), and a consumer that drains the events.
//
//   - none: no manager.conf filter;
//   - exclude-events: the fake PBX's ExcludeEvents knob drops every event name the transcripts
//     have that is not in ami.NeededEvents (what the name line of EventFilterLines does; every
//     VarSet still sent);
//   - eventfilter: the fake PBX applies EventFilterLines (advanced syntax, default variables)
//     with Asterisk's rules, VarSet line included.
//
// frames/call counts the frames the PBX wrote, events/call those the consumer received;
// cpu-us/call is the process's CPU (client and fake PBX: the PBX side saves too, as Asterisk
// would).
func BenchmarkSourceCalls(b *testing.B) {
	vars := []string{"MIXMONITOR_FILENAME", "PBXBRIDGE_ORIGINATE_ID", "FROM_DID"}
	lines, err := ami.EventFilterLines(ami.AdvancedFilter, vars)
	if err != nil {
		b.Fatal(err)
	}
	var exclude []string
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.AMI(name)
		if err != nil {
			b.Fatal(err)
		}
		for line := range bytes.Lines(data) {
			if ev, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("Event: ")); ok &&
				!slices.Contains(ami.NeededEvents(), string(ev)) && !slices.Contains(exclude, string(ev)) {
				exclude = append(exclude, string(ev))
			}
		}
	}
	for _, bc := range []struct {
		name string
		cfg  fakepbx.Config
	}{
		{"none", fakepbx.Config{}},
		{"exclude-events", fakepbx.Config{ExcludeEvents: exclude}},
		{"eventfilter", fakepbx.Config{EventFilter: lines}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.cfg.Speed = math.Inf(1)
			benchCalls(b, bc.cfg, vars)
		})
	}
}

func benchCalls(b *testing.B, cfg fakepbx.Config, vars []string) {
	b.Helper()
	srv, err := fakepbx.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	src, err := ami.NewSource(ami.Options{
		Name: "bench", Address: srv.Addr(), Username: srv.Username(), Secret: srv.Secret(),
		VarSetVariables: vars,
	})
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan asterisk.Event, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = src.Run(ctx, out) }()
	defer func() { cancel(); wg.Wait() }()
	for ev := range out { // past the login and the snapshot
		if ev.Type == asterisk.TypeSnapshotEnd {
			break
		}
	}
	var events atomic.Int64
	marker := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case ev := <-out:
				events.Add(1)
				if ev.Type == asterisk.TypeUserEvent && ev.Vars["UserEvent"] == "end" {
					marker <- struct{}{}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	scenarios := transcripts.Scenarios()
	b.ResetTimer()
	sent0, cpu0 := srv.Stats().EventsSent, ami.CPUTime()
	for i := 0; i < b.N; i++ {
		c, err := srv.Play(context.Background(), scenarios[i%len(scenarios)])
		if err != nil {
			b.Fatal(err)
		}
		<-c.Done()
	}
	srv.UserEvent("end") // everything before it has reached the consumer once it arrives
	<-marker
	cpu, sent := ami.CPUTime()-cpu0, srv.Stats().EventsSent-sent0
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(sent-1)/n, "frames/call")
	b.ReportMetric(float64(events.Load()-1)/n, "events/call")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-us/call")
	}
}
