package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBitrix24Options(t *testing.T) {
	env := map[string]string{
		"FAKECRM_BITRIX24_CLIENT_ID": "local.x", "FAKECRM_BITRIX24_CLIENT_SECRET": "s",
		"FAKECRM_BITRIX24_RPS": "2", "FAKECRM_BITRIX24_BURST": "50", "FAKECRM_BITRIX24_LATENCY": "10ms",
		"FAKECRM_BITRIX24_REUSE_CALL_ID": "1", "FAKECRM_BITRIX24_WEBHOOK": "1/abc",
	}
	opts, err := bitrix24Options(func(k string) string { return env[k] })
	if err != nil || len(opts) != 5 {
		t.Fatalf("%d options, %v", len(opts), err)
	}
	for k, v := range map[string]string{"FAKECRM_BITRIX24_RPS": "fast", "FAKECRM_BITRIX24_CLIENT_SECRET": "", "FAKECRM_BITRIX24_WEBHOOK": "abc"} {
		bad := map[string]string{}
		for kk, vv := range env {
			bad[kk] = vv
		}
		bad[k] = v
		if _, err := bitrix24Options(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("%s=%q accepted", k, v)
		}
	}
}

// TestBitrix24Boxed: the boxed knobs, and HTTPS with the certificate written for tls.ca_file.
func TestBitrix24Boxed(t *testing.T) {
	env := map[string]string{"FAKECRM_BITRIX24_BOXED": "1", "FAKECRM_BITRIX24_PORTAL_TOKEN": "pbx.t", "FAKECRM_BITRIX24_MODULE_SECRET": "s"}
	opts, err := bitrix24Options(func(k string) string { return env[k] })
	if err != nil || len(opts) != 3 {
		t.Fatalf("%d options, %v", len(opts), err)
	}
	delete(env, "FAKECRM_BITRIX24_MODULE_SECRET")
	if _, err := bitrix24Options(func(k string) string { return env[k] }); err == nil {
		t.Error("a portal token without a module secret accepted")
	}
	dir := t.TempDir()
	tc, err := bitrix24TLS(func(k string) string { return map[string]string{"FAKECRM_BITRIX24_TLS_DIR": dir}[k] }, slog.New(slog.DiscardHandler))
	if err != nil || tc == nil || len(tc.Certificates) != 1 {
		t.Fatalf("%+v %v", tc, err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "bitrix24-ca.pem"))
	if err != nil || !strings.Contains(string(pem), "BEGIN CERTIFICATE") {
		t.Fatalf("%s %v", pem, err)
	}
	if tc, err := bitrix24TLS(func(string) string { return "" }, slog.New(slog.DiscardHandler)); tc != nil || err != nil {
		t.Fatalf("TLS without TLS_DIR: %v %v", tc, err)
	}
}

// TestBitrix24Kind: the registered kind serves a fake whose state is reachable.
func TestBitrix24Kind(t *testing.T) {
	var k *kind
	for i := range kinds {
		if kinds[i].name == "bitrix24" {
			k = &kinds[i]
		}
	}
	if k == nil {
		t.Fatal("bitrix24 is not registered")
	}
	h, err := k.handler("http://127.0.0.1:1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/_fake/state", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var s map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || s["requests"] == nil {
		t.Fatalf("state %v %v", s, err)
	}
}
