package config

import "github.com/pbxbridge/pbxbridge/connector/secret"

// Secret is a string that never prints (see package secret); config structs use it for
// passwords and tokens.
type Secret = secret.Secret

// NewSecret wraps s.
func NewSecret(s string) Secret { return secret.NewSecret(s) }
