package amocrm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

func (e *env) daemon(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, r := range e.a.Routes() {
		method, path, _ := strings.Cut(r.Pattern, " ")
		mux.Handle(method+" /crm/amo"+path, http.StripPrefix("/crm/amo", r.Handler))
	}
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

type c2cResult struct {
	status int
	body   Click2CallResponse
	header http.Header
}

func postC2C(t *testing.T, url string, body []byte, hdr map[string]string) c2cResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Click2CallResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	if r.Message == "" {
		t.Fatalf("answer without a message: %+v", r)
	}
	return c2cResult{resp.StatusCode, r, resp.Header}
}

func signed(secret string, ts time.Time, body []byte) map[string]string {
	s := strconv.FormatInt(ts.Unix(), 10)
	return map[string]string{HeaderTimestamp: s, HeaderSignature: hex.EncodeToString(SignClick2Call(secret, s, body)),
		"Origin": "https://romashka.amocrm.ru"}
}

func TestClickToCallHMAC(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	d := e.daemon(t)
	url := d.URL + "/crm/amo/click2call"
	body := []byte(`{"user_id":504142,"phone":"+7 (900) 123-45-67","entity_type":"contacts","entity_id":3,"account":"romashka"}`)
	hdr := signed(testC2CSecret, time.Now(), body)
	r := postC2C(t, url, body, hdr)
	if r.status != http.StatusOK || !r.body.OK || !strings.HasPrefix(r.body.ID, "amo-") {
		t.Fatalf("signed request: %d %+v", r.status, r.body)
	}
	if r.header.Get("Access-Control-Allow-Origin") != "https://romashka.amocrm.ru" {
		t.Fatalf("CORS header %q", r.header.Get("Access-Control-Allow-Origin"))
	}
	reqs := e.orig.requests()
	if len(reqs) != 1 || reqs[0].Extension != "102" || reqs[0].Number != "+79001234567" || reqs[0].ID != r.body.ID ||
		reqs[0].Variables["__PBXBRIDGE_ENTITY"] != "contacts:3" || reqs[0].Timeout != 30*time.Second {
		t.Fatalf("originate %+v", reqs)
	}
	// The same signed request again is a replay.
	if r := postC2C(t, url, body, hdr); r.status != http.StatusUnauthorized {
		t.Fatalf("replay: %d %+v", r.status, r.body)
	}
	bad := signed(testC2CSecret, time.Now(), body)
	bad[HeaderSignature] = strings.Repeat("0", 64)
	old := signed(testC2CSecret, time.Now().Add(-10*time.Minute), body)
	other := signed("another-secret-0123456789", time.Now(), body)
	for name, h := range map[string]map[string]string{"bad signature": bad, "old": old, "other secret": other, "unsigned": {}} {
		if r := postC2C(t, url, body, h); r.status != http.StatusUnauthorized || r.body.Error != "unauthorized" {
			t.Fatalf("%s: %d %+v", name, r.status, r.body)
		}
	}
	if n := testutil.ToFloat64(e.a.m.authFailure.WithLabelValues("click2call")); n != 5 {
		t.Fatalf("auth failures counted %v", n)
	}
	if len(e.orig.requests()) != 1 {
		t.Fatal("an unauthenticated request originated a call")
	}

	for name, tc := range map[string]struct {
		body   string
		status int
		code   string
	}{
		"unmapped user": {`{"user_id":999,"phone":"+79001234567"}`, http.StatusForbidden, "user_not_mapped"},
		"bad phone":     {`{"user_id":504141,"phone":"call me"}`, http.StatusBadRequest, "bad_request"},
		"unknown field": {`{"user_id":504141,"phone":"101","x":1}`, http.StatusBadRequest, "bad_request"},
		"no user":       {`{"phone":"+79001234567"}`, http.StatusBadRequest, "bad_request"},
	} {
		b := []byte(tc.body)
		if r := postC2C(t, url, b, signed(testC2CSecret, time.Now(), b)); r.status != tc.status || r.body.Error != tc.code {
			t.Fatalf("%s: %d %+v", name, r.status, r.body)
		}
	}

	e.orig.err = fmt.Errorf("ami: originate: %w", asterisk.ErrExtensionBusy)
	b := []byte(`{"user_id":504141,"phone":"89001234567"}`)
	r = postC2C(t, url, b, signed(testC2CSecret, time.Now(), b))
	if r.status != http.StatusConflict || r.body.Error != "extension_busy" || !strings.Contains(r.body.Message, "extension 101") {
		t.Fatalf("busy: %d %+v", r.status, r.body)
	}

	// CORS preflight.
	req, _ := http.NewRequest(http.MethodOptions, url, nil)
	req.Header.Set("Origin", "https://romashka.amocrm.ru")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), HeaderSignature) {
		t.Fatalf("preflight %d %v", resp.StatusCode, resp.Header)
	}
	req.Header.Set("Origin", "https://evil.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS allowed a foreign origin")
	}
}

