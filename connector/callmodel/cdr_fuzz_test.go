package callmodel_test

import (
	"bytes"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// fuzzRows turns the fuzz input into CDR rows: one row per line, fields separated by "|":
// channel, dstchannel, disposition, start, answer, end (seconds after a fixed time; answer may
// be empty), clid, lastapp, lastdata, dst, dcontext, uniqueid, linkedid, did, recordingfile.
// Missing fields are empty; bad numbers are 0.
func fuzzRows(data []byte) []cdr.Row {
	base := time.Date(2026, 12, 6, 19, 0, 0, 0, time.UTC)
	sec := func(s []byte) time.Time {
		n, _ := strconv.Atoi(string(s))
		return base.Add(time.Duration(n%100000) * time.Second)
	}
	var rows []cdr.Row
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := bytes.Split(line, []byte("|"))
		for len(f) < 15 {
			f = append(f, nil)
		}
		r := cdr.Row{Channel: string(f[0]), DstChannel: string(f[1]), Disposition: string(f[2]),
			Start: sec(f[3]), End: sec(f[5]), CLID: string(f[6]), LastApp: string(f[7]), LastData: string(f[8]),
			Dst: string(f[9]), DContext: string(f[10]), UniqueID: string(f[11]), LinkedID: string(f[12]),
			DID: string(f[13]), RecordingFile: string(f[14])}
		if len(f[4]) > 0 {
			r.Answer = sec(f[4])
		}
		rows = append(rows, r)
	}
	return rows
}

// FuzzFromCDR: whatever rows a CDR holds, FromCDR neither panics nor makes a record that breaks
// the record's own rules.
func FuzzFromCDR(f *testing.F) {
	f.Add([]byte("PJSIP/provider-00000001|PJSIP/101-00000002|ANSWERED|0|4|20|\"\" <+79001234567>|Dial|PJSIP/101,30|74951112233|from-pstn|1.1|||in.wav"))
	opts := loadOptions(f, "testdata/lab.yaml")
	defaults := callmodel.DefaultOptions()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range cdr.Group(fuzzRows(data)) {
			for _, o := range []*callmodel.Options{&opts, &defaults} {
				r := callmodel.FromCDR(o, &c, callmodel.CDROptions{PBX: "p", RecordingDir: "/rec"})
				if r == nil {
					continue
				}
				if r.CallID != c.ID || r.PBX != "p" || !r.HasFlag(call.FlagRecoveredFromCDR) {
					t.Fatalf("record %+v of call %s", r, c.ID)
				}
				if r.EndedAt.Before(r.StartedAt) || r.RingSeconds < 0 || r.TalkSeconds < 0 {
					t.Fatalf("times: %+v", r)
				}
				if (r.AnsweredAt != nil) != (r.Disposition == call.Answered) {
					t.Fatalf("answered_at %v with disposition %s", r.AnsweredAt, r.Disposition)
				}
				for _, l := range r.Legs {
					if l.AnsweredAt.Before(r.StartedAt) || l.EndedAt.After(r.EndedAt) || l.EndedAt.Before(*l.AnsweredAt) {
						t.Fatalf("leg %s %s-%s outside the call %s-%s", l.Ext, l.AnsweredAt, l.EndedAt, r.StartedAt, r.EndedAt)
					}
				}
				if len(r.Legs) > 0 && (r.AnsweredBy != r.Legs[0].Ext || !slices.Contains(r.Flags, call.FlagRecoveredFromCDR)) {
					t.Fatalf("answered_by %q, legs %+v", r.AnsweredBy, r.Legs)
				}
			}
		}
	})
}
