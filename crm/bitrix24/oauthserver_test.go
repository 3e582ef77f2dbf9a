package bitrix24

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// attackerOAuth is an "OAuth server" of the attacker's: it records every request (which would
// carry our client secret and the portal's refresh token) and confirms whatever it is asked.
func attackerOAuth(t *testing.T, portalURL, member string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"stolen-access","refresh_token":"stolen-refresh","expires_in":3600,` +
			`"client_endpoint":"` + portalURL + `/rest/","server_endpoint":"http://attacker.invalid/rest/",` +
			`"member_id":"` + member + `","scope":"crm,telephony,user","status":"L","user_id":1}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestSecurityInstallServerEndpoint. Attack: an installation names the attacker's server as its
// server_endpoint, so that the install proof (our client_id and client_secret, the refresh token)
// goes there and the attacker confirms a forged installation, or the genuine installation's
// later refreshes do. Token requests go only to Bitrix24's own OAuth servers or the configured
// oauth_url, whatever an installation or a token answer names.
func TestSecurityInstallServerEndpoint(t *testing.T) {
	t.Parallel()
	t.Run("forged installation", func(t *testing.T) {
		t.Parallel()
		f := crmtest.StartBitrix24(t)
		evil, hits := attackerOAuth(t, f.URL(), f.MemberID())
		e := newEnv(t, f, withoutTokens())
		form := forgedInstall(f)
		form.Set("auth[server_endpoint]", evil.URL+"/rest/")
		st := e.post(pathInstall, form)
		mustf(t, st == http.StatusUnauthorized, "forged install naming the attacker's OAuth server: http %d, want 401", st)
		mustf(t, hits.Load() == 0, "the attacker's server was asked %d times", hits.Load())
		mustf(t, e.storedTokens() == nil, "stored %+v", e.storedTokens())
	})
	t.Run("genuine installation, hostile endpoint", func(t *testing.T) {
		t.Parallel()
		f := crmtest.StartBitrix24(t)
		evil, hits := attackerOAuth(t, f.URL(), f.MemberID())
		e := newEnv(t, f, withoutTokens())
		genuine := f.IssueTokens()
		form := forgedInstall(f)
		form.Set("auth[access_token]", genuine.AccessToken)
		form.Set("auth[refresh_token]", genuine.RefreshToken)
		form.Set("auth[application_token]", genuine.ApplicationToken)
		form.Set("auth[server_endpoint]", evil.URL+"/rest/")
		st := e.post(pathInstall, form)
		mustf(t, st == http.StatusOK, "genuine install: http %d", st)
		mustf(t, hits.Load() == 0, "the attacker's server was asked %d times", hits.Load())
		mustf(t, e.storedTokens().ServerEndpoint == f.URL()+"/rest/", "stored server endpoint %q", e.storedTokens().ServerEndpoint)
	})
	t.Run("token answers naming another server", func(t *testing.T) {
		t.Parallel()
		// The portal's answers name the attacker (an answer tampered with on the way, a portal
		// misconfigured): refreshes still go to the configured server.
		evil, hits := attackerOAuth(t, "http://unused.invalid", "unused")
		f := crmtest.StartBitrix24(t, fakecrm.B24ServerEndpoint(evil.URL+"/rest/"))
		e := newEnv(t, f, withoutTokens())
		if err := f.Install(t.Context(), e.srv.URL+"/crm/b24/install"); err != nil {
			t.Fatal(err)
		}
		mustf(t, e.storedTokens().ServerEndpoint == evil.URL+"/rest/", "stored %q", e.storedTokens().ServerEndpoint)
		mustf(t, e.a.tokens.OAuthServer() == f.URL(), "OAuth server %q", e.a.tokens.OAuthServer())
		for i := range 2 {
			f.ExpireTokens()
			_, rec := missedCall(fmt.Sprintf("1795310000.%d", 7+i), 1795310000)
			e.deliver(rec)
		}
		mustf(t, hits.Load() == 0 && f.State().TokenRefreshes == 3, "refreshes: attacker %d, fake %d", hits.Load(), f.State().TokenRefreshes)
	})
}

// TestOAuthServerFollowsPortal: without oauth_url, the OAuth server is the one the portal names
// among Bitrix24's own (a Russian portal's oauth.bitrix24.tech), else oauth.bitrix.info.
func TestOAuthServerFollowsPortal(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.OAuthURL = "" })
	for endpoint, want := range map[string]string{
		"https://oauth.bitrix24.tech/rest/":         "https://oauth.bitrix24.tech",
		"https://OAUTH.bitrix.info/rest/":           "https://oauth.bitrix.info",
		"https://oauth.bitrix24.tech.evil.com/rest": "https://oauth.bitrix.info",
		"http://oauth.bitrix24.tech/rest/":          "https://oauth.bitrix.info",
		"https://user@oauth.bitrix24.tech/rest/":    "https://oauth.bitrix.info",
		"":                                          "https://oauth.bitrix.info",
	} {
		tok := e.a.tokens.Tokens()
		tok.ServerEndpoint = endpoint
		if err := e.a.tokens.Install(*tok); err != nil {
			t.Fatal(err)
		}
		mustf(t, e.a.tokens.OAuthServer() == want, "%q: OAuth server %q, want %q", endpoint, e.a.tokens.OAuthServer(), want)
		mustf(t, e.a.oauthServers.For(endpoint) == want, "%q: install proofs go to %q, want %q", endpoint, e.a.oauthServers.For(endpoint), want)
	}
}
