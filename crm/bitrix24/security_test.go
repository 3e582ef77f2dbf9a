package bitrix24

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/configs"
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
	t, err := api.TokenFile{Path: filepath.Join(e.a.stateDir, tokenFile)}.Load()
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
	// Deliveries alone: user look-ups, register and finish (several finishes in a batch).
	delivery := 0
	for _, m := range []string{"user.get", "telephony.externalcall.register", "telephony.externalcall.finish", "batch"} {
		delivery += after.Requests[m] - before.Requests[m]
	}
	mustf(t, totalRequests(after)-totalRequests(before) == delivery,
		"the forged installs made portal requests: %v -> %v", before.Requests, after.Requests)
	codes := map[int]int{}
	for _, st := range statuses {
		codes[st]++
	}
	t.Logf("200 forged installs: answers %v; portal requests besides deliveries %d; OAuth requests %d",
		codes, totalRequests(after)-totalRequests(before)-delivery, after.Requests["oauth/token"]-before.Requests["oauth/token"])
	mustf(t, after.Requests["oauth/token"]-before.Requests["oauth/token"] <= installProofBurst,
		"%d OAuth requests for 200 forged installs, want at most %d", after.Requests["oauth/token"]-before.Requests["oauth/token"], installProofBurst)
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
	mustf(t, n <= liveMax, "%d live entries after a flood of 10500 distinct calls, want at most %d", n, liveMax)
}

// clock is a settable clock for the adapter.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func withClock(c *clock) envOpt { return func(p *crm.Params, _ *Config) { p.Now = c.Now } }

// inState builds the adapter on an existing state directory, keeping what is there.
func inState(dir string) envOpt {
	return func(p *crm.Params, _ *Config) {
		p.StateDir = dir
		p.Type = "keep-tokens"
	}
}

// withLog sends the adapter's log to buf.
func withLog(buf *testkit.Buffer) envOpt {
	return func(p *crm.Params, _ *Config) { p.Logger = slog.New(slog.NewTextHandler(buf, nil)) }
}

