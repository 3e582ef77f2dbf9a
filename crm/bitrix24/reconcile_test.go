package bitrix24

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// openOutbox opens a real outbox database at path.
func openOutbox(tb testing.TB, path string) *outbox.Store {
	tb.Helper()
	st, err := outbox.Open(context.Background(), path, outbox.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// onState gives the adapter the call state cs and the recordings in dir.
func onState(cs crm.CallStore, dir string) envOpt {
	return func(p *crm.Params, _ *Config) {
		p.Calls = cs
		p.Recordings = dirRecordings{dir: dir}
	}
}

// restored plays a restore: an adapter works on a real outbox database, the database is backed
// up, between runs (what reached Bitrix24 after the backup), and a second adapter starts on the
// database restored from the backup, as after `pbxbridge restore`. It returns that adapter and
// the backup's time.
func restored(t *testing.T, f *fakecrm.Bitrix24, between func(e *env), opts ...envOpt) (*env, time.Time) {
	t.Helper()
	dir, recs := t.TempDir(), t.TempDir()
	live := openOutbox(t, filepath.Join(dir, "outbox.db"))
	e1 := newEnv(t, f, append(slices.Clone(opts), onState(live.CallState("b24"), recs))...)
	e1.store, e1.recs = live.CallState("b24"), recs
	since := time.Now()
	if _, err := live.Backup(context.Background(), filepath.Join(dir, "backup.db")); err != nil {
		t.Fatal(err)
	}
	between(e1)
	back := openOutbox(t, filepath.Join(dir, "backup.db"))
	e2 := newEnv(t, f, append(slices.Clone(opts), onState(back.CallState("b24"), recs))...)
	e2.store, e2.recs = back.CallState("b24"), recs
	return e2, since
}

func (e *env) field(key, field string) string {
	e.t.Helper()
	v, _, err := e.store.Get(context.Background(), key, field)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) uncertain(key string, since time.Time) {
	e.t.Helper()
	var rc crm.Reconciler = e.a
	if err := rc.Uncertain(context.Background(), key, since); err != nil {
		e.t.Fatalf("Uncertain %s: %v", key, err)
	}
}

func statLookups(f *fakecrm.Bitrix24) int { return f.State().Requests["voximplant.statistic.get"] }

func hasLine(lines []string, s string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, s) })
}

// TestReconcileAfterRestore: a call Bitrix24 got after the backup is, after the restore and
// Uncertain, found in the call statistics and not logged again (one call, one recording);
// a call delivered after the backup but not marked shows what happens without it (logged
// twice). Uncertain makes no request, and leaves a call the store knows as logged alone.
func TestReconcileAfterRestore(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	var rec, unmarked *call.Record
	e, since := restored(t, f, func(e1 *env) {
		rec = answeredInbound(e1, "1795330000.1", "101")
		unmarked = answeredInbound(e1, "1795330000.2", "101")
		e1.deliver(rec)
		e1.deliver(unmarked)
	})
	key := rec.Key()
	mustf(t, e.field(key, fFinished) == "", "the restored store knows the call")
	before := totalRequests(f.State())
	e.uncertain(key, since)
	mustf(t, totalRequests(f.State()) == before, "Uncertain made requests")
	mustf(t, e.field(key, fUncertain) == fmt.Sprint(since.Unix()), "mark %q", e.field(key, fUncertain))

	ctx, lines := traced(context.Background())
	if err := e.a.Deliver(ctx, rec); err != nil {
		t.Fatal(err)
	}
	e.deliver(unmarked)
	s := f.State()
	c := onlyCall(t, s, key)
	mustf(t, c.RegisterCount == 1 && c.RecordAttaches == 1, "call registered %d times, recording attached %d times", c.RegisterCount, c.RecordAttaches)
	mustf(t, len(callsByExt(s, unmarked.Key())) == 2, "the unmarked call: %d calls, want 2 (the gap Uncertain closes)", len(callsByExt(s, unmarked.Key())))
	mustf(t, statLookups(f) == 1, "%d look-ups, want 1", statLookups(f))
	mustf(t, testutil.ToFloat64(e.a.m.finishLookups.WithLabelValues("finished")) == 1, "look-up not counted")
	mustf(t, hasLine(*lines, "found in Bitrix24's call statistics after the restore: not logged again"), "timeline %q", *lines)
	mustf(t, e.field(key, fFinished) == fmt.Sprintf("%d:%d", c.StatID, c.ActivityID) && e.field(key, fCallID) == c.CallID,
		"store: finished %q, CALL_ID %q; the fake: %+v", e.field(key, fFinished), e.field(key, fCallID), c)
	mustf(t, e.field(key, fRecord) == fmt.Sprintf("found:%d", c.Record.FileID) && e.field(key, fUncertain) == "",
		"store: record %q, mark %q", e.field(key, fRecord), e.field(key, fUncertain))

	// Logged now: Uncertain leaves it, and a delivery does nothing.
	before = totalRequests(f.State())
	e.uncertain(key, since)
	mustf(t, e.field(key, fUncertain) == "", "Uncertain marked a logged call")
	e.deliver(rec)
	mustf(t, totalRequests(f.State()) == before, "%d requests for a logged call", totalRequests(f.State())-before)
}

