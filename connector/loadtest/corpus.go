package loadtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// The listeners a hostile input goes to.
const (
	HostilePublic = "public" // http.public: the CRMs' routes, signed recording links
	HostileAdmin  = "admin"  // http.admin: status page, calls, metrics, routing queries
	HostileSocket = "socket" // the admin socket's API
)

// HostileTargets lists the listeners in the order the report shows them.
var HostileTargets = []string{HostilePublic, HostileAdmin, HostileSocket}

// HostileInput is one input of the handler fuzz targets of connector/security (fuzz_test.go):
// a method index, a path with query, header lines ("Name: value" per line) and a body.
type HostileInput struct {
	Target string
	Method byte
	Path   string
	Header string
	Body   []byte
}

// fuzzTargetOf maps the fuzz targets of connector/security to the listener they exercise.
var fuzzTargetOf = map[string]string{
	"FuzzPublicHandler": HostilePublic,
	"FuzzAdminHandler":  HostileAdmin,
	"FuzzAdminAPI":      HostileSocket,
}

// HostileSeeds are the seed inputs of the handler fuzz targets: what addSeeds in
// connector/security/fuzz_test.go adds (a test file, so repeated here), with the demo's
// connector names.
func HostileSeeds() []HostileInput {
	var out []HostileInput
	add := func(target string, paths ...string) {
		for i, p := range paths {
			out = append(out,
				HostileInput{target, byte(i), p, "Content-Type: application/x-www-form-urlencoded", []byte("event=ONAPPINSTALL&auth[domain]=x")},
				HostileInput{target, byte(i + 1), p, "Content-Type: application/json\nOrigin: https://demo-amocrm.invalid", []byte(`{"user_id":1,"phone":"+79001234567"}`)},
				HostileInput{target, byte(i + 2), p + "?state=x&code=y&number=%2B7900", "Authorization: Bearer x\nSec-Fetch-Site: cross-site", []byte(strings.Repeat("A", 300))},
			)
		}
	}
	add(HostilePublic, "/crm/b24-demo/install", "/crm/b24-demo/events", "/crm/b24-demo/oauth/callback",
		"/crm/amo-demo/click2call", "/crm/amo-demo/oauth/callback", "/crm/kommo-demo/click2call", "/rec/abc.wav?exp=1&sig=x", "/crm/none/x")
	add(HostileAdmin, "/", "/calls/lab/1.2", "/calls/1.2", "/metrics", "/readyz", "/healthz", "/v1/lookup?number=101",
		"/v1/responsible?number=%2B79001234567&connector=b24-demo", "/actions/retry-dead")
	add(HostileSocket, "/v1/status", "/v1/license", "/v1/outbox?state=dead&since=2026-01-01&limit=5", "/v1/outbox/retry",
		"/v1/outbox/import", "/v1/calls", "/v1/calls/lab/1.2")
	return out
}

// LoadFuzzCorpora reads the corpus files of the handler fuzz targets under each dir: dir/
// FuzzPublicHandler/*, dir/FuzzAdminHandler/*, dir/FuzzAdminAPI/* (a committed testdata/fuzz
// directory, or $(go env GOCACHE)/fuzz/<package>, where `go test -fuzz` keeps the inputs that
// found new coverage). Missing directories are skipped; unreadable files are an error.
func LoadFuzzCorpora(dirs ...string) ([]HostileInput, error) {
	var out []HostileInput
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		for name, target := range fuzzTargetOf {
			files, err := filepath.Glob(filepath.Join(dir, name, "*"))
			if err != nil {
				return nil, fmt.Errorf("loadtest: corpus: %w", err)
			}
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					return nil, fmt.Errorf("loadtest: corpus: %w", err)
				}
				in, err := ParseFuzzInput(data)
				if err != nil {
					return nil, fmt.Errorf("loadtest: corpus %s: %w", f, err)
				}
				in.Target = target
				out = append(out, in)
			}
		}
	}
	return out, nil
}

// FuzzCacheDir is where `go test -fuzz` keeps the generated corpus of connector/security:
// $(go env GOCACHE)/fuzz/github.com/pbxbridge/pbxbridge/connector/security ("" when the go
// command is not at hand).
func FuzzCacheDir() string {
	cache := os.Getenv("GOCACHE")
	if cache == "" {
		out, err := exec.Command("go", "env", "GOCACHE").Output()
		if err != nil {
			return ""
		}
		cache = strings.TrimSpace(string(out))
	}
	if cache == "" || cache == "off" {
		return ""
	}
	return filepath.Join(cache, "fuzz", "github.com", "pbxbridge", "pbxbridge", "connector", "security")
}

// ParseFuzzInput decodes one corpus file of the handler fuzz targets: "go test fuzz v1", then
// one Go literal per line: byte, string, string, []byte (method index, path, header lines,
// body).
func ParseFuzzInput(data []byte) (HostileInput, error) {
	var in HostileInput
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) != 5 || strings.TrimSpace(lines[0]) != "go test fuzz v1" {
		return in, errors.New("not a corpus file of (byte, string, string, []byte)")
	}
	lit := func(line, typ string) (string, error) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), typ+"(")
		if !ok || !strings.HasSuffix(v, ")") {
			return "", fmt.Errorf("want a %s literal, got %.40q", typ, line)
		}
		return v[:len(v)-1], nil
	}
	v, err := lit(lines[1], "byte")
	if err != nil {
		return in, err
	}
	if in.Method, err = parseByteLit(v); err != nil {
		return in, err
	}
	var strs [3]string
	for i, typ := range []string{"string", "string", "[]byte"} {
		v, err := lit(lines[2+i], typ)
		if err != nil {
			return in, err
		}
		if strs[i], err = strconv.Unquote(v); err != nil {
			return in, fmt.Errorf("%s literal %.40q: %w", typ, v, err)
		}
	}
	in.Path, in.Header, in.Body = strs[0], strs[1], []byte(strs[2])
	return in, nil
}

// parseByteLit decodes a byte literal: a character ('A', '\x02') or a number (2, 0x2).
func parseByteLit(v string) (byte, error) {
	if len(v) >= 3 && v[0] == '\'' && v[len(v)-1] == '\'' {
		r, _, tail, err := strconv.UnquoteChar(v[1:len(v)-1], '\'')
		if err != nil || tail != "" || r > 0xff {
			return 0, fmt.Errorf("byte literal %q: not one byte", v)
		}
		return byte(r), nil
	}
	n, err := strconv.ParseUint(v, 0, 8)
	if err != nil {
		return 0, fmt.Errorf("byte literal %q: %w", v, err)
	}
	return byte(n), nil
}
