package amocrm

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
)

// The embedded samples decode strictly into the type's config and validate once the secret
// (normally from the environment) is set.
func TestSamples(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{TypeAmoCRM, TypeKommo} {
		t.Run(typ, func(t *testing.T) {
			var doc struct {
				Connectors []map[string]any `yaml:"connectors"`
			}
			if err := yaml.Unmarshal(append([]byte("connectors:\n"), Sample(typ)...), &doc); err != nil {
				t.Fatal(err)
			}
			list := doc.Connectors
			if len(list) != 1 || list[0]["type"] != typ {
				t.Fatalf("sample: %v", list)
			}
			block, err := yaml.Marshal(list[0][typ])
			if err != nil {
				t.Fatal(err)
			}
			f, _ := crm.Lookup(typ)
			cfg := f.NewConfig().(*Config)
			if err := yaml.UnmarshalWithOptions(block, cfg, yaml.Strict()); err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			if errs := cfg.Validate(); len(errs) != 2 || !strings.Contains(errs[0].Error(), "auth.client_secret") {
				t.Fatalf("before the secret is set: %v", errs)
			}
			cfg.Auth.ClientSecret = configs.NewSecret("from-the-environment")
			if errs := cfg.Validate(); len(errs) != 0 {
				t.Fatalf("sample does not validate: %v", errs)
			}
			if got := strings.Join(cfg.MappedExtensions(), ","); got != "101,102" {
				t.Fatalf("mapped extensions %s", got)
			}
			if cfg.Batch.Window != 100*time.Millisecond || cfg.Auth.ProactiveRefresh != 720*time.Hour {
				t.Fatalf("durations: %+v %+v", cfg.Batch, cfg.Auth)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	c := NewConfig(TypeAmoCRM)
	c.Subdomain = "Romashka.amocrm.ru"
	c.BaseURL = "ftp://x"
	c.Auth = AuthConfig{ClientID: "x", LongLivedToken: configs.NewSecret("t")}
	c.Users = map[string]int64{"101": 5, "102": 5, "1 0": -1}
	c.RateLimit = 5000
	c.Batch = BatchConfig{Max: 300, Window: -time.Second}
	c.UnknownNumber.Inbound = "drop"
	c.MissedCallTask.Responsible = []string{"boss", ChainDefault}
	c.ClickToCall.Secret = configs.NewSecret("short")
	c.ClickToCall.AllowedOrigins = []string{"https://x/y"}
	want := []string{"subdomain", "base_url", "auth", "auth.proactive_refresh", "users.102", "users.1 0", "rate_limit", "batch.max",
		"batch.window", "unknown_number.inbound", "missed_call_task.responsible[0]", "missed_call_task.responsible[1]",
		"click_to_call.secret", "click_to_call.allowed_origins[0]"}
	c.Auth.ProactiveRefresh = 0
	got := map[string]bool{}
	for _, err := range c.Validate() {
		var fe *crm.FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("%v is not a FieldError", err)
		}
		got[fe.Path] = true
	}
	for _, p := range want {
		if !got[p] {
			t.Errorf("no error for %s (got %v)", p, got)
		}
	}
	if _, err := New(crm.Params{Type: TypeAmoCRM, Config: c, StateDir: t.TempDir()}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

func TestReadmeHasTheSampleVerbatim(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), string(Sample(TypeAmoCRM))) {
		t.Fatal("README.md does not include sample.yaml verbatim")
	}
	for _, section := range []string{"## Name", "## Description", "## Configuration", "## Field mapping", "## Rate limits and retries", "## Metrics", "## Troubleshooting"} {
		if !strings.Contains(string(b), section) {
			t.Errorf("README.md lacks %q", section)
		}
	}
}
