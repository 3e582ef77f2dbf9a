package ami_test

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
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
