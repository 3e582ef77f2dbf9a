package amocrm

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// Acceptance 3, first half: rotated tokens survive a restart, and the rotation never presents a
// spent refresh token (the fake revokes the grant when that happens).
func TestTokenRotationSurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	tokenReqs := func() int { return e.fake.State().Requests["POST /oauth2/access_token"] }
	e.deliver(answered(1))
	tf1 := tokenFileOf(t, e.dir)
	if !tf1.Confirmed || tf1.PreviousRefresh != "" || tf1.AccountID != 28805383 || tf1.Subdomain != "romashka" {
		t.Fatalf("after the first call: %+v", tf1)
	}
	fi, err := os.Stat(filepath.Join(e.dir, tokenFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v %v", fi.Mode(), err)
	}

	e.fake.ExpireAccessTokens("romashka")
	e.deliver(answered(2))
	tf2 := tokenFileOf(t, e.dir)
	if tf2.RefreshToken == tf1.RefreshToken || tf2.AccessToken == tf1.AccessToken || !tf2.Confirmed || tf2.PreviousRefresh != "" {
		t.Fatalf("after a refresh: %+v", tf2)
	}
	if n := testutil.ToFloat64(e.a.m.tokens.WithLabelValues("refreshed")); n != 1 {
		t.Fatalf("refreshes %v", n)
	}

	// Restart: the new instance uses the saved tokens without refreshing.
	if err := e.a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := tokenReqs()
	e.a = e.open()
	e.deliver(answered(3))
	if tokenReqs() != before {
		t.Fatal("the restarted adapter refreshed a valid token")
	}
	// And refreshes with the rotated refresh token when the access token expires.
	e.fake.ExpireAccessTokens("romashka")
	e.deliver(answered(4))
	if tokenReqs() != before+1 {
		t.Fatalf("%d token requests after the restart, want 1", tokenReqs()-before)
	}
	if st := e.a.Status(); st.Auth != "ok" {
		t.Fatalf("status %+v", st)
	}
	for i := 1; i <= 4; i++ {
		if n := e.fake.Logged(answered(i).Key()); n != 1 {
			t.Fatalf("call %d logged %d times", i, n)
		}
	}
}

