package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// captures returns every embedded AMI transcript by name and, when PBXBRIDGE_AMI_TRANSCRIPTS
// lists directories (separated by the OS's list separator), every *.ami file in them (e.g.
// the recordings with their CDR in the shared transcripts directory).
func captures(tb testing.TB) (names []string, data [][]byte) {
	tb.Helper()
	for _, name := range transcripts.Scenarios() {
		b, err := transcripts.AMI(name)
		if err != nil {
			tb.Fatal(err)
		}
		names, data = append(names, name), append(data, b)
	}
	for _, dir := range filepath.SplitList(os.Getenv("PBXBRIDGE_AMI_TRANSCRIPTS")) {
		files, err := filepath.Glob(filepath.Join(dir, "*.ami"))
		if err != nil || len(files) == 0 {
			tb.Fatalf("PBXBRIDGE_AMI_TRANSCRIPTS: no *.ami in %s (%v)", dir, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				tb.Fatal(err)
			}
			names, data = append(names, f), append(data, b)
		}
	}
	return names, data
}

// modelOutput records, as JSON lines, everything the call model emits: live events and records.
type modelOutput struct{ live, records bytes.Buffer }

func (o *modelOutput) Live(l *call.Live) {
	b, _ := json.Marshal(l)
	o.live.Write(append(b, '\n'))
}

func (o *modelOutput) Record(r *call.Record) {
	b, _ := json.Marshal(r)
	o.records.Write(append(b, '\n'))
}

// model replays an AMI capture as the daemon reads it (read-time filter included) and returns
// what the call model emitted and how many frames were read.
func model(tb testing.TB, src []byte, opts callmodel.Options, readFilter bool) (*modelOutput, int) {
	tb.Helper()
	out := &modelOutput{}
	b := callmodel.NewBuilder(opts, out)
	rd := ami.NewReader(bytes.NewReader(src))
	if readFilter {
		rd.SetFilter(ami.SourceFilter(opts.Variables()))
	}
	if _, err := rd.ReadBanner(); err != nil {
		tb.Fatal(err)
	}
	clock, frames := time.Unix(0, 0).UTC(), 0
	for {
		f, err := rd.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		frames++
		if ev, ok := ami.ToEvent(f, "", clock); ok {
			clock = ev.Time
			b.Apply(&ev)
		}
	}
	b.Flush(clock, true)
	return out, frames + int(rd.Discarded())
}

// TestAMIEventFilterKeepsRecords is the acceptance test of the manager.conf event filter
// (ami.EventFilterLines): every transcript replayed as Asterisk would send it with the filter
// in place (fakepbx.EventFilter, Asterisk's rules) gives the same records, byte for byte, and
// the same live events as the whole stream read without any filter, in both filter syntaxes,
// with the default variables and with the lab's.
func TestAMIEventFilterKeepsRecords(t *testing.T) {
	t.Parallel()
	lab := labOptions(t)
	labVars := lab
	labVars.OriginateIDVariables = []string{"PBXBRIDGE_ORIGINATE_ID", "CRM_ORIGINATE_ID"}
	labVars.DIDVariables = []string{"FROM_DID", "LAB_DID"}
	names, data := captures(t)
	for _, opts := range []callmodel.Options{lab, labVars} {
		for _, syntax := range []ami.FilterSyntax{ami.LegacyFilter, ami.AdvancedFilter} {
			lines, err := ami.EventFilterLines(syntax, opts.Variables())
			if err != nil {
				t.Fatal(err)
			}
			flt, err := fakepbx.ParseEventFilter(lines)
			if err != nil {
				t.Fatal(err)
			}
			var before, after, records int
			for i, src := range data {
				want, n := model(t, src, opts, false)
				got, m := model(t, flt.FilterCapture(src), opts, true)
				if want.records.Len() == 0 {
					t.Fatalf("%s: no record: the comparison proves nothing", names[i])
				}
				if !bytes.Equal(got.records.Bytes(), want.records.Bytes()) {
					t.Errorf("%s, %v: records differ with the filter:\n%s\nwant\n%s", names[i], opts.Variables(), got.records.Bytes(), want.records.Bytes())
				}
				if !bytes.Equal(got.live.Bytes(), want.live.Bytes()) {
					t.Errorf("%s, %v: live events differ with the filter:\n%s\nwant\n%s", names[i], opts.Variables(), got.live.Bytes(), want.live.Bytes())
				}
				before, after, records = before+n, after+m, records+bytes.Count(want.records.Bytes(), []byte("\n"))
			}
			if syntax == ami.AdvancedFilter {
				t.Logf("variables %s: %d captures, %d records: %d frames, %d with the filter (%.0f%% fewer)",
					strings.Join(opts.Variables(), ","), len(data), records, before, after, 100*(1-float64(after)/float64(before)))
			}
		}
	}
}

// TestAMIEventFilterNeedsVarSet: the filter is not vacuous: without the VarSet events of the
// variables the model reads, records lose their DID, recording or originate id.
func TestAMIEventFilterNeedsVarSet(t *testing.T) {
	t.Parallel()
	opts := labOptions(t)
	opts.DIDVariables = []string{"LAB_DID"}
	opts.OriginateIDVariables = []string{"CRM_ORIGINATE_ID"}
	lines, err := ami.EventFilterLines(ami.AdvancedFilter, []string{"UNRELATED"})
	if err != nil {
		t.Fatal(err)
	}
	flt, err := fakepbx.ParseEventFilter(lines)
	if err != nil {
		t.Fatal(err)
	}
	_, data := captures(t)
	differ := 0
	for _, src := range data {
		want, _ := model(t, src, opts, false)
		got, _ := model(t, flt.FilterCapture(src), opts, true)
		if !bytes.Equal(got.records.Bytes(), want.records.Bytes()) {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("dropping every VarSet the model reads changed no record: the equivalence test proves nothing")
	}
	if !slices.Contains(ami.NeededEvents(), "VarSet") {
		t.Fatal("VarSet is not a needed event")
	}
}
