package httpclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
)

func fastOptions() Options {
	return Options{RetryMax: 3, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond, MaxRetryAfter: 2 * time.Second}
}

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		mark     bool
		statuses []int
		retryAft string
		wantHits int32
		wantCode int
	}{
		{"post 503 then ok", http.MethodPost, false, []int{503, 503, 200}, "", 3, 200},
		{"post 429 short retry-after", http.MethodPost, false, []int{429, 200}, "0", 2, 200},
		{"post 429 long retry-after is returned", http.MethodPost, false, []int{429, 200}, "3600", 1, 429},
		{"post 500 not repeated", http.MethodPost, false, []int{500, 200}, "", 1, 500},
		{"post 500 repeated when marked", http.MethodPost, true, []int{500, 200}, "", 2, 200},
		{"get 502 repeated", http.MethodGet, false, []int{502, 200}, "", 2, 200},
		{"400 never repeated", http.MethodGet, false, []int{400, 200}, "", 1, 400},
		{"always 503 gives last response", http.MethodPost, false, []int{503, 503, 503, 503, 503}, "", 4, 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := hits.Add(1)
				code := tc.statuses[min(int(n)-1, len(tc.statuses)-1)]
				if tc.retryAft != "" && (code == 429 || code == 503) {
					w.Header().Set("Retry-After", tc.retryAft)
				}
				w.WriteHeader(code)
				_, _ = w.Write([]byte(`{"status":` + http.StatusText(code) + `}`))
			}))
			defer srv.Close()
			c := New(fastOptions())
			ctx := context.Background()
			if tc.mark {
				ctx = Idempotent(ctx)
			}
			resp, err := c.R().SetContext(ctx).SetBody(`{"a":1}`).Execute(tc.method, srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if got := hits.Load(); got != tc.wantHits {
				t.Errorf("attempts = %d, want %d", got, tc.wantHits)
			}
			if resp.StatusCode() != tc.wantCode {
				t.Errorf("status = %d, want %d", resp.StatusCode(), tc.wantCode)
			}
			if len(resp.Body()) == 0 {
				t.Error("the last response body did not reach the caller")
			}
		})
	}
}

// A POST whose connection drops after the server read it must not be sent twice.
func TestAmbiguousPostNotRepeated(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		hj, ok := w.(http.Hijacker)
		if !ok {
			t.Error("no hijacker")
			return
		}
		conn, _, err := hj.Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	defer srv.Close()
	c := New(fastOptions())
	_, err := c.R().SetContext(context.Background()).SetBody(`{"a":1}`).Post(srv.URL)
	if err == nil {
		t.Fatal("expected an error")
	}
	if got := hits.Load(); got != 1 {
		t.Fatalf("server saw %d POSTs, want 1", got)
	}
}

// A POST that could not even connect is safe to repeat.
func TestDialErrorRepeated(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: connection refused
	if !notSent(dialErr(t, addr)) {
		t.Fatal("a refused connection must count as not sent")
	}
}

func dialErr(t *testing.T, addr string) error {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err == nil {
		_ = conn.Close()
		t.Skip("something listens on the closed port")
	}
	return err
}

// TestDebugLine: one redacted debug line per attempt when debug is enabled, none otherwise.
func TestDebugLine(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var buf bytes.Buffer
		o := fastOptions()
		o.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
		if _, err := New(o).R().SetContext(context.Background()).Get(srv.URL + "/rest/1/s3cr3t/user.get"); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		switch {
		case strings.Contains(out, "s3cr3t"):
			t.Fatalf("level %v: the secret was logged: %s", level, out)
		case level == slog.LevelDebug && !strings.Contains(out, "/rest/1/<redacted>/user.get"):
			t.Fatalf("no redacted debug line: %q", out)
		case level == slog.LevelInfo && out != "":
			t.Fatalf("a line at level info: %q", out)
		}
	}
}

// cancelOnResponse is a real transport that cancels the request's context as the response
// arrives, and records whether that response's body is closed.
type cancelOnResponse struct {
	cancel context.CancelFunc
	closed atomic.Bool
}

func (c *cancelOnResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &closeRecorder{ReadCloser: resp.Body, closed: &c.closed}
	c.cancel()
	return resp, nil
}

type closeRecorder struct {
	io.ReadCloser
	closed *atomic.Bool
}

func (b *closeRecorder) Close() error {
	b.closed.Store(true)
	return b.ReadCloser.Close()
}

// TestContextEndsWithResponse: a response that arrives as the context ends is closed, and the
// caller gets the context's error (net/http would log to the global logger about a response
// returned with an error, and leave it open).
func TestContextEndsWithResponse(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"result":true}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &cancelOnResponse{cancel: cancel}
	o := fastOptions()
	o.Base = &http.Client{Transport: tr}
	_, err := New(o).R().SetContext(ctx).Get(srv.URL)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if !tr.closed.Load() {
		t.Fatal("the response's body was left open")
	}
}

// cancelStaleOnResponse cancels the request's context with a stale live action's cause as the
// response arrives.
type cancelStaleOnResponse struct{ cancel context.CancelCauseFunc }

func (c *cancelStaleOnResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	c.cancel(&crm.StaleError{Reason: crm.LiveDropCallEnded})
	return resp, nil
}

// TestStaleLiveActionKeepsResponse: a live action that became stale while its request was out
// still gets the answer (it says whether a card is now shown).
func TestStaleLiveActionKeepsResponse(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"result":true}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	o := fastOptions()
	o.Base = &http.Client{Transport: &cancelStaleOnResponse{cancel: cancel}}
	resp, err := New(o).R().SetContext(ctx).Get(srv.URL)
	if err != nil {
		t.Fatalf("err = %v, want the answer", err)
	}
	if string(resp.Body()) != `{"result":true}` {
		t.Fatalf("body %q", resp.Body())
	}
}
