package replay

import (
	"bytes"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
)

// TestAMIFilterKeepsRecords replays every transcript through the daemon's read-time filter
// (CEL and unused events discarded, VarSets of unused variables trimmed) and without it, with
// the default variables and with the lab's: the records must be byte-identical.
func TestAMIFilterKeepsRecords(t *testing.T) {
	lab := labOptions(t)
	labVars := lab
	labVars.OriginateIDVariables = []string{"PBXBRIDGE_ORIGINATE_ID", "CRM_ORIGINATE_ID"}
	labVars.DIDVariables = []string{"FROM_DID", "LAB_DID"}
	var discarded, frames int
	for _, opts := range []callmodel.Options{lab, labVars} {
		for _, name := range transcripts.Scenarios() {
			src, err := transcripts.AMI(name)
			if err != nil {
				t.Fatal(err)
			}
			var raw, filtered bytes.Buffer
			rawSt, err := amiStats(bytes.NewReader(src), opts, &raw, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := AMIStats(bytes.NewReader(src), opts, &filtered)
			if err != nil {
				t.Fatal(err)
			}
			if rawSt.Records == 0 || !bytes.Equal(raw.Bytes(), filtered.Bytes()) {
				t.Errorf("%s: %d records unfiltered, filtered differ:\n%s\n%s", name, rawSt.Records, raw.Bytes(), filtered.Bytes())
			}
			if st.Frames+st.Discarded != rawSt.Frames {
				t.Errorf("%s: %d frames + %d discarded, want %d", name, st.Frames, st.Discarded, rawSt.Frames)
			}
			discarded += st.Discarded
			frames += rawSt.Frames
		}
	}
	if discarded == 0 {
		t.Fatal("the filter discarded nothing")
	}
	t.Logf("%d of %d frames discarded", discarded, frames)
}
