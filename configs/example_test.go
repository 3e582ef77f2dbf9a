package configs_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
	_ "github.com/pbxbridge/pbxbridge/crm/all"
)

// edited is the sample with its placeholders replaced, as an admin would edit it.
func edited() []byte {
	return []byte(strings.NewReplacer(
		"change-me", "a-real-secret-0123456789",
		"romashka", "ours",
		"local.65f1a2b3c4d5e6.12345678", "local.0123456789abcd.87654321",
		"5f2b8a9e-1c0d-4e6f-9a7b-3c2d1e0f4a5b", "0a1b2c3d-0000-4000-8000-000000000001",
	).Replace(string(configs.Example())))
}

// The one sample config loads with the daemon's loader and shows every connector type we sell;
// unedited, it fails only on its placeholders (each named with its line), so `config check`
// keeps the service from starting on it.
func TestExampleLoads(t *testing.T) {
	t.Parallel()
	_, err := config.Parse(configs.Example(), "pbxbridge.example.yaml", func(string) string { return "" })
	var ps config.Problems
	if !errors.As(err, &ps) || len(ps) < 5 {
		t.Fatalf("the unedited sample: %v, want its placeholders refused", err)
	}
	for _, p := range ps {
		if !p.Placeholder || p.Line == 0 {
			t.Errorf("the unedited sample has a problem that is not a placeholder: %v", p)
		}
	}
	cfg, err := config.Parse(edited(), "pbxbridge.example.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("the edited sample config does not load:\n%v", err)
	}
	if len(cfg.PBX) == 0 {
		t.Fatal("the sample has no pbx")
	}
	types := map[string]bool{}
	for _, c := range cfg.Connectors {
		types[c.Type] = true
	}
	for _, want := range crm.Types() {
		if !types[want] {
			t.Errorf("the sample shows no %s connector", want)
		}
	}
}

// A placeholder secret set from the environment is no longer a placeholder.
func TestPlaceholderSecretFromEnvironment(t *testing.T) {
	t.Parallel()
	env := map[string]string{}
	cfg, err := config.Parse(edited(), "x.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.SecretEnvNames() {
		env[s[1]] = "from-the-environment-0123456789"
	}
	if _, err := config.Parse(configs.Example(), "x.yaml", func(k string) string { return env[k] }); err == nil ||
		strings.Contains(err.Error(), "change-me") {
		t.Errorf("secrets from the environment still reported as placeholders: %v", err)
	}
}
