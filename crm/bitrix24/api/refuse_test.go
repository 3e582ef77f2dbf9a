package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

const testToken = "acc3ss-t0ken-s3cr3t"

// thief is a second host that records whether a credential reached it.
type thief struct {
	*httptest.Server
	mu   sync.Mutex
	hits int
	got  bool
}

func newThief(t *testing.T, secrets ...string) *thief {
	t.Helper()
	th := &thief{}
	th.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen := r.URL.String() + " " + r.Header.Get("Authorization") + " " + string(body)
		th.mu.Lock()
		th.hits++
		for _, s := range secrets {
			if strings.Contains(seen, s) {
				th.got = true
			}
		}
		th.mu.Unlock()
		_, _ = w.Write([]byte(`{"result":[]}`))
	}))
	t.Cleanup(th.Close)
	return th
}

func (th *thief) check(t *testing.T) {
	t.Helper()
	th.mu.Lock()
	defer th.mu.Unlock()
	if th.hits != 0 || th.got {
		t.Errorf("the other host got %d requests (a credential among them: %v)", th.hits, th.got)
	}
}

// movedPortal answers everything with a redirect to target, keeping the path.
func movedPortal(t *testing.T, status int, target string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, target+r.URL.RequestURI(), status)
	}))
	t.Cleanup(srv.Close)
	return srv
}

type fixedAuth struct{ base, token string }

func (a fixedAuth) Endpoint(context.Context) (string, string, error) { return a.base, a.token, nil }
func (a fixedAuth) Refresh(context.Context, string) error            { return errors.New("no refresh") }

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

// TestRedirectKeepsToken: neither the access token in the body (OAuth), the webhook secret in the
// path, nor the OAuth client secret in the query reaches the host a redirect names; the call fails
// with an auth-class error naming that host.
func TestRedirectKeepsToken(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			evil := newThief(t, testToken, "w3bh00k", "cl13nt-s3cr3t")
			portal := movedPortal(t, status, evil.URL)
			hc := httpclient.New(httpclient.Options{RetryMax: -1})

			c, _ := New(Options{HTTP: hc, Auth: fixedAuth{base: portal.URL + "/rest/", token: testToken}})
			_, err := c.Call(context.Background(), "user.get", map[string]any{"ID": 1}, nil)
			wantClass(t, err, crm.ClassAuth, "user.get: redirected (http ")
			wantClass(t, err, crm.ClassAuth, "to other host "+evil.URL+"; not following with credentials")

			w, _ := NewWebhook(portal.URL + "/rest/1/w3bh00k/")
			c, _ = New(Options{HTTP: hc, Auth: w})
			_, err = c.Call(context.Background(), "user.get", nil, nil)
			wantClass(t, err, crm.ClassAuth, "not following with credentials")

			ts, _ := NewTokenSource(OAuthConfig{
				PortalURL: portal.URL, ServerURL: portal.URL, ClientID: "app.1", ClientSecret: "cl13nt-s3cr3t",
				HTTP: hc, File: TokenFile{Path: filepath.Join(t.TempDir(), "t.json")},
			})
			if err := ts.Install(Tokens{AccessToken: testToken, RefreshToken: "r"}); err != nil {
				t.Fatal(err)
			}
			err = ts.Refresh(context.Background(), testToken)
			wantClass(t, err, crm.ClassAuth, "oauth server: redirected")

			evil.check(t)
		})
	}
}

// endlessAnswer streams a 200 answer that never ends.
func endlessAnswer(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, `{"result":[`)
	chunk := []byte(strings.Repeat(`{"ID":"1269","NAME":"Anna"},`, 2000))
	for r.Context().Err() == nil {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// TestOversizedAnswer: an endless answer fails with a transient "response body over 8 MiB".
func TestOversizedAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(endlessAnswer))
	defer srv.Close()
	c, _ := New(Options{HTTP: httpclient.New(httpclient.Options{RetryMax: -1}), Auth: fixedAuth{base: srv.URL + "/rest/", token: testToken}})
	_, _, _, err := c.GetUsers(context.Background(), nil, 0)
	wantClass(t, err, crm.ClassTransient, "user.get: response body over 8 MiB")
	var tl *httpclient.BodyTooLargeError
	if !errors.As(err, &tl) {
		t.Errorf("%v does not wrap *httpclient.BodyTooLargeError", err)
	}
}
