package demo_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// chromium returns the path of a headless-capable Chromium, or "" (CI installs Debian's).
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// needChromium skips the test without a browser (and fails it where CI requires one).
func needChromium(t *testing.T) string {
	t.Helper()
	browser := chromium()
	if browser == "" {
		if os.Getenv("PBXBRIDGE_REQUIRE_BROWSER") != "" {
			t.Fatal("no chromium: CI must install Debian's chromium package")
		}
		t.Skip("no chromium installed")
	}
	if testing.Short() {
		t.Skip("starts the demo environment")
	}
	return browser
}

// shot is one headless Chromium run: the page at URL with the browser's language set to Lang,
// its DOM after scripts ran, and, with PNG set, a screenshot of a Width×Height window.
type shot struct {
	URL, Lang     string
	PNG           string
	Width, Height int
	Flags         []string // extra flags (the offline test's network blocks)
}

// render runs Chromium for s and returns the DOM.
func render(t *testing.T, browser string, s shot) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
		"--disable-domain-reliability", "--no-first-run", "--disable-quic", "--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=2000", "--accept-lang=" + s.Lang}
	if s.PNG != "" {
		args = append(args, "--screenshot="+s.PNG, fmt.Sprintf("--window-size=%d,%d", s.Width, s.Height))
	}
	args = append(args, s.Flags...)
	args = append(args, "--dump-dom", s.URL)
	cmd := exec.CommandContext(ctx, browser, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, errOut.String())
	}
	if s.PNG != "" {
		if st, err := os.Stat(s.PNG); err != nil || st.Size() < 10_000 {
			t.Fatalf("no screenshot at %s (%v):\n%s", s.PNG, err, errOut.String())
		}
	}
	return out.String()
}

// keepScreenshot copies a screenshot to $PBXBRIDGE_SCREENSHOT_DIR when it is set (for people to
// look at; the test itself checks the DOM).
func keepScreenshot(t *testing.T, png string) {
	t.Helper()
	dir := os.Getenv("PBXBRIDGE_SCREENSHOT_DIR")
	if dir == "" {
		return
	}
	data, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(png)), data, 0o644); err != nil {
		t.Errorf("keeping the screenshot: %v", err)
	}
}

// mustMatch checks that every regular expression matches the DOM.
func mustMatch(t *testing.T, what, dom string, res ...string) {
	t.Helper()
	failed := false
	for _, re := range res {
		if !regexp.MustCompile(`(?s)` + re).MatchString(dom) {
			t.Errorf("the rendered %s does not match %s", what, re)
			failed = true
		}
	}
	if failed {
		t.Logf("%s:\n%s", what, dom)
	}
}

