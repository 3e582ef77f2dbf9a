package bitrix24

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// missedCall is a call from +79001234567 on the main line that rang 101 and was not answered.
func missedCall(id string, start float64) (call.Live, *call.Record) {
	ev := call.Live{Kind: call.LiveRinging, CallID: id, PBX: "pbx1", Direction: call.Inbound,
		Customer: "+79001234567", Line: "+74951112233", Ext: "101", At: ts(start), StartedAt: ts(start)}
	rec := &call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567",
		Line: "+74951112233", StartedAt: ts(start), EndedAt: ts(start + 5), Disposition: call.NoAnswer,
		Rang: []string{"101"}, RingSeconds: 5, HangupCause: 19}
	return ev, rec
}

// TestCallIDReuseBugReproduced: with the guard off, the fake hands the second call the first
// call's CALL_ID (the platform bug the guard exists for).
func TestCallIDReuseBugReproduced(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t, fakecrm.B24ReuseCallID(true))
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.CallIDReuseGuard = false })
	evA, _ := missedCall("1795305900.1", 1795305900)
	evB, _ := missedCall("1795305960.5", 1795305960)
	e.live(evA)
	e.live(evB)
	s := f.State()
	mustf(t, len(s.Calls) == 1 && s.Calls[0].RegisterCount == 2,
		"want one CALL_ID handed out twice, got %d calls: %+v", len(s.Calls), s.Calls)
}

// TestCallIDReuseGuard: two (and three) calls from one number to one agent while the earlier
// ones are still open each get their own CALL_ID; every call is finished once, none is merged.
func TestCallIDReuseGuard(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t, fakecrm.B24ReuseCallID(true))
	e := newEnv(t, f)
	var recs []*call.Record
	for i := range 3 {
		ev, rec := missedCall(fmt.Sprintf("17953059%02d.%d", i*10, i), float64(1795305900+60*i))
		e.live(ev)
		recs = append(recs, rec)
	}
	s := f.State()
	ids := map[string]string{}
	for _, c := range s.Calls {
		if prev, dup := ids[c.CallID]; dup {
			t.Fatalf("CALL_ID %s is shared by %s and %s", c.CallID, prev, c.ExternalCallID)
		}
		ids[c.CallID] = c.ExternalCallID
	}
	mustf(t, len(s.Calls) == 3, "want 3 distinct calls in the portal, got %d: %+v", len(s.Calls), s.Calls)
	mustf(t, testutil.ToFloat64(e.a.m.callIDReuse) == 3, "reuse detected %v times, want 3 (1 for the 2nd call, 2 for the 3rd)", testutil.ToFloat64(e.a.m.callIDReuse))
	// Deliver in another order than they rang.
	for _, i := range []int{1, 0, 2} {
		e.deliver(recs[i])
	}
	for _, rec := range recs {
		if n := f.Logged(rec.Key()); n != 1 {
			t.Fatalf("call %s finished %d times, want 1", rec.Key(), n)
		}
	}
	// A fourth call while all three variants are taken: nothing is merged, the delivery waits.
	s = f.State()
	for _, c := range s.Calls {
		mustf(t, c.State == "finished", "call %s is %s", c.CallID, c.State)
	}
}

// TestCallIDReuseExhausted: when every register variant collides the delivery is retried
// later (transient), never merged.
func TestCallIDReuseExhausted(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t, fakecrm.B24ReuseCallID(true))
	e := newEnv(t, f)
	for i := range 3 {
		ev, _ := missedCall(fmt.Sprintf("1795306000.%d", i), float64(1795306000+i))
		e.live(ev)
	}
	_, rec := missedCall("1795306100.9", 1795306100)
	err := e.a.Deliver(context.Background(), rec)
	if err == nil {
		t.Fatal("fourth colliding call delivered although every CALL_ID is taken")
	}
	if c, _ := crm.Classify(err); c != crm.ClassTransient {
		t.Fatalf("error %v classified %s, want transient", err, c)
	}
	mustf(t, f.Logged(rec.Key()) == 0, "the fourth call was finished on another call's CALL_ID")
}