// oneTimeToken builds an HS256 one-time token as amoCRM/Kommo would.
func oneTimeToken(secret string, claims map[string]any) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	unsigned := enc(map[string]string{"alg": "HS256", "typ": "JWT"}) + "." + enc(claims)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(unsigned))
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestClickToCallOneTimeToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeKommo, envOpt{})
	d := e.daemon(t)
	url := d.URL + "/crm/amo/click2call"
	now := time.Now()
	claims := func(jti string, user int64, exp time.Time) map[string]any {
		return map[string]any{"iss": "https://romashka.kommo.com", "aud": "https://pbx.example.com", "jti": jti, "iat": now.Unix(),
			"nbf": now.Unix(), "exp": exp.Unix(), "account_id": 28805383, "subdomain": "romashka", "client_uuid": fakecrm.DemoClientID, "user_id": user}
	}
	body := []byte(`{"phone":"+79001234567"}`)
	tok := oneTimeToken(fakecrm.DemoClientSecret, claims("j1", 504143, now.Add(time.Minute)))
	r := postC2C(t, url, body, map[string]string{HeaderAuthToken: tok})
	if r.status != http.StatusOK {
		t.Fatalf("one-time token: %d %+v", r.status, r.body)
	}
	if reqs := e.orig.requests(); len(reqs) != 1 || reqs[0].Extension != "103" {
		t.Fatalf("originate %+v", reqs)
	}
	for name, tok := range map[string]string{
		"reused":         tok,
		"wrong secret":   oneTimeToken("not-the-secret", claims("j2", 504143, now.Add(time.Minute))),
		"expired":        oneTimeToken(fakecrm.DemoClientSecret, claims("j3", 504143, now.Add(-time.Hour))),
		"other account":  oneTimeToken(fakecrm.DemoClientSecret, map[string]any{"jti": "j4", "exp": now.Add(time.Minute).Unix(), "user_id": 504143, "subdomain": "other"}),
		"garbage":        "a.b.c",
		"alg none":       "eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoxfQ.",
		"other user_id":  "",
		"no user in jwt": oneTimeToken(fakecrm.DemoClientSecret, map[string]any{"jti": "j6", "exp": now.Add(time.Minute).Unix()}),
	} {
		b := body
		if name == "other user_id" {
			tok = oneTimeToken(fakecrm.DemoClientSecret, claims("j5", 504143, now.Add(time.Minute)))
			b = []byte(`{"user_id":504141,"phone":"+79001234567"}`)
			if r := postC2C(t, url, b, map[string]string{HeaderAuthToken: tok}); r.status != http.StatusBadRequest {
				t.Fatalf("%s: %d %+v", name, r.status, r.body)
			}
			continue
		}
		if r := postC2C(t, url, b, map[string]string{HeaderAuthToken: tok}); r.status != http.StatusUnauthorized {
			t.Fatalf("%s: %d %+v", name, r.status, r.body)
		}
	}
	if len(e.orig.requests()) != 1 {
		t.Fatal("a refused token originated a call")
	}
}

func FuzzParseClick2Call(f *testing.F) {
	f.Add([]byte(`{"user_id":504141,"phone":"+79001234567","entity_type":"contacts","entity_id":3}`))
	f.Add([]byte(`{"user_id":-1,"phone":"+"}`))
	f.Add([]byte(`{"user_id":1e99,"phone":"8 (900) 123-45-67"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseClick2Call(b)
		if err != nil {
			return
		}
		if r.UserID <= 0 {
			t.Fatalf("accepted user %d", r.UserID)
		}
		for i, c := range r.Phone {
			if (c < '0' || c > '9') && (c != '+' || i != 0) {
				t.Fatalf("accepted phone %q", r.Phone)
			}
		}
	})
}

func FuzzVerifyOneTimeToken(f *testing.F) {
	now := time.Unix(1795305800, 0)
	f.Add(oneTimeToken("s", map[string]any{"jti": "1", "exp": now.Unix() + 60, "user_id": 5}))
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.x")
	f.Add("...")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := VerifyOneTimeToken(tok, "s", now)
		if err == nil && (c.UserID <= 0 || c.JTI == "" || c.Exp+30 < now.Unix()) {
			t.Fatalf("accepted %+v", c)
		}
	})
}
