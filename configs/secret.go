package configs

import (
	"encoding/json"

	"github.com/goccy/go-yaml"
)

// Secret is a string that never prints: fmt, slog, JSON and YAML output show "<redacted>" (or
// "" when unset). Read the value with Value. Secrets usually come from the environment
// (PBXBRIDGE_… variables) rather than the file.
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Value returns the secret itself.
func (s Secret) Value() string { return s.v }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s.v != "" }

const redacted = "<redacted>"

func (s Secret) mask() string {
	if s.v == "" {
		return ""
	}
	return redacted
}

// String implements fmt.Stringer.
func (s Secret) String() string { return s.mask() }

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `configs.Secret("` + s.mask() + `")` }

// MarshalJSON prints the mask.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.mask()) }

// MarshalYAML prints the mask.
func (s Secret) MarshalYAML() (any, error) { return s.mask(), nil }

// UnmarshalYAML reads the secret from a YAML string.
func (s *Secret) UnmarshalYAML(b []byte) error {
	var v string
	if err := yaml.Unmarshal(b, &v); err != nil {
		return err
	}
	s.v = v
	return nil
}

// UnmarshalText reads the secret from text (environment variables).
func (s *Secret) UnmarshalText(b []byte) error {
	s.v = string(b)
	return nil
}
