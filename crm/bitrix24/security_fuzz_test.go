package bitrix24

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm/crmtest"
)

// FuzzSecurityEvent posts arbitrary bodies to the events endpoint with TOKEN, DOMAIN and MEMBER
// replaced by the installed application_token, domain and member_id, so that authenticated
// events reach the replay guard, the number check and the handlers: it must answer 200, 400 or
// 401 and never panic, and never originate a number that is not digits with one leading +.
func FuzzSecurityEvent(f *testing.F) {
	f.Add([]byte("event=ONEXTERNALCALLSTART&data[PHONE_NUMBER]=%2B79001234567&data[USER_ID]=1269&data[CALL_ID]=c1&auth[application_token]=TOKEN&auth[domain]=DOMAIN&auth[member_id]=MEMBER"))
	fake := crmtest.StartBitrix24(f)
	e := newEnv(f, fake)
	repl := strings.NewReplacer("TOKEN", fake.ApplicationToken(), "DOMAIN", url.QueryEscape(fake.Domain()), "MEMBER", fake.MemberID())
	f.Fuzz(func(t *testing.T, body []byte) {
		body = []byte(repl.Replace(string(body)))
		e.a.replays = newReplayGuard(replayWindow, 1000) // a long run must not fill it (503)
		req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/crm/b24/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		e.a.serveEvent(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized:
		default:
			t.Fatalf("http %d for %q", w.Code, body)
		}
		for _, r := range e.orig.requests() {
			if _, err := dialNumber(r.Number); err != nil || r.Number != strings.TrimSpace(r.Number) {
				t.Fatalf("originated %q: %v", r.Number, err)
			}
		}
	})
}

// FuzzDialNumber: dialNumber never panics, and what it accepts is digits with at most one
// leading +, within the length limits, and accepted again unchanged.
func FuzzDialNumber(f *testing.F) {
	f.Add("+7 (900) 123-45-67")
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := dialNumber(raw)
		if err != nil {
			return
		}
		d := strings.TrimPrefix(n, "+")
		if len(d) < minDialDigits || len(d) > maxDialDigits || strings.Trim(d, "0123456789") != "" {
			t.Fatalf("dialNumber(%q) = %q", raw, n)
		}
		if again, err := dialNumber(n); err != nil || again != n {
			t.Fatalf("dialNumber(%q) = %q, then %q, %v", raw, n, again, err)
		}
	})
}
