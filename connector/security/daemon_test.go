package security_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// At 1bda728 one unauthenticated GET /calls/<unknown key> recursed forever in Daemon.Call (the
// bare-id fallback grew the key and called itself) until the OOM killer ended the daemon at
// 24 GB. Now every unknown key is a quick 404 and the heap does not grow.
func TestSecurityUnknownCallKey(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, key := range []string{"lab/123.typo", "123.typo", "no/such/pbx/1.2", strings.Repeat("9", 4000), "%2e%2e/%2e%2e/etc/passwd"} {
		status, _ := get(t, env.BaseURL+"/calls/"+key)
		if status != http.StatusNotFound {
			t.Errorf("GET /calls/%.20s: %d, want 404", key, status)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Errorf("the heap grew by %d MiB answering unknown keys", grew>>20)
	}
}

// At 1bda728 one listener served everything: the status page, /calls (customer numbers, whole
// CRM requests and answers), /metrics and /v1/lookup (CRM contact names) next to the webhooks
// that http.public_url exposed to the internet. Now the public listener serves only /crm/… and
// /rec/…, and every route of each listener is enumerated here, so nothing lands on the public
// one by accident.
func TestSecurityListenersServeOnlyTheirRoutes(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{})
	public, adminRoutes := env.Daemon.Routes()
	wantAdmin := []string{"GET /calls/{key...}", "GET /healthz", "GET /metrics", "GET /readyz",
		"GET /v1/lookup", "GET /v1/responsible", "GET /{$}", "POST /actions/retry-dead"}
	if !slices.Equal(adminRoutes, wantAdmin) {
		t.Errorf("admin routes %q, want %q", adminRoutes, wantAdmin)
	}
	for _, p := range public {
		_, path, _ := strings.Cut(p, " ")
		if !strings.HasPrefix(path, "/crm/") && !strings.HasPrefix(path, "/rec/") {
			t.Errorf("public route %q is neither a CRM's (/crm/…) nor a signed recording link (/rec/…)", p)
		}
	}
	for _, want := range []string{"POST /crm/b24-demo/install", "POST /crm/b24-demo/events", "GET /crm/b24-demo/oauth/callback",
		"POST /crm/amo-demo/click2call"} {
		if !slices.Contains(public, want) {
			t.Errorf("public routes lack %q: %q", want, public)
		}
	}
	for _, path := range []string{"/", "/calls/lab/1.2", "/metrics", "/v1/lookup?number=%2B79001234567", "/v1/responsible?number=101",
		"/healthz", "/readyz", "/debug/pprof/"} {
		if status, body := get(t, env.PublicURL+path); status != http.StatusNotFound {
			t.Errorf("public GET %s: %d %.80q, want 404", path, status, body)
		}
	}
	if status, _ := do(t, http.MethodPost, env.PublicURL+"/actions/retry-dead", nil, nil); status != http.StatusNotFound {
		t.Errorf("public POST /actions/retry-dead: %d, want 404", status)
	}
	if status, _ := get(t, env.BaseURL+"/metrics"); status != http.StatusOK {
		t.Errorf("admin GET /metrics on loopback: %d", status)
	}
}

const adminToken = "s3cret-admin-token-0123456789"

