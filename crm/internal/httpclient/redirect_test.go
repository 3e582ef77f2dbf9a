package httpclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const secretToken = "s3cr3t-t0ken"

// recorder is an httptest server that records what reached it.
type recorder struct {
	*httptest.Server
	mu       sync.Mutex
	hits     int
	sawToken bool
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.hits++
		if strings.Contains(req.Header.Get("Authorization"), secretToken) || strings.Contains(string(body), secretToken) ||
			strings.Contains(req.URL.String(), secretToken) {
			r.sawToken = true
		}
		r.mu.Unlock()
		_, _ = w.Write([]byte(`{"result":"stolen"}`))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) seen() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits, r.sawToken
}

// redirector answers every request with status and a Location on target.
func redirector(t *testing.T, status int, target string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, target, status)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRedirectToOtherHostRefused: whatever the status, a request carrying a token (header and
// body) that is redirected to another host fails with a *RedirectError, and the other host
// receives nothing.
func TestRedirectToOtherHostRefused(t *testing.T) {
	t.Parallel()
	for _, status := range []int{301, 302, 303, 307, 308} {
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			t.Run(http.StatusText(status)+"/"+method, func(t *testing.T) {
				t.Parallel()
				evil := newRecorder(t)
				portal := redirector(t, status, evil.URL+"/rest/telephony.externalCall.register.json")
				c := New(fastOptions())
				req := c.R().SetContext(Idempotent(context.Background())).
					SetHeader("Authorization", "Bearer "+secretToken)
				if method == http.MethodPost {
					req.SetBody(`{"auth":"` + secretToken + `","CALL_ID":"x"}`)
				}
				_, err := req.Execute(method, portal.URL+"/rest/telephony.externalCall.register.json")
				if hits, token := evil.seen(); hits != 0 || token {
					t.Errorf("the other host got %d requests (token seen: %v)", hits, token)
				}
				var re *RedirectError
				if !errors.As(err, &re) || re.Reason != RedirectOtherHost || re.Status != status {
					t.Fatalf("err = %v, want a *RedirectError (other host, %d)", err, status)
				}
				evilURL, _ := url.Parse(evil.URL)
				want := "redirected (http " + strconv.Itoa(status) + ") to other host http://" + evilURL.Host + "; not following with credentials"
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			})
		}
	}
}

// TestRedirectSameOriginFollowed: a 307/308 to the same origin is followed with the method, the
// header and the body; a GET follows 301/302 too.
func TestRedirectSameOriginFollowed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method string
		status int
	}{
		{http.MethodPost, 307}, {http.MethodPost, 308}, {http.MethodGet, 301}, {http.MethodGet, 302},
	} {
		t.Run(tc.method+"/"+strconv.Itoa(tc.status), func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				http.Redirect(w, r, "/new", tc.status)
			})
			mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				_, _ = io.WriteString(w, r.Method+" "+r.Header.Get("Authorization")+" "+string(body))
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			req := New(fastOptions()).R().SetContext(context.Background()).SetHeader("Authorization", "Bearer t")
			want := tc.method + " Bearer t "
			if tc.method == http.MethodPost {
				req.SetBody(`{"a":1}`)
				want += `{"a":1}`
			}
			resp, err := req.Execute(tc.method, srv.URL+"/old")
			if err != nil {
				t.Fatal(err)
			}
			if got := string(resp.Body()); got != want {
				t.Fatalf("the target saw %q, want %q", got, want)
			}
		})
	}
}

// TestRedirectMethodChangeRefused: a POST answered 301/302/303 would arrive as a GET without its
// body (amoCRM would list calls instead of adding them): refused.
func TestRedirectMethodChangeRefused(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var gets int
	mux := http.NewServeMux()
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, "/new", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/new", func(http.ResponseWriter, *http.Request) {
		mu.Lock()
		gets++
		mu.Unlock()
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, err := New(fastOptions()).R().SetContext(context.Background()).SetBody(`{"a":1}`).Post(srv.URL + "/old")
	var re *RedirectError
	if !errors.As(err, &re) || re.Reason != RedirectMethod || !strings.Contains(err.Error(), "resent as GET without its body") {
		t.Fatalf("err = %v, want a method-change *RedirectError", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if gets != 0 {
		t.Fatalf("the redirect target got %d requests", gets)
	}
}

func TestRedirectLoopStops(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Path+"x", http.StatusFound)
	}))
	defer srv.Close()
	_, err := New(fastOptions()).R().SetContext(context.Background()).Get(srv.URL + "/a")
	var re *RedirectError
	if !errors.As(err, &re) || re.Reason != RedirectTooMany {
		t.Fatalf("err = %v, want too many redirects", err)
	}
}

func TestSameOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		from, to string
		same     bool
	}{
		{"https://p.bitrix24.ru/rest/x", "https://p.bitrix24.ru/other", true},
		{"https://p.bitrix24.ru/rest/x", "https://P.Bitrix24.RU:443/other", true},
		{"http://p.bitrix24.ru/rest/x", "https://p.bitrix24.ru/rest/x", true},
		{"http://p.bitrix24.ru:80/rest/x", "https://p.bitrix24.ru:443/rest/x", true},
		{"https://p.bitrix24.ru/rest/x", "http://p.bitrix24.ru/rest/x", false},
		{"http://p.bitrix24.ru:8080/", "https://p.bitrix24.ru/", false},
		{"https://p.bitrix24.ru/", "https://p.bitrix24.ru:8443/", false},
		{"https://old.bitrix24.ru/", "https://new.bitrix24.ru/", false},
		{"https://romashka.amocrm.ru/", "https://www.amocrm.ru/", false},
		{"https://amocrm.ru/", "https://romashka.amocrm.ru/", false},
		{"https://p.bitrix24.ru/", "https://p.bitrix24.ru.evil.example/", false},
	} {
		a, _ := url.Parse(tc.from)
		b, _ := url.Parse(tc.to)
		if got := sameOrigin(a, b); got != tc.same {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.same)
		}
	}
}
