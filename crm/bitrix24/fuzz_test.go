package bitrix24

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// FuzzServeEvent posts arbitrary bodies to the click-to-call endpoint ("TOKEN" in the body is
// replaced by the real application token, so that valid events reach the handlers): it must
// answer 200, 400 or 401 and never panic.
func FuzzServeEvent(f *testing.F) {
	f.Add([]byte("event=ONEXTERNALCALLSTART&data[PHONE_NUMBER]=1&data[USER_ID]=1269&data[CALL_ID]=c&auth[application_token]=TOKEN"))
	fake := crmtest.StartBitrix24(f)
	e := newEnv(f, fake)
	token := []byte(fake.ApplicationToken())
	f.Fuzz(func(t *testing.T, body []byte) {
		body = bytes.ReplaceAll(body, []byte("TOKEN"), token)
		req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/crm/b24/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		e.a.serveEvent(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized:
		default:
			t.Fatalf("http %d for %q", w.Code, body)
		}
	})
}

// FuzzModuleRequest posts arbitrary module requests to the module route: the timestamp and
// signature headers as given, or (sign true) a valid signature of the body, so that signed
// bodies reach the event parser and the handlers. It must answer 200, 400, 401, 403 or 413 and
// never panic; an unsigned request must never be accepted.
func FuzzModuleRequest(f *testing.F) {
	f.Add("1795305782", "sha256=00", []byte("event=ONEXTERNALCALLSTART&data[PHONE_NUMBER]=1&data[USER_ID]=1269&data[CALL_ID]=c&auth[member_id]=MEMBER"), true)
	f.Add("", "", []byte("event=ONEXTERNALCALLBACKSTART&data[PHONE_NUMBER]=%2B79001234567&auth[member_id]=MEMBER"), false)
	b := crmtest.StartBoxedBitrix24(f, fakecrm.B24PortalToken(testPortalToken), fakecrm.B24ModuleSecret(testModuleSecret))
	e := newEnv(f, b.Bitrix24, portalTokenMode(b, trustCAFile), func(_ *crm.Params, c *Config) {
		c.Auth.MemberID = b.MemberID()
		c.ClickToCall.Enabled = false // the events are handled, nothing is dialled
	})
	member := []byte(b.MemberID())
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte, sign bool) {
		body = bytes.ReplaceAll(body, []byte("MEMBER"), member)
		req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/crm/b24/module/events", bytes.NewReader(body))
		if sign {
			req.Header = fakecrm.SignModuleEvent(testModuleSecret, time.Now(), body)
		} else {
			req.Header.Set("X-Pbxbridge-Timestamp", ts)
			req.Header.Set("X-Pbxbridge-Signature", sig)
		}
		w := httptest.NewRecorder()
		e.a.serveModuleEvent(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("http %d for %q", w.Code, body)
		}
		if !sign && w.Code == http.StatusOK {
			t.Fatalf("an unsigned request was accepted: %q %q %q", ts, sig, body)
		}
	})
}
