package licensing_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/licensing"
)

const demoOnlyText = "demo licences work only in `pbxbridge demo`"

// TestDemoLicenceRefusedByDaemon is the attack of a real daemon (`pbxbridge run`) given a demo
// licence: the adapter is made to report the demo's .invalid account (the domain edited in the
// Bitrix24 tokens file, or a webhook URL under .invalid reached through HTTP_PROXY), which used to
// give state active. Without Options.AllowDemo the licence is rejected (demo_only), the connector
// stays off in state none, and the reason says why.
func TestDemoLicenceRefusedByDaemon(t *testing.T) {
	t.Parallel()
	keys := newKeys(t)
	reg := prometheus.NewRegistry()
	e := newEnv(t, keys, inZone(t, msk, "2026-12-01 12:00:00"), func(o *licensing.Options) { o.Registerer = reg })
	e.write("demo.lic", sign(t, keys.demo, demoClaims(b24, &licensing.CRMBinding{Bitrix24Domain: "demo-bitrix24.invalid"})))
	e.reload()
	e.register("b24", b24)
	must(t, e.svc.SetAccount("b24", licensing.Account{Domain: "demo-bitrix24.invalid"}))
	cs := e.conn("b24")
	if e.svc.Allowed("b24") || cs.Allowed || cs.State != licensing.StateNone || cs.License != nil {
		t.Fatalf("the demo licence unlocked a daemon connector: %+v", cs)
	}
	if !strings.Contains(cs.Reason, "DEMO-bitrix24 is a demo licence") || !strings.Contains(cs.Reason, demoOnlyText) {
		t.Fatalf("reason %q", cs.Reason)
	}
	files := e.svc.Status().Files
	if len(files) != 1 || files[0].Result != licensing.FileError || files[0].Reason != licensing.ReasonDemoOnly ||
		!strings.Contains(files[0].Error, demoOnlyText) {
		t.Fatalf("file status: %+v", files)
	}
	e.reload() // counted once per file content
	if got := testutil.ToFloat64(counterVec(t, reg, "pbxbridge_license_verify_errors_total", "demo_only")); got != 1 {
		t.Fatalf("verify_errors_total{demo_only} = %v", got)
	}
	if !strings.Contains(e.logs.String(), "reason=demo_only") {
		t.Fatalf("no log line for the refused demo licence:\n%s", e.logs)
	}

	// A paid licence for the same type is used normally; the demo note no longer shows.
	e.write("paid.lic", sign(t, keys.paid, paidClaims("L-1", 1, "2026-11-01", "2026-12-31", "2027-01-06", msk)))
	e.reload()
	if cs := e.conn("b24"); !cs.Allowed || cs.State != licensing.StateActive || strings.Contains(cs.Reason, "demo") {
		t.Fatalf("paid next to a refused demo: %+v", cs)
	}
}

// TestDemoLicenceAllowedInDemo: the demo runner's Service (AllowDemo) honours the same file once
// the connector reports the .invalid account.
func TestDemoLicenceAllowedInDemo(t *testing.T) {
	t.Parallel()
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-12-01 12:00:00"), func(o *licensing.Options) { o.AllowDemo = true })
	e.write("demo.lic", sign(t, keys.demo, demoClaims(b24, &licensing.CRMBinding{Bitrix24Domain: "demo-bitrix24.invalid"})))
	e.reload()
	e.register("b24", b24)
	must(t, e.svc.SetAccount("b24", licensing.Account{Domain: "demo-bitrix24.invalid"}))
	if cs := e.conn("b24"); !cs.Allowed || cs.State != licensing.StateActive || cs.License.Type != "demo" {
		t.Fatalf("demo runner: %+v", cs)
	}
	if len(e.svc.Status().Files) != 1 || e.svc.Status().Files[0].Result != licensing.FileValid {
		t.Fatalf("files: %+v", e.svc.Status().Files)
	}
}

// TestVerifierRefusesDemoByDefault: a zero-valued AllowDemo rejects a demo token with
// ReasonDemoOnly and a *DemoOnlyError naming it; every other check still runs first.
func TestVerifierRefusesDemoByDefault(t *testing.T) {
	t.Parallel()
	keys := newKeys(t)
	v := &licensing.Verifier{Keyring: keys.kr, Connectors: testConnectors}
	l, err := v.VerifyFile(sign(t, keys.demo, demoClaims(kommo, &licensing.CRMBinding{Subdomain: "demo-kommo.invalid"})))
	var de *licensing.DemoOnlyError
	if l != nil || licensing.ReasonOf(err) != licensing.ReasonDemoOnly || !errors.As(err, &de) || de.Connector != kommo ||
		de.LID != "DEMO-kommo" || !strings.Contains(err.Error(), demoOnlyText) {
		t.Fatalf("got %v, %v", l, err)
	}
	// A demo token bound to a real account is a schema error, whatever AllowDemo says.
	_, err = v.VerifyFile(sign(t, keys.demo, demoClaims(kommo, &licensing.CRMBinding{Subdomain: "romashka"})))
	if licensing.ReasonOf(err) != licensing.ReasonSchema {
		t.Fatalf("demo bound to a real account: %v", err)
	}
}

// TestLoggerUsedAsIs: the Service logs through the logger it is given without adding attributes
// of its own, so the daemon's With("component", "licensing") appears once per line.
func TestLoggerUsedAsIs(t *testing.T) {
	t.Parallel()
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-12-01 12:00:00"))
	logs := &syncBuffer{}
	e.svc = e.start(func(o *licensing.Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil)).With("component", "licensing")
	})
	e.register("b24", b24) // logs "licence state ... state=none"
	out := logs.String()
	if !strings.Contains(out, "licence state") {
		t.Fatalf("no log line:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if n := strings.Count(line, "component=licensing"); n != 1 {
			t.Fatalf("component=licensing %d times in %q", n, line)
		}
	}
}
