package bitrix24

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, what, cond)
}

func (e *env) setup() {
	e.t.Helper()
	if err := e.a.setup(context.Background()); err != nil {
		e.t.Fatalf("setup: %v", err)
	}
}

// originated returns the next originate request the adapter made, waiting for it (the adapter
// originates in the background).
func (e *env) originated() asterisk.OriginateRequest {
	e.t.Helper()
	testkit.WaitFor(e.t, 5*time.Second, "an originate request", func() bool { return len(e.orig.requests()) > e.originates })
	r := e.orig.requests()[e.originates]
	e.originates++
	return r
}

func clickCall(s fakecrm.B24State, callID string) fakecrm.B24Call {
	for _, c := range s.Calls {
		if c.CallID == callID {
			return c
		}
	}
	return fakecrm.B24Call{}
}

// TestSetupBindsEventsAndLines: start-up binds the click-to-call events to our public URL and
// adds the configured external lines, once.
func TestSetupBindsEventsAndLines(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e.setup()
	e.setup() // again (every start): nothing doubles
	s := f.State()
	mustf(t, len(s.Lines) == 3, "lines %+v", s.Lines)
	want := e.srv.URL + "/crm/b24/events"
	mustf(t, len(s.Bindings) == 2 && s.Bindings[0].Handler == want && s.Bindings[1].Handler == want, "bindings %+v", s.Bindings)
}

// TestClickToCall: the event rings the clicking user's extension, and the record of the
// originated call finishes the CALL_ID Bitrix24 gave, without a second register.
func TestClickToCall(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e.setup()
	callID, err := f.ClickToCall(context.Background(), 1269, "+79001234567", "+74951112233")
	if err != nil {
		t.Fatal(err)
	}
	r := e.originated()
	mustf(t, r.Extension == "101" && r.Number == "+79001234567" && r.ID != "", "originate %+v", r)
	mustf(t, r.Timeout == 30*time.Second, "ring timeout %v", r.Timeout)

	// The call model reports the originate id on the live events and the record.
	start := time.Now().Add(-10 * time.Second).UTC()
	ans := start.Add(2 * time.Second)
	live := call.Live{Kind: call.LiveRinging, CallID: "1795305929.121", PBX: "pbx1", Direction: call.Outbound,
		Customer: "+79001234567", Line: "+74951112233", Ext: "101", At: start, StartedAt: start, OriginateID: r.ID}
	e.live(live)
	writeWAV(t, e.recs, "out-89001234567-101-20261122-000531-1795305929.121.wav", 20000)
	rec := &call.Record{CallID: "1795305929.121", PBX: "pbx1", Direction: call.Outbound, Customer: "+79001234567",
		Line: "+74951112233", StartedAt: start, AnsweredAt: &ans, EndedAt: ans.Add(8 * time.Second), Disposition: call.Answered,
		AnsweredBy: "101", TalkSeconds: 8, Legs: []call.Leg{{Ext: "101", AnsweredAt: &ans, TalkSeconds: 8}},
		Flags: []string{"click_to_call"}, OriginateID: r.ID,
		Recording: "/var/spool/asterisk/monitor/out-89001234567-101-20261122-000531-1795305929.121.wav"}
	e.deliver(rec)
	e.deliver(rec)
	s := f.State()
	mustf(t, s.Requests["telephony.externalcall.register"] == 0, "%d register requests for a click-to-call call, want 0", s.Requests["telephony.externalcall.register"])
	c := clickCall(s, callID)
	mustf(t, c.State == "finished" && c.FinishUserID == 1269 && c.Duration == 8 && c.StatusCode == "200", "click-to-call call %+v", c)
	mustf(t, c.Record != nil && c.Record.Size == 20000, "recording %+v", c.Record)
	mustf(t, len(s.Calls) == 1, "%d calls in the portal, want 1", len(s.Calls))
}

// TestClickToCallWrongToken: a wrong or missing application_token answers 401,
// counts a metric and originates nothing.
func TestClickToCallWrongToken(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e.setup()
	form := url.Values{
		"event": {"ONEXTERNALCALLSTART"}, "data[PHONE_NUMBER]": {"+79001234567"}, "data[USER_ID]": {"1269"},
		"data[CALL_ID]": {"externalCall.0123.1"}, "auth[application_token]": {"not-the-token"},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()},
	}
	for _, tc := range []struct {
		name  string
		token []string
	}{{"wrong", []string{"not-the-token"}}, {"missing", nil}, {"prefix", []string{f.ApplicationToken()[:8]}}} {
		if tc.token == nil {
			form.Del("auth[application_token]")
		} else {
			form["auth[application_token]"] = tc.token
		}
		st, err := f.SendEvent(context.Background(), "ONEXTERNALCALLSTART", form)
		if err != nil {
			t.Fatal(err)
		}
		mustf(t, st == http.StatusUnauthorized, "%s token: http %d, want 401", tc.name, st)
	}
	mustf(t, testutil.ToFloat64(e.a.m.webhookRejected.WithLabelValues("application_token")) == 3, "rejections not counted")
	// Accepted events are handled in the background (spawn): once that is idle, anything the
	// rejected events could have started has happened.
	idle := make(chan struct{})
	go func() { e.a.wg.Wait(); close(idle) }()
	waitFor(t, "the adapter's background work", func() bool {
		select {
		case <-idle:
			return true
		default:
			return false
		}
	})
	mustf(t, len(e.orig.requests()) == 0, "originated %+v", e.orig.requests())
	// A malformed body is a 400, not a panic.
	resp := httpDo(t, http.MethodPost, e.srv.URL+"/crm/b24/events", "application/x-www-form-urlencoded", strings.NewReader("data[PHONE=%zz"))
	_ = resp.Body.Close()
	mustf(t, resp.StatusCode == http.StatusBadRequest, "malformed body: http %d", resp.StatusCode)
}

