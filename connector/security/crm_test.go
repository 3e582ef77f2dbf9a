package security_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/crm/amocrm"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// portalRequests counts the requests the fake portal's REST API served (the OAuth server's
// aside): what an attacker could spend of the portal's 2 requests a second.
func portalRequests(env *demo.Env) int {
	n := 0
	for m, c := range env.B24.State().Requests {
		if m != "oauth/token" {
			n += c
		}
	}
	return n
}

func installForm(env *demo.Env, appToken, domain, member string) url.Values {
	return form("event", "ONAPPINSTALL", "data[VERSION]", "1", "data[ACTIVE]", "Y", "data[INSTALLED]", "Y", "ts", fmt.Sprint(time.Now().Unix()),
		"auth[access_token]", "forged-access-token", "auth[refresh_token]", "forged-refresh-token", "auth[expires_in]", "3600",
		"auth[scope]", "crm,telephony,user", "auth[domain]", domain, "auth[member_id]", member, "auth[status]", "L",
		"auth[server_endpoint]", "https://oauth.bitrix.info/rest/", "auth[client_endpoint]", "https://"+domain+"/rest/",
		"auth[application_token]", appToken)
}

// At 1bda728 a forged ONAPPINSTALL was stored whenever the portal answered the token check with
// anything but 401: with the portal (or its OAuth server) in an outage, auth[access_token]=forged
// and auth[application_token]=ATTACKER for the configured portal took over the connector, and
// ONEXTERNALCALLSTART with the attacker's token then dialled any number. Now an install needs
// positive proof (the refresh token refreshes with our client secret and names our portal), a
// different member_id is refused before any request, and forged installs spend nothing of the
// portal's request budget.
func TestSecurityBitrix24InstallTakeover(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{})
	faults := env.B24.Faults()
	faults.OAuthFailStatus = http.StatusServiceUnavailable
	env.B24.SetFaults(faults)
	install := env.PublicURL + "/crm/b24-demo/install"
	if status, body := postForm(t, install, installForm(env, "ATTACKER", env.B24.Domain(), env.B24.MemberID())); status == http.StatusOK {
		t.Fatalf("a forged install during an OAuth outage was accepted: %s", body)
	}
	if status, _ := postForm(t, install, installForm(env, "ATTACKER", env.B24.Domain(), "another-member-id")); status != http.StatusForbidden {
		t.Errorf("an install of another member_id: %d, want 403", status)
	}
	// The attacker's token opens nothing.
	before := env.PBX.Stats().Originates
	f := form("event", "ONEXTERNALCALLSTART", "data[PHONE_NUMBER]", "+79001234567", "data[USER_ID]", "1269",
		"data[CALL_ID]", "externalCall.forged", "ts", fmt.Sprint(time.Now().Unix()),
		"auth[domain]", env.B24.Domain(), "auth[member_id]", env.B24.MemberID(), "auth[application_token]", "ATTACKER")
	if status, _ := postForm(t, env.PublicURL+"/crm/b24-demo/events", f); status != http.StatusUnauthorized {
		t.Errorf("click-to-call with the attacker's application token: %d, want 401", status)
	}
	// 200 forged installs: no portal request, and few to the OAuth server.
	portal, oauth := portalRequests(env), env.B24.State().Requests["oauth/token"]
	for i := range 200 {
		postForm(t, install, installForm(env, fmt.Sprintf("ATTACKER%d", i), env.B24.Domain(), env.B24.MemberID()))
	}
	if n := portalRequests(env) - portal; n != 0 {
		t.Errorf("forged installs made %d portal requests", n)
	}
	if n := env.B24.State().Requests["oauth/token"] - oauth; n > 8 {
		t.Errorf("200 forged installs made %d OAuth requests (the limiter allows 6 a minute)", n)
	}
	// The event was refused before it was accepted for handling: no originate can follow.
	if n := env.PBX.Stats().Originates - before; n != 0 {
		t.Errorf("%d calls placed for the attacker", n)
	}
}

// At 1bda728 Bitrix24 events were neither bound to the installed portal nor de-duplicated: the
// same ONEXTERNALCALLSTART posted 4 times made 4 calls, an event with another portal's
// member_id was accepted, and a replayed callback rang twice.
func TestSecurityBitrix24EventsBoundAndOnce(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{})
	post := func(f url.Values) int {
		status, _ := postForm(t, env.PublicURL+"/crm/b24-demo/events", f)
		return status
	}
	click := func(member, callID string) url.Values {
		return form("event", "ONEXTERNALCALLSTART", "event_handler_id", "1055", "data[PHONE_NUMBER]", "+79001234567",
			"data[PHONE_NUMBER_INTERNATIONAL]", "+79001234567", "data[USER_ID]", "1269", "data[LINE_NUMBER]", "+74951112233",
			"data[CALL_ID]", callID, "data[CALL_LIST_ID]", "0", "data[EXTENSION]", "", "data[IS_MOBILE]", "0",
			"ts", fmt.Sprint(time.Now().Unix()), "auth[domain]", env.B24.Domain(), "auth[member_id]", member,
			"auth[application_token]", env.B24.ApplicationToken())
	}
	if st := post(click("another-portal-member", "externalCall.x1")); st != http.StatusUnauthorized {
		t.Errorf("an event with another member_id: %d, want 401", st)
	}
	replayed := click(env.B24.MemberID(), "externalCall.replayed")
	for range 4 {
		post(replayed)
	}
	waitFor(t, 10*time.Second, "the one call and three refused replays", func() bool {
		return env.PBX.Stats().Originates >= 1 && metric(t, env, "pbxbridge_bitrix24_event_replays_total", "event", "click_to_call") == 3
	})
	if n := env.PBX.Stats().Originates; n != 1 {
		t.Errorf("the same ONEXTERNALCALLSTART posted 4 times placed %d calls, want 1", n)
	}
}

