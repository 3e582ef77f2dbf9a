package fakecrm

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

type amoClient struct {
	t    *testing.T
	base string
	host string
}

func (c amoClient) do(method, path, token, ctype string, body []byte) (int, http.Header, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if c.host != "" {
		req.Host = c.host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (c amoClient) token(form url.Values) (int, map[string]any) {
	c.t.Helper()
	code, _, b := c.do(http.MethodPost, "/oauth2/access_token", "", "application/x-www-form-urlencoded", []byte(form.Encode()))
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return code, m
}

func newAmoTest(t *testing.T, o AmoOptions) (*AmoCRM, amoClient) {
	t.Helper()
	f := NewAmoDemo(o)
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return f, amoClient{t: t, base: s.URL}
}

func TestAmoRotation(t *testing.T) {
	f, c := newAmoTest(t, AmoOptions{Flavor: "kommo", RateLimit: -1})
	base := url.Values{"client_id": {DemoClientID}, "client_secret": {DemoClientSecret}}
	form := func(kv ...string) url.Values {
		v := url.Values{}
		for k, x := range base {
			v[k] = x
		}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	code := f.IssueCode("romashka")
	st, t1 := c.token(form("grant_type", "authorization_code", "code", code))
	if st != 200 || t1["server_time"] == nil || t1["refresh_token"] == "" {
		t.Fatalf("exchange: %d %v", st, t1)
	}
	if st, m := c.token(form("grant_type", "authorization_code", "code", code)); st != 400 || m["hint"] != "Authorization code has been revoked" {
		t.Fatalf("code reuse: %d %v", st, m)
	}
	r1 := t1["refresh_token"].(string)
	_, t2 := c.token(form("grant_type", "refresh_token", "refresh_token", r1))
	// The old refresh token still works until the new tokens are used.
	st, t3 := c.token(form("grant_type", "refresh_token", "refresh_token", r1))
	if st != 200 {
		t.Fatalf("old refresh token before the new one is used: %d %v", st, t3)
	}
	if st, _, _ := c.do(http.MethodGet, "/api/v4/account", t3["access_token"].(string), "", nil); st != 200 {
		t.Fatalf("new access token: %d", st)
	}
	if st, _, _ := c.do(http.MethodGet, "/api/v4/account", t2["access_token"].(string), "", nil); st != 200 {
		t.Fatalf("earlier access token stays valid until it expires: %d", st)
	}
	// Now r1 is spent: presenting it again revokes the grant.
	if st, m := c.token(form("grant_type", "refresh_token", "refresh_token", r1)); st != 400 || m["hint"] != "Refresh token has been revoked" {
		t.Fatalf("reuse: %d %v", st, m)
	}
	if st, _, _ := c.do(http.MethodGet, "/api/v4/account", t3["access_token"].(string), "", nil); st != 401 {
		t.Fatalf("after revocation: %d", st)
	}
	if st, m := c.token(form("grant_type", "refresh_token", "refresh_token", t3["refresh_token"].(string))); st != 400 {
		t.Fatalf("refresh of a revoked grant: %d %v", st, m)
	}
	if st, m := c.token(url.Values{"client_id": {"x"}, "grant_type": {"authorization_code"}}); st != 400 || m["hint"] != "Check the `client_id` parameter" {
		t.Fatalf("bad client: %d %v", st, m)
	}
}

func TestAmoEntities(t *testing.T) {
	f, c := newAmoTest(t, AmoOptions{RateLimit: -1})
	tok, _ := f.IssueTokens("romashka")
	if st, _, b := c.do(http.MethodGet, "/api/v4/contacts?query=79990000000", tok, "", nil); st != 204 || len(b) != 0 {
		t.Fatalf("empty search: %d %q", st, b)
	}
	st, h, b := c.do(http.MethodGet, "/api/v4/contacts?query=9001234567&with=leads", tok, "", nil)
	if st != 200 || h.Get("Content-Type") != "application/hal+json" || !strings.Contains(string(b), `"leads":[{`) {
		t.Fatalf("search: %d %s %s", st, h, b)
	}
	many := "[" + strings.Repeat(`{"direction":"inbound","duration":1,"source":"s","phone":"1"},`, 250) + `{"direction":"inbound","duration":1,"source":"s","phone":"1"}]`
	if st, _, _ := c.do(http.MethodPost, "/api/v4/calls", tok, "application/json", []byte(many)); st != 422 {
		t.Fatalf("251 calls: %d", st)
	}
	st, h, b = c.do(http.MethodPost, "/api/v4/calls", tok, "application/json", []byte(`[{"direction":"sideways","phone":"1"}]`))
	if st != 400 || h.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(b), "FieldMissing") || !strings.Contains(string(b), "NotSupportedChoice") {
		t.Fatalf("invalid call: %d %s", st, b)
	}
	// Placement rules: one active lead (a lost one does not count) → the lead; none → the contact.
	st, _, b = c.do(http.MethodPost, "/api/v4/calls/", tok, "application/json",
		[]byte(`[{"direction":"inbound","duration":5,"source":"s","phone":"8 900 123-45-67","uniq":"a","request_id":"x"},
		         {"direction":"outbound","duration":0,"source":"s","phone":"+79037000001","uniq":"b"},
		         {"direction":"outbound","duration":0,"source":"s","phone":"9165550102","uniq":"c"}]`))
	if st != 200 {
		t.Fatalf("calls: %d %s", st, b)
	}
	calls := f.State().Accounts[0].Calls
	if len(calls) != 3 || calls[0].EntityType != "lead" || calls[0].EntityID != 1 || calls[1].EntityType != "lead" || calls[1].EntityID != 2 ||
		calls[2].EntityType != "contact" || calls[2].EntityID != 4 {
		t.Fatalf("placement: %+v", calls)
	}
	if st, _, _ := c.do(http.MethodGet, "/api/v4/users?limit=2", tok, "", nil); st != 200 {
		t.Fatalf("users: %d", st)
	}
	if st, _, b := c.do(http.MethodGet, "/api/v4/users?limit=2&page=3", tok, "", nil); st != 204 {
		t.Fatalf("users past the end: %d %s", st, b)
	}
	f.SetUnpaid("romashka", true)
	if st, _, _ := c.do(http.MethodGet, "/api/v4/account", tok, "", nil); st != 402 {
		t.Fatalf("unpaid: %d", st)
	}
	if st, _, _ := c.do(http.MethodGet, "/api/v4/account", "nope", "", nil); st != 401 {
		t.Fatalf("bad token: %d", st)
	}
	// Host routing: another account on its own host.
	f.AddAccount(AmoAccountSpec{ID: 77, Subdomain: "lutik"})
	tok2, _ := f.IssueTokens("lutik")
	c.host = "lutik.amocrm.ru"
	st, _, b = c.do(http.MethodGet, "/api/v4/account", tok2, "", nil)
	if st != 200 || !strings.Contains(string(b), `"subdomain":"lutik"`) {
		t.Fatalf("host routing: %d %s", st, b)
	}
	if st, _, _ := c.do(http.MethodGet, "/api/v4/account", tok, "", nil); st != 401 {
		t.Fatalf("a token of another account: %d", st)
	}
}

func TestAmoRateLimitAndBlock(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	f, c := newAmoTest(t, AmoOptions{Now: func() time.Time { return now }, BlockAfter: 3, BlockFor: time.Minute, RetryAfterInBody: true, RetryAfter: 2})
	tok, _ := f.IssueTokens("romashka")
	codes := []int{}
	for range 11 {
		st, _, _ := c.do(http.MethodGet, "/api/v4/account", tok, "", nil)
		codes = append(codes, st)
	}
	want := []int{200, 200, 200, 200, 200, 200, 200, 429, 429, 403, 403}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("statuses %v, want %v", codes, want)
		}
	}
	now = now.Add(2 * time.Minute)
	if st, _, _ := c.do(http.MethodGet, "/api/v4/account", tok, "", nil); st != 200 {
		t.Fatalf("after the block: %d", st)
	}
	resp, err := http.Get(c.base + "/_fake/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s AmoState
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	if s.RateLimited != 2 || s.Blocked != 2 || s.Requests["GET /api/v4/account"] != 12 {
		t.Fatalf("state %+v", s)
	}
}
