package e2e_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// BenchmarkARISourceIntoCallModel measures messages per second end to end into the call model;
// an operation is one replay of the "concurrent" transcript (20 calls, 2,610 messages), which
// the fake ARI server renders with fresh ids and sends over a loopback websocket, the Source
// reads and decodes, and the rig's consumer applies to a callmodel.Builder. Fake server, client and model share the
// process (and its CPUs), so the figure is a lower bound. asterisk/ari's
// BenchmarkSourceEndToEnd is the same without the model.
func BenchmarkARISourceIntoCallModel(b *testing.B) {
	p := startARIRig(b, fakepbx.ARIConfig{Speed: math.Inf(1)}, nil)
	per := lines(b, "concurrent")
	var want int64
	for b.Loop() {
		played, err := p.srv.Play(context.Background(), "concurrent")
		if err != nil {
			b.Fatal(err)
		}
		want += per
		p.until(b, "every message applied", time.Minute, func() bool { return p.read == want })
		<-played.Done()
	}
	p.mu.Lock()
	applied := p.applied
	p.mu.Unlock()
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(applied)/b.Elapsed().Seconds(), "events/s")
	if len(p.all()) == 0 {
		b.Error("no record built")
	}
}
