package cdr_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
)

// freepbxCDR is FreePBX's asteriskcdrdb.cdr as current FreePBX installs create it.
const freepbxCDR = "CREATE TABLE `cdr` (" +
	"`calldate` datetime NOT NULL DEFAULT '0000-00-00 00:00:00', `clid` varchar(80) NOT NULL DEFAULT ''," +
	"`src` varchar(80) NOT NULL DEFAULT '', `dst` varchar(80) NOT NULL DEFAULT ''," +
	"`dcontext` varchar(80) NOT NULL DEFAULT '', `channel` varchar(80) NOT NULL DEFAULT ''," +
	"`dstchannel` varchar(80) NOT NULL DEFAULT '', `lastapp` varchar(80) NOT NULL DEFAULT ''," +
	"`lastdata` varchar(80) NOT NULL DEFAULT '', `duration` int(11) NOT NULL DEFAULT 0," +
	"`billsec` int(11) NOT NULL DEFAULT 0, `disposition` varchar(45) NOT NULL DEFAULT ''," +
	"`amaflags` int(11) NOT NULL DEFAULT 0, `accountcode` varchar(20) NOT NULL DEFAULT ''," +
	"`uniqueid` varchar(32) NOT NULL DEFAULT '', `userfield` varchar(255) NOT NULL DEFAULT ''," +
	"`did` varchar(50) NOT NULL DEFAULT '', `recordingfile` varchar(255) NOT NULL DEFAULT ''," +
	"`cnum` varchar(80) NOT NULL DEFAULT '', `cnam` varchar(80) NOT NULL DEFAULT ''," +
	"`outbound_cnum` varchar(80) NOT NULL DEFAULT '', `outbound_cnam` varchar(80) NOT NULL DEFAULT ''," +
	"`dst_cnam` varchar(80) NOT NULL DEFAULT '', `linkedid` varchar(32) NOT NULL DEFAULT ''," +
	"`peeraccount` varchar(80) NOT NULL DEFAULT '', `sequence` int(11) NOT NULL DEFAULT 0," +
	"KEY `calldate` (`calldate`), KEY `dst` (`dst`), KEY `accountcode` (`accountcode`)," +
	"KEY `uniqueid` (`uniqueid`), KEY `did` (`did`), KEY `recordingfile` (`recordingfile`(191))" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"

// msk is the PBX's zone in these tests: calldate is stored in it, windows are given in UTC.
var msk = time.FixedZone("MSK", 3*3600)

// insert stores rows in table, with the columns named by cols taken by get.
func insert(t *testing.T, dsn, table string, cols []string, rows []cdr.Row, get func(*cdr.Row, string) any) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := "INSERT INTO " + table + " (`" + strings.Join(cols, "`, `") + "`) VALUES (?" +
		strings.Repeat(", ?", len(cols)-1) + ")"
	for i := range rows {
		args := make([]any, len(cols))
		for j, c := range cols {
			args[j] = get(&rows[i], c)
		}
		if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
			t.Fatalf("insert row %d: %v", i, err)
		}
	}
}

func rowValue(r *cdr.Row, col string) any {
	dt := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t.In(msk).Format("2006-01-02 15:04:05")
	}
	switch col {
	case "calldate", "start":
		return dt(r.Start)
	case "answer":
		return dt(r.Answer)
	case "end":
		return dt(r.End)
	case "clid":
		return r.CLID
	case "src":
		return r.Src
	case "dst":
		return r.Dst
	case "dcontext":
		return r.DContext
	case "channel":
		return r.Channel
	case "dstchannel":
		return r.DstChannel
	case "lastapp":
		return r.LastApp
	case "lastdata":
		return r.LastData
	case "duration":
		return r.Duration
	case "billsec":
		return r.BillSec
	case "disposition":
		return r.Disposition
	case "amaflags":
		return 3
	case "accountcode":
		return r.AccountCode
	case "uniqueid":
		return r.UniqueID
	case "userfield":
		return r.UserField
	case "linkedid":
		return r.LinkedID
	case "did":
		return r.DID
	case "recordingfile":
		return r.RecordingFile
	case "sequence":
		return r.Sequence
	}
	return ""
}

// recordedFreePBXRows are the recorded Master.csv rows as FreePBX would have them: with the
// linkedid of the AMI stream, the DID on inbound trunk legs and a recording on a few.
func recordedFreePBXRows(t *testing.T) []cdr.Row {
	t.Helper()
	rows, err := masterReader(t).Read(context.Background(), recStart, recEnd)
	if err != nil {
		t.Fatal(err)
	}
	linked := amiLinkedids(t)
	for i := range rows {
		r := &rows[i]
		r.LinkedID = linked[r.UniqueID]
		r.Sequence = i
		if strings.Contains(r.Channel, "@from-pstn-") && strings.HasSuffix(r.Channel, ";2") {
			r.DID = strings.TrimPrefix(r.Channel[:strings.IndexByte(r.Channel, '@')], "Local/")
			if r.Answered() {
				r.RecordingFile = "in-" + r.DID + "-" + r.Src + "-" + r.UniqueID + ".wav"
			}
		}
	}
	return rows
}

