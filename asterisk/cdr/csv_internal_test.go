package cdr

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// appendRecord writes row as Asterisk's cdr_csv does (build_csv_record): every string quoted
// with embedded quotes doubled, an empty date as nothing, integers bare, a "\n" line end.
func appendRecord(dst []byte, r *CSVReader, row *Row) []byte {
	str := func(s string) {
		dst = append(dst, '"')
		dst = append(dst, strings.ReplaceAll(s, `"`, `""`)...)
		dst = append(dst, '"', ',')
	}
	date := func(t time.Time) {
		if t.IsZero() {
			dst = append(dst, ',')
			return
		}
		str(t.In(r.loc).Format("2006-01-02 15:04:05"))
	}
	num := func(n int) {
		dst = strconv.AppendInt(dst, int64(n), 10)
		dst = append(dst, ',')
	}
	for _, s := range []string{row.AccountCode, row.Src, row.Dst, row.DContext, row.CLID, row.Channel,
		row.DstChannel, row.LastApp, row.LastData} {
		str(s)
	}
	date(row.Start)
	date(row.Answer)
	date(row.End)
	num(row.Duration)
	num(row.BillSec)
	str(row.Disposition)
	str(row.AMAFlags)
	if r.cfg.LogUniqueID {
		str(row.UniqueID)
	}
	if r.cfg.LogUserField {
		str(row.UserField)
	}
	if r.cfg.NewCDRColumns {
		str(row.PeerAccount)
		str(row.LinkedID)
		num(row.Sequence)
	}
	dst[len(dst)-1] = '\n'
	return dst
}

func mustReader(tb testing.TB, cfg CSVConfig) *CSVReader {
	tb.Helper()
	if cfg.Path == "" {
		cfg.Path = "Master.csv"
	}
	r, err := NewCSVReader(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// synthRows makes n records of calls as Asterisk writes them: calls start every ~gap, last up
// to maxLen, and the rows of a call are appended (in random order among themselves) when the
// call ends, so the file is ordered by write time, not by start or end.
func synthRows(rng *rand.Rand, n int, t0 time.Time, gap, maxLen time.Duration) []Row {
	type pending struct {
		written time.Time
		rows    []Row
	}
	var calls []pending
	start := t0
	for i := 0; len(calls)*3 < n; i++ {
		start = start.Add(time.Duration(rng.Int64N(int64(gap)*2)) + time.Second).Truncate(time.Second)
		callLen := time.Duration(rng.Int64N(int64(maxLen)))
		callLen -= callLen % time.Second
		id := strconv.FormatInt(start.Unix(), 10) + "." + strconv.Itoa(i*4)
		var p pending
		for leg := range 3 {
			s := start.Add(time.Duration(leg) * time.Second)
			e := start.Add(callLen)
			if leg == 2 && callLen > 4*time.Second { // a leg that ended early, written late
				e = s.Add(time.Second)
			}
			if e.Before(s) {
				e = s
			}
			row := Row{
				Src: "+7900" + strconv.Itoa(1000000+i), Dst: "101", DContext: "from-pstn",
				CLID:    `"Caller ` + strconv.Itoa(i) + `" <+7900>`,
				Channel: "PJSIP/trunk-" + strconv.Itoa(i), DstChannel: "PJSIP/101-" + strconv.Itoa(i),
				LastApp: "Dial", LastData: "PJSIP/101,30,tT", Start: s, End: e,
				Duration: int(e.Sub(s) / time.Second), Disposition: DispositionNoAnswer,
				AMAFlags: "DOCUMENTATION", UniqueID: id + strconv.Itoa(leg), LinkedID: id,
				Sequence: i*3 + leg,
			}
			if leg == 0 && callLen > 2*time.Second {
				row.Answer = s.Add(2 * time.Second)
				row.BillSec = int(e.Sub(row.Answer) / time.Second)
				row.Disposition = DispositionAnswered
			}
			p.rows = append(p.rows, row)
			p.written = maxTime(p.written, e)
		}
		rng.Shuffle(len(p.rows), func(a, b int) { p.rows[a], p.rows[b] = p.rows[b], p.rows[a] })
		calls = append(calls, p)
	}
	slices.SortStableFunc(calls, func(a, b pending) int { return a.written.Compare(b.written) })
	var out []Row
	for _, c := range calls {
		out = append(out, c.rows...)
	}
	return out[:n]
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func writeRows(r *CSVReader, rows []Row) []byte {
	var b []byte
	for i := range rows {
		b = appendRecord(b, r, &rows[i])
	}
	return b
}

func sortRows(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(a.UniqueID, b.UniqueID) })
}

// TestSeekMatchesFullScan: over files of calls written in hang-up order, a windowed read (which
// bisects to the window and stops after it) returns exactly the rows a scan of the whole file
// keeps, for windows anywhere in the file.
func TestSeekMatchesFullScan(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("MSK", 3*3600)
	r := mustReader(t, CSVConfig{LogUniqueID: true, LogUserField: true, NewCDRColumns: true,
		Location: loc, MaxCallAge: 2 * time.Hour})
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, loc)
	rows := synthRows(rng, 30000, t0, 20*time.Second, 90*time.Minute)
	data := writeRows(r, rows)
	last := rows[len(rows)-1].End
	for i := range 60 {
		from := t0.Add(time.Duration(rng.Int64N(int64(last.Sub(t0)))))
		to := from.Add(time.Duration(rng.Int64N(int64(3 * time.Hour))))
		if i%10 == 0 {
			to = from.Add(time.Second)
		}
		var want []Row
		for _, row := range rows {
			if !row.Start.Before(from) && row.Start.Before(to) {
				want = append(want, row)
			}
		}
		got, err := r.read(context.Background(), bytes.NewReader(data), int64(len(data)), from, to)
		if err != nil {
			t.Fatal(err)
		}
		sortRows(want)
		sortRows(got)
		if len(got) != len(want) {
			t.Fatalf("window %d [%s, %s): %d rows, want %d", i, from, to, len(got), len(want))
		}
		for j := range got {
			if !rowsEqual(got[j], want[j]) {
				t.Fatalf("window %d row %d:\n got %+v\nwant %+v", i, j, got[j], want[j])
			}
		}
	}
}