// TestSecurityInstallProof: a genuine installation is accepted and the refreshed pair is stored
// (the event's refresh token is spent); an OAuth-server outage, a timeout, a refresh token the
// server refuses and tokens of another portal all refuse the installation.
func TestSecurityInstallProof(t *testing.T) {
	t.Parallel()
	t.Run("genuine", func(t *testing.T) {
		t.Parallel()
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, withoutTokens())
		if err := f.Install(context.Background(), e.srv.URL+"/crm/b24/install"); err != nil {
			t.Fatal(err)
		}
		s := f.State()
		mustf(t, s.TokenRefreshes == 1 && s.Requests["oauth/token"] == 1, "install proof: %d refreshes, %v", s.TokenRefreshes, s.Requests)
		tok := e.storedTokens()
		mustf(t, tok != nil && tok.MemberID == f.MemberID() && tok.ApplicationToken == f.ApplicationToken() &&
			tok.ClientEndpoint == f.URL()+"/rest/" && !tok.Expires.IsZero(), "stored %+v", tok)
		_, rec := missedCall("1795310000.1", 1795310000)
		e.deliver(rec) // the refreshed access token works
		mustf(t, f.State().TokenRefreshes == 1, "the stored access token needed a refresh")
		mustf(t, testutil.ToFloat64(e.a.m.installProofs.WithLabelValues("ok")) == 1, "install_proofs_total{ok} not counted")
	})
	t.Run("outage", func(t *testing.T) {
		t.Parallel()
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, withoutTokens())
		f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, OAuthFailStatus: http.StatusServiceUnavailable})
		genuine := f.IssueTokens()
		form := forgedInstall(f)
		form.Set("auth[access_token]", genuine.AccessToken)
		form.Set("auth[refresh_token]", genuine.RefreshToken)
		form.Set("auth[application_token]", genuine.ApplicationToken)
		st := e.post(pathInstall, form)
		mustf(t, st == http.StatusServiceUnavailable, "install during an OAuth outage: http %d, want 503", st)
		mustf(t, e.storedTokens() == nil && e.a.Status().Auth == "missing", "stored during an outage: %+v", e.storedTokens())
		// Bitrix24 retries once the OAuth server is back: the same event is accepted.
		f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true})
		st = e.post(pathInstall, form)
		mustf(t, st == http.StatusOK && e.a.Status().Auth == "ok", "retried install: http %d, %+v", st, e.a.Status())
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, withoutTokens(), func(_ *crm.Params, c *Config) { c.HTTPTimeout = 100 * time.Millisecond })
		f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, Latency: time.Minute})
		st := e.post(pathInstall, forgedInstall(f))
		mustf(t, st == http.StatusServiceUnavailable, "install with a silent OAuth server: http %d, want 503", st)
		mustf(t, e.storedTokens() == nil, "stored %+v", e.storedTokens())
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, withoutTokens())
		st := e.post(pathInstall, forgedInstall(f))
		mustf(t, st == http.StatusUnauthorized, "forged install: http %d, want 401", st)
		mustf(t, testutil.ToFloat64(e.a.m.installProofs.WithLabelValues("refused")) == 1, "install_proofs_total{refused} not counted")
	})
	t.Run("another portal", func(t *testing.T) {
		t.Parallel()
		// Tokens another portal (B) issued, with the same client credentials, posted as an
		// installation of ours (A): the OAuth server's answer names B.
		a := crmtest.StartBitrix24(t)
		b := crmtest.StartBitrix24(t, fakecrm.B24MemberID("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"))
		e := newEnv(t, a, withoutTokens(), func(_ *crm.Params, c *Config) { c.OAuthURL = b.URL() })
		tok := b.IssueTokens()
		for _, member := range []string{a.MemberID(), b.MemberID()} {
			form := forgedInstall(a)
			form.Set("auth[refresh_token]", tok.RefreshToken)
			form.Set("auth[member_id]", member)
			st := e.post(pathInstall, form)
			mustf(t, st == http.StatusForbidden, "install with portal B's tokens claiming member %s: http %d, want 403", member, st)
			tok = b.IssueTokens() // the refused proof spent the refresh token
		}
		mustf(t, e.storedTokens() == nil, "stored %+v", e.storedTokens())
	})
}

// TestSecurityProvenTokens: the answer of the OAuth server must name the configured portal's
// REST URL and the expected member_id.
func TestSecurityProvenTokens(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	rest := f.URL() + "/rest/"
	ok := func(endpoint, member string) *api.TokenResponse {
		return &api.TokenResponse{AccessToken: "a", RefreshToken: "r", ClientEndpoint: api.String(endpoint), MemberID: api.String(member), ExpiresIn: 3600}
	}
	for _, tc := range []struct {
		name   string
		resp   *api.TokenResponse
		member string
		good   bool
	}{
		{"match", ok(rest, "m1"), "m1", true},
		{"no trailing slash, upper-case host", ok(strings.ToUpper(strings.TrimSuffix(rest, "/rest/"))+"/rest", "m1"), "m1", true},
		{"any member when none is expected", ok(rest, "m9"), "", true},
		{"other member", ok(rest, "m2"), "m1", false},
		{"no member", ok(rest, ""), "", false},
		{"other host", ok("https://evil.bitrix24.com/rest/", "m1"), "m1", false},
		{"other path", ok(f.URL()+"/rest/1/hook/", "m1"), "m1", false},
		{"userinfo", ok(strings.Replace(rest, "://", "://x@", 1), "m1"), "m1", false},
		{"empty endpoint", ok("", "m1"), "m1", false},
	} {
		got, err := e.a.provenTokens(tc.resp, tc.member)
		mustf(t, (err == nil) == tc.good, "%s: err %v", tc.name, err)
		if tc.good {
			mustf(t, got.AccessToken == "a" && got.RefreshToken == "r" && got.Domain == strings.ToLower(f.Domain()) && !got.Expires.IsZero(), "%s: %+v", tc.name, got)
		}
	}
}

