package config_test

import (
	"errors"
	"testing"

	"github.com/pbxbridge/pbxbridge/connector/config"
)

// FuzzParse: any input gives a config or a Problems error, never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("pbx: [{name: a, ami: {host: h, port: 99999}}]\nconnectors: [{name: b, type: fake, fake: {latency: x}}]"))
	f.Add([]byte("a: &x [1, *x]\n"))
	f.Add([]byte("connectors:\n  - fake: {}\n    type: fake\n    name: x\n"))
	f.Add([]byte("<<: {a: 1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, "fuzz.yaml", nil)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		var ps config.Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error is not a non-empty Problems: %T %v", err, err)
		}
		_ = err.Error()
	})
}
