package fakecrm

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startBoxedTLS serves a boxed fake over HTTPS with a self-signed certificate; it returns the
// fake and a client that trusts the certificate.
func startBoxedTLS(t *testing.T, opts ...Bitrix24Option) (*Bitrix24, *http.Client) {
	t.Helper()
	cert, certPEM, err := SelfSignedCert("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	f := NewBitrix24(append([]Bitrix24Option{B24Boxed()}, opts...)...)
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.SetBaseURL(srv.URL)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("the certificate's PEM does not parse")
	}
	return f, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

func postWith(t *testing.T, c *http.Client, u string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestB24Boxed: the boxed portal's answers (see bitrix24_boxed.go).
func TestB24Boxed(t *testing.T) {
	f, c := startBoxedTLS(t, B24Webhook(1, "code", "crm,telephony,user"), B24PortalToken("pbx.tok"), B24ModuleSecret("s3cr3t"))
	// The cloud OAuth server is out of reach: the connection closes.
	if st, msg := postWith(t, c, f.URL()+"/oauth/token/", url.Values{"grant_type": {"refresh_token"}}); st != 0 {
		t.Fatalf("the unreachable cloud answered %d %s", st, msg)
	}
	if f.State().CloudRefused != 1 {
		t.Fatalf("cloud refusals %d", f.State().CloudRefused)
	}
	// Webhooks: telephony allowed, event.* never, a wrong secret is the box's error.
	for _, tc := range []struct {
		path, want string
		status     int
	}{
		{"/rest/1/code/telephony.externalLine.get.json", `"result"`, 200},
		{"/rest/1/code/event.bind.json", "WRONG_AUTH_TYPE", 403},
		{"/rest/1/wrong/profile.json", "INVALID_CREDENTIALS", 401},
		{"/rest/1/code/tasks.task.add.json", "provided by the webhook token", 403},
	} {
		st, msg := postWith(t, c, f.URL()+tc.path, url.Values{"event": {"ONEXTERNALCALLSTART"}, "handler": {"https://pbx.example.ru/x"}})
		if st != tc.status || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %s, want %d %s", tc.path, st, msg, tc.status, tc.want)
		}
	}
	// The module's token: an application's, event.bind included; expired on demand.
	if st, msg := postWith(t, c, f.URL()+"/rest/event.bind.json", url.Values{"auth": {"pbx.tok"}, "event": {"ONEXTERNALCALLSTART"}, "handler": {"http://127.0.0.1:1/x"}}); st != 200 {
		t.Fatalf("event.bind with the module's token: %d %s", st, msg)
	}
	if b := f.State().Bindings; len(b) != 1 || !b[0].Module {
		t.Fatalf("bindings %+v", b)
	}
	x := f.Faults()
	x.PortalTokenExpired = true
	f.SetFaults(x)
	if st, msg := postWith(t, c, f.URL()+"/rest/profile.json", url.Values{"auth": {"pbx.tok"}}); st != 401 || !strings.Contains(msg, "expired_token") {
		t.Fatalf("expired module token: %d %s", st, msg)
	}
}

// TestB24BoxedPlainHTTP: a box over plain http refuses webhooks unless REST_APAUTH_ALLOW_HTTP.
func TestB24BoxedPlainHTTP(t *testing.T) {
	f := startBitrix24(t, B24Boxed(), B24Webhook(1, "code", "crm,telephony,user"))
	r := post(t, f.URL()+"/rest/1/code/profile.json", url.Values{})
	if r.status != 400 || r.code() != "INVALID_REQUEST" || r.body["error_description"] != "Https required." {
		t.Fatalf("%+v", r)
	}
	x := f.Faults()
	x.WebhookHTTPSRequired = false
	f.SetFaults(x)
	if r := post(t, f.URL()+"/rest/1/code/telephony.externalLine.get.json", url.Values{}); r.status != 200 {
		t.Fatalf("with REST_APAUTH_ALLOW_HTTP: %+v", r)
	}
}

// TestB24BoxedModuleEvents: a click-to-call of a handler bound with the module's token is
// posted directly and signed; one bound by an application is not delivered without the cloud.
func TestB24BoxedModuleEvents(t *testing.T) {
	got := make(chan *http.Request, 1)
	var body string
	handler := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		got <- r
	}))
	t.Cleanup(handler.Close)
	f, c := startBoxedTLS(t, B24PortalToken("pbx.tok"), B24ModuleSecret("s3cr3t"))
	tok := f.IssueTokens()
	if st, msg := postWith(t, c, f.URL()+"/rest/event.bind.json", url.Values{"auth": {tok.AccessToken}, "event": {"ONEXTERNALCALLSTART"}, "handler": {handler.URL}}); st != 200 {
		t.Fatalf("%d %s", st, msg)
	}
	if _, err := f.ClickToCall(context.Background(), 1269, "+79001234567", ""); err == nil || !strings.Contains(err.Error(), "without the cloud") {
		t.Fatalf("an application's event without the cloud: %v", err)
	}
	if st, msg := postWith(t, c, f.URL()+"/rest/event.bind.json", url.Values{"auth": {"pbx.tok"}, "event": {"ONEXTERNALCALLSTART"}, "handler": {handler.URL}}); st != 200 {
		t.Fatalf("%d %s", st, msg)
	}
	id, err := f.ClickToCall(context.Background(), 1269, "+79001234567", "")
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	ts := r.Header.Get(ModuleTimestampHeader)
	m := hmac.New(sha256.New, []byte("s3cr3t"))
	m.Write([]byte(ts + "." + body))
	if r.Header.Get(ModuleSignatureHeader) != "sha256="+hex.EncodeToString(m.Sum(nil)) {
		t.Fatalf("signature %q over %q", r.Header.Get(ModuleSignatureHeader), body)
	}
	if n, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(n, 0)).Abs() > time.Minute {
		t.Fatalf("timestamp %q", ts)
	}
	v, _ := url.ParseQuery(body)
	if v.Get("data[CALL_ID]") != id || v.Get("auth[member_id]") != f.MemberID() || v.Get("auth[access_token]") != "" {
		t.Fatalf("event %v", v)
	}
}