// TestSecurityInstallRateLimit: plausible installs (right domain and member_id, forged tokens)
// reach the OAuth server at most installProofBurst times a minute; the rest are answered 429
// without any outbound request.
func TestSecurityInstallRateLimit(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	c := newClock()
	e := newEnv(t, f, withClock(c))
	for i := range installProofBurst + 3 {
		st := e.post(pathInstall, forgedInstall(f))
		want := http.StatusUnauthorized
		if i >= installProofBurst {
			want = http.StatusTooManyRequests
		}
		mustf(t, st == want, "install %d: http %d, want %d", i, st, want)
	}
	mustf(t, f.State().Requests["oauth/token"] == installProofBurst, "%d OAuth requests, want %d", f.State().Requests["oauth/token"], installProofBurst)
	c.Add(installProofWindow)
	mustf(t, e.post(pathInstall, forgedInstall(f)) == http.StatusUnauthorized, "the limiter did not recover after a minute")
	mustf(t, testutil.ToFloat64(e.a.m.installProofs.WithLabelValues("rate_limited")) == 3, "install_proofs_total{rate_limited} not counted")
}

// TestSecurityPortalMove: the connector stays bound to the portal of its first installation;
// a genuine installation from another portal (the admin changed portal_url) is refused with a
// log line that says how to move it; after the admin removed the binding and token files
// (daemon stopped), the new portal's installation is accepted.
func TestSecurityPortalMove(t *testing.T) {
	t.Parallel()
	a := crmtest.StartBitrix24(t)
	ea := newEnv(t, a) // installed on A: the binding is taken from the stored tokens
	bind, err := os.ReadFile(filepath.Join(ea.state, bindingFile))
	mustf(t, err == nil && strings.Contains(string(bind), a.MemberID()), "binding file %q %v", bind, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ea.a.Close(ctx)

	b := crmtest.StartBitrix24(t, fakecrm.B24MemberID("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"))
	var log testkit.Buffer
	eb := newEnv(t, b, inState(ea.state), withLog(&log))
	err = b.Install(context.Background(), eb.srv.URL+"/crm/b24/install")
	mustf(t, err != nil, "an installation from another portal was accepted")
	mustf(t, b.State().Requests["oauth/token"] == 0, "the refused installation made an OAuth request")
	mustf(t, eb.storedTokens().MemberID == a.MemberID(), "tokens replaced: %+v", eb.storedTokens())
	mustf(t, strings.Contains(log.String(), "delete the binding and token files") && strings.Contains(log.String(), bindingFile),
		"the log does not say how to move the connector: %s", log.String())
	_ = eb.a.Close(ctx)

	// The admin stops pbxbridge and deletes both files.
	for _, name := range []string{bindingFile, tokenFile} {
		if err := os.Remove(filepath.Join(ea.state, name)); err != nil {
			t.Fatal(err)
		}
	}
	ec := newEnv(t, b, inState(ea.state))
	if err := b.Install(context.Background(), ec.srv.URL+"/crm/b24/install"); err != nil {
		t.Fatalf("installation after the binding was removed: %v", err)
	}
	mustf(t, ec.a.boundMember() == b.MemberID() && ec.storedTokens().MemberID == b.MemberID(), "bound to %q", ec.a.boundMember())
}

// TestSecurityBindingSurvivesUninstall: an uninstall (authenticated by the installed token) does
// not unbind the connector: a later installation from another portal is still refused.
func TestSecurityBindingSurvivesUninstall(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	st := e.post(pathInstall, url.Values{"event": {"ONAPPUNINSTALL"}, "auth[application_token]": {f.ApplicationToken()},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()}})
	mustf(t, st == http.StatusOK && e.a.Status().Auth == "missing", "uninstall: http %d, %+v", st, e.a.Status())
	genuine := f.IssueTokens()
	form := forgedInstall(f)
	form.Set("auth[refresh_token]", genuine.RefreshToken)
	form.Set("auth[member_id]", "cccccccccccccccccccccccccccccccc")
	mustf(t, e.post(pathInstall, form) == http.StatusForbidden, "install from another member_id after an uninstall accepted")
	// Neither do events from the old installation work after the uninstall.
	mustf(t, e.post(pathEvents, clickEvent(f, f.ApplicationToken(), "externalCall.after.1", "+79001234567")) == http.StatusUnauthorized,
		"event accepted after the uninstall")
}

