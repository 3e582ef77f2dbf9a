package fakecrm

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// One-time tokens: what a widget's self.$authorizedAjax attaches to its requests (header
// X-Auth-Token) so that the widget's own server learns which user of which account clicked,
// without trusting the browser. amoCRM and Kommo sign them with HS256 and the integration's
// secret key; the claims are those the official PHP SDK reads (DisposableTokenModel): iss (the
// account's address), aud (the origin of the server the request goes to), jti, iat, nbf, exp,
// account_id, subdomain, client_uuid (the integration id), user_id and is_admin.

// OneTimeToken returns the one-time token amoCRM/Kommo would attach when user, signed in to
// the account sub, makes a widget request to aud (an origin such as https://pbx.example.com).
// It fails for an unknown account or user, as the real platform only issues tokens to users
// who are signed in.
func (f *AmoCRM) OneTimeToken(sub string, user int64, aud string) (string, error) {
	f.mu.Lock()
	a := f.account(sub)
	var admin, found bool
	var secret, clientID, subdomain string
	var accountID int64
	if a != nil {
		for _, u := range a.Users {
			if u.ID == user {
				found, admin = true, u.Admin
			}
		}
		secret, clientID, subdomain, accountID = a.ClientSecret, a.ClientID, a.Subdomain, a.ID
	}
	now := f.o.Now()
	ttl := f.o.OneTimeTTL
	f.mu.Unlock()
	switch {
	case a == nil:
		return "", fmt.Errorf("fakecrm: no account %q", sub)
	case !found:
		return "", fmt.Errorf("fakecrm: account %q has no user %d", sub, user)
	case secret == "":
		return "", fmt.Errorf("fakecrm: account %q has no integration secret", sub)
	}
	claims := map[string]any{
		"iss": "https://" + f.Host(subdomain), "aud": aud, "jti": randUUID(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"account_id": accountID, "subdomain": subdomain, "client_uuid": clientID,
		"user_id": user, "is_admin": admin,
	}
	return SignOneTimeToken(secret, claims)
}

// SignOneTimeToken signs arbitrary claims as a one-time token (HS256 with secret), for tests
// that need tokens the platform would never issue (expired, of another account, ...).
func SignOneTimeToken(secret string, claims map[string]any) (string, error) {
	if secret == "" {
		return "", errors.New("fakecrm: signing a one-time token: empty secret")
	}
	hdr, err := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("fakecrm: signing a one-time token: %w", err)
	}
	unsigned := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(unsigned))
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

func randUUID() string {
	h := randToken("")[:32]
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// serveOneTime: GET /_fake/onetime?subdomain=&user_id=&aud= answers {"token": "..."}, for
// scripts that play the widget against a daemon (curl -H "X-Auth-Token: ...").
func (f *AmoCRM) serveOneTime(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, err := strconv.ParseInt(q.Get("user_id"), 10, 64)
	if err != nil {
		http.Error(w, "user_id must be a number", http.StatusBadRequest)
		return
	}
	tok, err := f.OneTimeToken(q.Get("subdomain"), user, q.Get("aud"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, "application/json", map[string]string{"token": tok})
}
