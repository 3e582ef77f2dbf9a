package amocrm

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// testAudience is the origin the widget's requests go to (the daemon's public_url).
const testAudience = "https://pbx.example.com"

// widgetToken is the one-time token amoCRM attaches to user's click (X-Auth-Token).
func (e *env) widgetToken(user int64) string {
	e.t.Helper()
	tok, err := e.fake.OneTimeToken("romashka", user, testAudience)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// fakeRequests is the total of API requests the fake amoCRM received.
func (e *env) fakeRequests() int {
	n := 0
	for _, v := range e.fake.State().Requests {
		n += v
	}
	return n
}

// tokenClaims are the claims amoCRM puts in user's one-time token for the demo account, now.
func tokenClaims(now time.Time, jti string, user int64) map[string]any {
	return map[string]any{"iss": "https://romashka.amocrm.ru", "aud": testAudience, "jti": jti, "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(30 * time.Minute).Unix(), "account_id": 28805383, "subdomain": "romashka", "client_uuid": fakecrm.DemoClientID,
		"user_id": user}
}

func sign(t *testing.T, secret string, claims map[string]any) string {
	t.Helper()
	tok, err := fakecrm.SignOneTimeToken(secret, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signRaw signs a payload given as JSON text, spelled as the test wants.
func signRaw(secret, payload string) string {
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(unsigned))
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// hmacHeaders are the headers of the removed shared-key scheme: hex(HMAC-SHA256(key, ts+"."+body)).
func hmacHeaders(key string, body []byte) map[string]string {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return map[string]string{"X-Pbxbridge-Timestamp": ts, "X-Pbxbridge-Signature": hex.EncodeToString(m.Sum(nil))}
}

// Attack: the widget's HMAC key (click_to_call.secret) was a widget setting, so it reached the
// browser of every user of the account. User 504143 (extension 103) read it and signed a body
// naming user 504141: extension 101 rang and dialled the number 504143 chose. Now only amoCRM's
// one-time token identifies the user; a body naming someone else is refused.
func TestSecurityClickToCallSharedKeyCannotImpersonate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	u := e.daemon(t).URL + "/crm/amo/click2call"
	body := []byte(`{"user_id":504141,"phone":"+79001234567"}`)
	if r := postC2C(t, u, body, hmacHeaders("click-to-call-secret-0123456789", body)); r.status != http.StatusUnauthorized ||
		!strings.Contains(r.body.Message, "one-time token") {
		t.Errorf("a body signed with a shared key: %d %+v", r.status, r.body)
	}
	if r := postC2C(t, u, body, map[string]string{HeaderAuthToken: e.widgetToken(504143)}); r.status != http.StatusBadRequest ||
		!strings.Contains(r.body.Message, "not the signed-in user") {
		t.Errorf("a token of 504143 with user_id 504141: %d %+v", r.status, r.body)
	}
	// A forged token (the attacker does not have the integration's secret key) and a token
	// whose payload was edited to name another user are refused.
	tok := e.widgetToken(504143)
	parts := strings.Split(tok, ".")
	b, _ := json.Marshal(tokenClaims(time.Now(), "edited", 504141))
	edited := parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	for name, tok := range map[string]string{
		"forged": sign(t, "guessed-secret", tokenClaims(time.Now(), "forged", 504141)),
		"edited": edited,
	} {
		if r := postC2C(t, u, []byte(`{"phone":"+79001234567"}`), map[string]string{HeaderAuthToken: tok}); r.status != http.StatusUnauthorized {
			t.Errorf("%s token: %d %+v", name, r.status, r.body)
		}
	}
	if reqs := e.orig.requests(); len(reqs) != 0 {
		t.Fatalf("a user rang someone else's extension: %+v", reqs)
	}
	// The clicking user's own token rings the clicking user's extension, whatever user_id the
	// body leaves out.
	if r := postC2C(t, u, []byte(`{"phone":"+79001234567"}`), map[string]string{HeaderAuthToken: e.widgetToken(504143)}); r.status != http.StatusOK {
		t.Fatalf("own token: %d %+v", r.status, r.body)
	}
	if reqs := e.orig.requests(); len(reqs) != 1 || reqs[0].Extension != "103" {
		t.Fatalf("originated %+v", reqs)
	}
}

// Attack: the config still accepted click_to_call.secret, so an upgrade kept the shared key
// (and the hole) open; and a long-lived-token connector could not verify amoCRM's tokens, so it
// could only offer click-to-call through the shared key.
func TestSecurityConfigRefusesSharedSecret(t *testing.T) {
	t.Parallel()
	c := NewConfig(TypeAmoCRM)
	c.Subdomain, c.DefaultUser = "romashka", 504141
	c.Auth.ClientID = fakecrm.DemoClientID
	c.Auth.ClientSecret = configs.NewSecret(fakecrm.DemoClientSecret)
	c.ClickToCall.Secret = configs.NewSecret("a-shared-key-0123456789")
	errs := c.Validate()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "click_to_call.secret") || !strings.Contains(errs[0].Error(), "accept_jwt") {
		t.Errorf("a shared key: %v", errs)
	}
	ll := NewConfig(TypeKommo)
	ll.Subdomain, ll.DefaultUser = "romashka", 504141
	ll.Auth.LongLivedToken = configs.NewSecret(fakecrm.DemoLongLivedToken)
	ll.Auth.ClientSecret = configs.NewSecret(fakecrm.DemoClientSecret)
	ll.ClickToCall.AcceptJWT = true
	if errs := ll.Validate(); len(errs) != 0 {
		t.Errorf("a long-lived token with the integration's secret key for click-to-call: %v", errs)
	}
	ll.Auth.ClientSecret = configs.Secret{}
	ll.Auth.ClientID = fakecrm.DemoClientID
	paths := map[string]bool{}
	for _, err := range ll.Validate() {
		paths[strings.SplitN(err.Error(), ":", 2)[0]] = true
	}
	if !paths["auth"] || !paths["click_to_call.accept_jwt"] {
		t.Errorf("long-lived token, client id, no secret key: %v", paths)
	}
}

// A long-lived-token connector offers click-to-call with the integration's secret key, and
// checks client_uuid against auth.client_id when that is set.
func TestSecurityLongLivedClickToCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		clientID string
		status   int
	}{
		{"no client id", "", http.StatusOK},
		{"our client id", fakecrm.DemoClientID, http.StatusOK},
		{"another integration", "7a1c3d2e-0000-4000-8000-another", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, TypeKommo, envOpt{longLived: true, mutate: func(c *Config) {
				c.Auth.ClientSecret = configs.NewSecret(fakecrm.DemoClientSecret)
				c.Auth.ClientID = tc.clientID
				c.ClickToCall.AcceptJWT = true
			}})
			u := e.daemon(t).URL + "/crm/amo/click2call"
			r := postC2C(t, u, []byte(`{"phone":"+79001234567"}`), map[string]string{HeaderAuthToken: e.widgetToken(504141)})
			if r.status != tc.status {
				t.Fatalf("%d %+v", r.status, r.body)
			}
			e.deliver(answered(1)) // the long-lived token still does the API work
		})
	}
}