// TestSecurityCorruptBinding: an unreadable binding file stops the connector from starting
// rather than silently unbinding it.
func TestSecurityCorruptBinding(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, bindingFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(f)
	_, err := New(crm.Params{Name: "b24", Type: Type, Config: cfg, StateDir: dir, Calls: newCallStore(t)})
	mustf(t, err != nil && strings.Contains(err.Error(), bindingFile), "New with a corrupt binding: %v", err)
}

// TestSecurityWebhookModeEvents: with an outgoing webhook (webhook mode) events are checked
// against auth.application_token and the portal's domain.
func TestSecurityWebhookModeEvents(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t, fakecrm.B24Webhook(1, "s3cr3t", "crm,telephony,user"))
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: false})
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.Auth = AuthConfig{Mode: AuthWebhook, WebhookURL: configs.NewSecret(f.URL() + "/rest/1/s3cr3t/"), ApplicationToken: configs.NewSecret("hooktoken")}
		c.PortalURL = ""
		c.ClickToCall.CallbackExtension = "600"
		c.ClickToCall.CallbackUserID = 1270
	})
	form := callbackEvent(f, "+79007654321")
	form.Set("auth[application_token]", "hooktoken")
	form.Set("auth[domain]", "evil.bitrix24.com")
	mustf(t, e.post(pathEvents, form) == http.StatusUnauthorized, "callback from another domain accepted")
	form.Set("auth[domain]", f.Domain())
	mustf(t, e.post(pathEvents, form) == http.StatusOK, "callback refused")
	r := e.originated()
	mustf(t, r.Number == "+79007654321", "originate %+v", r)
}

// TestSecurityStaleEvents: events whose ts is more than an hour old, or minutes ahead, are
// refused; a replay therefore cannot outlive the replay guard's memory.
func TestSecurityStaleEvents(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	c := newClock()
	e := newEnv(t, f, withClock(c))
	for i, ts := range []time.Time{c.Now().Add(-replayWindow - time.Second), c.Now().Add(replayAhead + time.Minute)} {
		form := clickEvent(f, f.ApplicationToken(), fmt.Sprintf("externalCall.stale.%d", i), "+79001234567")
		form.Set("ts", fmt.Sprint(ts.Unix()))
		mustf(t, e.post(pathEvents, form) == http.StatusBadRequest, "event with ts %v accepted", ts)
	}
	waitQuiet(t, e)
	mustf(t, len(e.orig.requests()) == 0, "originated %+v", e.orig.requests())
}

// TestSecurityReplayAfterRestart: the replay guard's memory is gone after a restart or a
// configuration reload, but the CallStore still knows the event.
func TestSecurityReplayAfterRestart(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e1 := newEnv(t, f)
	form := clickEvent(f, f.ApplicationToken(), "externalCall.restart.1", "+79001234567")
	mustf(t, e1.post(pathEvents, form) == http.StatusOK, "first delivery refused")
	waitQuiet(t, e1)
	e2 := newEnv(t, f, inState(e1.state), func(p *crm.Params, _ *Config) { p.Calls = e1.store })
	mustf(t, e2.post(pathEvents, form) == http.StatusOK, "replay not answered 200")
	waitQuiet(t, e2)
	mustf(t, len(e1.orig.requests()) == 1 && len(e2.orig.requests()) == 0, "originates %d + %d, want 1 + 0", len(e1.orig.requests()), len(e2.orig.requests()))
	mustf(t, testutil.ToFloat64(e2.a.m.replays.WithLabelValues("click_to_call")) == 1, "event_replays_total not counted")
}

