package ari_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// BenchmarkSourceEndToEnd measures messages per second end to end: the fake ARI server renders
// the "concurrent" transcript (20 calls, 2,610 messages) with fresh ids and sends it over a
// loopback websocket; the Source reads, decodes (ToEvent) and hands the events to a consumer,
// which discards them. Fake server and client share the process (and its CPUs), so the figure
// is a lower bound for the client alone. The same pipeline feeding the call model is
// connector/e2e's BenchmarkARISourceIntoCallModel.
func BenchmarkSourceEndToEnd(b *testing.B) {
	srv := startFake(b, fakepbx.ARIConfig{Speed: inf})
	opts := fastOptions(srv)
	opts.Logger = slog.New(slog.DiscardHandler)
	r := runSource(b, opts, 1024)
	if ev := r.next(b, 5*time.Second); ev.Type != asterisk.TypeConnected {
		b.Fatalf("first event %v", ev.Type)
	}
	ctx, cancel := context.WithCancel(context.Background())
	consumed := make(chan struct{})
	var forwarded atomic.Int64
	go func() {
		defer close(consumed)
		for {
			select {
			case <-r.out:
				forwarded.Add(1)
			case <-ctx.Done():
				return
			}
		}
	}()
	per := int64(messages(b, "concurrent"))
	plays := (int64(b.N) + per - 1) / per
	b.ResetTimer()
	start := time.Now()
	for range plays {
		played, err := srv.Play(context.Background(), "concurrent")
		if err != nil {
			b.Fatal(err)
		}
		<-played.Done()
	}
	want := plays * per
	for r.src.Status().Events < want {
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-consumed
	b.ReportMetric(float64(want)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(forwarded.Load())/elapsed.Seconds(), "events/s")
}