// A refresh whose new tokens were saved but never used (crash right after the refresh, or the
// answer reached amoCRM but its tokens are unusable): the previous refresh token is kept and
// used again.
func TestPreviousRefreshTokenKeptUntilNewOnesWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeKommo, envOpt{})
	e.deliver(answered(1))
	old := tokenFileOf(t, e.dir)
	if _, err := e.a.tokens.refresh(context.Background(), "", true); err != nil {
		t.Fatal(err)
	}
	tf := tokenFileOf(t, e.dir)
	if tf.Confirmed || tf.PreviousRefresh != old.RefreshToken {
		t.Fatalf("fresh rotation: %+v", tf)
	}
	// Damage the new refresh token as if its answer had been lost, and restart.
	tf.RefreshToken = "def50200-lost"
	tf.ExpiresAt = time.Now().Add(-time.Hour)
	b, _ := json.Marshal(tf)
	if err := os.WriteFile(filepath.Join(e.dir, tokenFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = e.a.Close(context.Background())
	e.a = e.open()
	e.deliver(answered(2))
	now := tokenFileOf(t, e.dir)
	if !now.Confirmed || now.PreviousRefresh != "" || now.RefreshToken == tf.RefreshToken || now.Broken != "" {
		t.Fatalf("after recovering with the previous token: %+v", now)
	}
	if n := e.fake.Logged(answered(2).Key()); n != 1 {
		t.Fatalf("logged %d", n)
	}
}

// Acceptance 3, second half: a revoked grant gives a clear re-authorise state while calls stay
// queued (AuthBroken), across a restart, until an admin authorises again through the redirect
// endpoint.
func TestRevokedTokenKeepsCallsQueued(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	e.deliver(answered(1))
	e.fake.Revoke("romashka")
	rec := answered(2)
	err := e.a.Deliver(context.Background(), rec)
	if c, _ := crm.Classify(err); c != crm.ClassAuth {
		t.Fatalf("deliver with a revoked grant: %v (%v)", err, c)
	}
	st := e.a.Status()
	if st.Auth != "reauthorize" || !strings.HasPrefix(st.ConnectURL, e.srv.URL+"/oauth?") || !strings.Contains(st.Detail, "authorise") {
		t.Fatalf("status %+v", st)
	}
	if n := e.fake.Logged(rec.Key()); n != 0 {
		t.Fatalf("logged %d", n)
	}

	// After a restart the state is the same and nothing is sent.
	_ = e.a.Close(context.Background())
	e.a = e.open()
	if st := e.a.Status(); st.Auth != "reauthorize" {
		t.Fatalf("status after restart %+v", st)
	}
	before := e.fake.State().Requests
	err = e.a.Deliver(context.Background(), rec)
	if c, _ := crm.Classify(err); c != crm.ClassAuth {
		t.Fatalf("deliver after restart: %v", err)
	}
	after := e.fake.State().Requests
	if after["POST /api/v4/calls"] != before["POST /api/v4/calls"] || after["POST /oauth2/access_token"] != before["POST /oauth2/access_token"] {
		t.Fatalf("requests were sent with a broken grant: %v → %v", before, after)
	}

	// The admin opens the connect link; amoCRM redirects to our callback.
	mux := http.NewServeMux()
	for _, r := range e.a.Routes() {
		mux.Handle(strings.Replace(r.Pattern, " ", " /crm/amo", 1), http.StripPrefix("/crm/amo", r.Handler))
	}
	daemon := httptest.NewServer(mux)
	defer daemon.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(e.a.Status().ConnectURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || loc.Query().Get("code") == "" {
		t.Fatalf("consent page: %d %v", resp.StatusCode, resp.Header)
	}
	if loc.String()[:len(testRedirect)] != testRedirect {
		t.Fatalf("redirected to %s", loc)
	}
	resp, err = http.Get(daemon.URL + loc.Path + "?" + loc.RawQuery)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "connected to Romashka LLC") {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	if st := e.a.Status(); st.Auth != "ok" {
		t.Fatalf("status after re-authorisation %+v", st)
	}
	e.deliver(rec)
	if n := e.fake.Logged(rec.Key()); n != 1 {
		t.Fatalf("logged %d after re-authorisation", n)
	}

	// A callback with a forged state is refused and counted.
	resp, err = http.Get(daemon.URL + "/crm/amo/oauth/callback?code=x&state=forged.1.x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || testutil.ToFloat64(e.a.m.authFailure.WithLabelValues("oauth_callback")) != 1 {
		t.Fatalf("forged state: %d", resp.StatusCode)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

// Concurrent 401s cause one refresh: amoCRM revokes a refresh token presented twice.
func TestOneRefreshAtATime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{fake: fakecrm.AmoOptions{RateLimit: -1}, mutate: func(c *Config) { c.RateLimit = 50 }})
	if _, err := e.a.Lookup(context.Background(), "+79001234567"); err != nil {
		t.Fatal(err)
	}
	e.fake.ExpireAccessTokens("romashka")
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.a.Lookup(context.Background(), "+79001234567")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := e.fake.State().Requests["POST /oauth2/access_token"]; n != 2 { // the code exchange and one refresh
		t.Fatalf("%d token requests, want 2", n)
	}
}

func TestProactiveRefresh(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, TypeAmoCRM, envOpt{now: clock})
	before := tokenFileOf(t, e.dir)
	e.a.maintain(context.Background())
	if tokenFileOf(t, e.dir).RefreshToken != before.RefreshToken {
		t.Fatal("refreshed a fresh token")
	}
	mu.Lock()
	now = now.Add(31 * 24 * time.Hour) // idle for a month: amoCRM would revoke it after three
	mu.Unlock()
	e.a.maintain(context.Background())
	after := tokenFileOf(t, e.dir)
	if after.RefreshToken == before.RefreshToken || !after.RefreshedAt.Equal(clock()) {
		t.Fatalf("not rotated: %+v", after)
	}
	e.deliver(answered(1))
}

func TestLongLivedToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeKommo, envOpt{longLived: true})
	e.deliver(answered(1))
	if st := e.a.Status(); st.Auth != "ok" || st.ConnectURL != "" {
		t.Fatalf("status %+v", st)
	}
	acc, err := e.a.Account(context.Background())
	if err != nil || acc.AccountID != 28805383 || acc.Subdomain != "romashka" {
		t.Fatalf("account %+v %v", acc, err)
	}
	e.fake.Revoke("romashka")
	err = e.a.Deliver(context.Background(), answered(2))
	if c, _ := crm.Classify(err); c != crm.ClassAuth {
		t.Fatalf("revoked long-lived token: %v", err)
	}
	if st := e.a.Status(); st.Auth != "reauthorize" || !strings.Contains(st.Detail, "long-lived") {
		t.Fatalf("status %+v", st)
	}
}

func TestExchangeCodeErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{noAuth: true})
	if st := e.a.Status(); st.Auth != "missing" || st.ConnectURL == "" {
		t.Fatalf("status before authorisation %+v", st)
	}
	err := e.a.Deliver(context.Background(), answered(1))
	if c, _ := crm.Classify(err); c != crm.ClassAuth {
		t.Fatalf("deliver before authorisation: %v", err)
	}
	code := e.fake.IssueCode("romashka")
	if _, err := ExchangeCode(context.Background(), e.cfg, e.dir, code); err != nil {
		t.Fatal(err)
	}
	// The running adapter picks up the tokens written by the CLI.
	e.deliver(answered(1))
	if _, err := ExchangeCode(context.Background(), e.cfg, e.dir, code); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("reused code: %v", err)
	}
	c := *e.cfg
	c.Auth.RedirectURI = ""
	if _, err := ExchangeCode(context.Background(), &c, t.TempDir(), "x"); err == nil || !strings.Contains(err.Error(), "redirect_uri") {
		t.Fatalf("no redirect URI: %v", err)
	}
	// A code of another account is refused.
	e.fake.AddAccount(fakecrm.AmoAccountSpec{ID: 1, Subdomain: "other", ClientID: fakecrm.DemoClientID, ClientSecret: fakecrm.DemoClientSecret})
	other := *e.cfg
	other.BaseURL = e.srv.URL // the first account answers for this host
	if _, err := ExchangeCode(context.Background(), &other, t.TempDir(), e.fake.IssueCode("other")); err == nil {
		t.Fatal("a code of another account was accepted by the default account")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "f.json")
	for _, s := range []string{"one", "two"} {
		if err := writeFileAtomic(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != s {
			t.Fatalf("content %q", b)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := writeFileAtomic(filepath.Join(t.TempDir(), "missing", "f"), nil, 0o600); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}
