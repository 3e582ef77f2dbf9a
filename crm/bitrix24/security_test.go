package bitrix24

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The tests in this file each reproduce an attack found against the connector's HTTP endpoints
// (the comment says what the attack was) and check that it fails.

// forgedInstall is an ONAPPINSTALL an attacker can post: tokens the attacker made up, the
// attacker's application_token, the configured portal's domain and member_id (neither is
// secret: the domain is public, the member_id travels with every event).
func forgedInstall(f *fakecrm.Bitrix24) url.Values {
	return url.Values{
		"event": {"ONAPPINSTALL"}, "auth[access_token]": {"forged-access"}, "auth[refresh_token]": {"forged-refresh"},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()}, "auth[application_token]": {"ATTACKER"},
		"auth[client_endpoint]": {f.URL() + "/rest/"}, "auth[expires_in]": {"3600"}, "auth[scope]": {"crm,telephony,user"},
	}
}

// clickEvent is the form of ONEXTERNALCALLSTART for callID, signed with token.
func clickEvent(f *fakecrm.Bitrix24, token, callID, number string) url.Values {
	return url.Values{
		"event": {"ONEXTERNALCALLSTART"}, "event_handler_id": {"1055"},
		"data[PHONE_NUMBER]": {number}, "data[PHONE_NUMBER_INTERNATIONAL]": {number}, "data[USER_ID]": {"1269"},
		"data[CALL_LIST_ID]": {"0"}, "data[LINE_NUMBER]": {"+74951112233"}, "data[CALL_ID]": {callID},
		"ts":           {fmt.Sprint(time.Now().Unix())},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()}, "auth[application_token]": {token},
	}
}

// callbackEvent is the form of ONEXTERNALCALLBACKSTART, signed with the portal's token.
func callbackEvent(f *fakecrm.Bitrix24, number string) url.Values {
	return url.Values{
		"event": {"ONEXTERNALCALLBACKSTART"}, "event_handler_id": {"1056"},
		"data[PHONE_NUMBER]": {number}, "data[TEXT]": {"Call me"}, "data[LINE_NUMBER]": {"+74951112233"},
		"data[CRM_ENTITY_TYPE]": {""}, "data[CRM_ENTITY_ID]": {"0"}, "ts": {fmt.Sprint(time.Now().Unix())},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()}, "auth[application_token]": {f.ApplicationToken()},
	}
}

func (e *env) post(path string, form url.Values) int {
	e.t.Helper()
	resp := postForm(e.t, e.srv.URL+"/crm/b24"+path, form)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func (e *env) storedTokens() *api.Tokens {
	e.t.Helper()
	dir := e.state
	if _, err := os.Stat(filepath.Join(dir, "none")); err == nil {
		dir = filepath.Join(dir, "none") // withoutTokens
	}
	t, err := api.TokenFile{Path: filepath.Join(dir, tokenFile)}.Load()
	if err != nil {
		e.t.Fatal(err)
	}
	return t
}

// TestSecurityInstallTakeoverDuringOutage. Attack: the install handler accepted an
// ONAPPINSTALL when the portal answered the token check with anything but 401. While the portal
// answered 5xx (an outage, a rate limit), a forged install with made-up tokens and the
// attacker's application_token was stored, and the attacker then originated calls to any
// number with ONEXTERNALCALLSTART signed with that token.
func TestSecurityInstallTakeoverDuringOutage(t *testing.T) {
	t.Parallel()
	for _, installed := range []bool{true, false} {
		t.Run(fmt.Sprintf("installed=%v", installed), func(t *testing.T) {
			t.Parallel()
			f := crmtest.StartBitrix24(t)
			var opts []envOpt
			if !installed {
				opts = append(opts, withoutTokens())
			}
			e := newEnv(t, f, opts...)
			before := e.storedTokens()
			f.Inject(fakecrm.FaultServerError) // the portal answers 500 to everything
			st := e.post(pathInstall, forgedInstall(f))
			mustf(t, st != http.StatusOK, "forged install during a portal outage: http %d, want a refusal", st)
			f.Inject(fakecrm.FaultNone)
			after := e.storedTokens()
			mustf(t, (before == nil && after == nil) || (before != nil && after != nil && after.ApplicationToken == before.ApplicationToken),
				"the forged install changed the stored tokens: %+v", after)

			st = e.post(pathEvents, clickEvent(f, "ATTACKER", "externalCall.attacker.1", "+19005550100"))
			mustf(t, st == http.StatusUnauthorized, "click-to-call with the attacker's token: http %d, want 401", st)
			waitQuiet(t, e)
			mustf(t, len(e.orig.requests()) == 0, "the attacker originated %+v", e.orig.requests())
		})
	}
}

// waitQuiet waits until the adapter's background work (click-to-call goroutines) is done.
func waitQuiet(t *testing.T, e *env) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		e.a.wg.Wait()
		close(done)
	}()
	// The set-up and user-cache loops are not started in these tests, so wg only counts
	// click-to-call work.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("background work did not finish")
	}
}

