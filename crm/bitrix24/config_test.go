package bitrix24

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

func decodeStrict(t *testing.T, src string) *Config {
	t.Helper()
	c := NewConfig()
	if err := yaml.UnmarshalWithOptions([]byte(src), c, yaml.Strict()); err != nil {
		t.Fatalf("decoding: %v", err)
	}
	return c
}

// TestSample: the embedded sample decodes strictly and validates (with the secret filled in,
// as the environment would).
func TestSample(t *testing.T) {
	t.Parallel()
	c := decodeStrict(t, Sample)
	c.Auth.ClientSecret = configs.NewSecret("from-the-environment")
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("sample does not validate: %v", errors.Join(errs...))
	}
	mustf(t, c.PortalURL == "https://romashka.bitrix24.ru" && c.RateLimit.RPS == 2 && c.RateLimit.Burst == 50, "%+v", c)
	mustf(t, c.Recordings.Wait.String() == "2m0s" && c.Users.Map["101"] == 1269, "%+v", c)
	f, ok := crm.Lookup(Type)
	mustf(t, ok, "type %q not registered", Type)
	_, isCfg := f.NewConfig().(*Config)
	mustf(t, isCfg, "NewConfig returns %T", f.NewConfig())
}

// TestConfigErrors: every problem is reported at once, naming its field.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		want []string // field paths
	}{
		{"oauth without credentials", "portal_url: romashka\n", []string{"portal_url", "auth.client_id", "auth.client_secret"}},
		{"bad mode", "auth: {mode: token}\n", []string{"auth.mode"}},
		{"webhook url", "auth: {mode: webhook, webhook_url: 'https://x.bitrix24.ru/rest/abc/'}\n", []string{"auth.webhook_url"}},
		{"many", `portal_url: https://r.bitrix24.ru/path
auth: {client_id: x, client_secret: y}
timezone: Mars/Base
lines: [{number: ""}, {number: "1"}, {number: "1"}]
finish: {user: boss}
recordings: {mode: ftp}
users: {cache_ttl: 1s, map: {"101": 0}}
missed_calls: {follow_up: email, responsible: [boss]}
rate_limit: {rps: 0, burst: 0, live_reserve: 3}
`, []string{"portal_url", "timezone", "lines[0].number", "lines[2].number", "finish.user", "recordings.mode", "users.cache_ttl",
			"users.map.101", "missed_calls.follow_up", "missed_calls.responsible[0]", "rate_limit.rps", "rate_limit.burst", "rate_limit.live_reserve"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := decodeStrict(t, tc.yaml)
			errs := c.Validate()
			var got []string
			for _, err := range errs {
				var fe *crm.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%v is not a *crm.FieldError", err)
				}
				got = append(got, fe.Path)
			}
			mustf(t, strings.Join(got, ",") == strings.Join(tc.want, ","), "fields %v, want %v (%v)", got, tc.want, errors.Join(errs...))
		})
	}
	// Unknown keys are refused by the strict decoder.
	c := NewConfig()
	if err := yaml.UnmarshalWithOptions([]byte("portal_urll: x\n"), c, yaml.Strict()); err == nil {
		t.Fatal("unknown key accepted")
	}
	// Secrets never print.
	c = decodeStrict(t, "auth: {client_secret: hunter2, webhook_url: 'https://x/rest/1/hunter3/'}\n")
	out, _ := yaml.Marshal(c)
	mustf(t, !strings.Contains(string(out), "hunter"), "secret printed: %s", out)
}

// TestConfigBoxed: the portal_token and tls settings name the bad field, with what to do.
func TestConfigBoxed(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM := write("portal.cer", "\x30\x82\x01\x0a binary DER")
	noCert := write("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	badCert := write("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	_, good, err := fakecrm.SelfSignedCert("portal.example.ru")
	if err != nil {
		t.Fatal(err)
	}
	goodCA := write("ca.pem", string(good))
	const secret = "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name string
		yaml string
		want map[string]string // field path -> part of the message
	}{
		{"portal token without anything", "auth: {mode: portal_token}\n", map[string]string{
			"portal_url": "required", "auth.portal_token": "module shows", "auth.module_secret": "required"}},
		{"short secret, bad member id", "portal_url: https://b24.example.ru\nauth: {mode: portal_token, portal_token: 'pbx.x', module_secret: short, member_id: 'a b'}\n", map[string]string{
			"auth.module_secret": "at least 32", "auth.member_id": "member_id"}},
		{"token with a space", "portal_url: https://b24.example.ru\nauth: {mode: portal_token, portal_token: 'pbx. x', module_secret: " + secret + "}\n", map[string]string{
			"auth.portal_token": "white space"}},
		{"good", "portal_url: https://b24.example.ru\nauth: {mode: portal_token, portal_token: pbx.x, module_secret: " + secret + "}\ntls: {ca_file: " + goodCA + ", pin_sha256: 'sha256//" + strings.Repeat("A", 43) + "='}\n", nil},
		{"unreadable CA file", "auth: {mode: webhook, webhook_url: 'https://b24.example.ru/rest/1/x/'}\ntls: {ca_file: " + filepath.Join(dir, "none.pem") + "}\n", map[string]string{
			"tls.ca_file": "cannot read"}},
		{"DER CA file", "auth: {mode: webhook, webhook_url: 'https://b24.example.ru/rest/1/x/'}\ntls: {ca_file: " + notPEM + "}\n", map[string]string{
			"tls.ca_file": "openssl x509 -inform der"}},
		{"key instead of certificate", "auth: {mode: webhook, webhook_url: 'https://b24.example.ru/rest/1/x/'}\ntls: {ca_file: " + noCert + "}\n", map[string]string{
			"tls.ca_file": "no PEM certificate"}},
		{"broken certificate", "auth: {mode: webhook, webhook_url: 'https://b24.example.ru/rest/1/x/'}\ntls: {ca_file: " + badCert + "}\n", map[string]string{
			"tls.ca_file": "certificate 1"}},
		{"bad pins", "auth: {mode: webhook, webhook_url: 'https://b24.example.ru/rest/1/x/'}\ntls: {pin_sha256: ['AB:CD', 'sha1:00', '" + strings.Repeat("ab", 20) + "']}\n", map[string]string{
			"tls.pin_sha256[0]": "neither", "tls.pin_sha256[1]": "SHA-1", "tls.pin_sha256[2]": "SHA-1"}},
		{"tls over http", "auth: {mode: webhook, webhook_url: 'http://b24.example.ru/rest/1/x/'}\ntls: {ca_file: " + goodCA + "}\n", map[string]string{
			"tls": "plain http"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := decodeStrict(t, tc.yaml)
			got := map[string]string{}
			for _, err := range c.Validate() {
				var fe *crm.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%v is not a *crm.FieldError", err)
				}
				got[fe.Path] = fe.Msg
			}
			mustf(t, len(got) == len(tc.want), "fields %v, want %v", got, tc.want)
			for path, part := range tc.want {
				mustf(t, strings.Contains(got[path], part), "%s: %q lacks %q", path, got[path], part)
			}
		})
	}
	// One pin may be written as a string.
	c := decodeStrict(t, "tls: {pin_sha256: 'AB:CD'}\n")
	mustf(t, len(c.TLS.PinSHA256) == 1 && c.TLS.PinSHA256[0] == "AB:CD", "%+v", c.TLS)
}
