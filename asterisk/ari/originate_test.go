package ari_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// tapped runs a Source with opts whose events a background consumer takes, once connected.
func tapped(t *testing.T, opts ari.Options) (*running, *tap) {
	t.Helper()
	r := runSource(t, opts, 64)
	tp := r.tap(t)
	waitFor(t, 5*time.Second, "connected", func() bool { return r.src.Status().Connected })
	return r, tp
}

// Click-to-call: the agent's phone rings, answers, the call continues to the customer. The
// events carry what the call model needs: the agent's channel (the returned uniqueid) with the
// request's originate id and variables, answered, then the customer's channel; every channel
// ends. What the model makes of them is connector/e2e's TestARIOriginateAnswered.
func TestOriginateAnswered(t *testing.T) {
	t.Parallel()
	for _, speed := range []float64{4, inf} { // inf: the answer may arrive before POST returns
		srv := startFake(t, fakepbx.ARIConfig{Speed: speed})
		r, tp := tapped(t, fastOptions(srv))
		res, err := r.src.Originate(context.Background(), asterisk.OriginateRequest{
			Extension: "101", Number: "89001234567", CallerIDName: `Ivan "the" <Customer>`, ID: "crm-42",
			Variables: map[string]string{"__CRM_DEAL": "7"},
		})
		if err != nil {
			t.Fatalf("speed %v: %v", speed, err)
		}
		if !strings.Contains(res.Uniqueid, ".") {
			t.Errorf("uniqueid %q", res.Uniqueid)
		}
		agentGone := func() bool {
			return slices.ContainsFunc(tp.events(), func(ev asterisk.Event) bool {
				return ev.Type == asterisk.TypeHangup && ev.Chan.Uniqueid == res.Uniqueid
			})
		}
		waitFor(t, 20*time.Second, "the call's channels to end", func() bool { return agentGone() && tp.open() == 0 })
		var created, answered, customer bool
		vars := map[string]string{}
		for _, ev := range tp.events() {
			switch {
			case ev.Type == asterisk.TypeNewChannel && ev.Chan.Uniqueid == res.Uniqueid:
				created = true
			case ev.Type == asterisk.TypeVarSet && ev.Chan.Uniqueid == res.Uniqueid:
				vars[ev.Variable] = ev.Value
			case ev.Type == asterisk.TypeNewState && ev.Chan.Uniqueid == res.Uniqueid && ev.Chan.State == asterisk.StateUp:
				answered = true
			case ev.Type == asterisk.TypeNewChannel && strings.Contains(ev.Chan.Name, "89001234567"):
				customer = answered // dialled once the agent answered
			}
		}
		if !created || !answered || !customer || vars[ari.OriginateVariable] != "crm-42" || vars["__CRM_DEAL"] != "7" {
			t.Errorf("speed %v: agent channel %s created %v, answered %v, customer dialled after %v, variables %v",
				speed, res.Uniqueid, created, answered, customer, vars)
		}
	}
}

func TestOriginateOutcomes(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 10})
	m, mt := tapped(t, fastOptions(srv))
	local := fastOptions(srv)
	local.Name = "local"
	local.Originate.Channel = "Local/{ext}@from-internal"
	ml, _ := tapped(t, local)
	none := fastOptions(srv)
	none.Name = "none"
	none.Originate.Precheck = ari.PrecheckNone
	mn, mnt := tapped(t, none)
	inUse := fastOptions(srv)
	inUse.Name = "inuse"
	inUse.Originate.AllowInUse = true
	mi, _ := tapped(t, inUse)

	srv.SetExtension("201", fakepbx.Ext{Outcome: fakepbx.Busy})
	srv.SetExtension("202", fakepbx.Ext{Outcome: fakepbx.NoAnswer})
	srv.SetExtension("203", fakepbx.Ext{Outcome: fakepbx.Reject})
	srv.SetExtension("204", fakepbx.Ext{Outcome: fakepbx.Congestion})
	srv.SetExtension("205", fakepbx.Ext{Outcome: fakepbx.Fail})
	srv.SetExtension("206", fakepbx.Ext{State: ami.ExtUnavailable})
	srv.SetExtension("207", fakepbx.Ext{State: ami.ExtBusy})
	srv.SetExtension("208", fakepbx.Ext{State: ami.ExtInUse})
	srv.SetExtension("209", fakepbx.Ext{State: ami.ExtRinging})
	srv.SetExtension("210", fakepbx.Ext{State: ami.ExtOnHold})

	cases := []struct {
		name, ext string
		src       *running
		want      error
		words     string
	}{
		{"busy phone", "201", m, asterisk.ErrExtensionBusy, "answered busy"},
		{"rings out", "202", m, asterisk.ErrNoAnswer, "rang out"},
		{"rejected", "203", m, asterisk.ErrNoAnswer, "rejected"},
		{"congestion", "204", m, asterisk.ErrExtensionUnreachable, "congestion"},
		{"cannot dial", "205", m, asterisk.ErrExtensionUnreachable, "Subscriber absent"},
		{"unknown endpoint", "999", m, asterisk.ErrExtensionUnknown, "no endpoint PJSIP/999"},
		{"unregistered", "206", m, asterisk.ErrExtensionUnreachable, "not registered"},
		{"device busy", "207", m, asterisk.ErrExtensionBusy, "is busy"},
		{"in a call", "208", m, asterisk.ErrExtensionBusy, "already in a call"},
		{"ringing", "209", m, asterisk.ErrExtensionBusy, "ringing"},
		{"on hold", "210", m, asterisk.ErrExtensionBusy, "on hold"},
		{"local unknown", "999", ml, asterisk.ErrExtensionUnknown, "does not know device Local/999@from-internal"},
		{"no precheck, unknown", "999", mn, asterisk.ErrExtensionUnknown, "cannot route"},
		{"call waiting allowed", "208", mi, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := c.src.src.Originate(ctx, asterisk.OriginateRequest{Extension: c.ext, Number: "89001234567",
				Timeout: 2 * time.Second})
			if c.want == nil {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.words) ||
				!strings.HasPrefix(err.Error(), "ari: click-to-call "+c.ext+" → 89001234567: ") {
				t.Errorf("error %q, want %v saying %q", err, c.want, c.words)
			}
		})
	}
	// Every agent leg that rang is seen to end (the call model leaves no open call behind:
	// connector/e2e's TestARIOriginateFailuresLeaveNoOpenCall).
	waitFor(t, 10*time.Second, "no open channel", func() bool { return mt.open() == 0 && mnt.open() == 0 })
}

