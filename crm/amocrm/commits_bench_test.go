package amocrm

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// BenchmarkCallCommits delivers one answered inbound call per iteration through a real outbox as
// the daemon does (Enqueue, Lease, Deliver, Ack) and reports the outbox's commits per call:
// fsync'd (durable) and lazy (committed, not fsync'd). The goal is ≤ 2 durable commits per call:
// the record and its acknowledgement.
func BenchmarkCallCommits(b *testing.B) {
	fake := fakecrm.NewAmoDemo(fakecrm.AmoOptions{Flavor: TypeAmoCRM})
	srv := httptest.NewServer(fake)
	b.Cleanup(srv.Close)
	st, err := outbox.Open(context.Background(), filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	cfg := NewConfig(TypeAmoCRM)
	cfg.Subdomain = "romashka"
	cfg.BaseURL = srv.URL
	cfg.AuthorizeURL = srv.URL + "/oauth"
	cfg.Auth.ClientID = fakecrm.DemoClientID
	cfg.Auth.ClientSecret = configs.NewSecret(fakecrm.DemoClientSecret)
	cfg.Auth.RedirectURI = testRedirect
	cfg.Users = map[string]int64{"101": 504141, "102": 504142, "103": 504143}
	cfg.DefaultUser = 504143
	cfg.Batch.Window = time.Millisecond
	dir := b.TempDir()
	ctx := context.Background()
	if _, err := ExchangeCodeWith(ctx, cfg, dir, fake.IssueCode("romashka"), ExchangeOptions{Type: TypeAmoCRM}); err != nil {
		b.Fatal(err)
	}
	fake.ResetRateLimit()
	a, err := New(crm.Params{Name: "amo", Type: TypeAmoCRM, Config: cfg, StateDir: dir, Metrics: prometheus.NewRegistry(),
		Calls: st.CallState("amo"), RouteURL: "https://pbx.example.com/crm/amo"})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close(context.Background()) })
	play := func(i int) {
		rec := answered(i)
		if err := st.Enqueue(ctx, outbox.Entry{Key: rec.Key(), StartedAt: rec.StartedAt, Payload: []byte(`{}`), Connectors: []string{"amo"}}); err != nil {
			b.Fatal(err)
		}
		rows, err := st.Lease(ctx, "amo", 1, time.Minute)
		if err != nil || len(rows) != 1 {
			b.Fatalf("lease: %d rows, %v", len(rows), err)
		}
		if err := a.Deliver(ctx, rec); err != nil {
			b.Fatalf("deliver: %v", err)
		}
		if err := st.Ack(ctx, rows[0]); err != nil {
			b.Fatal(err)
		}
	}
	play(0) // the first call loads the users and the pipelines
	w0 := st.WriterStats()
	b.ResetTimer()
	for i := range b.N {
		play(i + 1)
	}
	b.StopTimer()
	w1 := st.WriterStats()
	b.ReportMetric(float64(w1.DurableCommits-w0.DurableCommits)/float64(b.N), "fsync-commits/call")
	b.ReportMetric(float64(w1.LazyCommits-w0.LazyCommits)/float64(b.N), "lazy-commits/call")
	b.ReportMetric(float64(w1.Writes-w0.Writes)/float64(b.N), "writes/call")
}
