package demo_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/demo"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// TestDemoLicences: the committed demo files verify with the release keyring alone, are demo
// tokens bound to .invalid accounts, run through 2099, and enable a connector only for the demo
// account, never for a real one.
func TestDemoLicences(t *testing.T) {
	files := demo.Files()
	if len(files) != 3 {
		t.Fatalf("%d demo files", len(files))
	}
	v := &licensing.Verifier{Keyring: keyring.Release(), Connectors: demo.Connectors(), AllowDemo: true}
	for _, f := range files {
		l, err := v.VerifyFile(f.Data)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		c := l.Claims()
		if l.Type() != keyring.TypeDemo || l.Connector() != f.Connector || l.DevKey() || len(c.Hosts) != 0 ||
			l.End() != licensing.MustDate("2099-12-31") {
			t.Fatalf("%s: %+v", f.Name, c)
		}
		acct, err := demo.Account(f.Connector)
		if err != nil {
			t.Fatal(err)
		}
		if !licensing.AccountMatches(l, acct) {
			t.Fatalf("%s does not match its demo account %v", f.Name, acct)
		}
	}

	dir := t.TempDir()
	paths, err := demo.Install(dir)
	if err != nil || len(paths) != 3 {
		t.Fatalf("Install: %v %v", paths, err)
	}
	svc, err := licensing.New(context.Background(), licensing.Config{Dir: dir}, licensing.Options{
		Keyring: keyring.Release(), Clock: func() time.Time { return time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC) },
		Host: licensing.SystemHost{Root: t.TempDir()}, Connectors: demo.Connectors(), AllowDemo: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	realAccounts := map[string]licensing.Account{
		"bitrix24": {Domain: "romashka.bitrix24.ru"},
		"amocrm":   {AccountID: 31234567, Subdomain: "romashka"},
		"kommo":    {AccountID: 1, Subdomain: "romashka"},
	}
	for _, f := range files {
		name := "demo-" + f.Connector
		if err := svc.Register(licensing.Instance{Name: name, Type: f.Connector}); err != nil {
			t.Fatal(err)
		}
		if svc.Allowed(name) {
			t.Fatalf("%s allowed before the account is known", name)
		}
		if err := svc.SetAccount(name, realAccounts[f.Connector]); err != nil {
			t.Fatal(err)
		}
		if svc.Allowed(name) {
			t.Fatalf("%s: the demo licence unlocked a real CRM account", name)
		}
		acct, _ := demo.Account(f.Connector)
		if err := svc.SetAccount(name, acct); err != nil {
			t.Fatal(err)
		}
		if !svc.Allowed(name) {
			cs, _ := svc.Status().Connector(name)
			t.Fatalf("%s not allowed with the demo account: %+v", name, cs)
		}
	}
	if _, err := demo.Account("salesforce"); err == nil {
		t.Fatal("unknown connector")
	}
}

// TestDemoLicencesRefusedOutsideDemo: the embedded demo licences, installed into the licence
// directory of a daemon Service (no AllowDemo, the connector types of the registry), unlock
// nothing even when each adapter reports the demo's .invalid account (edited tokens file, or a
// .invalid webhook URL reached through a proxy); the status says why.
func TestDemoLicencesRefusedOutsideDemo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := demo.Install(dir); err != nil {
		t.Fatal(err)
	}
	svc, err := licensing.New(context.Background(), licensing.Config{Dir: dir}, licensing.Options{
		Keyring: keyring.Release(), Clock: func() time.Time { return time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC) },
		Host: licensing.SystemHost{Root: t.TempDir()}, Connectors: demo.Connectors(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range demo.Files() {
		name := "real-" + f.Connector
		if err := svc.Register(licensing.Instance{Name: name, Type: f.Connector}); err != nil {
			t.Fatal(err)
		}
		acct, _ := demo.Account(f.Connector)
		if err := svc.SetAccount(name, acct); err != nil {
			t.Fatal(err)
		}
		cs, _ := svc.Status().Connector(name)
		if svc.Allowed(name) || cs.State != licensing.StateNone || !strings.Contains(cs.Reason, "work only in `pbxbridge demo`") {
			t.Fatalf("%s: a demo licence applies outside the demo: %+v", name, cs)
		}
	}
	for _, fs := range svc.Status().Files {
		if fs.Reason != licensing.ReasonDemoOnly {
			t.Fatalf("%s: %s %s", fs.Path, fs.Result, fs.Error)
		}
	}
}
