package outbox

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// deliverAfter leases the one due row of (key, connector) and acks it d later on the clock.
func deliverAfter(t *testing.T, s *Store, clock *fakeClock, key, connector string, d time.Duration, bury bool) {
	t.Helper()
	rows := mustLease(t, s, connector, 100, time.Hour)
	i := slices.IndexFunc(rows, func(r Row) bool { return r.Key == key })
	if i < 0 {
		t.Fatalf("no due row %s for %s", key, connector)
	}
	clock.Advance(d)
	var err error
	if bury {
		err = s.Bury(t.Context(), rows[i], "refused")
	} else {
		err = s.Ack(t.Context(), rows[i])
	}
	if err != nil {
		t.Fatal(err)
	}
	others := slices.Delete(rows, i, i+1)
	if len(others) > 0 {
		if _, err := s.Release(t.Context(), others...); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(-d)
}

// Deliveries buckets the rows by the hour their call was enqueued (the store's clock) and
// measures enqueue → done per connector; pending and dead rows are counted, rows enqueued
// outside the range and imported backfills left out.
func TestDeliveries(t *testing.T) {
	t.Parallel()
	clock := newFakeClock() // 12:00 UTC
	s := openTest(t, Options{Clock: clock.Now})
	base := clock.Now().Add(-2 * time.Hour) // 10:00
	at := func(d time.Duration) { clock.Advance(base.Add(d).Sub(clock.Now())) }
	enqueue := func(key string, started time.Time, conns ...string) {
		t.Helper()
		mustEnqueue(t, s, entry(key, started, conns...))
	}

	at(-10 * time.Minute) // 09:50: before the range
	enqueue("early", clock.Now().Add(-time.Minute), "c1")
	deliverAfter(t, s, clock, "early", "c1", time.Second, false)
	at(10 * time.Minute) // 10:10
	enqueue("a", base.Add(5*time.Minute), "c1", "c2")
	deliverAfter(t, s, clock, "a", "c1", 2*time.Second, false)
	deliverAfter(t, s, clock, "a", "c2", 10*time.Second, false)
	at(60 * time.Minute) // 11:00: a backfill of a call five days old
	enqueue("old", base.Add(-5*24*time.Hour), "c1")
	deliverAfter(t, s, clock, "old", "c1", time.Second, false)
	at(90 * time.Minute) // 11:30
	enqueue("b", clock.Now().Add(-time.Minute), "c1")
	deliverAfter(t, s, clock, "b", "c1", 4*time.Second, false)
	at(100 * time.Minute) // 11:40: stays pending
	enqueue("c", clock.Now().Add(-time.Minute), "c1")
	at(130 * time.Minute) // 12:10: a dead letter
	enqueue("d", clock.Now().Add(-time.Minute), "c1")
	deliverAfter(t, s, clock, "d", "c1", time.Second, true)

	got, err := s.Deliveries(t.Context(), ActivityQuery{Since: base, Bucket: time.Hour, Buckets: 3})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range got {
		for _, b := range c.Buckets {
			lines = append(lines, fmt.Sprintf("%s %s delivered=%d p50=%v p95=%v max=%v waiting=%d dead=%d",
				c.Connector, b.Start.Format("15:04"), b.Delivered, b.P50, b.P95, b.Max, b.Waiting, b.Dead))
		}
	}
	want := []string{
		"c1 10:00 delivered=1 p50=2s p95=2s max=2s waiting=0 dead=0",
		"c1 11:00 delivered=1 p50=4s p95=4s max=4s waiting=1 dead=0",
		"c1 12:00 delivered=0 p50=0s p95=0s max=0s waiting=0 dead=1",
		"c2 10:00 delivered=1 p50=10s p95=10s max=10s waiting=0 dead=0",
		"c2 11:00 delivered=0 p50=0s p95=0s max=0s waiting=0 dead=0",
		"c2 12:00 delivered=0 p50=0s p95=0s max=0s waiting=0 dead=0",
	}
	for _, c := range got {
		b := c.Total
		lines = append(lines, fmt.Sprintf("%s total %s delivered=%d p50=%v p95=%v max=%v waiting=%d dead=%d",
			c.Connector, b.Start.Format("15:04"), b.Delivered, b.P50, b.P95, b.Max, b.Waiting, b.Dead))
	}
	want = append(want,
		"c1 total 10:00 delivered=2 p50=2s p95=4s max=4s waiting=1 dead=1",
		"c2 total 10:00 delivered=1 p50=10s p95=10s max=10s waiting=0 dead=0")
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("deliveries:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// Percentiles are nearest-rank over the bucket's deliveries.
func TestDeliveriesPercentiles(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	since := clock.Now()
	for i := 1; i <= 20; i++ {
		key := fmt.Sprint("k", i)
		mustEnqueue(t, s, entry(key, clock.Now(), "c"))
		deliverAfter(t, s, clock, key, "c", time.Duration(i)*time.Second, false)
		clock.Advance(time.Minute)
	}
	got, err := s.Deliveries(t.Context(), ActivityQuery{Since: since, Bucket: time.Hour, Buckets: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("deliveries %+v", got)
	}
	if b := got[0].Buckets[0]; b.Delivered != 20 || b.P50 != 10*time.Second || b.P95 != 19*time.Second || b.Max != 20*time.Second {
		t.Errorf("bucket %+v, want 20 delivered, p50 10s, p95 19s, max 20s", b)
	}
	for _, q := range []ActivityQuery{{Bucket: time.Hour, Buckets: 1}, {Since: since, Buckets: 1}, {Since: since, Bucket: time.Hour}, {Since: since, Bucket: time.Hour, Buckets: MaxBuckets + 1}} {
		if _, err := s.Deliveries(t.Context(), q); !errors.Is(err, ErrInvalid) {
			t.Errorf("Deliveries(%+v): %v, want ErrInvalid", q, err)
		}
	}
}

// EachCall gives each call once whatever the number of its connectors, filters by payload
// content, and with a limit gives the newest calls first.
func TestEachCall(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now})
	t0 := clock.Now().Add(-time.Hour)
	payload := func(key, customer string) Entry {
		return Entry{Key: key, StartedAt: t0, Payload: []byte(`{"call_id":"` + key + `","customer":"` + customer + `"}`)}
	}
	for i, e := range []struct {
		key, customer string
		conns         []string
	}{
		{"k1", "+79001234567", []string{"b24", "amo", "kommo"}},
		{"k2", "+79005550000", []string{"kommo"}},
		{"k3", "+79001234567", []string{"amo", "b24"}},
		{"k4", "+74950000000", []string{"b24"}},
	} {
		en := payload(e.key, e.customer)
		en.StartedAt = t0.Add(time.Duration(i) * time.Minute)
		en.Connectors = e.conns
		mustEnqueue(t, s, en)
	}
	collect := func(q CallQuery) []string {
		t.Helper()
		var keys []string
		if err := s.EachCall(t.Context(), q, func(c CallRef) error {
			if !strings.Contains(string(c.Payload), c.Key) || c.StartedAt.Before(t0) {
				t.Errorf("call %+v", c)
			}
			keys = append(keys, c.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	all := collect(CallQuery{Since: t0})
	slices.Sort(all)
	if strings.Join(all, " ") != "k1 k2 k3 k4" {
		t.Errorf("all calls: %v", all)
	}
	if got := collect(CallQuery{Since: t0, Contains: []string{"9001234567", "74950000"}, Limit: 10}); strings.Join(got, " ") != "k4 k3 k1" {
		t.Errorf("search, newest first: %v", got)
	}
	if got := collect(CallQuery{Since: t0, Contains: []string{"9001_34567", "%"}}); len(got) != 0 {
		t.Errorf("wildcards are literal: %v", got)
	}
	if got := collect(CallQuery{Since: t0, Limit: 2}); strings.Join(got, " ") != "k4 k3" {
		t.Errorf("limit 2: %v", got)
	}
	if got := collect(CallQuery{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute), Limit: 10}); strings.Join(got, " ") != "k3 k2" {
		t.Errorf("range: %v", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.EachCall(t.Context(), CallQuery{Since: t0}, func(CallRef) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn's error: %v after %d calls", err, n)
	}
	for _, q := range []CallQuery{{}, {Since: t0, Limit: -1}, {Since: t0, Until: t0}, {Since: t0, Contains: []string{""}}} {
		if err := s.EachCall(t.Context(), q, func(CallRef) error { return nil }); !errors.Is(err, ErrInvalid) {
			t.Errorf("EachCall(%+v): %v, want ErrInvalid", q, err)
		}
	}
}

// Both queries read the (connector, started_at) index, one range per connector, instead of
// every row.
func TestActivityQueryPlans(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	calls, callArgs, err := callsQuery(CallQuery{Since: time.Unix(1, 0)}, time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	search, searchArgs, err := callsQuery(CallQuery{Since: time.Unix(1, 0), Contains: []string{"x"}, Limit: 5}, time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if plan := queryPlan(t, s, search, searchArgs...); !strings.Contains(plan, "SCAN o") {
		t.Errorf("the search does not read the table in order:\n%s", plan)
	}
	for name, q := range map[string][]any{"deliveries": {sqlDeliveries, 1, 2, 1, 2}, "calls": append([]any{calls}, callArgs...)} {
		text := queryPlan(t, s, q[0].(string), q[1:]...)
		if !strings.Contains(text, "outbox_started (connector=? AND started_at>? AND started_at<?)") || strings.Contains(text, "SCAN o\n") || strings.HasSuffix(text, "SCAN o") {
			t.Errorf("%s plan does not range-scan outbox_started per connector:\n%s", name, text)
		}
	}
}

// queryPlan is SQLite's plan of q, one step a line.
func queryPlan(t *testing.T, s *Store, q string, args ...any) string {
	t.Helper()
	rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// BenchmarkActivity: what the status page's 24-hour view and a number search cost on an outbox
// holding 30 days of a busy office: 3,000 calls a day, each for 3 connectors (270,000 rows of
// 600-byte payloads), delivered.
func BenchmarkActivity(b *testing.B) {
	clock := newFakeClock()
	s, err := Open(b.Context(), b.TempDir()+"/outbox.db", Options{Clock: clock.Now})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	ctx := b.Context()
	const days, perDay = 30, 3000
	end := clock.Now()
	start := end.Add(-days * 24 * time.Hour)
	step := 24 * time.Hour / perDay
	clock.Advance(start.Sub(end))
	payload := make([]byte, 600)
	for i := 0; i < days*perDay; i += 1000 {
		es := make([]Entry, 0, 1000)
		for j := i; j < i+1000; j++ {
			p := append([]byte(fmt.Sprintf(`{"call_id":"%d","customer":"+7900%07d"`, j, j)), payload[:560]...)
			es = append(es, Entry{Key: fmt.Sprint("lab/", j), StartedAt: clock.Now(), Payload: p, Connectors: []string{"amo", "b24", "kommo"}})
			clock.Advance(step)
		}
		if err := s.Enqueue(ctx, es...); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.w.ExecContext(ctx, `UPDATE outbox SET state = 'done', done_at = enqueued_at + (id % 5000) * 1000000`); err != nil {
		b.Fatal(err)
	}
	since := end.Add(-24 * time.Hour)
	b.Run("Deliveries24h", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Deliveries(ctx, ActivityQuery{Since: since, Bucket: time.Hour, Buckets: 24}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EachCall24h", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := s.EachCall(ctx, CallQuery{Since: since}, func(CallRef) error { n++; return nil }); err != nil || n != perDay {
				b.Fatal(err, n)
			}
		}
	})
	b.Run("Search30d", func(b *testing.B) {
		for b.Loop() {
			if err := s.EachCall(ctx, CallQuery{Since: start, Contains: []string{"9000012345"}, Limit: 50}, func(CallRef) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
}