// The admin listener, once a token is set, answers nothing without it (/healthz aside), takes
// it as a Bearer token or as the password of basic auth, and refuses what a browser marks as a
// cross-site request (another web page making an operator's browser call it).
func TestSecurityAdminToken(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{Configure: func(c *config.Config) { c.HTTP.Admin.Token = configs.NewSecret(adminToken) }})
	for _, path := range []string{"/", "/calls/lab/1.2", "/metrics", "/readyz", "/v1/lookup?number=101"} {
		for name, h := range map[string]http.Header{
			"none":         nil,
			"wrong bearer": {"Authorization": {"Bearer wrong"}},
			"basic wrong":  {"Authorization": {"Basic " + basic("admin", "wrong")}},
			"token prefix": {"Authorization": {"Bearer " + adminToken[:10]}},
		} {
			if status, _ := do(t, http.MethodGet, env.BaseURL+path, nil, h); status != http.StatusUnauthorized {
				t.Errorf("GET %s with %s auth: %d, want 401", path, name, status)
			}
		}
	}
	if status, _ := get(t, env.BaseURL+"/healthz"); status != http.StatusOK {
		t.Errorf("/healthz needs no token: %d", status)
	}
	for name, h := range map[string]http.Header{
		"bearer": {"Authorization": {"Bearer " + adminToken}},
		"basic":  {"Authorization": {"Basic " + basic("prometheus", adminToken)}},
	} {
		if status, _ := do(t, http.MethodGet, env.BaseURL+"/metrics", nil, h); status != http.StatusOK {
			t.Errorf("GET /metrics with %s token: %d, want 200", name, status)
		}
	}
	h := http.Header{"Authorization": {"Bearer " + adminToken}, "Sec-Fetch-Site": {"cross-site"}}
	if status, _ := do(t, http.MethodGet, env.BaseURL+"/", nil, h); status != http.StatusForbidden {
		t.Errorf("a cross-site request: %d, want 403", status)
	}
	// Actions need the token as a Bearer token: basic auth is what a browser replays by itself.
	h = http.Header{"Authorization": {"Basic " + basic("admin", adminToken)}}
	if status, _ := do(t, http.MethodPost, env.BaseURL+"/actions/retry-dead", nil, h); status != http.StatusUnauthorized {
		t.Errorf("retry-dead with basic auth: %d, want 401", status)
	}
	if n := metric(t, env, "pbxbridge_http_admin_refused_total", "reason", "token"); n < 20 {
		t.Errorf("refused requests counted %v, want at least 20", n)
	}
}

func basic(user, pass string) string {
	return strings.TrimPrefix(func() string {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}(), "Basic ")
}

// Without a token the admin listener is for this host only: a web page whose name resolves to
// 127.0.0.1 (DNS rebinding) must not read customer numbers off the status page.
func TestSecurityAdminDNSRebinding(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{})
	for _, host := range []string{"evil.example", "evil.example:8080", "127.0.0.1.evil.example"} {
		if status, _ := do(t, http.MethodGet, env.BaseURL+"/", nil, http.Header{"Host": {host}}); status != http.StatusMisdirectedRequest {
			t.Errorf("Host %s: %d, want 421", host, status)
		}
	}
	for _, host := range []string{"127.0.0.1", "localhost:9180", "[::1]:9180"} {
		if status, _ := do(t, http.MethodGet, env.BaseURL+"/", nil, http.Header{"Host": {host}}); status != http.StatusOK {
			t.Errorf("Host %s: %d, want 200", host, status)
		}
	}
}

// An admin listener reachable from other hosts without a token is a config error: `config
// check` and the daemon refuse it.
func TestSecurityAdminTokenRequiredOffLoopback(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"0.0.0.0:9180", "192.0.2.10:9180", "[::]:9180", "pbx.example.com:9180"} {
		yaml := fmt.Sprintf("http: {admin: {listen: %q}}\npbx: [{name: a, ami: {host: 127.0.0.1, username: u, secret: averylongsecret}}]\n", listen)
		_, err := config.Parse([]byte(yaml), "t.yaml", func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), "http.admin.token: is required") {
			t.Errorf("admin listen %s without a token: %v", listen, err)
		}
	}
}

