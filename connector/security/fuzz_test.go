package security_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/demo"
)

// The handlers of both listeners and of the admin socket take random methods, paths, headers
// and bodies: none may panic, answer later than a second, or make the heap grow without bound.
// One demo environment (every connector type mounted) serves a whole fuzzing process.

var (
	fuzzOnce sync.Once
	fuzzEnv  *demo.Env
	fuzzAPI  http.Handler
	fuzzErr  error
)

func fuzzTarget(tb testing.TB) *demo.Env {
	tb.Helper()
	fuzzOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		fuzzEnv, fuzzErr = demo.Start(ctx, demo.Options{Speed: 20})
		if fuzzErr == nil {
			fuzzAPI = fuzzEnv.Daemon.AdminAPI()
		}
	})
	if fuzzErr != nil {
		tb.Fatal(fuzzErr)
	}
	return fuzzEnv
}

var fuzzMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions,
	http.MethodHead, http.MethodPatch, "PROPFIND", "BREW"}

// fuzzRequest builds a request from fuzz input: a method index, a path (with query), header
// lines ("Name: value" per line) and a body. ok is false for input no HTTP server would parse.
func fuzzRequest(method byte, path, header string, body []byte) (*http.Request, bool) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequest(fuzzMethods[int(method)%len(fuzzMethods)], "http://127.0.0.1"+path, bytes.NewReader(body))
	if err != nil {
		return nil, false
	}
	for _, line := range strings.Split(header, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t\r") {
			continue
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	req.Host = "127.0.0.1"
	return req, true
}

var fuzzCalls int

// serveFuzz runs one request through h and checks its time and, now and then, the heap.
func serveFuzz(t *testing.T, h http.Handler, req *http.Request) {
	t.Helper()
	start := time.Now()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("%s %s took %v", req.Method, req.URL, d)
	}
	if fuzzCalls++; fuzzCalls%500 == 0 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		if m.HeapInuse > 256<<20 {
			t.Fatalf("heap in use %d MiB after %d requests", m.HeapInuse>>20, fuzzCalls)
		}
		// The process holds the daemon, the demo's fake CRMs and PBX and the fuzzer (≈70 MiB
		// before the first request): requests must not make it grow by more than 64 MiB.
		rss := residentBytes()
		if fuzzBaseRSS == 0 {
			fuzzBaseRSS = rss
		}
		if rss > fuzzBaseRSS+64<<20 {
			t.Fatalf("RSS %d MiB after %d requests, %d MiB at the start", rss>>20, fuzzCalls, fuzzBaseRSS>>20)
		}
		if rss > fuzzPeakRSS {
			fuzzPeakRSS = rss
			if v := os.Getenv("PBXBRIDGE_FUZZ_RSS_LOG"); v != "" {
				line := fmt.Sprintf("%s requests=%d rss_mib=%d base_mib=%d\n", time.Now().UTC().Format(time.RFC3339), fuzzCalls, rss>>20, fuzzBaseRSS>>20)
				if f, err := os.OpenFile(v, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
					_, _ = f.WriteString(line)
					_ = f.Close()
				}
			}
		}
	}
}

// fuzzBaseRSS and fuzzPeakRSS are this fuzzing process's RSS at its first check and its
// highest; PBXBRIDGE_FUZZ_RSS_LOG names a file that gets a line at each new peak.
var fuzzBaseRSS, fuzzPeakRSS int64

// residentBytes is the process's resident set size from /proc/self/statm (0 where there is
// no /proc).
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

func addSeeds(f *testing.F, paths ...string) {
	f.Helper()
	for i, p := range paths {
		f.Add(byte(i), p, "Content-Type: application/x-www-form-urlencoded", []byte("event=ONAPPINSTALL&auth[domain]=x"))
		f.Add(byte(i+1), p, "Content-Type: application/json\nOrigin: https://demo-amocrm.invalid", []byte(`{"user_id":1,"phone":"+79001234567"}`))
		f.Add(byte(i+2), p+"?state=x&code=y&number=%2B7900", "Authorization: Bearer x\nSec-Fetch-Site: cross-site", []byte(strings.Repeat("A", 300)))
	}
}

// FuzzPublicHandler: the public listener (the CRMs' routes and signed recording links).
func FuzzPublicHandler(f *testing.F) {
	addSeeds(f, "/crm/b24-demo/install", "/crm/b24-demo/events", "/crm/b24-demo/oauth/callback",
		"/crm/amo-demo/click2call", "/crm/amo-demo/oauth/callback", "/crm/kommo-demo/click2call", "/rec/abc.wav?exp=1&sig=x", "/crm/none/x")
	f.Fuzz(func(t *testing.T, method byte, path, header string, body []byte) {
		env := fuzzTarget(t)
		if req, ok := fuzzRequest(method, path, header, body); ok {
			serveFuzz(t, env.Daemon.PublicHandler(), req)
		}
	})
}

// FuzzAdminHandler: the admin listener (status page, calls, metrics, routing queries).
func FuzzAdminHandler(f *testing.F) {
	addSeeds(f, "/", "/calls/lab/1.2", "/calls/1.2", "/metrics", "/readyz", "/healthz", "/v1/lookup?number=101",
		"/v1/responsible?number=%2B79001234567&connector=b24-demo", "/actions/retry-dead")
	f.Fuzz(func(t *testing.T, method byte, path, header string, body []byte) {
		env := fuzzTarget(t)
		if req, ok := fuzzRequest(method, path, header, body); ok {
			serveFuzz(t, env.Daemon.AdminHandler(), req)
		}
	})
}

// FuzzAdminAPI: the admin socket's API (root and the service user only, but still no panic).
func FuzzAdminAPI(f *testing.F) {
	addSeeds(f, "/v1/status", "/v1/license", "/v1/outbox?state=dead&since=2026-01-01&limit=5", "/v1/outbox/retry",
		"/v1/outbox/import", "/v1/calls", "/v1/calls/lab/1.2")
	f.Fuzz(func(t *testing.T, method byte, path, header string, body []byte) {
		fuzzTarget(t)
		if strings.Contains(path, "reload") {
			return // a reload is a legitimate admin action, not input to fuzz
		}
		if req, ok := fuzzRequest(method, path, header, body); ok {
			serveFuzz(t, fuzzAPI, req)
		}
	})
}