func TestOriginateRefusals(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{})
	opts := fastOptions(srv)
	src, err := ari.NewSource(opts) // not running: not connected
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Originate(context.Background(), asterisk.OriginateRequest{Extension: "101", Number: "89001234567"})
	if !errors.Is(err, asterisk.ErrNotConnected) {
		t.Errorf("not connected: %v", err)
	}
	for _, req := range []asterisk.OriginateRequest{
		{Extension: "", Number: "1"},
		{Extension: "10 1", Number: "1"},
		{Extension: "101", Number: "8900&Local/x"},
		{Extension: "101", Number: ""},
		{Extension: "101", Number: "1", Variables: map[string]string{"A B": "1"}},
		{Extension: "101", Number: "1", Variables: map[string]string{"A": "line\nbreak"}},
		{Extension: "101", Number: "1", ID: "id\x00"},
	} {
		if _, err := src.Originate(context.Background(), req); err == nil || errors.Is(err, asterisk.ErrNotConnected) {
			t.Errorf("%+v: %v, want refused before contacting the PBX", req, err)
		}
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("%d requests reached the PBX", n)
	}
}

// The caller's context bounds the wait for the agent; a dropped websocket while the agent's
// phone rings does not lose the outcome.
func TestOriginateContextAndDrop(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 1})
	m, tp := tapped(t, fastOptions(srv))
	srv.SetExtension("202", fakepbx.Ext{Outcome: fakepbx.NoAnswer})
	// Cancel once the agent's phone rings: the source saw the agent's channel ringing. The fake
	// rings the phone just before it answers POST /channels, so on a loaded machine the cancel
	// can still overtake that answer; the originate then ends inside POST, and the test tries
	// again.
	ringing := func() int {
		n := 0
		for _, ev := range tp.events() {
			if ev.Type == asterisk.TypeNewState && ev.Chan.State == asterisk.StateRinging && strings.HasPrefix(ev.Chan.Name, "PJSIP/202-") {
				n++
			}
		}
		return n
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		rang := ringing()
		go func() {
			eventually(10*time.Second, func() bool { return ringing() > rang })
			cancel()
		}()
		_, err := m.src.Originate(ctx, asterisk.OriginateRequest{Extension: "202", Number: "1", Timeout: 20 * time.Second})
		cancel()
		if attempt < 5 && errors.Is(err, context.Canceled) && strings.Contains(err.Error(), "POST /channels") {
			t.Logf("attempt %d: the cancel overtook POST's answer: %v", attempt, err)
			continue
		}
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for the agent") {
			t.Errorf("cancelled: %v", err)
		}
		break
	}

	// 101 answers after 2 s; the websocket is dropped once the agent's channel exists.
	before := srv.Stats().Requests
	go func() {
		eventually(10*time.Second, func() bool { return srv.Stats().Requests >= before+3 }) // endpoint, device state, POST /channels
		srv.DropClients()
	}()
	res, err := m.src.Originate(context.Background(), asterisk.OriginateRequest{Extension: "101", Number: "89001234567", ID: "x"})
	if err != nil {
		t.Fatalf("answered across a reconnect: %v", err)
	}
	if res.Uniqueid == "" {
		t.Error("no uniqueid")
	}
	if st := m.src.Status(); st.Reconnects != 1 {
		t.Errorf("reconnects %d, want 1 (the drop happened)", st.Reconnects)
	}
}
