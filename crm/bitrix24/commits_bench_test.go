package bitrix24

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
)

// BenchmarkCallCommits plays one answered inbound call per iteration as the daemon does: its live
// events (ring, answer, hangup: register with the card, hide), then the record through a real
// outbox (Enqueue, Lease, Deliver, Ack), and reports the outbox's commits per call: fsync'd
// (durable) and lazy (committed, not fsync'd). The goal is ≤ 2 durable commits per call: the
// record and its acknowledgement.
func BenchmarkCallCommits(b *testing.B) {
	f := crmtest.StartBitrix24(b)
	st, err := outbox.Open(context.Background(), filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	e := newEnv(b, f, func(p *crm.Params, _ *Config) { p.Calls = st.CallState("b24") })
	ctx := context.Background()
	base := time.Now().Add(-time.Minute)
	// play plays call i as if it had begun ago. The first call, before the measured ones, is the
	// adapter's first live event (see fresh) and loads the users.
	play := func(i int, ago time.Duration) {
		id := fmt.Sprintf("%d.%d", base.Unix(), i)
		start := time.Now().Add(-ago)
		ev := func(kind call.LiveKind, ext string) {
			if err := e.a.Live(ctx, &call.Live{Kind: kind, CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567",
				Line: "+74951112233", Ext: ext, At: time.Now().Add(-ago), StartedAt: start}); err != nil {
				b.Fatalf("live %s: %v", kind, err)
			}
		}
		ev(call.LiveRinging, "101")
		ev(call.LiveAnswered, "101")
		ev(call.LiveHangup, "")
		ans := start.Add(time.Millisecond)
		end := time.Now()
		rec := &call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: "+74951112233",
			StartedAt: start, AnsweredAt: &ans, EndedAt: end, Disposition: call.Answered, AnsweredBy: "101", Rang: []string{"101"},
			TalkSeconds: 3, Legs: []call.Leg{{Ext: "101", AnsweredAt: &ans, EndedAt: &end, TalkSeconds: 3}}}
		if err := st.Enqueue(ctx, outbox.Entry{Key: rec.Key(), StartedAt: start, Payload: []byte(`{}`), Connectors: []string{"b24"}}); err != nil {
			b.Fatal(err)
		}
		rows, err := st.Lease(ctx, "b24", 1, time.Minute)
		if err != nil || len(rows) != 1 {
			b.Fatalf("lease: %d rows, %v", len(rows), err)
		}
		if err := e.a.Deliver(ctx, rec); err != nil {
			b.Fatalf("deliver: %v", err)
		}
		if err := st.Ack(ctx, rows[0]); err != nil {
			b.Fatal(err)
		}
	}
	play(0, 10*time.Second) // the measured calls begin well after it (liveFreshMargin)
	w0 := st.WriterStats()
	b.ResetTimer()
	for i := range b.N {
		play(i+1, 0)
	}
	b.StopTimer()
	w1 := st.WriterStats()
	b.ReportMetric(float64(w1.DurableCommits-w0.DurableCommits)/float64(b.N), "fsync-commits/call")
	b.ReportMetric(float64(w1.LazyCommits-w0.LazyCommits)/float64(b.N), "lazy-commits/call")
	b.ReportMetric(float64(w1.Writes-w0.Writes)/float64(b.N), "writes/call")
}
