package fakecrm

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The fake issues the one-time tokens amoCRM attaches to widget requests: HS256 with the
// integration's secret key, the claims the official SDK reads, for signed-in users only.
func TestAmoOneTimeToken(t *testing.T) {
	t.Parallel()
	now := time.Unix(1795305800, 0)
	f := NewAmoDemo(AmoOptions{Flavor: "kommo", Now: func() time.Time { return now }})
	tok, err := f.OneTimeToken("romashka", 504141, "https://pbx.example.com")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tok)
	}
	m := hmac.New(sha256.New, []byte(DemoClientSecret))
	m.Write([]byte(parts[0] + "." + parts[1]))
	if sig, _ := base64.RawURLEncoding.DecodeString(parts[2]); !hmac.Equal(sig, m.Sum(nil)) {
		t.Fatal("not signed with the integration's secret key")
	}
	var hdr map[string]string
	var c map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if json.Unmarshal(hb, &hdr) != nil || json.Unmarshal(pb, &c) != nil || hdr["alg"] != "HS256" {
		t.Fatalf("header %s claims %s", hb, pb)
	}
	if c["iss"] != "https://romashka.kommo.com" || c["aud"] != "https://pbx.example.com" || c["subdomain"] != "romashka" ||
		c["client_uuid"] != DemoClientID || c["user_id"] != float64(504141) || c["account_id"] != float64(28805383) ||
		c["exp"] != float64(now.Add(30*time.Minute).Unix()) || c["is_admin"] != true || len(c["jti"].(string)) != 36 {
		t.Fatalf("claims %v", c)
	}
	if again, _ := f.OneTimeToken("romashka", 504141, "https://pbx.example.com"); again == tok {
		t.Fatal("two tokens share a jti")
	}
	if _, err := f.OneTimeToken("romashka", 1, ""); err == nil {
		t.Fatal("a token for a user the account does not have")
	}
	if _, err := f.OneTimeToken("nobody", 504141, ""); err == nil {
		t.Fatal("a token for an unknown account")
	}

	srv := httptest.NewServer(f)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/_fake/onetime?subdomain=romashka&user_id=504142&aud=https://pbx.example.com")
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || strings.Count(out["token"], ".") != 2 {
		t.Fatalf("GET /_fake/onetime: %d %v %v", resp.StatusCode, out, err)
	}
	resp, err = http.Get(srv.URL + "/_fake/onetime?subdomain=romashka&user_id=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad user_id: %d", resp.StatusCode)
	}
}