func TestMySQLFreePBX(t *testing.T) {
	t.Parallel()
	dsn := newCDRDatabase(t, freepbxCDR)
	want := recordedFreePBXRows(t)
	insert(t, dsn, "cdr", []string{"calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel",
		"lastapp", "lastdata", "duration", "billsec", "disposition", "amaflags", "accountcode", "uniqueid",
		"userfield", "did", "recordingfile", "linkedid", "sequence"}, want, rowValue)

	r, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Location: msk})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := r.Read(context.Background(), recStart, recEnd)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	bySeq := map[int]cdr.Row{}
	for _, row := range got {
		bySeq[row.Sequence] = row
	}
	for i, w := range want {
		g, ok := bySeq[i]
		if !ok {
			t.Fatalf("row %d missing", i)
		}
		if g.AMAFlags != "DOCUMENTATION" {
			t.Fatalf("row %d: amaflags %q", i, g.AMAFlags)
		}
		// FreePBX has no answer/end columns: computed from duration and billsec, which
		// Asterisk rounds on its own, so within a second of the real ones.
		if d := g.End.Sub(w.End); d < -time.Second || d > time.Second || w.Answer.IsZero() != g.Answer.IsZero() ||
			(!w.Answer.IsZero() && (g.Answer.Sub(w.Answer) < -time.Second || g.Answer.Sub(w.Answer) > time.Second)) {
			t.Fatalf("row %d: answer %s end %s, want %s %s", i, g.Answer, g.End, w.Answer, w.End)
		}
		g.AMAFlags, g.Answer, g.End = w.AMAFlags, w.Answer, w.End
		if !rowEqual(g, w) {
			t.Fatalf("row %d:\n got %+v\nwant %+v", i, g, w)
		}
	}

	// By linkedid, the same calls as the channel chains of the plain Master.csv.
	plain := cdr.Group(stripLinked(want))
	byLinked := cdr.Group(got)
	if len(byLinked) != len(plain) {
		t.Fatalf("%d calls by linkedid, %d by chains", len(byLinked), len(plain))
	}
	for i := range plain {
		if byLinked[i].ID != plain[i].ID || len(byLinked[i].Rows) != len(plain[i].Rows) {
			t.Fatalf("call %d: %s/%d by linkedid, %s/%d by chains", i, byLinked[i].ID, len(byLinked[i].Rows),
				plain[i].ID, len(plain[i].Rows))
		}
	}

	// A window, in another zone than the table's, keeps the rows starting in it.
	from, to := time.Date(2026, 12, 6, 19, 8, 0, 0, time.UTC), time.Date(2026, 12, 6, 19, 9, 0, 0, time.UTC)
	part, err := r.Read(context.Background(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, w := range want {
		if !w.Start.Before(from) && w.Start.Before(to) {
			n++
		}
	}
	if len(part) != n || n == 0 {
		t.Fatalf("window: %d rows, want %d", len(part), n)
	}
	for _, row := range part {
		if row.Start.Before(from) || !row.Start.Before(to) {
			t.Fatalf("row outside the window: %s", row.Start)
		}
	}

	// The row limit.
	small, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Location: msk, MaxRows: n - 1})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if _, err := small.Read(context.Background(), from, to); !errors.Is(err, cdr.ErrTooManyRows) {
		t.Fatalf("err = %v", err)
	}
}

func stripLinked(rows []cdr.Row) []cdr.Row {
	out := make([]cdr.Row, len(rows))
	for i, r := range rows {
		r.LinkedID = ""
		out[i] = r
	}
	return out
}

