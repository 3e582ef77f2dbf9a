package config

import (
	"fmt"
	"reflect"

	"github.com/pbxbridge/pbxbridge/configs"
)

// placeholderKeys are the keys whose values name an account or unlock something: the value the
// sample config (configs/pbxbridge.example.yaml) gives one of them is a placeholder, never a real
// value, so a config that still has it is not ready to run (the .deb installs the sample; its
// postinst starts the service only on a config that passes `config check`).
var placeholderKeys = map[string]bool{
	"secret": true, "password": true, "token": true, "client_id": true, "client_secret": true,
	"portal_url": true, "subdomain": true, "webhook_url": true, "long_lived_token": true,
	"install_key": true, "application_token": true, "url": true, "dsn": true,
}

// placeholders returns the sample's values of the placeholder keys, by key.
func placeholders() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	sample, _, err := decodeConfig(configs.Example(), "sample", nil)
	if err != nil {
		return out // the sample is valid YAML (a test keeps it so)
	}
	sample.walk(func(_, _, key string, v reflect.Value) bool {
		if !placeholderKeys[key] {
			return false
		}
		if s := leafString(v); s != "" {
			if out[key] == nil {
				out[key] = map[string]bool{}
			}
			out[key][s] = true
		}
		return false
	})
	return out
}

// leafString is the text of a string or Secret field ("" for other kinds).
func leafString(v reflect.Value) string {
	switch {
	case v.Type() == secretType:
		return v.Interface().(configs.Secret).Value() //nolint:forcetypeassert // type checked
	case v.Kind() == reflect.String:
		return v.String()
	}
	return ""
}

// checkPlaceholders adds a problem for every value left as the sample has it.
func (c *Config) checkPlaceholders(d *decoder) {
	sample := placeholders()
	c.walk(func(path, _, key string, v reflect.Value) bool {
		if !placeholderKeys[key] {
			return false
		}
		if s := leafString(v); s != "" && sample[key][s] {
			d.problems = append(d.problems, &Problem{Line: d.lineOf(path), Path: path, Placeholder: true,
				Msg: fmt.Sprintf("%q is the sample's placeholder: put your own value here", s)})
		}
		return false
	})
}
