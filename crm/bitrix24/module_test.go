package bitrix24

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// moduleClick is a module-style ONEXTERNALCALLSTART body of the boxed fake's portal.
func moduleClick(b *crmtest.BoxedBitrix24, callID, member string) []byte {
	form := url.Values{
		"event": {"ONEXTERNALCALLSTART"}, "event_handler_id": {"1055"},
		"data[PHONE_NUMBER]": {"+79001234567"}, "data[USER_ID]": {"1269"}, "data[CALL_ID]": {callID},
		"data[LINE_NUMBER]": {"+74951112233"}, "ts": {fmt.Sprint(time.Now().Unix())},
		"auth[domain]": {b.Domain()}, "auth[member_id]": {member},
	}
	return []byte(form.Encode())
}

// postModule posts body to the module route with headers h; it returns the status and body.
func (e *env) postModule(body []byte, h http.Header) (int, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.srv.URL+"/crm/b24/module/events", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// noOriginate checks that no click-to-call was placed beyond those the test has taken
// (originated). It follows refused and duplicate requests: the adapter answers those without
// starting anything (it originates in the background only after answering "ok"), so their
// answer is proof enough, with nothing to wait for.
func (e *env) noOriginate() {
	e.t.Helper()
	if reqs := e.orig.requests(); len(reqs) > e.originates {
		e.t.Fatalf("originated %+v", reqs[e.originates:])
	}
}

// TestSecurityModuleEvents. Attack: whoever reaches pbxbridge's public URL posts a click-to-call
// "from the module" to make the PBX dial a number of their choice. The module route accepts only
// requests signed with module_secret (HMAC over timestamp and body, compared in constant time)
// within five minutes, from the bound portal (member_id), each event once, with a bounded body.
func TestSecurityModuleEvents(t *testing.T) {
	t.Parallel()
	b := startBoxed(t)
	e := newEnv(t, b.Bitrix24, portalTokenMode(b, trustCAFile), func(_ *crm.Params, c *Config) { c.Auth.MemberID = b.MemberID() })
	now := time.Now()
	sign := func(body []byte, at time.Time) http.Header {
		return fakecrm.SignModuleEvent(testModuleSecret, at, body)
	}
	rejected := func(reason string) float64 {
		return testutil.ToFloat64(e.a.m.webhookRejected.WithLabelValues(reason))
	}

	body := moduleClick(b, "externalCall.attack.1", b.MemberID())
	for _, tc := range []struct {
		name   string
		body   []byte
		h      http.Header
		status int
		reason string
	}{
		{"no signature", body, nil, http.StatusUnauthorized, "module_unsigned"},
		{"timestamp only", body, http.Header{"X-Pbxbridge-Timestamp": {fmt.Sprint(now.Unix())}}, http.StatusUnauthorized, "module_unsigned"},
		{"forged", body, fakecrm.SignModuleEvent("an attacker's guess at the secret, long enough", now, body), http.StatusUnauthorized, "module_signature"},
		{"signature of another body", body, sign(moduleClick(b, "externalCall.other", b.MemberID()), now), http.StatusUnauthorized, "module_signature"},
		{"signature not hex", body, http.Header{"X-Pbxbridge-Timestamp": {fmt.Sprint(now.Unix())}, "X-Pbxbridge-Signature": {"sha256=" + strings.Repeat("zz", 32)}}, http.StatusUnauthorized, "module_unsigned"},
		{"stale timestamp", body, sign(body, now.Add(-10*time.Minute)), http.StatusUnauthorized, "module_stale"},
		{"future timestamp", body, sign(body, now.Add(10*time.Minute)), http.StatusUnauthorized, "module_stale"},
		{"another portal's member_id", moduleClick(b, "externalCall.attack.2", "ffffffffffffffffffffffffffffffff"),
			sign(moduleClick(b, "externalCall.attack.2", "ffffffffffffffffffffffffffffffff"), now), http.StatusForbidden, "member_id"},
		{"huge body", bytes.Repeat([]byte("a"), 1<<20), sign(bytes.Repeat([]byte("a"), 1<<20), now), http.StatusRequestEntityTooLarge, "too_large"},
	} {
		before := rejected(tc.reason)
		st, msg := e.postModule(tc.body, tc.h)
		mustf(t, st == tc.status, "%s: status %d (%s), want %d", tc.name, st, msg, tc.status)
		mustf(t, rejected(tc.reason) == before+1, "%s: rejection %q not counted", tc.name, tc.reason)
	}
	// A huge body without a length (chunked) is cut at the limit too.
	big := bytes.Repeat([]byte("a"), 1<<20)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.srv.URL+"/crm/b24/module/events", io.NopCloser(io.MultiReader(bytes.NewReader(big))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = sign(big, now)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	mustf(t, resp.StatusCode == http.StatusRequestEntityTooLarge && req.ContentLength == 0, "chunked huge body: %d", resp.StatusCode)
	e.noOriginate()

	// The genuine event is accepted once; the same signed request again within the window is a
	// duplicate and does nothing.
	st, msg := e.postModule(body, sign(body, now))
	mustf(t, st == http.StatusOK && strings.Contains(msg, "ok"), "genuine: %d %s", st, msg)
	r := e.originated()
	mustf(t, r.Extension == "101" && r.Number == "+79001234567", "%+v", r)
	st, msg = e.postModule(body, sign(body, now))
	mustf(t, st == http.StatusOK && strings.Contains(msg, "duplicate"), "replayed: %d %s", st, msg)
	e.noOriginate()

	// The OAuth route does not take module events, whatever they carry.
	resp = postForm(t, e.srv.URL+"/crm/b24/events", url.Values{"event": {"ONEXTERNALCALLSTART"}, "data[CALL_ID]": {"externalCall.attack.3"},
		"data[USER_ID]": {"1269"}, "data[PHONE_NUMBER]": {"+79001234567"}, "auth[domain]": {b.Domain()}, "auth[member_id]": {b.MemberID()}})
	_ = resp.Body.Close()
	mustf(t, resp.StatusCode == http.StatusUnauthorized, "the events route answered %d", resp.StatusCode)
	e.noOriginate()
}

// TestSecurityModuleRouteOnlyForPortalToken: an oauth or webhook connector has no module route,
// so a module secret never becomes a second way in.
func TestSecurityModuleRouteOnlyForPortalToken(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	body := []byte("event=ONEXTERNALCALLSTART&data[CALL_ID]=x&data[USER_ID]=1269&data[PHONE_NUMBER]=%2B79001234567")
	st, _ := e.postModule(body, fakecrm.SignModuleEvent("", time.Now(), body))
	mustf(t, st == http.StatusNotFound, "status %d", st)
	e.noOriginate()
}

// TestModuleBindsFirstPortal: without auth.member_id, the module's first verified event binds
// the connector (remembered across restarts); events of another portal are refused after.
func TestModuleBindsFirstPortal(t *testing.T) {
	t.Parallel()
	b := startBoxed(t)
	e := newEnv(t, b.Bitrix24, portalTokenMode(b, trustCAFile))
	a, err := e.a.Account(context.Background())
	mustf(t, err == nil && a.MemberID == "" && a.Domain == portalHost(b.URL()), "before: %+v %v", a, err)
	body := moduleClick(b, "externalCall.bind.1", b.MemberID())
	st, msg := e.postModule(body, fakecrm.SignModuleEvent(testModuleSecret, time.Now(), body))
	mustf(t, st == http.StatusOK, "%d %s", st, msg)
	e.originated()
	other := moduleClick(b, "externalCall.bind.2", "0000000000000000000000000000000a")
	st, _ = e.postModule(other, fakecrm.SignModuleEvent(testModuleSecret, time.Now(), other))
	mustf(t, st == http.StatusForbidden, "another portal after binding: %d", st)

	// A new adapter on the same state directory is bound already.
	e2 := newEnv(t, b.Bitrix24, portalTokenMode(b, trustCAFile), func(p *crm.Params, _ *Config) { p.StateDir = e.state })
	a, err = e2.a.Account(context.Background())
	mustf(t, err == nil && a.MemberID == b.MemberID(), "after a restart: %+v %v", a, err)
	st, _ = e2.postModule(other, fakecrm.SignModuleEvent(testModuleSecret, time.Now(), other))
	mustf(t, st == http.StatusForbidden, "another portal after a restart: %d", st)
}

// TestVerifyModuleRequest: the signature check on its own.
func TestVerifyModuleRequest(t *testing.T) {
	secret := []byte(testModuleSecret)
	now := time.Unix(1795305782, 0)
	body := []byte("event=ONEXTERNALCALLSTART")
	h := fakecrm.SignModuleEvent(testModuleSecret, now, body)
	ts, sig := h.Get("X-Pbxbridge-Timestamp"), h.Get("X-Pbxbridge-Signature")
	for _, tc := range []struct {
		name        string
		secret      []byte
		ts, sig     string
		body        []byte
		now         time.Time
		wantErr     error
		errContains string
	}{
		{"ok", secret, ts, sig, body, now, nil, ""},
		{"ok at the edge of the window", secret, ts, sig, body, now.Add(moduleSkew), nil, ""},
		{"just outside", secret, ts, sig, body, now.Add(moduleSkew + time.Second), errModuleStale, ""},
		{"no secret configured", nil, ts, sig, body, now, errModuleBadSig, ""},
		{"empty", secret, "", "", body, now, errModuleUnsigned, ""},
		{"negative ts", secret, "-1", sig, body, now, errModuleUnsigned, "unix seconds"},
		{"huge ts", secret, "99999999999999999999", sig, body, now, errModuleUnsigned, "unix seconds"},
		{"no prefix", secret, ts, strings.TrimPrefix(sig, "sha256="), body, now, errModuleUnsigned, "sha256="},
		{"upper-case hex", secret, ts, "sha256=" + strings.ToUpper(strings.TrimPrefix(sig, "sha256=")), body, now, nil, ""},
		{"short", secret, ts, sig[:len(sig)-2], body, now, errModuleUnsigned, ""},
		{"body changed", secret, ts, sig, append([]byte(nil), "event=ONEXTERNALCALLSTARX"...), now, errModuleBadSig, ""},
		{"timestamp changed", secret, fmt.Sprint(now.Unix() + 1), sig, body, now, errModuleBadSig, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyModuleRequest(tc.secret, tc.ts, tc.sig, tc.body, tc.now)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != nil && (err == nil || !errors.Is(err, tc.wantErr)):
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			case tc.errContains != "" && !strings.Contains(err.Error(), tc.errContains):
				t.Fatalf("%v lacks %q", err, tc.errContains)
			}
		})
	}
}

