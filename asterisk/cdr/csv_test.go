package cdr_test

import (
	"bytes"
	"context"
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
	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
	withcdr "github.com/pbxbridge/pbxbridge/asterisk/transcripts/with-cdr"
)

// masterReader writes the recorded Master.csv to a temporary file and returns a reader with
// the recording's cdr.conf (README of the transcripts: loguniqueid, loguserfield, UTC).
func masterReader(t *testing.T) *cdr.CSVReader {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Master.csv")
	if err := os.WriteFile(path, withcdr.MasterCSV(), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := cdr.NewCSVReader(cdr.CSVConfig{Path: path, LogUniqueID: true, LogUserField: true, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var (
	recStart = time.Date(2026, 12, 6, 19, 0, 0, 0, time.UTC)
	recEnd   = time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
)

func TestMasterCSVRecorded(t *testing.T) {
	t.Parallel()
	r := masterReader(t)
	rows, err := r.Read(context.Background(), recStart, recEnd)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 115 {
		t.Fatalf("%d rows, want the README's 115", len(rows))
	}
	// The first row of the file, field by field.
	want := cdr.Row{
		Src: "+79001234567", Dst: "talk", DContext: "sim-customer", CLID: `"" <+79001234567>`,
		Channel: "Local/+74951112233@from-pstn-00000000;1", LastApp: "Playback", LastData: "queue-thankyou",
		Start:    time.Date(2026, 12, 6, 19, 7, 18, 0, time.UTC),
		Answer:   time.Date(2026, 12, 6, 19, 7, 20, 0, time.UTC),
		End:      time.Date(2026, 12, 6, 19, 7, 23, 0, time.UTC),
		Duration: 5, BillSec: 3, Disposition: cdr.DispositionAnswered, AMAFlags: "DOCUMENTATION",
		UniqueID: "1796584038.0",
	}
	if !rowEqual(rows[0], want) {
		t.Fatalf("row 1:\n got %+v\nwant %+v", rows[0], want)
	}
	// An unanswered row: empty answer column.
	missed := rows[3]
	if !missed.Answer.IsZero() || missed.Disposition != cdr.DispositionNoAnswer || missed.UniqueID != "1796584049.10" {
		t.Fatalf("row 4: %+v", missed)
	}
	if name, num := cdr.ParseCallerID(rows[22].CLID); name != "Ivan Petrov" || num != "101" {
		t.Fatalf("clid %q: %q %q", rows[22].CLID, name, num)
	}
	disp := map[string]int{}
	for _, row := range rows {
		disp[row.Disposition]++
	}
	if len(disp) != 4 || disp["FAILED"] != 1 || disp["BUSY"] != 8 {
		t.Fatalf("dispositions %v", disp)
	}

	// A window keeps exactly the rows starting inside it.
	from, to := time.Date(2026, 12, 6, 19, 8, 0, 0, time.UTC), time.Date(2026, 12, 6, 19, 9, 0, 0, time.UTC)
	part, err := r.Read(context.Background(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, row := range rows {
		if !row.Start.Before(from) && row.Start.Before(to) {
			n++
		}
	}
	if len(part) != n || n == 0 {
		t.Fatalf("window: %d rows, want %d", len(part), n)
	}
}

func TestCSVReaderErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "Master.csv")
	good := `"","101","102","internal","""A"" <101>","PJSIP/101-1","PJSIP/102-2","Dial","PJSIP/102","2026-12-06 19:00:00",,"2026-12-06 19:00:05",5,0,"NO ANSWER","DOCUMENTATION"` + "\n"
	bad := strings.Replace(good, "2026-12-06 19:00:05", "2026-13-06 19:00:05", 1)
	if err := os.WriteFile(path, []byte(good+bad+good), 0o600); err != nil {
		t.Fatal(err)
	}
	var skipped []*cdr.RecordError
	r, err := cdr.NewCSVReader(cdr.CSVConfig{Path: path, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Read(context.Background(), time.Time{}, recEnd)
	var re *cdr.RecordError
	if !errors.As(err, &re) || re.Line != 2 || re.Field != "end" {
		t.Fatalf("err = %v", err)
	}
	if got := err.Error(); got != `cdr: `+path+`: line 2 (byte 164): field end: bad date-time "2026-13-06 19:00:05"` {
		t.Fatalf("message %q", got)
	}

	r, _ = cdr.NewCSVReader(cdr.CSVConfig{Path: path, Location: time.UTC,
		OnBadRecord: func(e *cdr.RecordError) { skipped = append(skipped, e) }})
	rows, err := r.Read(context.Background(), time.Time{}, recEnd)
	if err != nil || len(rows) != 2 || len(skipped) != 1 {
		t.Fatalf("rows %d, skipped %v, err %v", len(rows), skipped, err)
	}

	// The wrong layout names what was expected.
	r, _ = cdr.NewCSVReader(cdr.CSVConfig{Path: path, Location: time.UTC, LogUniqueID: true})
	if _, err := r.Read(context.Background(), time.Time{}, recEnd); err == nil ||
		!strings.Contains(err.Error(), "line 1 (byte 0): 16 fields, want 17 (loguniqueid=yes, loguserfield=no, newcdrcolumns=no)") {
		t.Fatalf("err = %v", err)
	}

	// A row limit.
	r, _ = cdr.NewCSVReader(cdr.CSVConfig{Path: path, Location: time.UTC, MaxRows: 1,
		OnBadRecord: func(*cdr.RecordError) {}})
	if _, err := r.Read(context.Background(), time.Time{}, recEnd); !errors.Is(err, cdr.ErrTooManyRows) {
		t.Fatalf("err = %v", err)
	}

	// A missing file, an empty window.
	r, _ = cdr.NewCSVReader(cdr.CSVConfig{Path: filepath.Join(dir, "none.csv")})
	if _, err := r.Read(context.Background(), time.Time{}, recEnd); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
	if _, err := r.Read(context.Background(), recEnd, recEnd); err == nil {
		t.Fatal("empty window accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, _ = cdr.NewCSVReader(cdr.CSVConfig{Path: path})
	if _, err := r.Read(ctx, time.Time{}, recEnd); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestGroupMatchesAMILinkedids is the golden test of Group on a layout without linkedid: every
// group of the recorded Master.csv is exactly one call of the AMI streams (all its rows'
// uniqueids have one Linkedid there, and no other row has it), its ID is that Linkedid, and
// every call of the scenarios' .meta.json is a group.
func TestGroupMatchesAMILinkedids(t *testing.T) {
	t.Parallel()
	linked := amiLinkedids(t)
	rows, err := masterReader(t).Read(context.Background(), recStart, recEnd)
	if err != nil {
		t.Fatal(err)
	}
	calls := cdr.Group(rows)
	seen := map[string]bool{}
	total := 0
	for _, c := range calls {
		total += len(c.Rows)
		var ids []string
		for _, row := range c.Rows {
			lid, ok := linked[row.UniqueID]
			if !ok {
				t.Fatalf("uniqueid %s is in no AMI stream", row.UniqueID)
			}
			if !slices.Contains(ids, lid) {
				ids = append(ids, lid)
			}
		}
		if len(ids) != 1 {
			t.Errorf("group %s mixes calls %v", c.ID, ids)
			continue
		}
		if c.ID != ids[0] {
			t.Errorf("group ID %s, AMI Linkedid %s", c.ID, ids[0])
		}
		if seen[ids[0]] {
			t.Errorf("call %s is split over several groups", ids[0])
		}
		seen[ids[0]] = true
	}
	if total != len(rows) {
		t.Fatalf("groups hold %d rows, want %d", total, len(rows))
	}
	var metaCalls []string
	for _, s := range withcdr.Scenarios() {
		b, err := withcdr.Meta(s)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Calls []struct {
				Linkedid string `json:"linkedid"`
			} `json:"calls"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		for _, c := range m.Calls {
			metaCalls = append(metaCalls, c.Linkedid)
			if !seen[c.Linkedid] {
				t.Errorf("%s: call %s has no group", s, c.Linkedid)
			}
		}
	}
	if len(calls) != len(metaCalls) {
		t.Errorf("%d groups, the scenarios had %d calls", len(calls), len(metaCalls))
	}

	// With a linkedid column the same rows group by it, whatever their channels say.
	for i := range rows {
		rows[i].LinkedID = linked[rows[i].UniqueID]
		rows[i].Channel, rows[i].DstChannel = "", ""
	}
	byLinked := cdr.Group(rows)
	if len(byLinked) != len(calls) {
		t.Fatalf("by linkedid: %d groups, want %d", len(byLinked), len(calls))
	}
	for i := range byLinked {
		if byLinked[i].ID != calls[i].ID || len(byLinked[i].Rows) != len(calls[i].Rows) {
			t.Fatalf("by linkedid, group %d: %s (%d rows), want %s (%d rows)", i,
				byLinked[i].ID, len(byLinked[i].Rows), calls[i].ID, len(calls[i].Rows))
		}
	}
}

// amiLinkedids maps every Uniqueid of the recorded AMI streams to its Linkedid.
func amiLinkedids(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range withcdr.Scenarios() {
		b, err := withcdr.AMI(s)
		if err != nil {
			t.Fatal(err)
		}
		r := ami.NewReader(bytes.NewReader(b))
		if _, err := r.ReadBanner(); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		for {
			f, err := r.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", s, err)
			}
			u, l := f.Get("Uniqueid"), f.Get("Linkedid")
			if u == "" || l == "" {
				continue
			}
			if prev, ok := out[u]; ok && prev != l {
				t.Fatalf("%s: uniqueid %s changed linkedid %s -> %s", s, u, prev, l)
			}
			out[u] = l
		}
	}
	return out
}

func rowEqual(a, b cdr.Row) bool {
	if !a.Start.Equal(b.Start) || !a.End.Equal(b.End) || !a.Answer.Equal(b.Answer) {
		return false
	}
	a.Start, a.End, a.Answer = time.Time{}, time.Time{}, time.Time{}
	b.Start, b.End, b.Answer = time.Time{}, time.Time{}, time.Time{}
	return a == b
}

// TestReadCallsWindowEdges: the blind transfer call starts at 19:08:41 and is transferred to
// 102 at 19:08:45. A window from 19:08:44 must not see the transfer's rows as a call of its own
// (the margin reads the call's first rows, which start before the window), and a window ending
// at 19:08:44 gets the whole call, transfer included.
func TestReadCallsWindowEdges(t *testing.T) {
	t.Parallel()
	r := masterReader(t)
	cut := time.Date(2026, 12, 6, 19, 8, 44, 0, time.UTC)
	ctx := context.Background()

	rows, err := r.Read(ctx, cut, recEnd)
	if err != nil {
		t.Fatal(err)
	}
	if naive := cdr.Group(rows); naive[0].ID != "1796584121.74" {
		t.Fatalf("without a margin the first group is %s; the test no longer shows the problem", naive[0].ID)
	}
	after, err := cdr.ReadCalls(ctx, r, cut, recEnd, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	before, err := cdr.ReadCalls(ctx, r, recStart, cut, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	all, err := cdr.ReadCalls(ctx, r, recStart, recEnd, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(before)+len(after) != len(all) {
		t.Fatalf("%d + %d calls on the two sides, %d in all", len(before), len(after), len(all))
	}
	last := before[len(before)-1]
	if last.ID != "1796584121.73" || len(last.Rows) != 5 {
		t.Fatalf("last call before the cut: %s with %d rows", last.ID, len(last.Rows))
	}
	if after[0].ID == "1796584121.73" || after[0].ID == "1796584121.74" {
		t.Fatalf("the transfer's rows came out as a call after the cut: %s", after[0].ID)
	}
}
