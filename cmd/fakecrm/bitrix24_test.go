package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
