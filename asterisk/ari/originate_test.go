package ari_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// modelled runs a Source on srv and feeds its events to a call model until the test ends.
type modelled struct {
	*running
	out  *collector
	mu   sync.Mutex
	b    *callmodel.Builder
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func runModelled(t *testing.T, opts ari.Options) *modelled {
	t.Helper()
	r := runSource(t, opts, 64)
	m := &modelled{running: r, out: &collector{}}
	m.b = callmodel.NewBuilder(labOptions(t), m.out)
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case ev := <-r.out:
				m.mu.Lock()
				m.b.Apply(&ev)
				m.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); m.wg.Wait() })
	waitFor(t, 5*time.Second, "connected", func() bool { return r.src.Status().Connected })
	return m
}

func (m *modelled) open() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b.Open()
}

// Click-to-call: the agent's phone rings, answers, the call continues to the customer; the
// call model reports the request's originate id.
func TestOriginateAnswered(t *testing.T) {
	t.Parallel()
	for _, speed := range []float64{4, inf} { // inf: the answer may arrive before POST returns
		srv := startFake(t, fakepbx.ARIConfig{Speed: speed})
		m := runModelled(t, fastOptions(srv))
		res, err := m.src.Originate(context.Background(), asterisk.OriginateRequest{
			Extension: "101", Number: "89001234567", CallerIDName: `Ivan "the" <Customer>`, ID: "crm-42",
			Variables: map[string]string{"__CRM_DEAL": "7"},
		})
		if err != nil {
			t.Fatalf("speed %v: %v", speed, err)
		}
		if !strings.Contains(res.Uniqueid, ".") {
			t.Errorf("uniqueid %q", res.Uniqueid)
		}
		waitFor(t, 20*time.Second, "the call's record", func() bool { return len(m.out.all()) == 1 && m.open() == 0 })
		rec := m.out.all()[0]
		if rec.OriginateID != "crm-42" || !rec.HasFlag("click_to_call") || rec.CallerExt != "101" ||
			rec.Customer != "+79001234567" || rec.Direction != call.Outbound || rec.Disposition != call.Answered {
			t.Errorf("speed %v: record %+v", speed, rec)
		}
	}
}

func TestOriginateOutcomes(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 10})
	opts := fastOptions(srv)
	m := runModelled(t, opts)
	local := fastOptions(srv)
	local.Name = "local"
	local.Originate.Channel = "Local/{ext}@from-internal"
	ml := runModelled(t, local)
	none := fastOptions(srv)
	none.Name = "none"
	none.Originate.Precheck = ari.PrecheckNone
	mn := runModelled(t, none)
	inUse := fastOptions(srv)
	inUse.Name = "inuse"
	inUse.Originate.AllowInUse = true
	mi := runModelled(t, inUse)

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
		src       *modelled
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
	// The agent legs that rang and ended leave no open call behind.
	waitFor(t, 10*time.Second, "no open call", func() bool { return m.open() == 0 && mn.open() == 0 })
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
	m := runModelled(t, fastOptions(srv))
	srv.SetExtension("202", fakepbx.Ext{Outcome: fakepbx.NoAnswer})
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel once the agent's phone rings (POST /channels served).
	before := srv.Stats().Requests
	go func() {
		eventually(10*time.Second, func() bool { return srv.Stats().Requests >= before+3 }) // endpoint, device state, POST /channels
		cancel()
	}()
	_, err := m.src.Originate(ctx, asterisk.OriginateRequest{Extension: "202", Number: "1", Timeout: 20 * time.Second})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for the agent") {
		t.Errorf("cancelled: %v", err)
	}

	// 101 answers after 2 s; the websocket is dropped once the agent's channel exists.
	before = srv.Stats().Requests
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