// moduleVectorsFile holds the signature vectors pbxbridge and the portal module share.
const moduleVectorsFile = "testdata/module-signature-vectors.json"

// moduleVector is one signed module event: event is what the module encodes into body.
type moduleVector struct {
	Name      string `json:"name"`
	Secret    string `json:"secret"`
	Timestamp int64  `json:"timestamp"`
	Event     struct {
		Event     string            `json:"event"`
		HandlerID string            `json:"event_handler_id"`
		Data      map[string]string `json:"data"`
		TS        string            `json:"ts"`
		Auth      map[string]string `json:"auth"`
	} `json:"event"`
	Body      string `json:"body"`
	Signature string `json:"signature"`
}

func loadModuleVectors(t *testing.T) []moduleVector {
	t.Helper()
	b, err := os.ReadFile(moduleVectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []moduleVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", moduleVectorsFile, err)
	}
	if len(f.Vectors) == 0 {
		t.Fatalf("%s: no vectors", moduleVectorsFile)
	}
	return f.Vectors
}

// TestModuleSignatureVectors: pbxbridge's side of the module's signature, without PHP. Every
// committed vector (made by the module's own Signer, the HMAC checked with Python's hmac; the
// module's side is TestPortalModulePHP) verifies at its timestamp and parses as the event it
// encodes; one changed byte of body, timestamp or secret, or a clock past the window, refuses it;
// and the fake portal signs as the module does.
func TestModuleSignatureVectors(t *testing.T) {
	t.Parallel()
	for _, v := range loadModuleVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			ts := strconv.FormatInt(v.Timestamp, 10)
			at := time.Unix(v.Timestamp, 0)
			body := []byte(v.Body)
			if err := verifyModuleRequest([]byte(v.Secret), ts, v.Signature, body, at); err != nil {
				t.Fatalf("refused: %v", err)
			}
			h := fakecrm.SignModuleEvent(v.Secret, at, body)
			mustf(t, h.Get(moduleTimestampHeader) == ts && h.Get(moduleSignatureHeader) == v.Signature,
				"the fake signs %v", h)

			ev, err := api.ParseEvent(body)
			if err != nil {
				t.Fatal(err)
			}
			want := v.Event
			mustf(t, ev.Name == want.Event && ev.HandlerID == want.HandlerID && ev.TS == want.TS, "parsed %+v", ev)
			mustf(t, maps.Equal(ev.Data, want.Data), "data: parsed %q, encoded %q", ev.Data, want.Data)
			mustf(t, maps.Equal(ev.Auth, want.Auth), "auth: parsed %q, encoded %q", ev.Auth, want.Auth)

			for name, tc := range map[string]struct {
				secret, ts string
				body       []byte
				now        time.Time
				want       error
			}{
				"a byte of the body": {v.Secret, ts, flipLast(body), at, errModuleBadSig},
				"the timestamp + 1":  {v.Secret, strconv.FormatInt(v.Timestamp+1, 10), body, at, errModuleBadSig},
				"another secret":     {v.Secret + "x", ts, body, at, errModuleBadSig},
				"replayed too late":  {v.Secret, ts, body, at.Add(moduleSkew + time.Second), errModuleStale},
				"sent too early":     {v.Secret, ts, body, at.Add(-moduleSkew - time.Second), errModuleStale},
			} {
				if err := verifyModuleRequest([]byte(tc.secret), tc.ts, v.Signature, tc.body, tc.now); !errors.Is(err, tc.want) {
					t.Errorf("%s: got %v, want %v", name, err, tc.want)
				}
			}
		})
	}
}

