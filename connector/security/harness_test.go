package security_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/demo"
)

// start runs a demo environment (simulated PBX, fake Bitrix24, amoCRM and Kommo, the daemon on
// two loopback listeners) for one test.
func start(t *testing.T, o demo.Options) *demo.Env {
	t.Helper()
	if o.Speed == 0 {
		o.Speed = 20
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env, err := demo.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Close() })
	return env
}

// client is an HTTP client that gives up after a few seconds: an attack that hangs a handler
// fails the test instead of the run.
var client = &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}}

// do sends a request and returns the status and (at most 64 KiB of) the body.
func do(t *testing.T, method, u string, body io.Reader, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	return do(t, http.MethodGet, u, nil, nil)
}

// metric is the sum of a metric family's series whose labels contain every given pair.
func metric(t *testing.T, env *demo.Env, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := env.Daemon.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// waitFor polls cond until it holds or the limit passes (testkit.WaitFor).
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, limit, what, cond)
}

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func postForm(t *testing.T, u string, f url.Values) (int, string) {
	t.Helper()
	return do(t, http.MethodPost, u, strings.NewReader(f.Encode()), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
}