// Attack: a user of the same account, or of another account where the same (public) integration
// is installed, presents a token amoCRM signed with our integration's secret key but for
// another account, integration or server, or one that is expired, not yet valid or claims a
// lifetime amoCRM never gives.
func TestSecurityTokensOfAnotherAccountOrIntegration(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	u := e.daemon(t).URL + "/crm/amo/click2call"
	// A second account with the same integration (a public integration installed twice).
	e.fake.AddAccount(fakecrm.AmoAccountSpec{ID: 31000001, Subdomain: "other", ClientID: fakecrm.DemoClientID, ClientSecret: fakecrm.DemoClientSecret,
		Users: []fakecrm.AmoUser{{ID: 504141, Name: "Same id, other account", Active: true}}})
	otherAccount, err := e.fake.OneTimeToken("other", 504141, testAudience)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	with := func(jti string, k string, v any) string {
		c := tokenClaims(now, jti, 504141)
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return sign(t, fakecrm.DemoClientSecret, c)
	}
	for name, tok := range map[string]string{
		"other account (real)":  otherAccount,
		"other subdomain":       with("a1", "subdomain", "other"),
		"no subdomain":          with("a2", "subdomain", nil),
		"other iss":             with("a3", "iss", "https://romashka.evil.example"),
		"other account_id":      with("a4", "account_id", 1),
		"other integration":     with("a5", "client_uuid", "7a1c3d2e-0000-4000-8000-another"),
		"no integration":        with("a6", "client_uuid", nil),
		"other server":          with("a7", "aud", "https://evil.example"),
		"no audience":           with("a8", "aud", nil),
		"expired":               with("a9", "exp", now.Add(-time.Minute).Unix()),
		"not yet valid":         with("a10", "nbf", now.Add(5*time.Minute).Unix()),
		"lives a year":          with("a11", "exp", now.Add(365*24*time.Hour).Unix()),
		"no jti":                with("", "jti", nil),
		"no user":               with("a12", "user_id", nil),
		"user 0":                with("a13", "user_id", 0),
		"alg none":              base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + strings.Split(with("a14", "x", 1), ".")[1] + ".",
		"alg HS512 header":      strings.Replace(with("a15", "x", 1), strings.Split(with("a15", "x", 1), ".")[0], base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS512"}`)), 1),
		"too long":              strings.Repeat("a", 9000),
		"four parts":            with("a16", "x", 1) + ".x",
		"bad base64 signature":  strings.Split(with("a17", "x", 1), ".")[0] + "." + strings.Split(with("a17", "x", 1), ".")[1] + ".!!!",
		"empty":                 "",
		"header only":           "eyJhbGciOiJIUzI1NiJ9",
		"claims not an object":  signRaw(fakecrm.DemoClientSecret, `[1,2]`),
		"user_id not a number":  signRaw(fakecrm.DemoClientSecret, `{"jti":"a18","user_id":"x","exp":`+strconv.FormatInt(now.Unix()+60, 10)+`,"subdomain":"romashka"}`),
		"exp not a number":      signRaw(fakecrm.DemoClientSecret, `{"jti":"a19","user_id":504141,"exp":"soon","subdomain":"romashka"}`),
		"exp infinite (string)": signRaw(fakecrm.DemoClientSecret, `{"jti":"a20","user_id":504141,"exp":1e400,"subdomain":"romashka"}`),
	} {
		hdr := map[string]string{}
		if tok != "" {
			hdr[HeaderAuthToken] = tok
		}
		if r := postC2C(t, u, []byte(`{"phone":"+79001234567"}`), hdr); r.status != http.StatusUnauthorized || r.body.Error != "unauthorized" {
			t.Errorf("%s: %d %+v", name, r.status, r.body)
		}
	}
	if reqs := e.orig.requests(); len(reqs) != 0 {
		t.Fatalf("a foreign token placed calls: %+v", reqs)
	}
	// PHP JWT libraries write dates with fractions and may write ids as strings: accepted.
	lenient := signRaw(fakecrm.DemoClientSecret, `{"iss":"https://romashka.amocrm.ru","aud":"https://pbx.example.com","jti":"lenient","iat":`+
		strconv.FormatInt(now.Unix(), 10)+`.25,"exp":`+strconv.FormatInt(now.Unix()+600, 10)+`.5,"account_id":"28805383","subdomain":"romashka",`+
		`"client_uuid":"`+fakecrm.DemoClientID+`","user_id":"504142","is_admin":false}`)
	if r := postC2C(t, u, []byte(`{"phone":"+79001234567"}`), map[string]string{HeaderAuthToken: lenient}); r.status != http.StatusOK {
		t.Fatalf("a token with fractional dates and string ids: %d %+v", r.status, r.body)
	}
	if reqs := e.orig.requests(); len(reqs) != 1 || reqs[0].Extension != "102" {
		t.Fatalf("originated %+v", reqs)
	}
}

// Attack: the replay cache was keyed on the hex text of the signature, so the same signed
// request with the signature in upper case was a "new" request and rang the phone again. The
// shared-key scheme is gone; a one-time token is spent by its jti as signed, however the token
// or its payload is spelled.
func TestSecurityReplayIsRefusedWhateverTheSpelling(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	u := e.daemon(t).URL + "/crm/amo/click2call"
	body := []byte(`{"user_id":504141,"phone":"+79001234567"}`)
	h := hmacHeaders("click-to-call-secret-0123456789", body)
	for _, s := range []string{h["X-Pbxbridge-Signature"], strings.ToUpper(h["X-Pbxbridge-Signature"])} {
		hdr := map[string]string{"X-Pbxbridge-Timestamp": h["X-Pbxbridge-Timestamp"], "X-Pbxbridge-Signature": s}
		if r := postC2C(t, u, body, hdr); r.status != http.StatusUnauthorized {
			t.Fatalf("shared-key request: %d %+v", r.status, r.body)
		}
	}
	b := []byte(`{"phone":"+79001234567"}`)
	tok := e.widgetToken(504141)
	now := time.Now()
	exp := strconv.FormatInt(now.Add(10*time.Minute).Unix(), 10)
	rest := `,"iss":"https://romashka.amocrm.ru","aud":"https://pbx.example.com","exp":` + exp +
		`,"account_id":28805383,"subdomain":"romashka","client_uuid":"` + fakecrm.DemoClientID + `","user_id":504141}`
	plain := signRaw(fakecrm.DemoClientSecret, `{"jti":"same-jti"`+rest)
	escaped := signRaw(fakecrm.DemoClientSecret, `{"jti":"\u0073ame-jti","iat":`+strconv.FormatInt(now.Unix(), 10)+rest)
	for name, toks := range map[string][]string{
		"the same token twice":            {tok, tok},
		"one jti, two spellings":          {plain, escaped},
		"one jti, signature padded":       {signRaw(fakecrm.DemoClientSecret, `{"jti":"pad"`+rest), signRaw(fakecrm.DemoClientSecret, `{"jti":"pad"`+rest) + "="},
		"one jti, header spelled another": {plain, strings.Replace(plain, strings.Split(plain, ".")[0], base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"HS256"}`)), 1)},
	} {
		ok := 0
		for _, tk := range toks {
			if r := postC2C(t, u, b, map[string]string{HeaderAuthToken: tk}); r.status == http.StatusOK {
				ok++
			}
		}
		if ok > 1 {
			t.Errorf("%s: rang %d times", name, ok)
		}
	}
}

// The replay cache is bounded: full of live tokens, it refuses valid ones (503, counted in
// pbxbridge_amocrm_replay_cache_full_total) rather than forget spent ones; once they expire
// there is room again.
func TestSecurityReplayCacheBounded(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, TypeAmoCRM, envOpt{now: clock})
	e.a.replay = newReplayCache(clock, 2)
	u := e.daemon(t).URL + "/crm/amo/click2call"
	b := []byte(`{"phone":"+79001234567"}`)
	for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusServiceUnavailable} {
		if r := postC2C(t, u, b, map[string]string{HeaderAuthToken: e.widgetToken(504141)}); r.status != want {
			t.Fatalf("click %d: %d %+v", i, r.status, r.body)
		}
	}
	if n := testutil.ToFloat64(e.a.m.replayFull); n != 1 {
		t.Fatalf("replay_cache_full_total %v", n)
	}
	mu.Lock()
	now = now.Add(31 * time.Minute) // the fake's tokens live 30 minutes
	mu.Unlock()
	if r := postC2C(t, u, b, map[string]string{HeaderAuthToken: e.widgetToken(504141)}); r.status != http.StatusOK {
		t.Fatalf("after the spent tokens expired: %d %+v", r.status, r.body)
	}
	if n := e.a.replay.len(); n != 1 {
		t.Fatalf("%d entries after the sweep", n)
	}
}

// A flood of distinct keys fills the replay cache up to its capacity and no further, in linear
// time (no sweep per insert).
func TestSecurityReplayCacheFlood(t *testing.T) {
	t.Parallel()
	now := time.Unix(1795305800, 0)
	c := newReplayCache(func() time.Time { return now }, 100_000)
	full := 0
	for i := range 250_000 {
		switch c.first("jti:"+strconv.Itoa(i), now.Add(time.Hour)) {
		case replayFull:
			full++
		case replayUsed:
			t.Fatalf("key %d seen before", i)
		}
	}
	if c.len() != 100_000 || full != 150_000 {
		t.Fatalf("%d entries, %d refused", c.len(), full)
	}
	if c.first("jti:7", now.Add(time.Hour)) != replayUsed {
		t.Fatal("a spent key was forgotten under the flood")
	}
}

// callback calls the OAuth redirect endpoint with query q.
func callback(t *testing.T, base string, q url.Values) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/crm/amo/oauth/callback?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readAll(t, resp)
}

// Attack: the callback skipped the state check when the query carried from_widget=1 and the
// integration's public client id, so anyone could make the daemon spend a token exchange (and
// amoCRM's rate budget) on a random code, or connect it with a code obtained elsewhere; and a
// state could be used again with another code.
func TestSecurityOAuthCallbackAlwaysChecksState(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, TypeAmoCRM, envOpt{noAuth: true, now: clock})
	base := e.daemon(t).URL
	ref := url.Values{"referer": {"romashka.amocrm.ru"}}
	with := func(kv ...string) url.Values {
		q := url.Values{}
		for k, v := range ref {
			q[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return q
	}
	before := e.fakeRequests()
	st, body := callback(t, base, with("from_widget", "1", "client_id", fakecrm.DemoClientID, "code", "def502-random"))
	if st != http.StatusUnauthorized || e.fakeRequests() != before || !strings.Contains(body, "crm auth amo --code") {
		t.Errorf("from_widget with a random code: %d, %d requests to amoCRM: %s", st, e.fakeRequests()-before, body)
	}
	st, _ = callback(t, base, with("from_widget", "1", "client_id", fakecrm.DemoClientID, "code", e.fake.IssueCode("romashka")))
	if st != http.StatusUnauthorized || e.a.Status().Auth == "ok" {
		t.Errorf("from_widget with a valid code connected the daemon without a state: %d", st)
	}

	if n := e.renewed.Load(); n != 0 {
		t.Errorf("refused callbacks resumed deliveries %d times", n)
	}
	// A state is single use: the same callback link with another code is refused.
	state := e.a.tokens.newState()
	if st, body := callback(t, base, with("state", state, "code", e.fake.IssueCode("romashka"))); st != http.StatusOK {
		t.Fatalf("a valid state: %d %s", st, body)
	}
	if n := e.renewed.Load(); n != 1 {
		t.Errorf("the authorised callback resumed deliveries %d times, want 1", n)
	}
	before = e.fakeRequests()
	if st, _ := callback(t, base, with("state", state, "code", e.fake.IssueCode("romashka"))); st != http.StatusUnauthorized || e.fakeRequests() != before {
		t.Errorf("a used state: %d, %d requests to amoCRM", st, e.fakeRequests()-before)
	}
	// Expired, forged, of another connector of the same integration, or missing: refused.
	old := e.a.tokens.newState()
	mu.Lock()
	now = now.Add(stateTTL)
	mu.Unlock()
	other := &tokens{cfg: e.cfg, redirect: "https://pbx.example.com/crm/amo-2/oauth/callback", now: clock}
	forged := strings.Split(state, ".")
	for name, s := range map[string]string{
		"expired":           old,
		"forged mac":        forged[0] + "." + strconv.FormatInt(clock().Unix(), 10) + "." + forged[2],
		"another connector": other.newState(),
		"from the future":   forged[0] + "." + strconv.FormatInt(clock().Add(time.Hour).Unix(), 10) + "." + e.a.tokens.stateMAC(forged[0]+"."+strconv.FormatInt(clock().Add(time.Hour).Unix(), 10)),
		"no dots":           "x",
		"long":              strings.Repeat("a.", 200),
		"none":              "",
	} {
		q := with("code", e.fake.IssueCode("romashka"))
		if s != "" {
			q.Set("state", s)
		}
		if st, _ := callback(t, base, q); st != http.StatusUnauthorized || e.fakeRequests() != before {
			t.Errorf("%s state: %d, %d requests to amoCRM", name, st, e.fakeRequests()-before)
		}
	}
	// A declined consent carries our state and is answered in plain words.
	if st, body := callback(t, base, with("state", e.a.tokens.newState(), "error", "access_denied")); st != http.StatusOK || !strings.Contains(body, "not granted") {
		t.Errorf("declined: %d %s", st, body)
	}
}

// Attack: unauthenticated requests to the adapter's routes make the daemon talk to amoCRM
// (spending the account's 7 requests per second) or ring a phone.
func TestSecurityUnauthenticatedRequestsSpendNothing(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{TypeAmoCRM, TypeKommo} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, typ, envOpt{})
			base := e.daemon(t).URL
			before := e.fakeRequests()
			forged := sign(t, "not-the-secret", tokenClaims(time.Now(), "x", 504141))
			type req struct {
				method, path string
				hdr          map[string]string
				body         string
			}
			reqs := []req{
				{"POST", "/click2call", nil, `{"user_id":504141,"phone":"+79001234567"}`},
				{"POST", "/click2call", hmacHeaders("click-to-call-secret-0123456789", []byte(`{"user_id":504141,"phone":"+79001234567"}`)), `{"user_id":504141,"phone":"+79001234567"}`},
				{"POST", "/click2call", map[string]string{HeaderAuthToken: forged}, `{"phone":"+79001234567"}`},
				{"POST", "/click2call", map[string]string{HeaderAuthToken: "a.b.c"}, `{"phone":"+79001234567"}`},
				{"POST", "/click2call", map[string]string{HeaderAuthToken: strings.Repeat("A", 9000)}, `{"phone":"+79001234567"}`},
				{"POST", "/click2call", nil, strings.Repeat("x", 20000)},
				{"OPTIONS", "/click2call", map[string]string{"Origin": "https://romashka.amocrm.ru"}, ""},
				{"OPTIONS", "/click2call", map[string]string{"Origin": "https://evil.example"}, ""},
				{"GET", "/oauth/callback?code=def502-random", nil, ""},
				{"GET", "/oauth/callback?code=def502-random&state=forged.1.x", nil, ""},
				{"GET", "/oauth/callback?code=def502-random&from_widget=1&client_id=" + fakecrm.DemoClientID, nil, ""},
				{"GET", "/oauth/callback?error=access_denied", nil, ""},
				{"GET", "/oauth/callback", nil, ""},
			}
			for _, r := range reqs {
				hr, err := http.NewRequestWithContext(context.Background(), r.method, base+"/crm/amo"+r.path, strings.NewReader(r.body))
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range r.hdr {
					hr.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode/100 == 2 && r.method != http.MethodOptions {
					t.Errorf("%s %s: %d", r.method, r.path, resp.StatusCode)
				}
				if n := e.fakeRequests() - before; n != 0 {
					t.Errorf("%s %s made %d requests to amoCRM", r.method, r.path, n)
					before = e.fakeRequests()
				}
			}
			if got := e.orig.requests(); len(got) != 0 {
				t.Fatalf("unauthenticated requests placed calls: %+v", got)
			}
			// An authenticated click does not talk to amoCRM either.
			if r := postC2C(t, base+"/crm/amo/click2call", []byte(`{"phone":"+79001234567"}`),
				map[string]string{HeaderAuthToken: e.widgetToken(504141)}); r.status != http.StatusOK {
				t.Fatalf("a real click: %d %+v", r.status, r.body)
			}
			if n := e.fakeRequests() - before; n != 0 {
				t.Fatalf("a click made %d requests to amoCRM", n)
			}
		})
	}
}

// Attack: a click-to-call number with dial-string syntax (*, #, letters, another script's
// digits, separators a dial string knows) or an enormous one reaches the originator, or is
// echoed back whole; the entity fields, which become a channel variable, carry anything.
func TestSecurityClickToCallNumbers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	u := e.daemon(t).URL + "/crm/amo/click2call"
	for _, phone := range []string{"*97", "#31#", "+7900*1", "8900123456#", "CALLME", "+7900abc4567", "٠١٢٣٤٥٦٧", "７９００１２３４５", "+७९००",
		"++79001234567", "7+9001234567", "+", "1", "79001234567\u202e", "7900\x001234567", "7900\r\n1234567", strings.Repeat("9", 5000),
		"+" + strings.Repeat("1", 21), "1/2", "1;2", "1,2", "1&2", "1|2", "Local/101@internal", "101@internal", "${EXTEN}", "1w2", "1p2", ""} {
		b, _ := json.Marshal(map[string]any{"phone": phone})
		r := postC2C(t, u, b, map[string]string{HeaderAuthToken: e.widgetToken(504141)})
		if r.status != http.StatusBadRequest || r.body.Error != "bad_request" {
			t.Errorf("phone %.40q: %d %+v", phone, r.status, r.body)
		}
		if len(r.body.Message) > 200 {
			t.Errorf("phone %.40q: the answer echoes %d characters", phone, len(r.body.Message))
		}
	}
	for _, bad := range []map[string]any{
		{"phone": "+79001234567", "entity_type": "contacts\r\nAction: Command", "entity_id": 3},
		{"phone": "+79001234567", "entity_type": "leads,x", "entity_id": 3},
		{"phone": "+79001234567", "entity_type": "contacts:1", "entity_id": 3},
		{"phone": "+79001234567", "entity_type": strings.Repeat("a", 100), "entity_id": 3},
		{"phone": "+79001234567", "entity_type": "contacts", "entity_id": -3},
		{"phone": "+79001234567", "entity_type": "contacts"},
		{"phone": "+79001234567", "entity_id": 3},
		{"phone": "+79001234567", "extension": "102"},
		{"phone": []string{"+79001234567"}},
	} {
		b, _ := json.Marshal(bad)
		if r := postC2C(t, u, b, map[string]string{HeaderAuthToken: e.widgetToken(504141)}); r.status != http.StatusBadRequest || len(r.body.Message) > 200 {
			t.Errorf("%.60s: %d %+v", b, r.status, r.body)
		}
	}
	if got := e.orig.requests(); len(got) != 0 {
		t.Fatalf("bad requests reached the originator: %+v", got)
	}
	for in, want := range map[string]string{"+7 (900) 123-45-67": "+79001234567", "8.900.123.45.67": "89001234567", "\u00a0101\u00a0": "101",
		" 8 900 123 45 67 ": "89001234567"} {
		b, _ := json.Marshal(map[string]any{"phone": in, "entity_type": "contacts", "entity_id": 3, "account": "romashka", "user_id": 504141})
		if r := postC2C(t, u, b, map[string]string{HeaderAuthToken: e.widgetToken(504141)}); r.status != http.StatusOK {
			t.Fatalf("phone %q: %d %+v", in, r.status, r.body)
		}
		reqs := e.orig.requests()
		if got := reqs[len(reqs)-1]; got.Number != want || got.Variables["__PBXBRIDGE_ENTITY"] != "contacts:3" {
			t.Fatalf("phone %q originated %+v", in, got)
		}
	}
}

// Attack: a flood of ringing events while amoCRM is slow queued pop-ups without bound. Now a
// pop-up whose Live caller gave up (the phone stopped ringing) leaves the queue unsent, and at
// most popupQueueMax pop-ups of phones still ringing wait: the rest are refused at once.
func TestSecurityPopupQueueIsBounded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	var sentItems atomic.Int64
	p := newPopups(ctx, nil, func(ctx context.Context, items []api.Event) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		sentItems.Add(int64(len(items)))
		return nil
	})
	// The first request hangs (amoCRM is slow) with the first pop-up in it.
	first := make(chan error, 1)
	go func() {
		first <- p.submit(context.Background(), api.Event{Type: "phone_call", PhoneNumber: "+79000000000", Users: []int64{1}})
	}()
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.running && len(p.pending) == 0 })
	// Rings that already ended: dropped at once, never queued for long, never sent.
	gone, stop := context.WithCancel(context.Background())
	stop()
	for i := range 20000 {
		err := p.submit(gone, api.Event{Type: "phone_call", PhoneNumber: "+7900" + strconv.Itoa(1000000+i), Users: []int64{1}})
		if !errors.Is(err, crm.ErrLiveStale) {
			t.Fatalf("pop-up %d of an ended ring: %v", i, err)
		}
	}
	// Phones still ringing: at most popupQueueMax wait, the others are refused.
	ringing, hangUp := context.WithCancel(context.Background())
	const extra = 300
	errs := make(chan error, popupQueueMax+extra)
	for i := range popupQueueMax + extra {
		go func() {
			errs <- p.submit(ringing, api.Event{Type: "phone_call", PhoneNumber: "+7901" + strconv.Itoa(1000000+i), Users: []int64{1}})
		}()
	}
	full := 0
	for range extra {
		if err := <-errs; !errors.Is(err, errPopupQueueFull) {
			t.Fatalf("beyond the queue: %v", err)
		}
		full++
	}
	p.mu.Lock()
	n := len(p.pending)
	p.mu.Unlock()
	if n != popupQueueMax || full != extra {
		t.Fatalf("%d pop-ups queued, %d refused", n, full)
	}
	// The phones stop ringing before amoCRM answers: their pop-ups are dropped unsent.
	hangUp()
	for range popupQueueMax {
		if err := <-errs; !errors.Is(err, crm.ErrLiveStale) {
			t.Fatalf("queued pop-up of an ended ring: %v", err)
		}
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return !p.running })
	if got := sentItems.Load(); got != 1 {
		t.Fatalf("%d pop-ups were sent, want only the first", got)
	}
	if err := p.submit(context.Background(), api.Event{Type: "phone_call", PhoneNumber: "+79001234567"}); err != nil {
		t.Fatalf("a fresh pop-up after the flood: %v", err)
	}
}

// Attack: an account (or a proxy in front of it) lists a flood of users whose phone numbers
// look like extensions: auto_map_users maps at most maxAutoMapped of them.
func TestSecurityAutoMapIsBounded(t *testing.T) {
	t.Parallel()
	users := make([]fakecrm.AmoUser, 0, maxAutoMapped+500)
	for i := range maxAutoMapped + 500 {
		users = append(users, fakecrm.AmoUser{ID: int64(600000 + i), Name: "u", PhoneNumber: strconv.Itoa(200000 + i), Active: true})
	}
	f := fakecrm.NewAmoCRM(fakecrm.AmoOptions{RateLimit: -1})
	f.AddAccount(fakecrm.AmoAccountSpec{ID: 1, Subdomain: "flood", Users: users})
	f.AddLongLivedToken("flood", "flood-token", time.Hour)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := NewConfig(TypeAmoCRM)
	cfg.Subdomain, cfg.BaseURL, cfg.DefaultUser, cfg.RateLimit, cfg.AutoMapUsers = "flood", srv.URL, 600000, 1000, true
	cfg.Auth.LongLivedToken = configs.NewSecret("flood-token")
	cfg.Users = map[string]int64{"101": 1}
	a, err := New(crm.Params{Name: "flood", Type: TypeAmoCRM, Config: cfg, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	if err := a.loadUsers(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(a.users.snapshot()); n != maxAutoMapped+1 {
		t.Fatalf("%d extensions mapped, want %d", n, maxAutoMapped+1)
	}
}
