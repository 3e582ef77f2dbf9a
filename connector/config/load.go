package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml/parser"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
)

// EnvPrefix starts every environment variable the config reads.
const EnvPrefix = "PBXBRIDGE_"

// MaxFileSize bounds the config file (a config is a few KiB; anything larger is a mistake).
const MaxFileSize = 1 << 20

// Load reads the config at path: defaults, then the file, then PBXBRIDGE_… environment variables
// for secrets, then validation. getenv is os.Getenv in the daemon (injectable for tests). On any
// problem it returns a Problems error listing all of them, each with its path and line.
func Load(path string, getenv func(string) string, opts ...Option) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data, path, getenv, opts...)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// Option changes what Load and Parse check.
type Option func(*loadOptions)

type loadOptions struct{ tool bool }

// ForTools skips the checks that only a config the daemon runs on must pass (placeholders left
// from the sample, at least one pbx and one connector): for offline tools such as `pbxbridge
// replay`, which need only the call recognition.
func ForTools() Option { return func(o *loadOptions) { o.tool = true } }

// Parse is Load on bytes; file is used in messages.
func Parse(data []byte, file string, getenv func(string) string, opts ...Option) (*Config, error) {
	var o loadOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg, d, err := decodeConfig(data, file, getenv)
	if err != nil {
		return nil, err
	}
	cfg.validate(d, !o.tool)
	if !o.tool {
		cfg.checkPlaceholders(d)
	}
	if len(d.problems) > 0 {
		for _, p := range d.problems {
			p.File = file
		}
		return nil, d.problems.sorted()
	}
	return cfg, nil
}

// decodeConfig decodes data over the defaults and reads environment secrets, without
// validating; decoding problems are in the decoder's list.
func decodeConfig(data []byte, file string, getenv func(string) string) (*Config, *decoder, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if len(data) > MaxFileSize {
		return nil, nil, Problems{{File: file, Msg: fmt.Sprintf("file is %d bytes, larger than the %d-byte limit", len(data), MaxFileSize)}}
	}
	cfg := Default()
	cfg.File = file
	d := newDecoder()
	ast, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, nil, Problems{{File: file, Line: yamlErrorLine(err), Msg: "not valid YAML: " + firstLine(err.Error())}}
	}
	for _, doc := range ast.Docs {
		if doc.Body == nil {
			continue
		}
		d.decode(doc.Body, reflect.ValueOf(cfg).Elem(), "")
	}
	cfg.applyDefaults()
	d.problems = append(d.problems, cfg.applyEnv(getenv)...)
	return cfg, d, nil
}

// Defaults returns the default config with per-entry defaults applied and environment secrets
// read, without a file.
func Defaults(getenv func(string) string) *Config {
	cfg := Default()
	cfg.applyDefaults()
	if getenv != nil {
		_ = cfg.applyEnv(getenv) // problems surface when the daemon validates a file
	}
	return cfg
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// yamlErrorLine extracts the line from goccy's "[line:col] message" errors.
func yamlErrorLine(err error) int {
	var line, col int
	if _, scanErr := fmt.Sscanf(err.Error(), "[%d:%d]", &line, &col); scanErr == nil {
		return line
	}
	return 0
}

func reflectValue(ptr any) reflect.Value { return reflect.ValueOf(ptr).Elem() }

func asFieldError(err error, fe **crm.FieldError) bool { return errors.As(err, fe) }

// secretField is one Secret in the config, with its field path and environment variable.
type secretField struct {
	path string
	env  string
	v    reflect.Value
}

// secrets lists every Secret field of the config. Environment names use list entries' names:
// pbx[0].ami.secret of the pbx named "main" is PBXBRIDGE_PBX_MAIN_AMI_SECRET.
func (c *Config) secrets() []secretField {
	var out []secretField
	c.walk(func(path, env, _ string, v reflect.Value) bool {
		if v.Type() != secretType {
			return false
		}
		out = append(out, secretField{path: path, env: EnvPrefix + envSegment(env), v: v})
		return true
	})
	return out
}

// walk calls visit for every field of the config (the connectors' type blocks included) with its
// path (pbx[0].ami.secret), its environment name segments (pbx names instead of indexes), its
// YAML key and its value; visit returns true to skip what lies below the field.
func (c *Config) walk(visit func(path, env, key string, v reflect.Value) bool) {
	var walk func(v reflect.Value, path, env, key string)
	walk = func(v reflect.Value, path, env, key string) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), path, env, key)
			}
			return
		}
		if visit(path, env, key, v) {
			return
		}
		switch v.Kind() {
		case reflect.Struct:
			t := v.Type()
			for i := range t.NumField() {
				f := t.Field(i)
				if !f.IsExported() {
					continue
				}
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if name == "-" {
					if f.Name == "Settings" && t == reflect.TypeOf(Connector{}) {
						cn := v.Addr().Interface().(*Connector) //nolint:forcetypeassert // t checked above
						walk(v.Field(i), joinPath(path, cn.Type), joinEnv(env, cn.Type), cn.Type)
					}
					continue
				}
				walk(v.Field(i), joinPath(path, name), joinEnv(env, name), name)
			}
		case reflect.Slice:
			for i := range v.Len() {
				el := v.Index(i)
				label := fmt.Sprint(i)
				if el.Kind() == reflect.Struct {
					if nf := el.FieldByName("Name"); nf.IsValid() && nf.Kind() == reflect.String && nf.String() != "" {
						label = nf.String()
					}
				}
				walk(el, fmt.Sprintf("%s[%d]", path, i), joinEnv(env, label), key)
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "", "", "")
}

func joinEnv(env, seg string) string {
	if env == "" {
		return seg
	}
	return env + "_" + seg
}

// envSegment upper-cases a name path and turns everything but letters and digits into "_".
func envSegment(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, ch := range b {
		if (ch < 'A' || ch > 'Z') && (ch < '0' || ch > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// applyEnv sets secrets from the environment: NAME holds the value, NAME_FILE a file holding it
// (systemd credentials, Docker secrets). The environment wins over the file.
func (c *Config) applyEnv(getenv func(string) string) Problems {
	var ps Problems
	for _, s := range c.secrets() {
		if v := getenv(s.env); v != "" {
			s.v.Set(reflect.ValueOf(configs.NewSecret(v)))
			continue
		}
		if file := getenv(s.env + "_FILE"); file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				ps = append(ps, &Problem{Path: s.path, Msg: fmt.Sprintf("reading %s_FILE: %v", s.env, err)})
				continue
			}
			s.v.Set(reflect.ValueOf(configs.NewSecret(strings.TrimRight(string(b), "\r\n"))))
		}
	}
	return ps
}

// EnvName returns the environment variable that sets the secret at path ("" if none).
func EnvName(path string, c *Config) string {
	for _, s := range c.secrets() {
		if s.path == path {
			return s.env
		}
	}
	return ""
}

// SecretEnvNames lists every secret's path and environment variable (for docs and `config
// check --env`).
func (c *Config) SecretEnvNames() [][2]string {
	var out [][2]string
	for _, s := range c.secrets() {
		out = append(out, [2]string{s.path, s.env})
	}
	return out
}
