package cdr

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// FuzzReadCSV feeds arbitrary bytes to the Master.csv reader as the file's content. It must
// never panic, report every bad record as a *RecordError within MaxRecordSize of progress, and
// every row it returns must survive Asterisk's own encoding (build_csv_record) and a second
// read unchanged. The seed corpus (testdata/fuzz/FuzzReadCSV) holds rows of the recorded
// Master.csv and quoting, line and size edge cases.
func FuzzReadCSV(f *testing.F) {
	f.Add([]byte(`"","+79001234567","talk","sim-customer",""""" <+79001234567>","Local/+74951112233@from-pstn-00000000;1","","Playback","queue-thankyou","2026-12-06 19:07:18","2026-12-06 19:07:20","2026-12-06 19:07:23",5,3,"ANSWERED","DOCUMENTATION","1796584038.0",""` + "\n"))
	f.Add([]byte(`"a","b"` + "\n\n" + `"x""y` + "\n" + `z"` + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, cfg := range []CSVConfig{
			{LogUniqueID: true, LogUserField: true, Location: time.UTC},
			{NewCDRColumns: true, UseGMTime: true},
		} {
			r := mustReader(t, cfg)
			r.cfg.OnBadRecord = func(e *RecordError) {
				if e.Err == nil || e.Offset < 0 || e.Offset > int64(len(data)) {
					t.Fatalf("bad record error %#v", e)
				}
			}
			rows, err := r.read(context.Background(), bytes.NewReader(data), int64(len(data)), time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
			if err != nil && !errors.Is(err, ErrTooManyRows) {
				t.Fatalf("read: %v", err)
			}
			if len(rows) == 0 {
				continue
			}
			var again []byte
			for i := range rows {
				again = appendRecord(again, r, &rows[i])
			}
			r.cfg.OnBadRecord = nil
			back, err := r.read(context.Background(), bytes.NewReader(again), int64(len(again)), time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
			if err != nil {
				t.Fatalf("re-read of %q: %v", again, err)
			}
			if len(back) != len(rows) {
				t.Fatalf("re-read %d rows, want %d", len(back), len(rows))
			}
			for i := range rows {
				if !rowsEqual(rows[i], back[i]) {
					t.Fatalf("row %d changed:\n%+v\n%+v", i, rows[i], back[i])
				}
			}
		}
	})
}