// TestSeekSkipsMostOfTheFile: the seek lands within one seek block plus MaxCallAge of records
// before the window, so reading a recent window of a big file touches a small part of it.
func TestSeekSkipsMostOfTheFile(t *testing.T) {
	t.Parallel()
	r := mustReader(t, CSVConfig{LogUniqueID: true, Location: time.UTC, MaxCallAge: time.Hour})
	rng := rand.New(rand.NewPCG(3, 4))
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	rows := synthRows(rng, 60000, t0, 10*time.Second, 30*time.Minute)
	data := writeRows(r, rows)
	from := rows[len(rows)-100].Start
	counter := &countingReaderAt{r: bytes.NewReader(data)}
	if _, err := r.read(context.Background(), counter, int64(len(data)), from, from.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if counter.n > int64(len(data))/10 {
		t.Fatalf("read %d of %d bytes for a window at the end of the file", counter.n, len(data))
	}
}

type countingReaderAt struct {
	r interface {
		ReadAt([]byte, int64) (int, error)
	}
	n int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

// rowsEqual compares rows with time.Time.Equal for the times and == for the rest.
func rowsEqual(a, b Row) bool {
	if !a.Start.Equal(b.Start) || !a.End.Equal(b.End) || !a.Answer.Equal(b.Answer) {
		return false
	}
	a.Start, a.End, a.Answer = time.Time{}, time.Time{}, time.Time{}
	b.Start, b.End, b.Answer = time.Time{}, time.Time{}, time.Time{}
	return a == b
}

// TestScannerLimits: an over-long record, an unterminated tail and a quoted newline.
func TestScannerLimits(t *testing.T) {
	t.Parallel()
	r := mustReader(t, CSVConfig{LogUniqueID: true, Location: time.UTC})
	ok := Row{Src: "1", Channel: "PJSIP/a-1", Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		End: time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC), Duration: 5, Disposition: "NO ANSWER", UniqueID: "1.1"}
	multi := ok
	multi.UniqueID, multi.LastData = "1.2", "two\nlines, \"quoted\""
	var data []byte
	data = appendRecord(data, r, &ok)
	data = append(data, `"`+strings.Repeat("x", MaxRecordSize)+"\"\n"...)
	data = appendRecord(data, r, &multi)
	data = append(data, `"","partial`...)
	var bad []*RecordError
	r.cfg.OnBadRecord = func(e *RecordError) { bad = append(bad, e) }
	rows, err := r.read(context.Background(), bytes.NewReader(data), int64(len(data)), time.Time{}, ok.End.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].UniqueID != "1.1" || !rowsEqual(rows[1], multi) {
		t.Fatalf("rows = %+v", rows)
	}
	if len(bad) != 1 || bad[0].Line != 2 || !strings.Contains(bad[0].Error(), "longer than") {
		t.Fatalf("bad records = %v", bad)
	}

	r.cfg.OnBadRecord = nil
	_, err = r.read(context.Background(), bytes.NewReader(data), int64(len(data)), time.Time{}, ok.End.Add(time.Hour))
	var re *RecordError
	if !errors.As(err, &re) || re.Line != 2 || re.Offset != int64(bytes.IndexByte(data, '\n')+1) {
		t.Fatalf("err = %v", err)
	}
}
