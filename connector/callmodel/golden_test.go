package callmodel_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/replay"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// timeMargin is how far a record's times may be from the expected ones. The expected files are
// written from the .meta.json facts (dial end, channel hangup, action sent times), which are
// within a few milliseconds of the events the model uses (bridge enter/leave); ARI timestamps
// are also a few milliseconds earlier than AMI's. See testdata/README.md.
const timeMargin = 20 * time.Millisecond

// fileConfig is the shape of testdata/*.yaml: the two sections the daemon's config has for the
// call model.
type fileConfig struct {
	Numbers   numbers.Config   `yaml:"numbers"`
	CallModel callmodel.Config `yaml:"callmodel"`
}

func loadOptions(tb testing.TB, path string) callmodel.Options {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var fc fileConfig
	if err := yaml.UnmarshalWithOptions(data, &fc, yaml.Strict()); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	n, err := numbers.New(fc.Numbers)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	opts, err := fc.CallModel.Compile(n.Normalize)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return opts
}

func readRecords(tb testing.TB, data []byte) []call.Record {
	tb.Helper()
	var out []call.Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r call.Record
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			tb.Fatalf("decoding %s: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	// Compared by call id: ARI start times are a few milliseconds off AMI's, which may reorder
	// calls that start together.
	sort.Slice(out, func(i, j int) bool { return out[i].CallID < out[j].CallID })
	return out
}

// TestGoldenLab replays every lab transcript, AMI and ARI, with testdata/lab.yaml and compares
// the records with testdata/<scenario>/expected.jsonl.
func TestGoldenLab(t *testing.T) {
	opts := loadOptions(t, "testdata/lab.yaml")
	scenarios := transcripts.Scenarios()
	if len(scenarios) == 0 {
		t.Fatal("no transcripts embedded")
	}
	for _, name := range scenarios {
		t.Run(name, func(t *testing.T) {
			exp, err := os.ReadFile(filepath.Join("testdata", name, "expected.jsonl"))
			if err != nil {
				t.Fatalf("every transcript needs an expected file: %v", err)
			}
			want := readRecords(t, exp)
			for _, tr := range []string{"ami", "ari"} {
				var src []byte
				var run func([]byte, *bytes.Buffer) error
				if tr == "ami" {
					src, err = transcripts.AMI(name)
					run = func(b []byte, w *bytes.Buffer) error { return replay.AMI(bytes.NewReader(b), opts, w) }
				} else {
					src, err = transcripts.ARI(name)
					run = func(b []byte, w *bytes.Buffer) error { return replay.ARI(bytes.NewReader(b), opts, w) }
				}
				if err != nil {
					t.Fatal(err)
				}
				var out, again bytes.Buffer
				if err := run(src, &out); err != nil {
					t.Fatalf("%s replay: %v", tr, err)
				}
				if err := run(src, &again); err != nil || !bytes.Equal(out.Bytes(), again.Bytes()) {
					t.Fatalf("%s replay is not deterministic (err %v)", tr, err)
				}
				got := readRecords(t, out.Bytes())
				if diff := cmp.Diff(want, got, cmpopts.EquateApproxTime(timeMargin), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("%s records differ from expected.jsonl (-want +got):\n%s", tr, diff)
				}
			}
		})
	}
}

// TestGoldenSynthetic replays the synthetic PJSIP/FreePBX transcripts of testdata/synthetic with
// no configuration at all (default options, no default region) and compares the records with
// their expected.jsonl.
func TestGoldenSynthetic(t *testing.T) {
	n, err := numbers.New(numbers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	opts := callmodel.DefaultOptions()
	opts.Normalize = n.Normalize
	dirs, err := filepath.Glob("testdata/synthetic/*/events.ami")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no synthetic transcripts (%v)", err)
	}
	for _, events := range dirs {
		dir := filepath.Dir(events)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			src, err := os.ReadFile(events)
			if err != nil {
				t.Fatal(err)
			}
			exp, err := os.ReadFile(filepath.Join(dir, "expected.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := replay.AMI(bytes.NewReader(src), opts, &out); err != nil {
				t.Fatal(err)
			}
			want, got := readRecords(t, exp), readRecords(t, out.Bytes())
			if diff := cmp.Diff(want, got, cmpopts.EquateApproxTime(timeMargin), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("records differ from expected.jsonl (-want +got):\n%s", diff)
			}
		})
	}
}
