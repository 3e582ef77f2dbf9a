// Package transcripts embeds the AMI and ARI event streams recorded from a real Asterisk 22 (see
// README.md in this directory): the ground truth for the call model's golden tests, and what the
// simulated PBX (cmd/fakepbx, `pbxbridge demo`) replays.
package transcripts

import (
	"embed"
	"io/fs"
	"slices"
	"strings"
)

//go:embed *.ami *.ari.jsonl *.meta.json README.md etc synthetic
var files embed.FS

// FS returns the embedded files: <scenario>.ami, <scenario>.ari.jsonl, <scenario>.meta.json.
func FS() fs.FS { return files }

// Scenarios lists the scenario names (the .ami files without extension), sorted.
func Scenarios() []string {
	entries, _ := fs.Glob(files, "*.ami") // the pattern is constant and valid
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e, ".ami"))
	}
	slices.Sort(out)
	return out
}

// AMI returns the raw AMI capture of a scenario.
func AMI(name string) ([]byte, error) { return files.ReadFile(name + ".ami") }

// ARI returns the ARI websocket messages (JSON lines) of a scenario.
func ARI(name string) ([]byte, error) { return files.ReadFile(name + ".ari.jsonl") }

// Meta returns the scenario's .meta.json: what really happened.
func Meta(name string) ([]byte, error) { return files.ReadFile(name + ".meta.json") }

// SyntheticARI returns a synthetic ARI stream of synthetic/ (see synthetic/README.md): a real
// transcript edited to reproduce an event order seen on production PBXs. Its name is
// "<scenario>+<variant>", where <scenario> is the real scenario it was derived from, whose .ami
// capture describes the same calls.
func SyntheticARI(name string) ([]byte, error) {
	return files.ReadFile("synthetic/" + name + ".ari.jsonl")
}

// SyntheticScenarios lists the names of the synthetic ARI streams, sorted. They are not in
// Scenarios: they have no AMI capture and no .meta.json of their own.
func SyntheticScenarios() []string {
	entries, _ := fs.Glob(files, "synthetic/*.ari.jsonl") // the pattern is constant and valid
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(e, "synthetic/"), ".ari.jsonl"))
	}
	slices.Sort(out)
	return out
}

// SyntheticBase returns the real scenario a synthetic stream was derived from (the part of its
// name before "+").
func SyntheticBase(name string) string {
	base, _, _ := strings.Cut(name, "+")
	return base
}