// At 1bda728 the demo licences (embedded in every binary, valid to 2099, bound to
// demo-bitrix24.invalid) unlocked a real account: editing the portal's domain in the tokens
// file, or a webhook URL under the .invalid name plus HTTP_PROXY pointing at the real portal,
// gave state=active and CRM actions. Here a daemon started as `pbxbridge run` starts it (no
// AllowDemo) faces a CRM that reports exactly the demo account: the licence does not apply, no
// call is placed for a click-to-call, and deliveries wait.
func TestSecurityDemoLicenceOnlyInDemo(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{Unlicensed: true, Daemon: func(o *connector.Options) { o.Licensing.AllowDemo = false }})
	waitFor(t, 10*time.Second, "the licensing status", func() bool {
		return len(env.Daemon.Licensing().Status().Connectors) >= 3
	})
	for _, c := range env.Daemon.Licensing().Status().Connectors {
		if c.Allowed || c.State == licensing.StateActive {
			t.Errorf("connector %s: state %s allowed %v with a demo licence outside the demo", c.Name, c.State, c.Allowed)
		}
	}
	if env.Daemon.Licensed() {
		t.Fatal("the daemon reports its connectors licensed")
	}
	// Click-to-call from the CRM (the portal's genuine event): refused, nothing dialled.
	before := env.PBX.Stats().Originates
	clickEvent(t, env, "+79001234567")
	waitFor(t, 10*time.Second, "the click-to-call to be refused", func() bool {
		return metric(t, env, "pbxbridge_click_to_call_requests_total", "connector", "b24-demo", "result", "unlicensed") >= 1
	})
	if n := env.PBX.Stats().Originates - before; n != 0 {
		t.Errorf("%d calls placed on the PBX for a click-to-call without a licence", n)
	}
}

// At 1bda728 click-to-call ignored the licence: a connector without one still originated. The
// daemon's gate refuses before the PBX is asked (see TestSecurityDemoLicenceOnlyInDemo for the
// demo licence; this one has no licence at all).
func TestSecurityClickToCallNeedsALicence(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{Unlicensed: true, Daemon: func(o *connector.Options) {
		o.Licensing.AllowDemo = true
	}, Configure: func(c *config.Config) { c.Licensing.Dir = filepath.Join(c.StateDir, "no-licences") }})
	before := env.PBX.Stats().Originates
	clickEvent(t, env, "+79001234567")
	waitFor(t, 10*time.Second, "the click-to-call to be refused", func() bool {
		return metric(t, env, "pbxbridge_click_to_call_requests_total", "connector", "b24-demo", "result", "unlicensed") >= 1
	})
	if n := env.PBX.Stats().Originates - before; n != 0 {
		t.Errorf("%d calls placed without a licence", n)
	}
}

// At 1bda728 click-to-call dialled whatever the CRM sent: +882 (international networks,
// satellite) and premium-rate numbers went out. Now only extensions and national numbers are
// dialled unless the PBX's originate.allow says more, and an extension may start at most
// originate.per_minute calls a minute.
func TestSecurityClickToCallPolicy(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{Configure: func(c *config.Config) { c.PBX[0].Originate.PerMinute = 2 }})
	placed := func() uint64 { return env.PBX.Stats().Originates }
	click := func(number string) {
		t.Helper()
		if _, err := env.B24.ClickToCall(t.Context(), 1269, number, "+74951112233"); err != nil {
			t.Fatal(err)
		}
	}
	denied := func() float64 {
		return metric(t, env, "pbxbridge_click_to_call_requests_total", "connector", "b24-demo", "result", "denied_number")
	}
	for i, number := range []string{"+88216000000001", "+78095051234", "+375291234567"} {
		click(number)
		waitFor(t, 10*time.Second, "the number policy to refuse "+number, func() bool { return denied() >= float64(i+1) })
	}
	if n := placed(); n != 0 {
		t.Fatalf("%d calls placed to satellite, premium and international numbers", n)
	}
	for range 3 {
		click("+79001234567")
	}
	waitFor(t, 10*time.Second, "two calls placed and one refused by the rate limit", func() bool {
		return placed() == 2 && metric(t, env, "pbxbridge_click_to_call_requests_total", "result", "rate_limited") == 1
	})
	// The call's timeline says who asked.
	waitFor(t, 30*time.Second, "a click-to-call timeline entry", func() bool {
		for _, rc := range env.Daemon.Recent() {
			if rc.Record.OriginateID == "" {
				continue
			}
			rep, err := env.Daemon.Call(t.Context(), rc.Record.Key())
			if err != nil {
				continue
			}
			for _, e := range rep.Timeline {
				if e.Kind == "click_to_call" && strings.Contains(e.Summary, "b24-demo") {
					return true
				}
			}
		}
		return false
	})
}