// TestSecurityInstallRebind. Attack: an install for the configured domain but another
// member_id (another portal, or a forged event) replaced the authorisation with a warning in
// the log, moving the connector — and every later call with its recording — to that portal.
func TestSecurityInstallRebind(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	genuine := f.IssueTokens() // tokens the portal really issued to our application
	form := url.Values{
		"event": {"ONAPPINSTALL"}, "auth[access_token]": {genuine.AccessToken}, "auth[refresh_token]": {genuine.RefreshToken},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {"0000other0000member0000id0000000"},
		"auth[application_token]": {"OTHER"}, "auth[client_endpoint]": {f.URL() + "/rest/"},
	}
	before := f.State()
	st := e.post(pathInstall, form)
	mustf(t, st == http.StatusForbidden, "install with another member_id: http %d, want 403", st)
	after := f.State()
	mustf(t, after.Requests["oauth/token"] == before.Requests["oauth/token"] && totalRequests(after) == totalRequests(before),
		"a refused install made outbound requests: %v -> %v", before.Requests, after.Requests)
	mustf(t, e.storedTokens().MemberID == f.MemberID() && e.storedTokens().ApplicationToken == f.ApplicationToken(),
		"stored tokens changed: %+v", e.storedTokens())
}

// TestSecurityEventsBoundToInstall. Attack: events were checked only by their
// application_token; an event (or an uninstall) claiming another portal's domain or member_id
// was accepted.
func TestSecurityEventsBoundToInstall(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e.setup()
	for _, tc := range []struct{ field, value string }{
		{"auth[member_id]", "0000other0000member0000id0000000"},
		{"auth[member_id]", ""},
		{"auth[domain]", "evil.bitrix24.com"},
		{"auth[domain]", ""},
	} {
		form := clickEvent(f, f.ApplicationToken(), "externalCall.x."+tc.value, "+79001234567")
		form.Set(tc.field, tc.value)
		st := e.post(pathEvents, form)
		mustf(t, st == http.StatusUnauthorized || st == http.StatusForbidden, "click-to-call with %s=%q: http %d, want 401/403", tc.field, tc.value, st)
		un := url.Values{"event": {"ONAPPUNINSTALL"}, "auth[application_token]": {f.ApplicationToken()},
			"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()}}
		un.Set(tc.field, tc.value)
		st = e.post(pathInstall, un)
		mustf(t, st == http.StatusUnauthorized || st == http.StatusForbidden, "uninstall with %s=%q: http %d, want 401/403", tc.field, tc.value, st)
		mustf(t, e.a.Status().Auth == "ok", "uninstalled by a mismatched event: %+v", e.a.Status())
	}
	waitQuiet(t, e)
	mustf(t, len(e.orig.requests()) == 0, "originated %+v", e.orig.requests())
}

// TestSecurityClickToCallReplay. Attack: the same ONEXTERNALCALLSTART posted 4 times made 4
// originates (a replayed or re-delivered event rings the agent and dials again).
func TestSecurityClickToCallReplay(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e.setup()
	form := clickEvent(f, f.ApplicationToken(), "externalCall.89350264e026dace3f2b14d1f438257c.1773236989", "+79001234567")
	for range 4 {
		st := e.post(pathEvents, form)
		mustf(t, st == http.StatusOK, "http %d", st)
	}
	waitQuiet(t, e)
	mustf(t, len(e.orig.requests()) == 1, "%d originates for one click, want 1", len(e.orig.requests()))
}

// TestSecurityCallbackReplay. Attack: a replayed ONEXTERNALCALLBACKSTART made two callbacks
// (and two registered calls).
func TestSecurityCallbackReplay(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.ClickToCall.CallbackExtension = "600"
		c.ClickToCall.CallbackUserID = 1270
	})
	e.setup()
	form := callbackEvent(f, "+79007654321")
	for range 2 {
		st := e.post(pathEvents, form)
		mustf(t, st == http.StatusOK, "http %d", st)
	}
	waitQuiet(t, e)
	mustf(t, len(e.orig.requests()) == 1, "%d callbacks for one request, want 1", len(e.orig.requests()))
	mustf(t, len(f.State().Calls) == 1, "%d calls registered, want 1", len(f.State().Calls))
}

