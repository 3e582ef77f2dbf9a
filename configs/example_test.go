package configs_test

import (
	"testing"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
	_ "github.com/pbxbridge/pbxbridge/crm/all"
)

// The one sample config loads and validates with the daemon's loader and shows every connector
// type we sell.
func TestExampleLoads(t *testing.T) {
	cfg, err := config.Parse(configs.Example(), "pbxbridge.example.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("the sample config does not load:\n%v", err)
	}
	if len(cfg.PBX) == 0 {
		t.Fatal("the sample has no pbx")
	}
	types := map[string]bool{}
	for _, c := range cfg.Connectors {
		types[c.Type] = true
	}
	for _, want := range crm.Types() {
		if want == "fake" {
			continue
		}
		if !types[want] {
			t.Errorf("the sample shows no %s connector", want)
		}
	}
}
