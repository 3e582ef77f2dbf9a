package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/internal/golden"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// `pbxbridge replay --config asterisk/transcripts/lab.yaml --ami|--ari FILE` prints, for every
// transcript, the records of connector/callmodel/testdata (derived by hand from the meta files),
// as JSON lines in the schema of docs/design.md §4.
func TestReplayCommand(t *testing.T) {
	for _, name := range transcripts.Scenarios() {
		want := golden.Records(t, name)
		for _, kind := range []string{"ami", "ari"} {
			file := filepath.Join("..", "..", "asterisk", "transcripts", name+"."+kind)
			if kind == "ari" {
				file += ".jsonl"
			}
			out := runCLI(t, 0, "replay", "--config", filepath.Join("..", "..", "asterisk", "transcripts", "lab.yaml"), "--"+kind, file)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(want) {
				t.Errorf("%s %s: %d records, want %d", name, kind, len(lines), len(want))
				continue
			}
			byID := map[string]call.Record{}
			for _, w := range want {
				byID[w.CallID] = w
			}
			for i, l := range lines {
				var raw map[string]json.RawMessage
				if err := json.Unmarshal([]byte(l), &raw); err != nil {
					t.Fatalf("%s %s: line %d is not JSON: %v", name, kind, i+1, err)
				}
				for _, k := range []string{"call_id", "direction", "customer", "line", "started_at", "answered_at", "ended_at",
					"disposition", "answered_by", "rang", "ring_seconds", "talk_seconds", "legs", "transfers", "recording"} {
					if _, ok := raw[k]; !ok {
						t.Errorf("%s %s: record %d lacks the §4 field %q", name, kind, i+1, k)
					}
				}
				var got call.Record
				_ = json.Unmarshal([]byte(l), &got)
				w, ok := byID[got.CallID]
				if !ok {
					t.Errorf("%s %s: unexpected call %s", name, kind, got.CallID)
					continue
				}
				if got.Direction != w.Direction || got.Disposition != w.Disposition ||
					got.AnsweredBy != w.AnsweredBy || got.Customer != w.Customer || got.TalkSeconds != w.TalkSeconds {
					t.Errorf("%s %s record %d:\n got %s %s %s by %q cust %s talk %d\nwant %s %s %s by %q cust %s talk %d", name, kind, i+1,
						got.CallID, got.Direction, got.Disposition, got.AnsweredBy, got.Customer, got.TalkSeconds,
						w.CallID, w.Direction, w.Disposition, w.AnsweredBy, w.Customer, w.TalkSeconds)
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join("..", "..", "asterisk", "transcripts", "lab.yaml")); err != nil {
		t.Fatal(err)
	}
}