// TestSecurityOAuthStateReuse. Attack: the OAuth state was a fixed HMAC of the client secret,
// the same for every authorisation and forever: once seen (the status page, a log line with the
// connect URL), it let anyone complete an authorisation flow with their own code (login CSRF)
// at any later time, as often as they liked.
func TestSecurityOAuthStateReuse(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	f.Inject(fakecrm.FaultRevoked)
	_, rec := missedCall("1795308100.1", 1795308100)
	_ = e.a.Deliver(context.Background(), rec) // puts the connector in the re-authorise state
	connect := e.a.Status().ConnectURL
	mustf(t, connect != "", "no connect URL: %+v", e.a.Status())
	redirect := e.srv.URL + "/crm/b24/oauth/callback"
	mustf(t, followAuthorize(t, f, redirect, connect) == http.StatusOK, "first authorisation refused")
	// The same state again, with a fresh code: refused (single use).
	mustf(t, followAuthorize(t, f, redirect, connect) == http.StatusUnauthorized, "a used state was accepted again")
}

// TestSecurityInstallFloodSparesPortal. Attack: every forged install made a token check through
// the portal's rate limiter with priority; 200 forged installs delayed real deliveries by up to
// 111 s and spent the portal's request budget.
func TestSecurityInstallFloodSparesPortal(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	const calls = 20
	var recs []*call.Record
	for i := range calls {
		_, rec := missedCall(fmt.Sprintf("1795309%03d.1", i), float64(1795309000+i))
		recs = append(recs, rec)
	}
	before := f.State()
	var wg sync.WaitGroup
	statuses := make([]int, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			form := forgedInstall(f)
			switch i % 3 {
			case 1:
				form.Set("auth[domain]", "evil.bitrix24.com")
			case 2:
				form.Set("auth[member_id]", fmt.Sprintf("%032d", i))
			}
			statuses[i] = e.post(pathInstall, form)
		}()
	}
	errs := deliverAll(e.a, recs, 4)
	wg.Wait()
	mustf(t, len(errs) == 0, "deliveries failed: %v", errs)
	after := f.State()
	for i, st := range statuses {
		mustf(t, st != http.StatusOK, "forged install %d accepted", i)
	}
	// Deliveries alone: user look-ups, register and finish.
	delivery := 0
	for _, m := range []string{"user.get", "telephony.externalcall.register", "telephony.externalcall.finish"} {
		delivery += after.Requests[m] - before.Requests[m]
	}
	mustf(t, totalRequests(after)-totalRequests(before) == delivery,
		"the forged installs made portal requests: %v -> %v", before.Requests, after.Requests)
	mustf(t, after.Requests["oauth/token"]-before.Requests["oauth/token"] <= 6,
		"%d OAuth requests for 200 forged installs, want at most %d", after.Requests["oauth/token"]-before.Requests["oauth/token"], 6)
}

// TestSecurityClickToCallNumberInjection. Attack: the number of a click-to-call (or of a
// web-form callback, typed by any site visitor) went to the PBX as it came: "*" and "#" reach
// feature codes and voicemail menus, other characters reach the dial string.
func TestSecurityClickToCallNumberInjection(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.ClickToCall.CallbackExtension = "600"
		c.ClickToCall.CallbackUserID = 1270
	})
	bad := []string{"*69#", "+7900*1234567", "#31#79001234567", "+7900123&Local/666@evil", "++79001234567", "+", "7900 123 45 67,w123", "12345678901234567890123"}
	for i, number := range bad {
		st := e.post(pathEvents, clickEvent(f, f.ApplicationToken(), fmt.Sprintf("externalCall.bad.%d", i), number))
		mustf(t, st == http.StatusOK || st == http.StatusBadRequest, "click-to-call %q: http %d", number, st)
		st = e.post(pathEvents, callbackEvent(f, number))
		mustf(t, st == http.StatusOK || st == http.StatusBadRequest, "callback %q: http %d", number, st)
	}
	waitQuiet(t, e)
	mustf(t, len(e.orig.requests()) == 0, "originated %+v", e.orig.requests())
}

// TestSecurityLiveStateBounded. Attack: a flood of calls with distinct keys (a SIP scanner
// hitting the PBX) grew the live-call state without bound: entries left only after 6 hours.
func TestSecurityLiveStateBounded(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.Users.Map = map[string]int{"101": 1269} })
	for i := range 10500 {
		ev, _ := missedCall(fmt.Sprintf("1795400000.%d", i), 1795400000)
		ev.Kind = call.LiveStopRinging // no portal request: nothing is registered yet
		e.live(ev)
	}
	e.a.liveMu.Lock()
	n := len(e.a.live)
	e.a.liveMu.Unlock()
	mustf(t, n <= 10000, "%d live entries after a flood of 10500 distinct calls, want at most %d", n, 10000)
}