// TestMySQLOtherSchemas: an old FreePBX/Issabel table (no linkedid, peeraccount, sequence;
// textual amaflags) named with its schema, and a cdr_adaptive_odbc table with start, answer and
// end columns instead of calldate.
func TestMySQLOtherSchemas(t *testing.T) {
	t.Parallel()
	dsn := newCDRDatabase(t,
		"CREATE TABLE old_cdr (calldate datetime NOT NULL, clid varchar(80) NOT NULL DEFAULT '', "+
			"src varchar(80) NOT NULL DEFAULT '', dst varchar(80) NOT NULL DEFAULT '', channel varchar(80) NOT NULL DEFAULT '', "+
			"dstchannel varchar(80) NOT NULL DEFAULT '', duration float unsigned, billsec float unsigned, "+
			"disposition varchar(45) NOT NULL DEFAULT '', amaflags varchar(50), uniqueid varchar(32) NOT NULL DEFAULT '', "+
			"recordingfile varchar(255) NOT NULL DEFAULT '', addtime timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP)",
		"CREATE TABLE odbc_cdr (id int auto_increment primary key, `start` datetime(6), answer datetime(6) NULL, "+
			"`end` datetime(6), channel varchar(80), dstchannel varchar(80), duration int, billsec int, "+
			"disposition varchar(45), uniqueid varchar(150), linkedid varchar(150), extra_column int)")
	want := recordedFreePBXRows(t)[:12]
	insert(t, dsn, "old_cdr", []string{"calldate", "clid", "src", "dst", "channel", "dstchannel", "duration",
		"billsec", "disposition", "amaflags", "uniqueid", "recordingfile"}, want,
		func(r *cdr.Row, c string) any {
			if c == "amaflags" {
				return "DOCUMENTATION"
			}
			return rowValue(r, c)
		})
	insert(t, dsn, "odbc_cdr", []string{"start", "answer", "end", "channel", "dstchannel", "duration", "billsec",
		"disposition", "uniqueid", "linkedid"}, want, rowValue)
	schema := dsn[strings.LastIndexByte(dsn, '/')+1:]

	for _, table := range []string{schema + ".old_cdr", "odbc_cdr"} {
		r, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Table: table, Location: msk})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := r.Read(context.Background(), time.Time{}, recEnd)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d rows, want %d", table, len(got), len(want))
		}
		byUID := map[string]cdr.Row{}
		for _, g := range got {
			byUID[g.UniqueID+"/"+g.DstChannel] = g
		}
		for i, w := range want {
			g := byUID[w.UniqueID+"/"+w.DstChannel]
			if !g.Start.Equal(w.Start) || g.Channel != w.Channel || g.Disposition != w.Disposition || g.Duration != w.Duration {
				t.Fatalf("%s row %d:\n got %+v\nwant %+v", table, i, g, w)
			}
			switch table {
			case "odbc_cdr": // real answer and end columns, and a linkedid
				if !g.End.Equal(w.End) || !g.Answer.Equal(w.Answer) || g.LinkedID != w.LinkedID || g.CLID != "" {
					t.Fatalf("%s row %d:\n got %+v\nwant %+v", table, i, g, w)
				}
			default:
				if g.AMAFlags != "DOCUMENTATION" || g.RecordingFile != w.RecordingFile || g.CLID != w.CLID || g.LinkedID != "" {
					t.Fatalf("%s row %d:\n got %+v\nwant %+v", table, i, g, w)
				}
			}
		}
	}
}

func TestMySQLErrors(t *testing.T) {
	t.Parallel()
	dsn := newCDRDatabase(t, freepbxCDR,
		"INSERT INTO cdr (calldate, channel, uniqueid, disposition, duration) VALUES "+
			"('2026-12-06 22:07:18', 'PJSIP/a-1', '1.1', 'ANSWERED', 0), "+
			"('0000-00-00 00:00:00', 'PJSIP/a-2', '1.2', 'ANSWERED', 1), "+
			"('2026-12-06 22:07:19', 'PJSIP/a-3', '1.3', 'NO ANSWER', 2)",
		"CREATE VIEW slow AS SELECT * FROM cdr WHERE SLEEP(1) = 0",
		"CREATE TABLE nocdr (a int)")

	if _, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Table: "a-b"}); err == nil {
		t.Fatal("table name with a dash accepted")
	}
	if _, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: "not a dsn"}); err == nil {
		t.Fatal("bad DSN accepted")
	}
	for table, want := range map[string]string{
		"missing": "table " + dsn[strings.LastIndexByte(dsn, '/')+1:] + ".missing not found",
		"nocdr":   "not found (or no CDR columns",
	} {
		r, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Table: table})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", table, err)
		}
		r.Close()
	}

	var bad []*cdr.RecordError
	r, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Location: msk,
		OnBadRecord: func(e *cdr.RecordError) { bad = append(bad, e) }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The zero calldate sorts first and is reported; the others are read.
	rows, err := r.Read(context.Background(), time.Time{}, recEnd)
	if err != nil || len(rows) != 2 || len(bad) != 1 || bad[0].Field != "calldate" || bad[0].Line != 1 {
		t.Fatalf("rows %d, bad %v, err %v", len(rows), bad, err)
	}

	// The statement timeout stops a slow query on the server.
	slow, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Table: "slow", QueryTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_, err = slow.Read(context.Background(), time.Time{}, recEnd)
	if err == nil || !strings.Contains(err.Error(), "max_statement_time") {
		t.Fatalf("err = %v", err)
	}
}
