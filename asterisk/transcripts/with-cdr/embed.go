// Package withcdr embeds the Asterisk 22 recordings of README.md in this directory: thirteen
// scenarios recorded in one sitting together with the Master.csv that cdr_csv wrote for exactly
// these calls, so the calls of the .ami streams can be matched to their CDR rows. They are the
// ground truth for asterisk/cdr and for recovering, from the CDR, calls the daemon did not see.
// It is a package of its own so that binaries embedding ../ (the simulated PBX) do not carry it.
package withcdr

import (
	"embed"
	"io/fs"
	"slices"
	"strings"
)

//go:embed *.ami *.meta.json Master.csv README.md
var files embed.FS

// FS returns the embedded files: Master.csv, <scenario>.ami, <scenario>.meta.json.
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

// Meta returns the scenario's .meta.json: what really happened.
func Meta(name string) ([]byte, error) { return files.ReadFile(name + ".meta.json") }

// MasterCSV returns cdr_csv's Master.csv for all the scenarios (the layout is described in
// README.md: the 16 standard columns plus uniqueid and userfield, times in UTC).
func MasterCSV() []byte {
	b, _ := files.ReadFile("Master.csv") // embedded above
	return b
}
