package cli_test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// TestCRMTestBitrix24ClickToCall: `crm test` of an installed Bitrix24 application passes every
// check, click-to-call included: the command line has no PBX connection of its own, but the
// daemon it prepares for will (before, the check always failed with "no PBX connection can
// originate calls", so the admin guides' check could never pass).
func TestCRMTestBitrix24ClickToCall(t *testing.T) {
	t.Parallel()
	f := fakecrm.NewBitrix24()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.SetBaseURL(srv.URL)
	tok := f.IssueTokens()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	tf := api.TokenFile{Path: filepath.Join(state, "connectors", "b24", "bitrix24-tokens.json")}
	if err := os.MkdirAll(filepath.Dir(tf.Path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := tf.Save(&api.Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Domain: tok.Domain,
		MemberID: tok.MemberID, Scope: tok.Scope, ClientEndpoint: tok.ClientEndpoint, ServerEndpoint: tok.ServerEndpoint,
		ApplicationToken: tok.ApplicationToken}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "pbxbridge.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `state_dir: %[1]s/state
admin: {socket: %[1]s/admin.sock}
licensing: {dir: %[1]s/licenses}
http: {public: {listen: "127.0.0.1:0", url: "https://pbx.example.test"}}
pbx:
  - name: main
    ami: {host: 127.0.0.1, port: 5038, username: pbxbridge, secret: not-a-placeholder}
connectors:
  - name: b24
    type: bitrix24
    bitrix24:
      portal_url: %[2]s
      oauth_url: %[2]s
      auth: {mode: oauth, client_id: %[3]s, client_secret: %[4]s}
      users: {default_user_id: 1}
`, dir, srv.URL, f.ClientID(), f.ClientSecret()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, 0, "crm", "test", "b24", "--config", cfg)
	for _, want := range []string{"OK    authorisation", "OK    telephony rights", "OK    user mapping",
		"OK    click-to-call                events will be bound to https://pbx.example.test/crm/b24/events when the daemon starts"} {
		if !strings.Contains(out, want) {
			t.Errorf("crm test output lacks %q:\n%s", want, out)
		}
	}
}

// TestCRMTestBoxedBitrix24TLS: `crm test` of a connector to an on-premise portal whose
// certificate comes from the company's own CA, with the pbxbridge portal module's token. Without
// tls.ca_file the authorisation check fails, naming the connector, the portal's host and the key
// to set; with it, every check passes and click-to-call goes to the module's route.
func TestCRMTestBoxedBitrix24TLS(t *testing.T) {
	t.Parallel()
	box := crmtest.StartBoxedBitrix24(t)
	module, err := box.InstallModule("https://pbx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(box.URL(), "https://")
	dir := t.TempDir()
	config := func(tls string) string {
		cfg := filepath.Join(dir, "pbxbridge.yaml")
		if err := os.WriteFile(cfg, fmt.Appendf(nil, `state_dir: %[1]s/state
admin: {socket: %[1]s/admin.sock}
licensing: {dir: %[1]s/licenses}
http: {public: {listen: "127.0.0.1:0", url: "https://pbx.example.test"}}
pbx:
  - name: main
    ami: {host: 127.0.0.1, port: 5038, username: pbxbridge, secret: not-a-placeholder}
connectors:
  - name: b24-box
    type: bitrix24
    bitrix24:
      portal_url: %[2]s
      auth: {mode: portal_token, portal_token: %[3]s, module_secret: %[4]s, member_id: %[5]s}
      users: {default_user_id: 1}
%[6]s`, dir, module.PortalURL, module.Token, module.Secret, module.MemberID, tls), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	out := runCLI(t, 1, "crm", "test", "b24-box", "--config", config(""))
	line := ""
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "FAIL  authorisation") {
			line = l
		}
	}
	for _, want := range []string{`connector "b24-box"`, "the certificate of " + host, "not signed by a CA pbxbridge trusts",
		"set tls.ca_file in the bitrix24 block of connector \"b24-box\" (connectors[].bitrix24.tls.ca_file)"} {
		if !strings.Contains(line, want) {
			t.Errorf("crm test's authorisation line lacks %q:\n%s", want, out)
		}
	}

	out = runCLI(t, 0, "crm", "test", "b24-box", "--config", config("      tls: {ca_file: "+box.CAFile+"}\n"))
	for _, want := range []string{"OK    authorisation                connected to " + host + " as a pbxbridge module token",
		"OK    telephony rights", "OK    crm scope", "OK    user mapping",
		"OK    click-to-call                events will be bound to https://pbx.example.test/crm/b24-box/module/events when the daemon starts"} {
		if !strings.Contains(out, want) {
			t.Errorf("crm test output lacks %q:\n%s", want, out)
		}
	}
}