// TestClickToCallFailures: when the call cannot be placed the CRM user reads why on the card.
func TestClickToCallFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		user     int
		origErr  error
		noOrig   bool
		wantCode string
		wantText string
	}{
		{"busy", 1269, asterisk.ErrExtensionBusy, false, "486", "busy"},
		{"unreachable", 1269, asterisk.ErrExtensionUnreachable, false, "480", "not registered"},
		{"no answer", 1269, asterisk.ErrNoAnswer, false, "304", "did not pick up"},
		{"no extension", 1, nil, false, "OTHER", "no extension"},
		{"no originator", 1269, nil, true, "503", "no PBX connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := crmtest.StartBitrix24(t)
			e := newEnv(t, f, func(p *crm.Params, _ *Config) {
				if tc.noOrig {
					p.Originator = nil
				}
			})
			e.orig.err = tc.origErr
			e.setup()
			callID, err := f.ClickToCall(context.Background(), tc.user, "+79001234567", "+74951112233")
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the call to be finished", func() bool { return clickCall(f.State(), callID).State == "finished" })
			c := clickCall(f.State(), callID)
			reason, _ := c.Finish["FAILED_REASON"].(string)
			mustf(t, c.StatusCode == tc.wantCode && strings.Contains(reason, tc.wantText), "finished with %s %q, want %s %q", c.StatusCode, reason, tc.wantCode, tc.wantText)
		})
	}
}

// TestCallbackRequest: a web-form callback registers a TYPE=4 call and rings the callback
// extension first.
func TestCallbackRequest(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.ClickToCall.CallbackExtension = "600"
		c.ClickToCall.CallbackUserID = 1270
	})
	e.setup()
	if err := f.CallbackRequest(context.Background(), "+79007654321", "+74951112233", "Call me back"); err != nil {
		t.Fatal(err)
	}
	r := e.originated()
	mustf(t, r.Extension == "600" && r.Number == "+79007654321", "originate %+v", r)
	s := f.State()
	mustf(t, len(s.Calls) == 1 && s.Calls[0].Type == 4 && s.Calls[0].UserID == 1270, "calls %+v", s.Calls)
	// The record of the callback finishes that call.
	start := time.Now().UTC()
	ans := start.Add(5 * time.Second)
	rec := &call.Record{CallID: "1795306000.1", PBX: "pbx1", Direction: call.Outbound, Customer: "+79007654321",
		StartedAt: start, AnsweredAt: &ans, EndedAt: ans.Add(20 * time.Second), Disposition: call.Answered, AnsweredBy: "102",
		TalkSeconds: 20, Legs: []call.Leg{{Ext: "102", AnsweredAt: &ans, TalkSeconds: 20}}, OriginateID: r.ID}
	e.deliver(rec)
	s = f.State()
	mustf(t, len(s.Calls) == 1 && s.Calls[0].State == "finished" && s.Calls[0].FinishUserID == 1270 && s.Calls[0].Duration == 20, "calls %+v", s.Calls)
}

