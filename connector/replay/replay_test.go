package replay

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// TestAMIInputs: a capture without banner, with an over-large frame, without timestamps and cut
// in the middle of a frame still replays, deterministically.
func TestAMIInputs(t *testing.T) {
	src, err := transcripts.AMI("inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	st, err := AMIStats(bytes.NewReader(src), labOptions(t), &want)
	if err != nil || st.Records != 1 || st.Skipped != 0 {
		t.Fatalf("full capture: %+v, %v", st, err)
	}

	noBanner := src[bytes.Index(src, []byte("Response: Success")):]
	huge := "Event: UserEvent\r\nData: " + strings.Repeat("x", 70<<10) + "\r\n\r\n"
	input := append([]byte(huge), noBanner...)
	input = append(input, "Event: Newchannel\r\nChannel: PJSIP/1"...) // cut mid-frame
	var got bytes.Buffer
	st, err = AMIStats(bytes.NewReader(input), labOptions(t), &got)
	if err != nil || st.Skipped != 1 || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("damaged capture: %+v, %v\n%s\nwant\n%s", st, err, got.Bytes(), want.Bytes())
	}

	// Without Timestamp headers every event takes the time of the last one that had one: the
	// Unix epoch here. The call is still found; its times are meaningless but reproducible.
	noTS := stripLines(src, "Timestamp: ")
	var a, b bytes.Buffer
	if err := AMI(bytes.NewReader(noTS), labOptions(t), &a); err != nil {
		t.Fatal(err)
	}
	if err := AMI(bytes.NewReader(noTS), labOptions(t), &b); err != nil {
		t.Fatal(err)
	}
	var r call.Record
	if err := json.Unmarshal(a.Bytes(), &r); err != nil || !bytes.Equal(a.Bytes(), b.Bytes()) ||
		r.AnsweredBy != "101" || r.StartedAt.Unix() != 0 {
		t.Fatalf("replay without timestamps: %s (%v)", a.Bytes(), err)
	}
}

func stripLines(src []byte, prefix string) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(src, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(prefix)) {
			out = append(out, line...)
		}
	}
	return out
}

// TestARIInputs: undecodable lines are skipped and counted, the rest replays.
func TestARIInputs(t *testing.T) {
	src, err := transcripts.ARI("inbound_missed")
	if err != nil {
		t.Fatal(err)
	}
	input := append([]byte("not json\n\n{\"type\":\"Dial\"}\n"), src...)
	var out bytes.Buffer
	st, err := ARIStats(bytes.NewReader(input), labOptions(t), &out)
	if err != nil || st.Skipped != 2 || st.Records != 1 {
		t.Fatalf("%+v %v", st, err)
	}
	var r call.Record
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Disposition != call.NoAnswer {
		t.Fatalf("%s %v", out.Bytes(), err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

var errWrite = &writeError{}

type writeError struct{}

func (*writeError) Error() string { return "disk full" }

func TestWriteError(t *testing.T) {
	src, _ := transcripts.AMI("inbound_answered")
	err := AMI(bytes.NewReader(src), labOptions(t), failWriter{})
	if err == nil || !strings.Contains(err.Error(), "replay: writing record: disk full") {
		t.Fatalf("err = %v", err)
	}
}
