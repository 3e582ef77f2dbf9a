// Package golden reads the golden call records of the real Asterisk transcripts,
// connector/callmodel/testdata/<scenario>/expected.jsonl (derived by hand from each transcript's
// meta file), for the tests of every package that checks records against them.
package golden

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Dir is the directory that holds <scenario>/expected.jsonl.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "callmodel", "testdata")
}

// Records returns the expected records of a scenario; a missing or bad file fails the test.
func Records(tb testing.TB, scenario string) []call.Record {
	tb.Helper()
	f, err := os.Open(filepath.Join(Dir(), scenario, "expected.jsonl"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []call.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r call.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			tb.Fatalf("%s: %v", scenario, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("%s: %v", scenario, err)
	}
	return out
}
