package bitrix24

import (
	"errors"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
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