// At 1bda728 a hostile AMI peer's stream of 5,000-digit caller numbers became 40,000 outbox
// rows (440 MB). Now numbers are cut to 64 characters at intake and the cuts are counted.
func TestSecurityHostileAMINumbers(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("7", 5000)
	env := start(t, demo.Options{PBX: func(c *fakepbx.Config) {
		c.Mutate = func(frame []byte) []byte { return bytes.ReplaceAll(frame, []byte("+79001234567"), []byte(long)) }
	}})
	played, err := env.PBX.Play(t.Context(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	<-played.Done()
	waitFor(t, 30*time.Second, "the call's record", func() bool { return len(env.Daemon.Recent()) > 0 })
	for _, rc := range env.Daemon.Recent() {
		if len(rc.Record.Customer) > 64 {
			t.Errorf("customer of %d characters stored", len(rc.Record.Customer))
		}
	}
	if n := metric(t, env, "pbxbridge_intake_fields_truncated_total", "kind", "number"); n == 0 {
		t.Error("no cut counted")
	}
}

// At 1bda728 deleting license-state.json silently reset the licence clock's high-water mark and
// its memory of revocations. The state has a second copy in the outbox database now: after the
// file is deleted and the daemon restarted, the floor is where it was and the reset is counted.
func TestSecurityLicenceStateSurvivesDeletion(t *testing.T) {
	t.Parallel()
	env := start(t, demo.Options{})
	floor := env.Daemon.Licensing().Status().Floor
	if floor.IsZero() {
		t.Fatal("no time floor")
	}
	state := filepath.Join(env.Dir, "state", "license-state.json")
	if err := env.RestartDaemonWith(t.Context(), func() error { return os.Remove(state) }); err != nil {
		t.Fatal(err)
	}
	if got := env.Daemon.Licensing().Status().Floor; got.Before(floor) {
		t.Errorf("floor after deleting %s: %v, before %v", filepath.Base(state), got, floor)
	}
	if n := metric(t, env, "pbxbridge_license_state_resets_total", "reason", licensing.ResetFileMissing); n != 1 {
		t.Errorf("resets counted %v, want 1", n)
	}
}

// clickEvent posts the portal's ONEXTERNALCALLSTART (a Bitrix24 user with extension 101 clicked
// number) to the daemon's public listener, authenticated as the installed application: what the
// portal sends, whether or not the daemon has bound the event.
func clickEvent(t *testing.T, env *demo.Env, number string) {
	t.Helper()
	f := form("event", "ONEXTERNALCALLSTART", "event_handler_id", "1055",
		"data[PHONE_NUMBER]", number, "data[PHONE_NUMBER_INTERNATIONAL]", number, "data[USER_ID]", "1269",
		"data[LINE_NUMBER]", "+74951112233", "data[CALL_ID]", fmt.Sprintf("externalCall.%d", time.Now().UnixNano()),
		"data[CALL_LIST_ID]", "0", "data[EXTENSION]", "", "data[IS_MOBILE]", "0", "ts", fmt.Sprint(time.Now().Unix()),
		"auth[domain]", env.B24.Domain(), "auth[member_id]", env.B24.MemberID(), "auth[application_token]", env.B24.ApplicationToken())
	if status, body := postForm(t, env.PublicURL+"/crm/b24-demo/events", f); status != http.StatusOK {
		t.Fatalf("ONEXTERNALCALLSTART: %d %s", status, body)
	}
}
