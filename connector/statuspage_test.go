package connector_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
)

// page GETs path from the admin handler with an Accept-Language header.
func page(t *testing.T, d *connector.Daemon, path, acceptLanguage string) (int, http.Header, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+path, nil)
	if acceptLanguage != "" {
		req.Header.Set("Accept-Language", acceptLanguage)
	}
	rec := httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, req)
	return rec.Code, rec.Header(), rec.Body.String()
}

// The browser's language picks the status page's language unless http.admin.language fixes it;
// every value is escaped, the search included; the pages keep their security headers.
func TestStatusPageLanguageAndEscaping(t *testing.T) {
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	path := testConfig(t, pbx.Addr(), "")
	d, _ := startDaemon(t, path)

	// A call record with hostile values, as a backfill could bring.
	hostile := `{"call_id":"1700000000.9","pbx":"lab","direction":"inbound","customer":"+79001234567<script>alert(1)</script>",` +
		`"line":"\"><img src=x onerror=alert(2)>","started_at":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339) + `",` +
		`"ended_at":"` + time.Now().UTC().Format(time.RFC3339) + `","disposition":"answered","answered_by":"<b>101</b>","hangup_cause":34}` + "\n"
	if _, err := d.Import(context.Background(), strings.NewReader(hostile)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "delivery", func() bool {
		rows, _ := d.Outbox().List(context.Background(), outbox.Filter{State: outbox.Done})
		return len(rows) == 1
	})

	for _, c := range []struct{ accept, want, text string }{
		{"ru-RU,ru;q=0.9,en;q=0.8", `<html lang="ru">`, "Звонки за последние 24 часа"},
		{"en-US,en;q=0.9", `<html lang="en">`, "Calls in the last 24 hours"},
		{"de-DE", `<html lang="en">`, "Calls in the last 24 hours"},
	} {
		code, h, body := page(t, d, "/", c.accept)
		if code != http.StatusOK || !strings.Contains(body, c.want) || !strings.Contains(body, c.text) {
			t.Fatalf("Accept-Language %q: %d, want %s with %q:\n%s", c.accept, code, c.want, c.text, body)
		}
		if h.Get("Content-Language") != strings.TrimSuffix(strings.TrimPrefix(c.want, `<html lang="`), `">`) || h.Get("Vary") != "Accept-Language" {
			t.Errorf("Accept-Language %q: Content-Language %q, Vary %q", c.accept, h.Get("Content-Language"), h.Get("Vary"))
		}
		if !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") || h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("security headers %v", h)
		}
	}

	hostileQ := `9001234567"><script>alert(3)</script>`
	for _, p := range []string{"/", "/?q=" + url.QueryEscape(hostileQ), "/calls/lab/1700000000.9"} {
		code, _, body := page(t, d, p, "ru")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", p, code, body)
		}
		for _, raw := range []string{"<script>alert", "<img src=x", "<b>101</b>", `"><script`} {
			if strings.Contains(body, raw) {
				t.Errorf("GET %s: %q is not escaped", p, raw)
			}
		}
	}
	_, _, body := page(t, d, "/?q="+url.QueryEscape("+7 900 123-45-67"), "en")
	if !strings.Contains(body, `<tr data-call="lab/1700000000.9">`) || !strings.Contains(body, `<table id="outbox-found">`) {
		t.Errorf("the search does not find the call:\n%s", body)
	}
	_, _, body = page(t, d, "/?q=12", "en")
	if !strings.Contains(body, "Enter at least 3 digits of the number.") {
		t.Errorf("a two-digit search:\n%s", body)
	}
	_, _, body = page(t, d, "/calls/lab/1700000000.9", "en")
	if !strings.Contains(body, `<dd id="hangup-cause">34 — no circuit available</dd>`) {
		t.Errorf("the call page does not name the hangup cause:\n%s", body)
	}

	// http.admin.language fixes the language whatever the browser asks for.
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(cfg), `http: {admin: {listen: ""}}`, `http: {admin: {listen: "", language: ru}}`, 1)
	if fixed == string(cfg) {
		t.Fatal("the test config has no http.admin line to change")
	}
	if err := os.WriteFile(path, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, body := page(t, d, "/", "en-US,en"); !strings.Contains(body, `<html lang="ru">`) {
		t.Errorf("http.admin.language ru: the page is not in Russian")
	}
	if _, _, body := page(t, d, "/calls/lab/1700000000.9", "en-US,en"); !strings.Contains(body, "34 — нет свободного канала") {
		t.Errorf("http.admin.language ru: the call page is not in Russian")
	}
}