// At 1bda728 the amoCRM/Kommo widget's click-to-call took the clicking user from the request
// body when the request was signed with the widget's HMAC key, which every CRM user's browser
// could read: any user rang any extension, and the same request with its signature in upper
// case was accepted twice. Now only amoCRM's one-time token names the user, the HMAC mode is
// gone, and a token works once.
func TestSecurityAmoCRMWidgetIdentity(t *testing.T) {
	t.Parallel()
	var audience string
	env := start(t, demo.Options{Configure: func(c *config.Config) {
		audience = c.HTTP.Public.URL
		for i := range c.Connectors {
			if s, ok := c.Connectors[i].Settings.(*amocrm.Config); ok && c.Connectors[i].Name == "amo-demo" {
				s.Auth.ClientSecret = configs.NewSecret(fakecrm.DemoClientSecret)
				s.ClickToCall.AcceptJWT = true
			}
		}
	}})
	u := env.PublicURL + "/crm/amo-demo/click2call"
	acct := env.Amo.State().Accounts[0]
	// The token amoCRM attaches for a user signed in to the connector's account (the demo
	// account answers under a reserved name; the token names the configured subdomain).
	oneTime := func(user int64) string {
		t.Helper()
		now := time.Now()
		tok, err := fakecrm.SignOneTimeToken(fakecrm.DemoClientSecret, map[string]any{
			"iss": "https://demo-amocrm.amocrm.ru", "aud": audience, "jti": fmt.Sprintf("jti-%d-%d", user, now.UnixNano()),
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(30 * time.Minute).Unix(),
			"account_id": acct.ID, "subdomain": "demo-amocrm", "client_uuid": fakecrm.DemoClientID, "user_id": user,
		})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	call := func(token, body string, header http.Header) (int, string) {
		h := http.Header{"Content-Type": {"application/json"}}
		if token != "" {
			h.Set(amocrm.HeaderAuthToken, token)
		}
		for k, v := range header {
			h[k] = v
		}
		return do(t, http.MethodPost, u, strings.NewReader(body), h)
	}
	// The old HMAC headers open nothing.
	hmacHeaders := http.Header{"X-Pbxbridge-Timestamp": {fmt.Sprint(time.Now().Unix())}, "X-Pbxbridge-Signature": {strings.Repeat("AB", 32)}}
	if st, _ := call("", `{"user_id":504141,"phone":"+79001234567"}`, hmacHeaders); st != http.StatusUnauthorized {
		t.Errorf("an HMAC-signed request: %d, want 401", st)
	}
	// User 504142's token cannot ring user 504141's extension.
	if st, body := call(oneTime(504142), `{"user_id":504141,"phone":"+79001234567"}`, nil); st == http.StatusOK {
		t.Errorf("user 504142's token rang user 504141: %s", body)
	}
	before := env.PBX.Stats().Originates
	tok := oneTime(504141)
	st, body := call(tok, `{"phone":"+79001234567"}`, nil)
	var res amocrm.Click2CallResponse
	_ = json.Unmarshal([]byte(body), &res)
	if st != http.StatusOK || !res.OK {
		t.Fatalf("a genuine click: %d %s", st, body)
	}
	if st, _ := call(tok, `{"phone":"+79001234567"}`, nil); st == http.StatusOK {
		t.Error("the same one-time token worked twice")
	}
	if n := env.PBX.Stats().Originates - before; n != 1 {
		t.Errorf("%d calls placed, want 1", n)
	}
}

// At 1bda728 the amoCRM OAuth callback skipped its state check when the request carried
// from_widget=1&client_id=<the integration's public id>: anyone could make the daemon exchange
// a code of their choosing. Now every callback needs a valid, unused state, and a forged one
// costs no amoCRM request.
func TestSecurityAmoCRMOAuthState(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{Unlicensed: true, Configure: func(c *config.Config) {
		for i := range c.Connectors {
			if s, ok := c.Connectors[i].Settings.(*amocrm.Config); ok && c.Connectors[i].Name == "amo-demo" {
				s.Auth.LongLivedToken = configs.Secret{}
				s.Auth.ClientID = fakecrm.DemoClientID
				s.Auth.ClientSecret = configs.NewSecret(fakecrm.DemoClientSecret)
			}
		}
	}})
	requests := func() int {
		n := 0
		for _, c := range env.Amo.State().Requests {
			n += c
		}
		return n
	}
	sent := requests()
	for _, q := range []string{
		"code=attacker-code&from_widget=1&client_id=" + url.QueryEscape(fakecrm.DemoClientID),
		"code=attacker-code&state=forged",
		"code=attacker-code",
	} {
		if st, _ := get(t, env.PublicURL+"/crm/amo-demo/oauth/callback?"+q); st != http.StatusUnauthorized {
			t.Errorf("callback ?%s: %d, want 401", q, st)
		}
	}
	if n := requests() - sent; n != 0 {
		t.Errorf("forged callbacks made %d amoCRM requests", n)
	}
}
