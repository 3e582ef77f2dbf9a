package demo_test

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/demo"
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

// dumpDOM renders url in headless Chromium and returns the DOM after scripts ran.
func dumpDOM(t *testing.T, browser, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--disable-quic", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=2000",
		"--dump-dom", url)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, errOut.String())
	}
	return out.String()
}

// The status page rendered in a real browser shows the connectors with their licences, the
// outbox, and the last calls with their delivery state per CRM; a call's page shows its
// timeline.
func TestStatusPageInChromium(t *testing.T) {
	testkit.Tier(t, testkit.Slow)
	browser := chromium()
	if browser == "" {
		// .ci/run installs Debian's chromium and says so when it cannot.
		t.Skip("no chromium installed (Debian: apt install chromium)")
	}
	t.Parallel()
	var mu sync.Mutex
	var delivered []string // keys delivered to b24-demo
	env, err := demo.Start(context.Background(), demo.Options{
		Speed: 10,
		OnDelivered: func(c string, r *call.Record) {
			if c == "b24-demo" {
				mu.Lock()
				delivered = append(delivered, r.Key())
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Close() }()
	played, err := env.PBX.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	<-played.Done()
	var key string
	testkit.WaitFor(t, 30*time.Second, "the call delivered to b24-demo", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(delivered) > 0 {
			key = delivered[0]
		}
		return key != ""
	})
	env.WaitSettled(30 * time.Second)

	dom := dumpDOM(t, browser, env.BaseURL+"/")
	for _, re := range []string{
		// Connectors with their licence state and days left.
		`<tr data-connector="b24-demo">\s*<td>b24-demo</td><td>bitrix24</td>\s*<td class="licence"><span class="pill ok">active</span>`,
		`<tr data-connector="amo-demo">\s*<td>amo-demo</td><td>amocrm</td>\s*<td class="licence"><span class="pill ok">active</span>`,
		`<tr data-connector="kommo-demo">`,
		`<td class="days-left">\d+</td>`,
		// The PBX connection.
		`<tr data-pbx="lab">.*?<span class="pill ok">connected</span>`,
		// The outbox per connector: nothing pending, the call delivered.
		`<table id="outbox">.*?<tr data-connector="b24-demo"><td>b24-demo</td><td class="pending">0</td><td>0</td><td class="done">1</td>`,
		// The last call with its delivery state per CRM.
		`<tr data-call="` + regexp.QuoteMeta(key) + `">`,
		`<span class="pill ok" data-connector="b24-demo">b24-demo: delivered</span>`,
		`<span class="pill ok" data-connector="amo-demo">amo-demo: delivered</span>`,
		`<span class="pill ok" data-connector="kommo-demo">kommo-demo: delivered</span>`,
	} {
		if !regexp.MustCompile(`(?s)` + re).MatchString(dom) {
			t.Errorf("the rendered status page does not match %s", re)
		}
	}
	if strings.Contains(dom, `id="problems"`) {
		t.Errorf("the status page reports problems:\n%s", dom)
	}

	dom = dumpDOM(t, browser, env.BaseURL+"/calls/"+key)
	for _, re := range []string{
		`<h2 id="call-key">Call ` + regexp.QuoteMeta(key) + `</h2>`,
		`<p id="call-summary">inbound call with \+79001234567 on line \+74951112233: answered by 101`,
		`<tr class="step" data-kind="call">`,
		`<tr class="step" data-kind="routing">.*?queued for b24-demo, amo-demo, kommo-demo`,
		`<tr class="step" data-kind="request">.*?b24-demo`,
		`<tr class="step" data-kind="delivered">`,
	} {
		if !regexp.MustCompile(`(?s)` + re).MatchString(dom) {
			t.Errorf("the rendered call page does not match %s", re)
		}
	}
	if t.Failed() {
		t.Logf("call page:\n%s", dom)
	}
}
