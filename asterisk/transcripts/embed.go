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

//go:embed *.ami *.ari.jsonl *.meta.json README.md etc
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
