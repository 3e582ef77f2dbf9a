package connector

import (
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// A run stores what the live events said about its open calls; the next run finishes the ones
// that are no longer up (answered or missed as they were), keeps those the model still has, and
// never sees the finished ones.
func TestLedgerRecoversCallsThatEndedWhileDown(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	store, err := outbox.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	live := func(kind call.LiveKind, id, ext string, at time.Time) *call.Live {
		return &call.Live{Kind: kind, CallID: id, PBX: "office", Direction: call.Inbound, Customer: "+79001234567",
			Line: "+74951112233", Ext: ext, At: at, StartedAt: t0}
	}
	run1 := newLedger(store, "office", slog.New(slog.DiscardHandler), clock)
	run1.live(live(call.LiveRinging, "A", "101", t0.Add(time.Second)))
	run1.live(live(call.LiveRinging, "A", "102", t0.Add(time.Second)))
	run1.live(live(call.LiveAnswered, "A", "102", t0.Add(5*time.Second)))
	run1.live(live(call.LiveRinging, "B", "101", t0.Add(2*time.Second)))
	run1.live(live(call.LiveRinging, "C", "103", t0.Add(2*time.Second)))
	run1.live(live(call.LiveRinging, "D", "103", t0.Add(3*time.Second)))
	run1.live(live(call.LiveHangup, "D", "", t0.Add(4*time.Second)))
	// E: 101 dials out; the customer's phone rings (the caller's card), nobody answers.
	out := live(call.LiveRinging, "E", "101", t0.Add(time.Second))
	out.Direction, out.Line = call.Outbound, ""
	run1.live(out)
	run1.finished("office/C")
	now = t0.Add(6 * time.Second)
	run1.flush(t.Context(), false)
	now = t0.Add(30 * time.Second) // the last heartbeat before the crash
	run1.flush(t.Context(), true)

	// The next run: B is still up (the model learnt it from the snapshot).
	run2 := newLedger(store, "office", slog.New(slog.DiscardHandler), clock)
	recs, err := run2.recover(t.Context(), func(id string) bool { return id == "B" })
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records, want A, D and E: %+v", len(recs), recs)
	}
	a, d, e := recs[0], recs[1], recs[2]
	if e.Key() != "office/E" || e.Direction != call.Outbound || e.CallerExt != "101" || len(e.Rang) != 0 ||
		e.Disposition != call.NoAnswer || e.Customer != "+79001234567" {
		t.Errorf("outbound call: %+v", e)
	}
	if a.Key() != "office/A" || a.Disposition != call.Answered || a.AnsweredBy != "102" || !slices.Equal(a.Rang, []string{"101", "102"}) ||
		a.RingSeconds != 5 || a.TalkSeconds != 25 || !a.EndedAt.Equal(t0.Add(30*time.Second)) || !slices.Contains(a.Flags, call.FlagEndedUnseen) ||
		a.Customer != "+79001234567" || a.Line != "+74951112233" || len(a.Legs) != 1 || a.Legs[0].TalkSeconds != 25 {
		t.Errorf("answered call: %+v", a)
	}
	// D hung up before the crash; its record was waiting for the finish delay.
	if d.Key() != "office/D" || d.Disposition != call.NoAnswer || !d.EndedAt.Equal(t0.Add(4*time.Second)) || d.RingSeconds != 4 {
		t.Errorf("missed call: %+v", d)
	}
	run2.flush(t.Context(), false)
	left, err := store.OpenCalls(t.Context(), "office")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range left {
		keys = append(keys, c.Key)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{heartbeatPrefix + "office", "office/B"}) {
		t.Fatalf("rows left %v, want B and the heartbeat", keys)
	}
	// A third run with nothing open finds nothing to do.
	run3 := newLedger(store, "office", slog.New(slog.DiscardHandler), clock)
	if recs, err := run3.recover(t.Context(), func(id string) bool { return id == "B" }); err != nil || len(recs) != 0 {
		t.Fatalf("third run: %v %v", recs, err)
	}
}