// TestSecurityReplayGuardFull: a flood of distinct (authenticated) events fills the replay
// guard; beyond its cap new events are refused and counted rather than the memory growing.
func TestSecurityReplayGuardFull(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.ClickToCall.Enabled = false }) // no originates, only finishes
	e.a.replays = newReplayGuard(replayWindow+replayAhead, 100)
	codes := map[int]int{}
	for i := range 150 {
		codes[e.post(pathEvents, clickEvent(f, f.ApplicationToken(), fmt.Sprintf("externalCall.flood.%d", i), "+79001234567"))]++
	}
	waitQuiet(t, e)
	mustf(t, codes[http.StatusOK] == 100 && codes[http.StatusServiceUnavailable] == 50, "answers %v", codes)
	mustf(t, e.a.replays.len() == 100, "the guard holds %d ids, cap 100", e.a.replays.len())
	mustf(t, testutil.ToFloat64(e.a.m.replayFull) == 50, "replay_guard_full_total %v", testutil.ToFloat64(e.a.m.replayFull))
}

// TestSecurityReplayGuardExpiry: ids are remembered for the guard's time, then forgotten;
// memory is reclaimed.
func TestSecurityReplayGuardExpiry(t *testing.T) {
	t.Parallel()
	g := newReplayGuard(time.Hour, 10)
	now := time.Unix(1_800_000_000, 0)
	mustf(t, g.admit(now, "a") == replayNew && g.admit(now, "a") == replayDuplicate, "duplicate not detected")
	for i := range 9 {
		mustf(t, g.admit(now.Add(time.Duration(i)*time.Minute), fmt.Sprint(i)) == replayNew, "id %d refused", i)
	}
	mustf(t, g.admit(now, "x") == replayFull, "admitted beyond the cap")
	later := now.Add(time.Hour + 30*time.Minute)
	mustf(t, g.admit(later, "a") == replayNew, "id still remembered after its time")
	mustf(t, g.len() == 1 && len(g.order) == 1, "memory not reclaimed: %d ids, %d entries", g.len(), len(g.order))
}

// TestSecurityOAuthStates: states are random, single-use, expire after 30 minutes, and at most
// stateMax are outstanding.
func TestSecurityOAuthStates(t *testing.T) {
	t.Parallel()
	s := newOAuthStates()
	now := time.Unix(1_800_000_000, 0)
	a := s.issue(now)
	mustf(t, len(a) == 32 && s.issue(now.Add(time.Minute)) == a, "an unused recent state is not reused: %q", a)
	b := s.issue(now.Add(stateReuse + time.Second))
	mustf(t, b != a, "no new state after %v", stateReuse)
	mustf(t, s.consume(now.Add(2*time.Minute), a) && !s.consume(now.Add(2*time.Minute), a), "state a not single-use")
	mustf(t, !s.consume(now.Add(stateReuse+stateTTL+2*time.Second), b), "state b accepted after it expired")
	mustf(t, !s.consume(now, "") && !s.consume(now, "forged"), "unknown state accepted")
	// Reuse keeps issue() from making more than stateTTL/stateReuse states; the cap is a
	// backstop, exercised here by defeating the reuse.
	first := s.issue(now.Add(time.Hour))
	for i := range stateMax {
		s.newest = ""
		s.issue(now.Add(time.Hour + time.Duration(i+1)*time.Second))
	}
	mustf(t, len(s.issued) == stateMax && !s.consume(now.Add(2*time.Hour), first), "%d outstanding states; the oldest was not evicted", len(s.issued))

	// Two connectors with the same secret get different states (the old state was an HMAC of it).
	f := crmtest.StartBitrix24(t)
	e1, e2 := newEnv(t, f), newEnv(t, f)
	mustf(t, e1.a.connectURL() != e2.a.connectURL(), "two connectors share a state")
}