// TestInstall: the ONAPPINSTALL event authorises the connector; forged, foreign and
// unauthenticated installations are refused.
func TestInstall(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	var renewed atomic.Int32 // crm.Params.AuthRenewed: only a proven install resumes deliveries
	e := newEnv(t, f, withoutTokens(), func(p *crm.Params, c *Config) {
		c.Auth.InstallKey = configs.NewSecret("k3y")
		p.AuthRenewed = func() { renewed.Add(1) }
	})
	mustf(t, e.a.Status().Auth == "missing", "status %+v", e.a.Status())
	_, rec := missedCall("1795307000.1", 1795307000)
	err := e.a.Deliver(context.Background(), rec)
	if c, _ := crm.Classify(err); c != crm.ClassAuth {
		t.Fatalf("deliver before install: %v (%v), want an auth error", err, c)
	}
	install := e.srv.URL + "/crm/b24/install"
	// Without the key.
	if err := f.Install(context.Background(), install); err == nil {
		t.Fatal("install without the key accepted")
	}
	// A forged installation (tokens the portal does not know).
	form := url.Values{"event": {"ONAPPINSTALL"}, "auth[access_token]": {"forged"}, "auth[refresh_token]": {"forged"},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {"x"}, "auth[application_token]": {"y"}}
	resp := postForm(t, install+"?key=k3y", form)
	_ = resp.Body.Close()
	mustf(t, resp.StatusCode == http.StatusUnauthorized, "forged install: http %d", resp.StatusCode)
	form.Set("auth[domain]", "evil.bitrix24.com")
	resp = postForm(t, install+"?key=k3y", form)
	_ = resp.Body.Close()
	mustf(t, resp.StatusCode == http.StatusForbidden, "foreign portal: http %d", resp.StatusCode)
	mustf(t, e.a.Status().Auth == "missing", "status %+v", e.a.Status())
	mustf(t, renewed.Load() == 0, "a refused install resumed deliveries %d times", renewed.Load())

	if err := f.Install(context.Background(), install+"?key=k3y"); err != nil {
		t.Fatalf("install: %v", err)
	}
	mustf(t, e.a.Status().Auth == "ok", "status after install %+v", e.a.Status())
	mustf(t, renewed.Load() == 1, "the install resumed deliveries %d times, want 1", renewed.Load())
	tok, err := api.TokenFile{Path: filepath.Join(e.state+"/none", tokenFile)}.Load()
	mustf(t, err == nil && tok != nil && tok.ApplicationToken == f.ApplicationToken() && tok.MemberID == f.MemberID(), "stored tokens %+v %v", tok, err)
	st, err := os.Stat(filepath.Join(e.state+"/none", tokenFile))
	mustf(t, err == nil && st.Mode().Perm() == 0o600, "token file %v %v", st, err)
	acc, err := e.a.Account(context.Background())
	mustf(t, err == nil && acc.MemberID == f.MemberID() && acc.Domain == strings.ToLower(f.Domain()), "account %+v %v", acc, err)
	// A licence request binds the configured account: the same domain, port included.
	mustf(t, e.a.cfg.ConfiguredAccount().Domain == acc.Domain, "configured account %+v, installed %+v", e.a.cfg.ConfiguredAccount(), acc)
	e.deliver(rec)
	mustf(t, f.Logged(rec.Key()) == 1, "call not delivered after install")

	// Uninstall with the right application token.
	resp = postForm(t, install+"?key=k3y", url.Values{"event": {"ONAPPUNINSTALL"}, "auth[application_token]": {f.ApplicationToken()},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()}})
	_ = resp.Body.Close()
	mustf(t, resp.StatusCode == http.StatusOK && e.a.Status().Auth == "missing", "after uninstall: http %d, %+v", resp.StatusCode, e.a.Status())
}

// TestReauthorize: a revoked refresh token puts the connector in the re-authorise state (calls
// stay queued); authorising again through the connect URL brings it back.
func TestReauthorize(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	f.Inject(fakecrm.FaultRevoked)
	_, rec := missedCall("1795308000.1", 1795308000)
	for range 3 {
		err := e.a.Deliver(context.Background(), rec)
		if c, _ := crm.Classify(err); c != crm.ClassAuth {
			t.Fatalf("deliver with a revoked token: %v, want an auth error", err)
		}
	}
	mustf(t, f.State().Requests["oauth/token"] == 1, "%d refresh attempts, want 1 (no hammering)", f.State().Requests["oauth/token"])
	st := e.a.Status()
	mustf(t, st.Auth == "reauthorize" && strings.Contains(st.ConnectURL, "/oauth/authorize/"), "status %+v", st)
	mustf(t, testutil.ToFloat64(e.a.m.reauthorize) == 1, "reauthorize gauge not set")

	// The admin follows the connect URL; the fake portal redirects to our callback.
	code := followAuthorize(t, f, e.srv.URL+"/crm/b24/oauth/callback", st.ConnectURL)
	mustf(t, code == http.StatusOK, "callback answered http %d", code)
	mustf(t, e.a.Status().Auth == "ok", "status after re-authorisation %+v", e.a.Status())
	e.deliver(rec)
	mustf(t, f.Logged(rec.Key()) == 1, "call not delivered after re-authorisation")
}

// followAuthorize plays the browser: it asks the fake portal for a code and calls our redirect
// URI with it, the way the portal's redirect would.
func followAuthorize(t *testing.T, f *fakecrm.Bitrix24, redirect, connect string) int {
	t.Helper()
	u, err := url.Parse(connect)
	if err != nil {
		t.Fatal(err)
	}
	resp := httpDo(t, http.MethodGet, connect, "", nil)
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Code string `json:"code"`
	}
	if err := decodeJSON(resp, &body); err != nil {
		t.Fatal(err)
	}
	v := url.Values{"code": {body.Code}, "state": {u.Query().Get("state")}, "domain": {f.Domain()}, "member_id": {f.MemberID()}}
	resp2 := httpDo(t, http.MethodGet, redirect+"?"+v.Encode(), "", nil)
	_ = resp2.Body.Close()
	return resp2.StatusCode
}
