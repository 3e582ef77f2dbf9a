package bitrix24

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// phpOrSkip returns the php binary, or skips the test where PHP is not installed — unless
// PBXBRIDGE_REQUIRE_PHP is set (CI sets it where it installed php-cli), which makes a missing
// PHP a failure instead of a silent skip.
func phpOrSkip(t *testing.T) string {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		if os.Getenv("PBXBRIDGE_REQUIRE_PHP") != "" {
			t.Fatal("PBXBRIDGE_REQUIRE_PHP is set but php is not installed (Debian: apt-get install php-cli)")
		}
		t.Skip("php is not installed (Debian: php-cli); TestModuleSignatureVectors checks pbxbridge's side without it")
	}
	return php
}

// TestPortalModulePHP checks the PHP portal module where PHP is installed: every file is valid
// PHP, and the module's Signer encodes and signs the events of the committed vectors
// (testdata/module-signature-vectors.json) byte for byte as the file says, so that what the
// module sends is what TestModuleSignatureVectors shows pbxbridge accepts.
func TestPortalModulePHP(t *testing.T) {
	t.Parallel()
	php := phpOrSkip(t)
	var files []string
	err := filepath.WalkDir("portal-module", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".php") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("only %d PHP files found", len(files))
	}
	for _, f := range files {
		if out, err := exec.CommandContext(t.Context(), php, "-l", f).CombinedOutput(); err != nil {
			t.Errorf("%s: %s", f, out)
		}
	}

	vectors := loadModuleVectors(t)
	out, err := exec.CommandContext(t.Context(), php, "portal-module/tests/vectors.php", moduleVectorsFile).Output()
	if err != nil {
		t.Fatalf("php: %v", err)
	}
	var got []struct {
		Name      string `json:"name"`
		Body      string `json:"body"`
		Timestamp string `json:"timestamp"`
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if len(got) != len(vectors) {
		t.Fatalf("the module made %d vectors of %d", len(got), len(vectors))
	}
	for i, v := range vectors {
		g := got[i]
		mustf(t, g.Body == v.Body, "%s: the module encodes\n%s\nthe vector says\n%s", v.Name, g.Body, v.Body)
		mustf(t, g.Timestamp == strconv.FormatInt(v.Timestamp, 10) && g.Signature == v.Signature,
			"%s: the module signs %s %s, the vector says %d %s", v.Name, g.Timestamp, g.Signature, v.Timestamp, v.Signature)
	}
}

// TestPortalModuleLogic runs the module's logic under php-cli against stand-ins for the Bitrix24
// core (portal-module/tests/stubs.php, which copies the core's token check): the application is
// created without the cloud, the issued token passes the core's check as an "oauth"
// authorisation and is stored only as a digest, wrong tokens, scopes and addresses are refused,
// events go signed to pbxbridge only, and uninstalling leaves nothing behind.
func TestPortalModuleLogic(t *testing.T) {
	t.Parallel()
	php := phpOrSkip(t)
	out, err := exec.CommandContext(t.Context(), php, "portal-module/tests/run.php").Output()
	if err != nil {
		t.Fatalf("php: %v: %s", err, out)
	}
	type check struct {
		OK  bool           `json:"ok"`
		Res map[string]any `json:"res"`
	}
	var got struct {
		App         map[string]any `json:"app"`
		RemoteCalls int            `json:"remote_calls"`
		SecretLen   int            `json:"secret_len"`
		StoredPlain bool           `json:"stored_plain"`
		Telephony   check          `json:"telephony"`
		Wrong       check          `json:"wrong"`
		OtherApp    check          `json:"other_app"`
		Scope       check          `json:"scope"`
		OtherAddr   check          `json:"other_address"`
		Revoked     check          `json:"revoked"`
		Posts       []struct {
			URL     string            `json:"url"`
			Body    string            `json:"body"`
			Headers map[string]string `json:"headers"`
		} `json:"posts"`
		ToCloud          int      `json:"to_cloud"`
		ProviderIsModule bool     `json:"provider_is_module"`
		Log              []string `json:"log"`
		Secret           string   `json:"secret"`
		After            struct {
			Apps        int `json:"apps"`
			Options     int `json:"options"`
			RemoteCalls int `json:"remote_calls"`
		} `json:"after_uninstall"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	mustf(t, got.RemoteCalls == 0 && got.After.RemoteCalls == 0, "the cloud was asked to register the application: %d", got.RemoteCalls)
	mustf(t, got.App["URL"] == "https://pbx.example.ru/" && got.App["STATUS"] == "L" && got.App["SCOPE"] == "telephony,crm,user,task", "app %+v", got.App)
	mustf(t, got.SecretLen >= minModuleSecret && !got.StoredPlain, "secret %d characters, token stored in plain %v", got.SecretLen, got.StoredPlain)
	mustf(t, got.Telephony.OK && got.Telephony.Res["auth_type"] == "oauth" && got.Telephony.Res["user_id"] == float64(1), "the token: %+v", got.Telephony)
	for name, c := range map[string]check{"wrong token": got.Wrong, "revoked": got.Revoked, "another address": got.OtherAddr} {
		mustf(t, !c.OK && c.Res["error"] == "invalid_token", "%s: %+v", name, c)
	}
	mustf(t, !got.Scope.OK && got.Scope.Res["error"] == "insufficient_scope", "scope %+v", got.Scope)
	mustf(t, !got.OtherApp.OK && got.OtherApp.Res["error"] == "cloud", "another application's token must go to the stock check: %+v", got.OtherApp)
	mustf(t, got.ProviderIsModule, "the module's event provider is the stock one (its instance() shares ProviderOAuth's)")
	mustf(t, len(got.Posts) == 1 && got.Posts[0].URL == "https://pbx.example.ru/crm/b24/module/events", "posts %+v", got.Posts)
	mustf(t, got.ToCloud == 1 && len(got.Log) == 1, "other events: cloud %d, log %v", got.ToCloud, got.Log)
	p := got.Posts[0]
	if err := verifyModuleRequest([]byte(got.Secret), p.Headers["X-Pbxbridge-Timestamp"], p.Headers["X-Pbxbridge-Signature"], []byte(p.Body), time.Now()); err != nil {
		t.Fatalf("the module's event is refused: %v", err)
	}
	ev, err := api.ParseEvent([]byte(p.Body))
	mustf(t, err == nil && ev.Name == api.EventExternalCallStart && ev.Data["CALL_ID"] == "externalCall.1" && ev.Auth["member_id"] != "" &&
		ev.Auth["domain"] == "b24.example.ru" && ev.Auth["access_token"] == "", "event %+v %v", ev, err)
	mustf(t, got.After.Apps == 0 && got.After.Options == 0, "after uninstalling: %+v", got.After)
}
