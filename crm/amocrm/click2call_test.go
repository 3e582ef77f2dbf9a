package amocrm

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The widget's click, as amoCRM sends it ($authorizedAjax with the clicking user's one-time
// token): the user's extension rings and dials the number; the answers say what happened in
// plain words; CORS admits the account's own origin only.
func TestClickToCallWidget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{})
	u := e.daemon(t).URL + "/crm/amo/click2call"
	origin := map[string]string{"Origin": "https://romashka.amocrm.ru"}
	hdr := func(user int64) map[string]string {
		return map[string]string{HeaderAuthToken: e.widgetToken(user), "Origin": origin["Origin"]}
	}
	body := []byte(`{"phone":"+7 (900) 123-45-67","entity_type":"contacts","entity_id":3,"account":"romashka"}`)
	r := postC2C(t, u, body, hdr(504142))
	if r.status != http.StatusOK || !r.body.OK || !strings.HasPrefix(r.body.ID, "amo-") {
		t.Fatalf("click: %d %+v", r.status, r.body)
	}
	if r.header.Get("Access-Control-Allow-Origin") != "https://romashka.amocrm.ru" || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("headers %v", r.header)
	}
	reqs := e.orig.requests()
	if len(reqs) != 1 || reqs[0].Extension != "102" || reqs[0].Number != "+79001234567" || reqs[0].ID != r.body.ID ||
		reqs[0].Variables["__PBXBRIDGE_ENTITY"] != "contacts:3" || reqs[0].Variables["__PBXBRIDGE_CRM"] != "amo" || reqs[0].Timeout != 30*time.Second {
		t.Fatalf("originate %+v", reqs)
	}
	if n := testutil.ToFloat64(e.a.m.click2call.WithLabelValues("ok")); n != 1 {
		t.Fatalf("click_to_call_total{ok} %v", n)
	}

	for name, tc := range map[string]struct {
		user   int64
		body   string
		status int
		code   string
	}{
		"bad phone":     {504141, `{"phone":"call me"}`, http.StatusBadRequest, "bad_request"},
		"unknown field": {504141, `{"phone":"101","x":1}`, http.StatusBadRequest, "bad_request"},
		"not JSON":      {504141, `phone=101`, http.StatusBadRequest, "bad_request"},
		"trailing data": {504141, `{"phone":"101"}{}`, http.StatusBadRequest, "bad_request"},
	} {
		if r := postC2C(t, u, []byte(tc.body), hdr(tc.user)); r.status != tc.status || r.body.Error != tc.code {
			t.Fatalf("%s: %d %+v", name, r.status, r.body)
		}
	}
	// A user of the account without an extension.
	unmapped := map[string]string{HeaderAuthToken: sign(t, fakecrm.DemoClientSecret, tokenClaims(time.Now(), "unmapped", 504999))}
	if r := postC2C(t, u, []byte(`{"phone":"+79001234567"}`), unmapped); r.status != http.StatusForbidden || r.body.Error != "user_not_mapped" ||
		!strings.Contains(r.body.Message, "504999") {
		t.Fatalf("unmapped: %d %+v", r.status, r.body)
	}

	e.orig.err = fmt.Errorf("ami: originate: %w", asterisk.ErrExtensionBusy)
	r = postC2C(t, u, []byte(`{"phone":"89001234567"}`), hdr(504141))
	if r.status != http.StatusConflict || r.body.Error != "extension_busy" || !strings.Contains(r.body.Message, "extension 101") {
		t.Fatalf("busy: %d %+v", r.status, r.body)
	}

	// CORS preflight: the token header is allowed for the account's origin, nothing for others.
	for o, allowed := range map[string]bool{"https://romashka.amocrm.ru": true, "https://evil.example": false, "https://romashka.amocrm.ru.evil.example": false} {
		req, _ := http.NewRequest(http.MethodOptions, u, nil)
		req.Header.Set("Origin", o)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Access-Control-Allow-Origin") == o && strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), HeaderAuthToken)
		if resp.StatusCode != http.StatusNoContent || got != allowed {
			t.Fatalf("preflight from %s: %d %v", o, resp.StatusCode, resp.Header)
		}
	}
}

// With click_to_call.accept_jwt off no click is accepted, not even with a valid token.
func TestClickToCallOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeKommo, envOpt{mutate: func(c *Config) { c.ClickToCall.AcceptJWT = false }})
	u := e.daemon(t).URL + "/crm/amo/click2call"
	if r := postC2C(t, u, []byte(`{"phone":"+79001234567"}`), map[string]string{HeaderAuthToken: e.widgetToken(504141)}); r.status != http.StatusUnauthorized ||
		!strings.Contains(r.body.Message, "accept_jwt") {
		t.Fatalf("off: %d %+v", r.status, r.body)
	}
	if len(e.orig.requests()) != 0 {
		t.Fatal("a click was placed with click-to-call off")
	}
}
