package cli_test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
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
