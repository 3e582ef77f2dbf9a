package fakepbx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql" // the FreePBX-style CDR table (CDRConfig.MySQLDSN)
)

// CDRConfig makes the simulated PBX write the Call Detail Records of the calls it replays, as
// Asterisk writes them whether or not anybody listens on AMI. Every transcript was recorded with
// cdr_manager on, and a Cdr event is exactly the row cdr_csv writes to Master.csv (the with-cdr
// recordings hold both; the tests compare them): so a replay writes one row per Cdr event of its
// transcript, when it reaches that event (the end of the call's channels), with the replay's
// fresh uniqueids and channel names and its shifted times. Rows are written even while no client
// is connected, and for Cdr events that Config.ExcludeEvents keeps from the clients.
type CDRConfig struct {
	// CSVPath is the Master.csv rows are appended to (created when missing), in cdr_csv's
	// layout with loguniqueid=yes and loguserfield=yes: 18 columns, times in Location.
	CSVPath string
	// Location of the CSV times (cdr.conf usegmtime=no with the PBX in this zone); default UTC.
	Location *time.Location
	// MySQLDSN, when set, also inserts every row into MySQLTable (default "cdr") of that
	// database, in FreePBX's asteriskcdrdb.cdr schema (FreePBXCDRSchema): calldate in Location,
	// linkedid (the channel's Linkedid when the row was written), sequence (a counter), did
	// (the DID variable the call's channel had: FROM_DID or the lab's LAB_DID) and
	// recordingfile (the Cdr event's RecordingFile).
	MySQLDSN   string
	MySQLTable string
	// Lag delays the writing of each row (cdr.conf batch mode, a slow disk).
	Lag time.Duration
}

// FreePBXCDRSchema creates FreePBX's asteriskcdrdb.cdr table (as current FreePBX installs do)
// under the name cdr.
const FreePBXCDRSchema = "CREATE TABLE `cdr` (" +
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

// cdrFields are the Cdr event headers of cdr_csv's columns, in file order (the 16 standard
// ones, then uniqueid and userfield).
var cdrFields = [...]string{"AccountCode", "Source", "Destination", "DestinationContext", "CallerID", "Channel",
	"DestinationChannel", "LastApplication", "LastData", "StartTime", "AnswerTime", "EndTime", "Duration",
	"BillableSeconds", "Disposition", "AMAFlags", "UniqueID", "UserField"}

// cdrRow is one rendered Call Detail Record.
type cdrRow struct {
	f                  [len(cdrFields)]string // as the Cdr event says (times as written, UTC)
	start, answer, end time.Time              // zero answer: never answered
	linkedid, did, rec string
	due                time.Time
}

// csvLine formats the row as cdr_csv does: strings quoted with inner quotes doubled, durations
// bare, an empty answer time as nothing at all, times in loc.
func (r *cdrRow) csvLine(loc *time.Location) []byte {
	var b []byte
	for i, v := range r.f {
		if i > 0 {
			b = append(b, ',')
		}
		switch cdrFields[i] {
		case "Duration", "BillableSeconds":
			b = append(b, v...)
			continue
		case "StartTime", "AnswerTime", "EndTime":
			t := [...]time.Time{r.start, r.answer, r.end}[i-9]
			if t.IsZero() {
				continue
			}
			v = t.In(loc).Format(clockLayout)
		}
		b = append(b, '"')
		b = append(b, strings.ReplaceAll(v, `"`, `""`)...)
		b = append(b, '"')
	}
	return append(b, '\n')
}

// cdrWriter writes the rows of every replay, in the order they are due, on its own goroutine so
// that a slow disk or database never delays the events.
type cdrWriter struct {
	cfg   CDRConfig
	loc   *time.Location
	db    *sql.DB
	table string
	log   func(msg string, args ...any)

	mu    sync.Mutex
	queue []*cdrRow
	wake  chan struct{}
	seq   int
	errs  int
	done  chan struct{}
	close chan struct{}
}

func newCDRWriter(cfg CDRConfig, log func(string, ...any)) (*cdrWriter, error) {
	w := &cdrWriter{cfg: cfg, loc: cfg.Location, table: cfg.MySQLTable, log: log, wake: make(chan struct{}, 1),
		done: make(chan struct{}), close: make(chan struct{})}
	if w.loc == nil {
		w.loc = time.UTC
	}
	if w.table == "" {
		w.table = "cdr"
	}
	if cfg.CSVPath == "" && cfg.MySQLDSN == "" {
		return nil, errors.New("fakepbx: cdr: neither CSVPath nor MySQLDSN")
	}
	if cfg.CSVPath != "" {
		f, err := os.OpenFile(cfg.CSVPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("fakepbx: cdr: %w", err)
		}
		_ = f.Close()
	}
	if cfg.MySQLDSN != "" {
		db, err := sql.Open("mysql", cfg.MySQLDSN)
		if err != nil {
			return nil, fmt.Errorf("fakepbx: cdr: %w", err)
		}
		w.db = db
	}
	go w.run()
	return w, nil
}

