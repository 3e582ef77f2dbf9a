package ami_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// defaultVars are the variables the call model reads with its default options
// (callmodel.Options.Variables): the ones docs/asterisk.md's manager.conf lines name.
var defaultVars = []string{"MIXMONITOR_FILENAME", "PBXBRIDGE_ORIGINATE_ID", "FROM_DID"}

func filterLines(t *testing.T, syntax ami.FilterSyntax, vars []string) *fakepbx.EventFilter {
	t.Helper()
	lines, err := ami.EventFilterLines(syntax, vars)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fakepbx.ParseEventFilter(lines)
	if err != nil {
		t.Fatalf("Asterisk would refuse %q: %v", lines, err)
	}
	return f
}

// transcriptEvents returns every event frame of every transcript in wire format, with its
// event name and (VarSet) variable.
func transcriptEvents(t *testing.T) (frames [][]byte, names, vars []string) {
	t.Helper()
	for _, sc := range transcripts.Scenarios() {
		data, err := transcripts.AMI(sc)
		if err != nil {
			t.Fatal(err)
		}
		r := ami.NewReader(bytes.NewReader(data))
		if _, err := r.ReadBanner(); err != nil {
			t.Fatal(err)
		}
		for {
			f, err := r.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Event() == "" {
				continue
			}
			frames = append(frames, f.AppendTo(nil))
			names = append(names, f.Event())
			vars = append(vars, f.Get("Variable"))
		}
	}
	return frames, names, vars
}

// TestEventFilterLines: both syntaxes, as Asterisk evaluates them (fakepbx.EventFilter), pass
// exactly the NeededEvents and, for VarSet, the variables asked for, on every event of every
// transcript.
func TestEventFilterLines(t *testing.T) {
	t.Parallel()
	frames, names, vars := transcriptEvents(t)
	needed := ami.NeededEvents()
	for _, tc := range []struct {
		name string
		vars []string
	}{{"every VarSet", nil}, {"default variables", defaultVars}, {"lab variables", append(slices.Clone(defaultVars), "_CRM_ORIGINATE_ID", "LAB_DID")}} {
		legacy, advanced := filterLines(t, ami.LegacyFilter, tc.vars), filterLines(t, ami.AdvancedFilter, tc.vars)
		passed := 0
		for i, fr := range frames {
			want := slices.Contains(needed, names[i])
			if names[i] == "VarSet" && tc.vars != nil {
				want = slices.Contains(tc.vars, strings.TrimLeft(vars[i], "_")) ||
					slices.Contains(tc.vars, "_"+strings.TrimLeft(vars[i], "_"))
			}
			if got := legacy.Pass(fr); got != want {
				t.Errorf("%s: legacy lines: %s %s passes %v, want %v", tc.name, names[i], vars[i], got, want)
			}
			if got := advanced.Pass(fr); got != want {
				t.Errorf("%s: advanced lines: %s %s passes %v, want %v", tc.name, names[i], vars[i], got, want)
			}
			if want {
				passed++
			}
		}
		t.Logf("%s: %d of %d event frames pass", tc.name, passed, len(frames))
	}
	if _, err := ami.EventFilterLines(ami.LegacyFilter, []string{"FROM_DID", "BAD|NAME"}); err == nil ||
		!strings.Contains(err.Error(), "BAD|NAME") {
		t.Errorf("a variable that is no name: err %v", err)
	}
	if _, err := ami.EventFilterLines(ami.FilterSyntax(7), nil); err == nil {
		t.Error("unknown syntax accepted")
	}
	if lines, err := ami.EventFilterLines(ami.AdvancedFilter, []string{}); err != nil || slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, "VarSet")
	}) {
		t.Errorf("no variables: %q %v, want no VarSet line", lines, err)
	}
}

// TestEventFilterDocumented: docs/asterisk.md shows the lines EventFilterLines writes for the
// default variables, in both syntaxes.
func TestEventFilterDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/asterisk.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, syntax := range []ami.FilterSyntax{ami.LegacyFilter, ami.AdvancedFilter} {
		lines, err := ami.EventFilterLines(syntax, defaultVars)
		if err != nil {
			t.Fatal(err)
		}
		if block := strings.Join(lines, "\n") + "\n"; !bytes.Contains(doc, []byte(block)) {
			t.Errorf("docs/asterisk.md lacks the lines of syntax %d:\n%s", syntax, block)
		}
	}
}