// seedHistory leaves in the outbox of dir what a daemon that ran through the last day would
// have: about 150 calls over the 23 hours before now, delivered to the three demo CRMs with
// their own delivery times (kommo slow for one hour) and one dead letter, extension 105 taking
// calls without being any CRM's user. The charts of the status page then have a day to show.
func seedHistory(t *testing.T, dir string, now time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := now
	set := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	store, err := outbox.Open(t.Context(), filepath.Join(dir, "state", "outbox.db"), outbox.Options{Clock: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	}()
	rng := rand.New(rand.NewPCG(7, 11))
	conns := []string{"b24-demo", "amo-demo", "kommo-demo"}
	exts := []string{"101", "101", "102", "102", "103", "105"}
	n, buried := 0, false
	for h := 23; h >= 1; h-- {
		hour := now.Add(-time.Duration(h) * time.Hour)
		local := hour.Hour()
		calls := 2 + rng.IntN(3)
		if local >= 9 && local < 19 {
			calls += 6 + rng.IntN(6)
		}
		for range calls {
			n++
			start := hour.Add(time.Duration(rng.IntN(50)) * time.Minute)
			ring := 3 + rng.IntN(20)
			rec := call.Record{CallID: fmt.Sprintf("1700000000.%d", n), PBX: "lab", Direction: call.Inbound,
				Customer: fmt.Sprintf("+7916%07d", rng.IntN(10_000_000)), Line: "+74951112233", StartedAt: start, RingSeconds: ring}
			ext := exts[rng.IntN(len(exts))]
			rec.Rang = []string{ext}
			switch p := rng.IntN(100); {
			case p < 70:
				ans := start.Add(time.Duration(ring) * time.Second)
				rec.Disposition, rec.AnsweredAt, rec.AnsweredBy = call.Answered, &ans, ext
				rec.TalkSeconds = 20 + rng.IntN(400)
				rec.HangupCause = 16
			case p < 88:
				rec.Disposition, rec.HangupCause = call.NoAnswer, 19
			case p < 95:
				rec.Disposition, rec.HangupCause = call.Busy, 17
			default:
				rec.Disposition, rec.HangupCause = call.Failed, 34
			}
			if n%4 == 0 {
				rec.Direction, rec.CallerExt, rec.Rang = call.Outbound, ext, nil
				rec.Line = "+74951112200"
			}
			rec.EndedAt = start.Add(time.Duration(ring+rec.TalkSeconds) * time.Second)
			payload, err := json.Marshal(&rec)
			if err != nil {
				t.Fatal(err)
			}
			set(rec.EndedAt)
			if err := store.Enqueue(t.Context(), outbox.Entry{Key: rec.Key(), StartedAt: rec.StartedAt, Payload: payload, Connectors: conns,
				Timeline: []outbox.TimelineEntry{{At: rec.EndedAt, Kind: "call", Summary: rec.Summary(), Detail: string(payload)},
					{Kind: "routing", Summary: "queued for " + strings.Join(conns, ", ")}}}); err != nil {
				t.Fatal(err)
			}
			for i, c := range conns {
				latency := time.Duration(400+rng.IntN(1200)*(i+1)) * time.Millisecond
				if c == "kommo-demo" && h == 6 {
					latency = time.Duration(15+rng.IntN(25)) * time.Second // the CRM was slow that hour
				}
				rows, err := store.Lease(t.Context(), c, 10, time.Minute)
				if err != nil || len(rows) != 1 {
					t.Fatalf("leasing the seeded call for %s: %d rows, %v", c, len(rows), err)
				}
				set(rec.EndedAt.Add(latency))
				tl := []outbox.TimelineEntry{{Connector: c, Kind: "request", Summary: "POST (seeded)"},
					{Connector: c, Kind: "delivered", Summary: "delivered on attempt 1 (seeded)"}}
				if c == "kommo-demo" && h == 4 && !buried {
					buried = true
					err = store.Bury(t.Context(), rows[0], "400 Bad Request: the lead is closed (seeded)",
						outbox.TimelineEntry{Connector: c, Kind: "dead", Summary: "dead letter: 400 Bad Request (seeded)"})
				} else {
					err = store.Ack(t.Context(), rows[0], tl...)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// The status page and a call's page rendered in a real browser, in English and in Russian (the
// browser's language picks it): the 24-hour charts (SVG bars), the licences with their seats,
// the extension → CRM user table with the unmapped extension, the calls with employees' names and
// their delivery per CRM; the call page with the hangup cause in words, the timeline and the
// CRM requests per connector. Screenshots are written to a temporary directory (and copied to
// $PBXBRIDGE_SCREENSHOT_DIR when set). Then the page is rendered with every network but
// loopback blocked, and its HTML is checked for references to anything outside the daemon.
func TestStatusPageInChromium(t *testing.T) {
	browser := needChromium(t)
	dir := t.TempDir()
	seedHistory(t, dir, time.Now())

	var mu sync.Mutex
	delivered := map[string]*call.Record{}
	env, err := demo.Start(context.Background(), demo.Options{
		Speed: 10,
		Dir:   dir,
		OnDelivered: func(c string, r *call.Record) {
			if c == "b24-demo" {
				mu.Lock()
				delivered[r.Key()] = r
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Close() }()
	for _, scenario := range []string{"inbound_answered", "inbound_missed", "outbound_answered"} {
		played, err := env.PBX.Play(context.Background(), scenario)
		if err != nil {
			t.Fatal(err)
		}
		<-played.Done()
	}
	var key string
	var rec *call.Record // the answered inbound call
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(delivered)
		for k, r := range delivered {
			if r.Direction == call.Inbound && r.Disposition == call.Answered {
				key, rec = k, r
			}
		}
		mu.Unlock()
		if n >= 3 && key != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 calls delivered to b24-demo", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	env.WaitSettled(30 * time.Second)
	// amoCRM reads its users' names in the background once they are first wanted: the first
	// page load asks, a later one shows them (as an admin's next refresh would).
	names := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(env.BaseURL + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if !strings.Contains(string(body), "the user list is incomplete") {
			break
		}
		if time.Now().After(names) {
			t.Fatalf("the CRM user lists stay incomplete:\n%s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	shots := t.TempDir()

	texts := map[string][]string{
		"en": {`<html lang="en">`, `Calls in the last 24 hours`, `Delivery time per CRM`, `Employees: extension → CRM user`,
			`Licences`, `Last calls`, `<span class="key answered"><i></i>Answered <b>\d+</b>`, `CRM users without an extension`,
			`<span class="pill ok">ready</span>`},
		"ru": {`<html lang="ru">`, `Звонки за последние 24 часа`, `Время доставки в CRM`, `Сотрудники: внутренний номер → пользователь CRM`,
			`Лицензии`, `Последние звонки`, `<span class="key answered"><i></i>Отвечен <b>\d+</b>`, `Пользователи CRM без внутреннего номера`,
			`<span class="pill ok">работает</span>`},
	}
	words := map[string]map[string]string{
		"en": {"active": "active", "of": "of", "delivered": "delivered", "nouser": "no user", "cause": "16 — normal call clearing", "request": "request", "dead": "dead letter"},
		"ru": {"active": "действует", "of": "из", "delivered": "доставлен", "nouser": "нет пользователя", "cause": "16 — нормальное завершение", "request": "запрос", "dead": "недоставленный"},
	}
	for _, lang := range []string{"en", "ru"} {
		w := words[lang]
		png := filepath.Join(shots, "status-"+lang+".png")
		dom := render(t, browser, shot{URL: env.BaseURL + "/", Lang: lang, PNG: png, Width: 1400, Height: 3300})
		keepScreenshot(t, png)
		mustMatch(t, "status page ("+lang+")", dom, append(texts[lang],
			// The 24-hour chart: an SVG with bars of each outcome.
			`<svg class="chart" id="chart-calls"[^>]*>.*?<rect class="bar answered".*?<rect class="bar missed".*?</svg>`,
			// Delivery time per CRM: p50 and p95 bars for each connector, the dead letter marked.
			`<svg class="chart" id="chart-latency-b24-demo"[^>]*>.*?<rect class="bar p95".*?<rect class="bar p50"`,
			`<svg class="chart" id="chart-latency-amo-demo"`,
			`<svg class="chart" id="chart-latency-kommo-demo"[^>]*>.*?<rect class="mark dead"`,
			// Licences: state, days left, seats used of allowed.
			`<div class="lic" data-connector="b24-demo">.*?<span class="pill ok lic-state">`+w["active"]+`</span>.*?<span class="big days-left[^"]*">(\d|,|&nbsp;)+</span>.*?<b class="seats-used">\d+</b> `+w["of"]+` <b class="seats-limit">[\d∞]`,
			`<div class="lic" data-connector="kommo-demo">`,
			// The extension → CRM user table: 101 is Ivan Petrov in Bitrix24 (his Internal phone)
			// and in amoCRM and Kommo (users:); 105 took calls and is nobody's.
			`<table id="mapping">.*?<tr data-ext="101">.*?Ivan Petrov <span class="muted small">#1269</span>.*?Ivan Petrov <span class="muted small">#504141</span> <span class="tag">`,
			`<tr data-ext="105" class="problem">.*?<span class="unmapped">`+w["nouser"]+`</span>`,
			`<div class="unmapped-users" data-connector="b24-demo"><b>b24-demo:</b> <span class="chip">Admin Adminov \(#1\)</span>`,
			// The connectors, the dead letter with its retry button.
			`<tr data-connector="kommo-demo">.*?<button type="button" class="retry" data-connector="kommo-demo"`,
			`<tr data-pbx="lab">.*?<span class="pill ok">`,
			// The last calls, the newest first, with the employee's name and the delivery per CRM.
			`<table id="calls">.*?<tr data-call="`+regexp.QuoteMeta(key)+`">.*?<td class="employee">Ivan Petrov<span class="ext">101</span></td>`,
			`<span class="pill ok" data-connector="b24-demo" title="b24-demo: `+w["delivered"]+`">✓ b24-demo</span>`,
			`<span class="pill ok" data-connector="amo-demo" title="amo-demo: `+w["delivered"]+`">✓ amo-demo</span>`,
			`<span class="pill ok" data-connector="kommo-demo" title="kommo-demo: `+w["delivered"]+`">✓ kommo-demo</span>`,
			`<div class="card bad" id="card-queue">.*?1(&nbsp;|\s)`+w["dead"],
		)...)
		if strings.Contains(dom, `id="problems"`) {
			t.Errorf("the status page reports problems:\n%s", dom)
		}

		png = filepath.Join(shots, "status-call-"+lang+".png")
		dom = render(t, browser, shot{URL: env.BaseURL + "/calls/" + key, Lang: lang, PNG: png, Width: 1400, Height: 1500})
		keepScreenshot(t, png)
		mustMatch(t, "call page ("+lang+")", dom,
			`<html lang="`+lang+`">`,
			`<h1 id="call-key">[^<]*`+regexp.QuoteMeta(key)+`</h1>`,
			`<p id="call-summary" class="lead">[^<]*`+regexp.QuoteMeta(rec.Customer)+`[^<]*`+regexp.QuoteMeta(rec.Line)+`[^<]*Ivan Petrov \(101\)`,
			`<dd id="hangup-cause">`+w["cause"]+`</dd>`,
			`<tr class="step" data-kind="call">`,
			`<tr class="step" data-kind="routing">.*?b24-demo, amo-demo, kommo-demo`,
			`<tr class="step" data-kind="request">.*?b24-demo.*?<span class="tag">`+w["request"]+`</span>`,
			`<tr class="step" data-kind="delivered">`,
			`<tr data-connector="b24-demo">.*?<td class="num requests">[1-9]\d*( \([^)]*\))?</td>`,
			`<tr data-connector="amo-demo">.*?<td class="num requests">[1-9]\d*( \([^)]*\))?</td>`,
		)
	}

	// A search by number, server-side, in the national format: the calls and their outbox rows.
	national := "8 " + strings.TrimPrefix(rec.Customer, "+7")
	dom := render(t, browser, shot{URL: env.BaseURL + "/?q=" + url.QueryEscape(national), Lang: "ru"})
	mustMatch(t, "search (ru)", dom,
		`<section class="panel" id="search">.*?Звонки с «`+regexp.QuoteMeta(national)+`»`,
		`<tr data-call="`+regexp.QuoteMeta(key)+`">`,
		`<table id="outbox-found">.*?<tr data-connector="b24-demo">`)
	if strings.Contains(dom, `data-call="lab/1700000000.`) {
		t.Errorf("the search found seeded calls of other numbers")
	}

	t.Run("offline", func(t *testing.T) {
		testOffline(t, browser, env.BaseURL, key)
	})
}

// testOffline renders the pages with every network but loopback cut off (DNS answers nothing,
// and any other request goes to a local proxy that records it) and checks that they render in
// full and asked for nothing outside the daemon; the served HTML must not reference anything
// outside the daemon either.
func testOffline(t *testing.T, browser, base, key string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	var mu sync.Mutex
	var asked []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				mu.Lock()
				asked = append(asked, strings.TrimSpace(line))
				mu.Unlock()
				_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}()
		}
	}()
	offline := []string{"--proxy-server=http://" + ln.Addr().String(), "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"}
	for _, lang := range []string{"en", "ru"} {
		dom := render(t, browser, shot{URL: base + "/", Lang: lang, Flags: offline})
		mustMatch(t, "offline status page ("+lang+")", dom, `<svg class="chart" id="chart-calls"[^>]*>.*?<rect class="bar answered"`,
			`<table id="mapping">`, `<div class="lic" data-connector="b24-demo">`, `<table id="calls">`)
		dom = render(t, browser, shot{URL: base + "/calls/" + key, Lang: lang, Flags: offline})
		mustMatch(t, "offline call page ("+lang+")", dom, `<table id="timeline">`)
	}
	// Chromium's own services (time, updates, accounts) may knock too; anything else came from
	// the page.
	chromeOwn := regexp.MustCompile(`^(GET|POST|CONNECT) (https?://)?(clients\d*\.google\.com|update\.googleapis\.com|accounts\.google\.com|redirector\.gvt1\.com|[a-z0-9-]+\.gvt1\.com|optimizationguide-pa\.googleapis\.com|content-autofill\.googleapis\.com|safebrowsing\.googleapis\.com|www\.google\.com)[:/ ]`)
	mu.Lock()
	for _, a := range asked {
		if !chromeOwn.MatchString(a) {
			t.Errorf("the page asked for %q with the network cut off", a)
		}
	}
	mu.Unlock()

	// The HTML itself names nothing outside the daemon: links, sources and form targets are
	// local paths, and no absolute URL appears anywhere.
	ref := regexp.MustCompile(`(?i)\s(?:src|href|action|xlink:href|poster|data)\s*=\s*"([^"]*)"`)
	for _, path := range []string{"/", "/calls/" + key, "/?q=9001234567"} {
		for _, lang := range []string{"en", "ru"} {
			req, err := http.NewRequest(http.MethodGet, base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept-Language", lang)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			html := string(body)
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("%s: CSP %q, X-Frame-Options %q", path, csp, resp.Header.Get("X-Frame-Options"))
			}
			for _, m := range ref.FindAllStringSubmatch(html, -1) {
				if u := m[1]; !strings.HasPrefix(u, "/") || strings.HasPrefix(u, "//") {
					t.Errorf("%s (%s) references %q", path, lang, u)
				}
			}
			// The style and the script load nothing either (text on the page, such as a CRM
			// request in a timeline, may name URLs: that is data, not a resource).
			for _, block := range regexp.MustCompile(`(?is)<(style|script)[^>]*>.*?</(style|script)>`).FindAllString(html, -1) {
				if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(|fetch\("http|import\(`).FindString(block); m != "" {
					t.Errorf("%s (%s) names an outside resource in a style or script: %q", path, lang, m)
				}
			}
			if regexp.MustCompile(`(?i)\son[a-z]+\s*=`).MatchString(html) {
				t.Errorf("%s (%s) has an inline event handler (the CSP is meant for one script block)", path, lang)
			}
		}
	}
}
