package amocrm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

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
		r, err := ParseClick2Call(b, 504141)
		if err != nil {
			return
		}
		if r.UserID != 504141 {
			t.Fatalf("accepted user %d", r.UserID)
		}
		for i, c := range r.Phone {
			if (c < '0' || c > '9') && (c != '+' || i != 0) {
				t.Fatalf("accepted phone %q", r.Phone)
			}
		}
		if (r.EntityType != "" || r.EntityID != 0) && (!slices.Contains(entityTypes, r.EntityType) || r.EntityID <= 0) {
			t.Fatalf("accepted entity %q %d", r.EntityType, r.EntityID)
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