// TestB24InstallModule: installing the module (its settings page) issues a token the portal
// takes, keeps the secret across a new token, invalidates the previous token, and sends events
// only to handlers under the saved pbxbridge URL; the control route gives the same.
func TestB24InstallModule(t *testing.T) {
	f, c := startBoxedTLS(t)
	if _, err := f.InstallModule("ftp://pbx.example.ru"); err == nil {
		t.Fatal("a pbxbridge URL that is not http(s) accepted")
	}
	got := make(chan string, 4)
	handler := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.URL.Path }))
	t.Cleanup(handler.Close)
	in, err := f.InstallModule(handler.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(in.Token, "pbx.") || len(in.Secret) != 64 || in.MemberID != f.MemberID() || in.PortalURL != f.URL() {
		t.Fatalf("%+v", in)
	}
	bind := func(tok, h string) int {
		st, _ := postWith(t, c, f.URL()+"/rest/event.bind.json", url.Values{"auth": {tok}, "event": {"ONEXTERNALCALLSTART"}, "handler": {h}})
		return st
	}
	if st := bind(in.Token, handler.URL+"/crm/b24/module/events"); st != 200 {
		t.Fatalf("the module's token: %d", st)
	}
	if _, err := f.ClickToCall(context.Background(), 1269, "+79001234567", ""); err != nil {
		t.Fatal(err)
	}
	if p := <-got; p != "/crm/b24/module/events" {
		t.Fatalf("posted to %s", p)
	}
	if st := bind(in.Token, "https://elsewhere.example.com/crm/b24/module/events"); st != 200 {
		t.Fatalf("bind elsewhere: %d", st)
	}
	if _, err := f.ClickToCall(context.Background(), 1269, "+79001234567", ""); err == nil || !strings.Contains(err.Error(), "not under the pbxbridge URL") {
		t.Fatalf("an event for a handler elsewhere: %v", err)
	}

	// A new token (through the control route): the old one stops working, the secret stays.
	st, out := postWith(t, c, f.URL()+"/_fake/module/install", url.Values{"pbxbridge_url": {handler.URL}})
	if st != 200 || !strings.Contains(out, in.Secret) || strings.Contains(out, in.Token) {
		t.Fatalf("%d %s", st, out)
	}
	if st := bind(in.Token, handler.URL+"/x"); st != 401 {
		t.Fatalf("the previous token: %d", st)
	}
}