// add queues a row, due Lag from now.
func (w *cdrWriter) add(r *cdrRow) {
	r.due = time.Now().Add(w.cfg.Lag)
	w.mu.Lock()
	w.queue = append(w.queue, r)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stop writes every queued row (due or not) and ends the writer.
func (w *cdrWriter) stop() {
	close(w.close)
	<-w.done
	if w.db != nil {
		_ = w.db.Close()
	}
}

func (w *cdrWriter) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.mu.Lock()
		var due []*cdrRow
		now := time.Now()
		n := 0
		for _, r := range w.queue {
			if r.due.After(now) {
				break
			}
			n++
		}
		due, w.queue = w.queue[:n:n], w.queue[n:]
		var next time.Duration = -1
		if len(w.queue) > 0 {
			next = time.Until(w.queue[0].due)
		}
		w.mu.Unlock()
		w.write(due)
		if next >= 0 {
			timer.Reset(next)
		}
		select {
		case <-w.wake:
		case <-timer.C:
		case <-w.close:
			w.mu.Lock()
			rest := w.queue
			w.queue = nil
			w.mu.Unlock()
			w.write(rest)
			return
		}
	}
}

func (w *cdrWriter) write(rows []*cdrRow) {
	if len(rows) == 0 {
		return
	}
	if w.cfg.CSVPath != "" {
		var buf []byte
		for _, r := range rows {
			buf = append(buf, r.csvLine(w.loc)...)
		}
		f, err := os.OpenFile(w.cfg.CSVPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err == nil {
			_, err = f.Write(buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			w.fail("fakepbx: writing Master.csv", err)
		}
	}
	if w.db != nil {
		for _, r := range rows {
			w.insert(r)
		}
	}
}

func (w *cdrWriter) fail(msg string, err error) {
	w.mu.Lock()
	w.errs++
	w.mu.Unlock()
	w.log(msg, "err", err)
}

// insert stores one row in the FreePBX-style table.
func (w *cdrWriter) insert(r *cdrRow) {
	w.seq++
	dur, _ := strconv.Atoi(r.f[12])
	bill, _ := strconv.Atoi(r.f[13])
	cnum, cnam := "", ""
	if lt := strings.LastIndexByte(r.f[4], '<'); lt >= 0 && strings.HasSuffix(r.f[4], ">") {
		cnum = r.f[4][lt+1 : len(r.f[4])-1]
		cnam = strings.Trim(strings.TrimSpace(r.f[4][:lt]), `"`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := w.db.ExecContext(ctx, "INSERT INTO `"+w.table+"` (calldate, clid, src, dst, dcontext, channel, dstchannel, "+ //nolint:gosec // the table name is the test's own
		"lastapp, lastdata, duration, billsec, disposition, amaflags, accountcode, uniqueid, userfield, did, recordingfile, "+
		"cnum, cnam, linkedid, sequence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		r.start.In(w.loc).Format(clockLayout), r.f[4], r.f[1], r.f[2], r.f[3], r.f[5], r.f[6], r.f[7], r.f[8], dur, bill,
		r.f[14], amaFlags(r.f[15]), r.f[0], r.f[16], r.f[17], r.did, r.rec, cnum, cnam, r.linkedid, w.seq)
	if err != nil {
		w.fail("fakepbx: inserting a CDR row", err)
	}
}

// amaFlags is the numeric AMA flag FreePBX's table stores.
func amaFlags(s string) int {
	switch s {
	case "OMIT":
		return 1
	case "BILLING":
		return 2
	case "DOCUMENTATION":
		return 3
	}
	return 0
}

// cdrErrors returns how many writes of CDR rows failed (0 without a CDR config).
func (w *cdrWriter) errors() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

// cdrRow renders the Cdr event at frame i of the replay into a row.
func (in *instance) cdrRow(i int) *cdrRow {
	fr := &in.sc.frames[i]
	r := &cdrRow{}
	for k, name := range cdrFields {
		r.f[k] = in.fieldValue(i, name)
	}
	for j := range fr.fields {
		f := &fr.fields[j]
		if f.kind != fkClockTime {
			continue // an empty AnswerTime: never answered
		}
		// Rounded to the microsecond first: the offsets are float seconds, a hair off.
		t := in.base().Add(in.scale(f.segs[0].off)).Round(time.Microsecond).Truncate(time.Second)
		switch f.key {
		case "StartTime":
			r.start = t
		case "AnswerTime":
			r.answer = t
		case "EndTime":
			r.end = t
		}
	}
	if fr.cdrLinked >= 0 {
		r.linkedid = in.uids[fr.cdrLinked]
	}
	r.did = fr.cdrDID
	r.rec = in.fieldValue(i, "RecordingFile")
	return r
}
