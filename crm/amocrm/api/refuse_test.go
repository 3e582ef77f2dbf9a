package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

const testToken = "eyJ.s3cr3t-b3arer.sig"

type fixedAuth struct{ token string }

func (a fixedAuth) AccessToken(context.Context) (string, error) { return a.token, nil }
func (a fixedAuth) Rejected(context.Context, string) (string, error) {
	return "", errors.New("no refresh")
}
func (a fixedAuth) Accepted(string) {}

// TestRedirectKeepsToken: a request redirected to another host (a renamed subdomain, a hostile
// proxy) fails with an auth-class error, and that host never sees the bearer token, the OAuth
// client secret or the call data.
func TestRedirectKeepsToken(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var hits int
	var leaked bool
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		hits++
		leaked = leaked || strings.Contains(r.Header.Get("Authorization")+string(body), "s3cr3t")
		mu.Unlock()
		_, _ = w.Write([]byte(`{"_embedded":{"calls":[]}}`))
	}))
	defer evil.Close()
	for _, status := range []int{301, 302, 307, 308} {
		moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			http.Redirect(w, r, evil.URL+r.URL.RequestURI(), status)
		}))
		hc := httpclient.New(httpclient.Options{RetryMax: -1})
		c := New(Options{BaseURL: moved.URL, HTTP: hc, Auth: fixedAuth{token: testToken}})
		_, err := c.AddCalls(context.Background(), []Call{{Direction: "inbound", Phone: "+79001234567", Uniq: "1.2"}})
		wantClass(t, err, crm.ClassAuth, "POST /api/v4/calls: redirected (http ")
		wantClass(t, err, crm.ClassAuth, "to other host "+evil.URL+"; not following with credentials")
		_, err = c.Account(context.Background())
		wantClass(t, err, crm.ClassAuth, "GET /api/v4/account: redirected")

		oauth := New(Options{BaseURL: moved.URL, HTTP: hc})
		_, err = oauth.ExchangeToken(context.Background(), TokenRequest{ClientID: "id", ClientSecret: "cl13nt-s3cr3t", GrantType: "refresh_token", RefreshToken: "r"})
		wantClass(t, err, crm.ClassAuth, "POST /oauth2/access_token: redirected")
		moved.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 || leaked {
		t.Fatalf("the other host got %d requests (a secret among them: %v)", hits, leaked)
	}
}

// TestOversizedAnswer: an endless answer fails with a transient "response body over 8 MiB".
func TestOversizedAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"_embedded":{"users":[`)
		chunk := []byte(strings.Repeat(`{"id":504141,"name":"Anna"},`, 2000))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c := New(Options{BaseURL: srv.URL, HTTP: httpclient.New(httpclient.Options{RetryMax: -1}), Auth: fixedAuth{token: testToken}})
	_, err := c.Users(context.Background(), true)
	wantClass(t, err, crm.ClassTransient, "GET /api/v4/users: response body over 8 MiB")
	var tl *httpclient.BodyTooLargeError
	if !errors.As(err, &tl) {
		t.Errorf("%v does not wrap *httpclient.BodyTooLargeError", err)
	}
}

func wantClass(t *testing.T, err error, class crm.Class, text string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if got, _ := crm.Classify(err); got != class {
		t.Errorf("class %v, want %v (%v)", got, class, err)
	}
	if !strings.Contains(err.Error(), text) {
		t.Errorf("error %q does not say %q", err, text)
	}
}
