package e2e_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Click-to-call through ARI: the agent's phone rings, answers, the call continues to the
// customer; the call model reports the request's originate id. (asterisk/ari's
// TestOriginateAnswered checks the request and the events.)
func TestARIOriginateAnswered(t *testing.T) {
	t.Parallel()
	for _, speed := range []float64{4, math.Inf(1)} { // inf: the answer may arrive before POST returns
		p := startARIRig(t, fakepbx.ARIConfig{Speed: speed}, nil)
		if _, err := p.src.Originate(context.Background(), asterisk.OriginateRequest{
			Extension: "101", Number: "89001234567", CallerIDName: `Ivan "the" <Customer>`, ID: "crm-42",
			Variables: map[string]string{"__CRM_DEAL": "7"},
		}); err != nil {
			t.Fatalf("speed %v: %v", speed, err)
		}
		p.until(t, "the call's record", 20*time.Second, func() bool { return len(p.records) == 1 && p.b.Open() == 0 })
		rec := p.all()[0]
		if rec.OriginateID != "crm-42" || !rec.HasFlag("click_to_call") || rec.CallerExt != "101" ||
			rec.Customer != "+79001234567" || rec.Direction != call.Outbound || rec.Disposition != call.Answered {
			t.Errorf("speed %v: record %+v", speed, rec)
		}
	}
}

// A click-to-call whose agent does not answer (busy, rings out, rejects, congestion, cannot be
// dialled, unknown without a precheck) leaves no open call behind: the agent's leg that rang and
// ended is a finished call to the model. (asterisk/ari's TestOriginateOutcomes checks the
// errors and that the events end every channel.)
func TestARIOriginateFailuresLeaveNoOpenCall(t *testing.T) {
	t.Parallel()
	m := startARIRig(t, fakepbx.ARIConfig{Speed: 10}, nil)
	mn := m.another(t, "none", func(o *ari.Options) { o.Originate.Precheck = ari.PrecheckNone })
	srv := m.srv
	srv.SetExtension("201", fakepbx.Ext{Outcome: fakepbx.Busy})
	srv.SetExtension("202", fakepbx.Ext{Outcome: fakepbx.NoAnswer})
	srv.SetExtension("203", fakepbx.Ext{Outcome: fakepbx.Reject})
	srv.SetExtension("204", fakepbx.Ext{Outcome: fakepbx.Congestion})
	srv.SetExtension("205", fakepbx.Ext{Outcome: fakepbx.Fail})
	for _, c := range []struct {
		p   *ariRig
		ext string
	}{{m, "201"}, {m, "202"}, {m, "203"}, {m, "204"}, {m, "205"}, {mn, "999"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.p.src.Originate(ctx, asterisk.OriginateRequest{Extension: c.ext, Number: "89001234567",
			Timeout: 2 * time.Second})
		cancel()
		if err == nil {
			t.Errorf("%s answered, want a failure", c.ext)
		}
	}
	// Both sources see every call of the PBX: each has its half of the messages sent.
	for _, p := range []*ariRig{m, mn} {
		p.until(t, "no open call", 10*time.Second, func() bool {
			return 2*p.read == int64(srv.Stats().EventsSent) && p.b.Open() == 0
		})
	}
}
