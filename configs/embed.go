// Package configs embeds the one documented sample configuration, configs/pbxbridge.example.yaml,
// printed by `pbxbridge config sample` and loaded and validated by a test.
package configs

import _ "embed"

//go:embed pbxbridge.example.yaml
var example []byte

// Example returns the sample config.
func Example() []byte { return example }