// TestSecurityOAuthStateExpiry: a connect URL's state is refused after 30 minutes.
func TestSecurityOAuthStateExpiry(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	c := newClock()
	e := newEnv(t, f, withClock(c))
	connect := e.a.connectURL()
	c.Add(stateTTL + time.Second)
	mustf(t, followAuthorize(t, f, e.srv.URL+"/crm/b24/oauth/callback", connect) == http.StatusUnauthorized, "expired state accepted")
	mustf(t, f.State().Requests["oauth/token"] == 0, "an expired state reached the OAuth server")
}

// TestSecurityClickToCallFormattedNumber: numbers written with spaces, hyphens and parentheses
// are dialled as digits; refused numbers close the card with the reason.
func TestSecurityClickToCallFormattedNumber(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e.setup()
	callID, err := f.ClickToCall(context.Background(), 1269, "+7 (900) 123-45-67", "+74951112233")
	if err != nil {
		t.Fatal(err)
	}
	r := e.originated()
	mustf(t, r.Number == "+79001234567", "dialled %q", r.Number)
	mustf(t, clickCall(f.State(), callID).State == "registered", "call finished")

	callID, err = f.ClickToCall(context.Background(), 1269, "*69#", "+74951112233")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused call to be finished", func() bool { return clickCall(f.State(), callID).State == "finished" })
	reason, _ := clickCall(f.State(), callID).Finish["FAILED_REASON"].(string)
	mustf(t, strings.Contains(reason, "only digits"), "reason %q", reason)
}

// TestSecurityExtensionInjection: a Bitrix24 user's Internal phone (which users may edit) is
// not put in an originate unless it looks like an extension.
func TestSecurityExtensionInjection(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t, fakecrm.B24Users(fakecrm.B24User{ID: 1269, Name: "Eve", Ext: "101&Local/666@evil", Active: true}))
	e := newEnv(t, f)
	e.setup()
	callID, err := f.ClickToCall(context.Background(), 1269, "+79001234567", "+74951112233")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused call to be finished", func() bool { return clickCall(f.State(), callID).State == "finished" })
	waitQuiet(t, e)
	mustf(t, len(e.orig.requests()) == 0, "originated %+v", e.orig.requests())
}

// TestSecurityLookupFlood: distinct numbers looked up at once (a flood of calls with spoofed
// caller ids) start at most routeFlightMax portal requests; the others answer "unknown" at once.
func TestSecurityLookupFlood(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, Latency: time.Minute}) // the portal hangs
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const n = 200
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = e.a.Lookup(ctx, fmt.Sprintf("+7900%07d", i))
		}()
	}
	waitFor(t, "the excess look-ups to be shed", func() bool {
		return testutil.ToFloat64(e.a.m.cacheFull.WithLabelValues("lookups")) == n-routeFlightMax
	})
	e.a.routes.mu.Lock()
	inflight := len(e.a.routes.inflight)
	e.a.routes.mu.Unlock()
	mustf(t, inflight == routeFlightMax, "%d look-ups in flight, want %d", inflight, routeFlightMax)
	cancel()
	wg.Wait()
}

// TestSecurityUserLookupFlood: while the user cache is cold, extensions looked up one by one are
// kept up to userSingleMax; a flood of distinct extensions does not grow it further.
func TestSecurityUserLookupFlood(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	for i := range userSingleMax + 50 {
		if _, _, err := e.a.users.lookup(context.Background(), fmt.Sprintf("9%05d", i)); err != nil {
			t.Fatal(err)
		}
	}
	e.a.users.mu.RLock()
	n := len(e.a.users.single)
	e.a.users.mu.RUnlock()
	mustf(t, n == userSingleMax, "%d cached extensions, cap %d", n, userSingleMax)
	mustf(t, testutil.ToFloat64(e.a.m.cacheFull.WithLabelValues("users")) == 50, "cache_full_total{users} not counted")
}
