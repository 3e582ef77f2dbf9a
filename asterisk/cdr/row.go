package cdr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Source reads the CDR rows of one PBX.
//
// Read returns every row whose Start lies in [from, to), in no guaranteed order (use Group, or
// sort them). A zero from means "since the beginning". Read returns ErrTooManyRows, and no
// rows, when the window holds more rows than the source's limit. Read honours ctx and is safe
// for concurrent use.
type Source interface {
	Read(ctx context.Context, from, to time.Time) ([]Row, error)
}

// ErrTooManyRows reports that a window held more rows than the reader's MaxRows. The caller
// should split the window and read the halves.
var ErrTooManyRows = errors.New("cdr: too many rows in the window")

// Dispositions as Asterisk writes them (ast_cdr_disp2str). "CONGESTION" is written only with
// cdr.conf congestion=yes (otherwise such a Dial is "FAILED"). A call's rows need not agree:
// in the recorded outbound_no_answer the caller's rows say "NO ANSWER" while the called
// phone's own row says "FAILED", and a queue's member rows say "NO ANSWER" for the member who
// did not pick up while the caller's row to the member who did says "ANSWERED".
const (
	DispositionAnswered   = "ANSWERED"
	DispositionNoAnswer   = "NO ANSWER"
	DispositionBusy       = "BUSY"
	DispositionFailed     = "FAILED"
	DispositionCongestion = "CONGESTION"
)

// Row is one Call Detail Record: one party-A channel's time with one party B (or alone), as
// Asterisk 12+ writes it. One call is several rows (one per Dial attempt, per transfer, per
// Local channel half); Group ties them together.
//
// Fields a layout does not have are empty (or zero): plain Master.csv has no LinkedID,
// Sequence, PeerAccount, and no FreePBX fields; FreePBX's table has no Answer and End columns
// (they are computed from calldate, duration and billsec, see MySQLReader).
type Row struct {
	AccountCode string
	Src         string // caller number (the party A channel's caller ID number)
	Dst         string // the extension party A was in when the record ended
	DContext    string // the dialplan context of Dst
	CLID        string // `"name" <number>`; see ParseCallerID
	Channel     string // party A
	DstChannel  string // party B; empty when party A never had one (e.g. Playback, Busy)
	LastApp     string // last application party A ran (Dial, Queue, AppDial, ...)
	LastData    string // its arguments

	Start  time.Time // when the record began (calldate in SQL)
	Answer time.Time // zero when party A was never answered/bridged in this record
	End    time.Time

	Duration int // seconds from Start to End
	BillSec  int // seconds from Answer to End

	Disposition string // one of the Disposition constants
	AMAFlags    string // "DOCUMENTATION", "BILLING", "OMIT" (numeric SQL values are mapped)

	UniqueID    string // party A's channel uniqueid
	UserField   string
	LinkedID    string // uniqueid of the first channel of the call (not in plain Master.csv)
	Sequence    int    // record sequence number (newcdrcolumns / SQL)
	PeerAccount string

	// FreePBX's cdr table only.
	DID           string
	RecordingFile string // file name of the MixMonitor recording, relative to the monitor dir
	CNum          string
	CNam          string
	OutboundCNum  string
	OutboundCNam  string
	DstCNam       string
}

// Answered reports whether the record's party A was answered by (or bridged to) its party B.
func (r *Row) Answered() bool { return r.Disposition == DispositionAnswered }

// ParseCallerID splits a CDR clid value (`"Ivan Petrov" <101>`, `"" <+79001234567>`, `101`)
// into name and number. A value without <...> is taken as a bare number.
func ParseCallerID(clid string) (name, number string) {
	clid = strings.TrimSpace(clid)
	lt := strings.LastIndexByte(clid, '<')
	if lt < 0 || !strings.HasSuffix(clid, ">") {
		return "", clid
	}
	number = clid[lt+1 : len(clid)-1]
	name = strings.TrimSpace(clid[:lt])
	if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
		name = name[1 : len(name)-1]
	}
	return name, number
}

// RecordError reports a record that could not be read. File is the path (or table), Line the
// 1-based line number when the read started at the beginning of the file (0 otherwise), Offset
// the byte offset of the record, Field the column name when one field was at fault.
type RecordError struct {
	File   string
	Line   int64
	Offset int64
	Field  string
	Err    error
}

func (e *RecordError) Error() string {
	var b strings.Builder
	b.WriteString("cdr: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
	}
	fmt.Fprintf(&b, " (byte %d)", e.Offset)
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %s", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *RecordError) Unwrap() error { return e.Err }

// parseDateTime parses Asterisk's "2006-01-02 15:04:05" (optionally with a fraction of up to
// nine digits, as SQL DATETIME(6) columns return it) in loc, without time.Parse's generality:
// this is the hot path of reading a large Master.csv.
func parseDateTime(s string, loc *time.Location) (time.Time, error) {
	if len(s) < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' || s[16] != ':' {
		return time.Time{}, fmt.Errorf("bad date-time %q (want YYYY-MM-DD hh:mm:ss)", truncate(s, 40))
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	y, mo, d, h, mi, sec := num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2)
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60 {
		return time.Time{}, fmt.Errorf("bad date-time %q", truncate(s, 40))
	}
	nsec := 0
	if len(s) > 19 {
		frac := s[20:]
		if s[19] != '.' || len(frac) == 0 || len(frac) > 9 {
			return time.Time{}, fmt.Errorf("bad date-time %q", truncate(s, 40))
		}
		f := num(20, len(frac))
		if f < 0 {
			return time.Time{}, fmt.Errorf("bad date-time %q", truncate(s, 40))
		}
		for i := len(frac); i < 9; i++ {
			f *= 10
		}
		nsec = f
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, nsec, loc)
	if t.Day() != d {
		return time.Time{}, fmt.Errorf("bad date-time %q: no such day", truncate(s, 40))
	}
	return t, nil
}

// parseSeconds parses a non-negative decimal count of seconds ("5"; SQL float columns may
// give "5.000" or "5.2", which is truncated).
func parseSeconds(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	if i := strings.IndexByte(s, '.'); i >= 0 {
		for _, c := range []byte(s[i+1:]) {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("bad number %q", truncate(s, 40))
			}
		}
		s = s[:i]
	}
	if len(s) == 0 || len(s) > 10 {
		return 0, fmt.Errorf("bad number %q", truncate(s, 40))
	}
	v := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad number %q", truncate(s, 40))
		}
		v = v*10 + int(c-'0')
	}
	return v, nil
}

// amaFlagName maps the numeric AMA flags of SQL tables to Asterisk's names
// (ast_channel_amaflags2string); other values are kept as they are.
func amaFlagName(s string) string {
	switch s {
	case "1":
		return "OMIT"
	case "2":
		return "BILLING"
	case "3":
		return "DOCUMENTATION"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