// TestReconcileAttachesMissingRecording: the call was finished after the backup but its
// recording was not attached (the file was not there yet): after the restore the call is not
// logged again, and the recording is attached to it.
func TestReconcileAttachesMissingRecording(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	var rec *call.Record
	var wav []byte
	e, since := restored(t, f, func(e1 *env) {
		rec = answeredInbound(e1, "1795330100.1", "101")
		path := filepath.Join(e1.recs, filepath.Base(rec.Recording))
		var err error
		if wav, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		_ = e1.a.Deliver(context.Background(), rec) // finished; the recording is not there yet (or skipped)
		mustf(t, f.Logged(rec.Key()) == 1 && onlyCall(t, f.State(), rec.Key()).Record == nil, "first delivery: %+v", f.State().Calls)
		if err := os.WriteFile(path, wav, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	e.uncertain(rec.Key(), since)
	e.deliver(rec)
	c := onlyCall(t, f.State(), rec.Key())
	mustf(t, c.RegisterCount == 1 && c.RecordAttaches == 1 && c.Record != nil && c.Record.Size == len(wav),
		"registered %d times, recording %+v attached %d times", c.RegisterCount, c.Record, c.RecordAttaches)
}

// TestReconcileMissedCallFollowUp: a missed call logged after the backup, with its task: after
// the restore neither the call nor the task is created again, and the timeline says why.
func TestReconcileMissedCallFollowUp(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	_, rec := missedCall("1795330200.1", 1795330200)
	e, since := restored(t, f, func(e1 *env) { e1.deliver(rec) },
		func(_ *crm.Params, c *Config) { c.MissedCalls.FollowUp = FollowUpTask })
	mustf(t, len(f.State().Tasks) == 1, "%d tasks before the restore", len(f.State().Tasks))
	e.uncertain(rec.Key(), since)
	ctx, lines := traced(context.Background())
	if err := e.a.Deliver(ctx, rec); err != nil {
		t.Fatal(err)
	}
	s := f.State()
	onlyCall(t, s, rec.Key())
	mustf(t, len(s.Tasks) == 1, "%d tasks after the restore, want 1", len(s.Tasks))
	mustf(t, hasLine(*lines, "the missed call's task is not created again after the restore"), "timeline %q", *lines)
	mustf(t, e.field(rec.Key(), fFollowUp) == followUpRestored, "follow-up %q", e.field(rec.Key(), fFollowUp))
}

// TestReconcileNotInStatistics: a marked call Bitrix24 never got is delivered as usual after
// one look-up.
func TestReconcileNotInStatistics(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e, since := restored(t, f, func(*env) {})
	rec := answeredInbound(e, "1795330300.1", "101")
	e.uncertain(rec.Key(), since)
	e.deliver(rec)
	c := onlyCall(t, f.State(), rec.Key())
	mustf(t, c.State == "finished" && c.Record != nil, "call %+v", c)
	mustf(t, statLookups(f) == 1, "%d look-ups", statLookups(f))
	mustf(t, testutil.ToFloat64(e.a.m.finishLookups.WithLabelValues("not_finished")) == 1, "look-up not counted")
	mustf(t, e.field(rec.Key(), fUncertain) == "", "mark kept")
}

// TestReconcileRegisteredNotFinished: a call registered (its card shown) after the backup but
// not finished is not in the statistics; delivered again within 30 minutes, register answers
// the same CALL_ID (docs/crm-apis.md A.3.1) and Bitrix24 holds the call once.
func TestReconcileRegisteredNotFinished(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	ev, rec := missedCall("1795330400.1", 1795330400)
	e, since := restored(t, f, func(e1 *env) { e1.live(ev) })
	mustf(t, len(f.State().Calls) == 1 && f.State().Calls[0].State == "registered", "before the restore: %+v", f.State().Calls)
	e.uncertain(rec.Key(), since)
	e.deliver(rec)
	c := onlyCall(t, f.State(), rec.Key())
	mustf(t, c.State == "finished" && c.RegisterCount == 2 && f.Logged(rec.Key()) == 1, "call %+v", c)
}

// TestReconcileStatisticsDenied: without the "Call statistics: view" permission the marked
// calls are delivered as usual, each with a warning and counted as unavailable; the portal is
// asked once (the refusal pauses look-ups).
func TestReconcileStatisticsDenied(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e, since := restored(t, f, func(*env) {})
	faults := f.State().Faults
	faults.StatisticDenied = true
	f.SetFaults(faults)
	for i := range 2 {
		rec := answeredInbound(e, fmt.Sprintf("1795330500.%d", i), "101")
		e.uncertain(rec.Key(), since)
		ctx, lines := traced(context.Background())
		if err := e.a.Deliver(ctx, rec); err != nil {
			t.Fatal(err)
		}
		mustf(t, f.Logged(rec.Key()) == 1, "call %d logged %d times", i, f.Logged(rec.Key()))
		mustf(t, hasLine(*lines, "warning: cannot look the call up in Bitrix24's call statistics after the restore"), "timeline %q", *lines)
		mustf(t, e.field(rec.Key(), fUncertain) == "", "mark kept")
	}
	mustf(t, statLookups(f) == 1, "%d look-ups, want 1 (then paused)", statLookups(f))
	mustf(t, testutil.ToFloat64(e.a.m.finishLookups.WithLabelValues("unavailable")) == 2, "unavailable look-ups counted %v",
		testutil.ToFloat64(e.a.m.finishLookups.WithLabelValues("unavailable")))
}

// TestReconcileLookupFailureKeepsMark: a look-up that fails (the portal's 500) fails the
// delivery, transiently, and sends nothing; the mark stays for the next attempt.
func TestReconcileLookupFailureKeepsMark(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e, since := restored(t, f, func(*env) {})
	rec := answeredInbound(e, "1795330600.1", "101")
	e.uncertain(rec.Key(), since)
	faults := f.State().Faults
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: faults.TelephonyAppOnly, FailRate: 1, FailMethods: []string{"voximplant.statistic.get"}})
	err := e.a.Deliver(context.Background(), rec)
	if c, _ := crm.Classify(err); c != crm.ClassTransient {
		t.Fatalf("deliver with a failing look-up: %v, want transient", err)
	}
	mustf(t, len(f.State().Calls) == 0 && e.field(rec.Key(), fUncertain) != "", "calls %+v, mark %q", f.State().Calls, e.field(rec.Key(), fUncertain))
	f.SetFaults(faults)
	e.deliver(rec)
	mustf(t, f.Logged(rec.Key()) == 1, "logged %d times", f.Logged(rec.Key()))
}