// At the first complete snapshot after a crash, the PBX runtime finishes the calls the previous
// run left open that are gone, hands their records on and counts them in
// pbxbridge_calls_ended_unseen_total; a failed snapshot finishes nothing and is retried.
func TestReconcileCountsCallsEndedUnseen(t *testing.T) {
	t.Parallel()
	t0 := time.Now().Add(-time.Minute)
	store, err := outbox.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	prev := newLedger(store, "office", slog.New(slog.DiscardHandler), time.Now)
	prev.live(&call.Live{Kind: call.LiveRinging, CallID: "A", PBX: "office", Direction: call.Inbound,
		Customer: "+79001234567", Ext: "101", At: t0.Add(time.Second), StartedAt: t0})
	prev.flush(t.Context(), true)

	d := &Daemon{log: slog.New(slog.DiscardHandler)}
	reg := prometheus.NewRegistry()
	d.m = newMetrics(reg, d, "test")
	p := &pbxRT{name: "office", d: d, log: d.log, held: newRecordQueue(10),
		ledger: newLedger(store, "office", slog.New(slog.DiscardHandler), time.Now)}
	p.builder = callmodel.NewBuilder(callmodel.Options{}, p)
	counted := func() float64 { return testutil.ToFloat64(d.m.endedUnseen.WithLabelValues("office")) }

	p.apply(&asterisk.Event{Type: asterisk.TypeSnapshotEnd, Time: time.Now(), Vars: map[string]string{"error": "refused"}})
	if p.reconciled || p.held.len() != 0 || counted() != 0 {
		t.Fatalf("a failed snapshot reconciled: reconciled %v, %d records, counted %v", p.reconciled, p.held.len(), counted())
	}
	p.apply(&asterisk.Event{Type: asterisk.TypeSnapshotEnd, Time: time.Now()})
	if p.held.len() != 1 || counted() != 1 {
		t.Fatalf("%d records, counted %v; want 1 and 1", p.held.len(), counted())
	}
	rec, _ := p.held.pop()
	p.held.release()
	if rec.Key() != "office/A" || !slices.Contains(rec.Flags, call.FlagEndedUnseen) {
		t.Fatalf("record %+v", rec)
	}
	// Only the first snapshot reconciles.
	p.apply(&asterisk.Event{Type: asterisk.TypeSnapshotEnd, Time: time.Now()})
	if p.held.len() != 0 || counted() != 1 {
		t.Fatalf("second snapshot: %d records, counted %v", p.held.len(), counted())
	}
}

// A click-to-call killed while the agent's phone rang: the live events carry no customer, the
// ledger takes it from the daemon's own originate request, so the record made after the restart
// has the number to log. Without a request (a click-to-call the daemon did not place) the row
// has no customer: with a CDR source it is left to the CDR recovery, without one it is recorded
// as before.
func TestLedgerClickToCallCustomer(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	store, err := outbox.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	gate := newClickGate(numbers.MustNew(numbers.Config{DefaultRegion: "RU"}), time.Now)
	gate.remember("crm-1", clickRequest{connector: "b24", ext: "101", number: "89001234567", at: t0})
	prev := newLedger(store, "office", slog.New(slog.DiscardHandler), time.Now)
	prev.customerOf = gate.customer
	for _, id := range []string{"A", "B"} {
		prev.live(&call.Live{Kind: call.LiveRinging, CallID: id, PBX: "office", Direction: call.Outbound, Ext: "101",
			At: t0.Add(time.Second), StartedAt: t0, OriginateID: map[string]string{"A": "crm-1", "B": "crm-2"}[id]})
	}
	prev.flush(t.Context(), true)

	for _, cdr := range []bool{false, true} {
		next := newLedger(store, "office", slog.New(slog.DiscardHandler), time.Now)
		next.setLeaveToCDR(cdr)
		recs, err := next.recover(t.Context(), func(string) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]*call.Record{}
		for _, r := range recs {
			byID[r.CallID] = r
		}
		if a := byID["A"]; a == nil || a.Customer != "+79001234567" || !slices.Contains(a.Flags, call.FlagClickToCall) {
			t.Fatalf("cdr %v: the daemon's click-to-call: %+v", cdr, a)
		}
		if b := byID["B"]; (b == nil) != cdr {
			t.Fatalf("cdr %v: the click-to-call without a customer: %+v", cdr, b)
		}
	}
}