// flipLast returns b with its last byte changed.
func flipLast(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 1
	return c
}

// TestSecurityModuleCallbackReplay. Attack: a callback form's event carries no id, so a captured
// module request posted again within the signature's window would ask the PBX for a second
// callback. The signed body (its ts included) identifies the request: the copy is a duplicate.
func TestSecurityModuleCallbackReplay(t *testing.T) {
	t.Parallel()
	b := startBoxed(t)
	e := newEnv(t, b.Bitrix24, portalTokenMode(b, trustCAFile), func(_ *crm.Params, c *Config) {
		c.Auth.MemberID = b.MemberID()
		c.ClickToCall.CallbackExtension = "600"
		c.ClickToCall.CallbackUserID = 1270
	})
	body := []byte(callbackEvent(b.Bitrix24, "+79007654321").Encode())
	h := fakecrm.SignModuleEvent(testModuleSecret, time.Now(), body)
	st, msg := e.postModule(body, h)
	mustf(t, st == http.StatusOK && strings.Contains(msg, "ok"), "the callback: %d %s", st, msg)
	st, msg = e.postModule(body, h)
	mustf(t, st == http.StatusOK && strings.Contains(msg, "duplicate"), "the copy: %d %s", st, msg)
	waitQuiet(t, e)
	mustf(t, len(e.orig.requests()) == 1, "%d callbacks for one request, want 1", len(e.orig.requests()))
}
