package bitrix24

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm/crmtest"
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
