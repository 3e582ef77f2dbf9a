// Package configs embeds the one documented sample configuration, configs/pbxbridge.example.yaml,
// printed by `pbxbridge config sample` and loaded and validated by a test, and defines Secret, the
// string type every config struct (the daemon's and each CRM adapter's) uses for passwords and
// tokens. It imports no package of this module, so every layer can use it.
package configs

import _ "embed"

//go:embed pbxbridge.example.yaml
var example []byte

// Example returns the sample config.
func Example() []byte { return example }
