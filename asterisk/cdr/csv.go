package cdr

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// MaxRecordSize caps one Master.csv record (all its physical lines, including the line end).
// Asterisk's cdr_csv builds each record in a 1024-byte buffer and drops longer ones, so a real
// record is far below this; a longer one is reported as a *RecordError and skipped over.
const MaxRecordSize = 16 << 10

// Defaults of CSVConfig and MySQLConfig.
const (
	DefaultMaxCallAge = 24 * time.Hour
	DefaultMaxRows    = 100_000
)

// seekBlock is the size below which the time seek stops bisecting and streams.
const seekBlock = 64 << 10

// CSVConfig describes one cdr_csv file and the [csv] options of the cdr.conf that wrote it.
type CSVConfig struct {
	// Path of the file: /var/log/asterisk/cdr-csv/Master.csv, or an accountcode file
	// (cdr-csv/<accountcode>.csv, written when accountlogs=yes) which has the same layout.
	Path string

	// The optional columns, in the order Asterisk appends them after the 16 standard ones
	// (accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start,
	// answer, end, duration, billsec, disposition, amaflags):
	LogUniqueID   bool // loguniqueid=yes: uniqueid
	LogUserField  bool // loguserfield=yes: userfield
	NewCDRColumns bool // newcdrcolumns=yes: peeraccount, linkedid, sequence

	// UseGMTime is usegmtime=yes: times are written in UTC. Otherwise they are in the PBX's
	// local time zone, Location (nil means the local zone of this process).
	UseGMTime bool
	Location  *time.Location

	// MaxCallAge bounds the time from the start of a call to the moment Asterisk writes the
	// last record of it: the longest call plus any CDR batching delay (cdr.conf batch=yes,
	// size/time). Asterisk appends a call's records when its first channel hangs up, so a
	// record's start is never more than MaxCallAge before the time it was written; the time
	// seek relies on it to skip the file before the window and to stop after it. A call longer
	// than this may be missed near a window's edges. Default DefaultMaxCallAge.
	MaxCallAge time.Duration

	// MaxRows caps the rows one Read returns (ErrTooManyRows above). Default DefaultMaxRows.
	MaxRows int

	// OnBadRecord, when set, is told of every malformed record, which is then skipped;
	// when nil the first malformed record fails the Read.
	OnBadRecord func(*RecordError)
}

// CSVReader reads a cdr_csv file. It keeps no state between reads (each Read opens the file,
// seeks by time and streams), so a rotated or truncated file needs no special handling: the
// next Read sees the file as it is then. Rows appended while a Read runs are left for the next.
type CSVReader struct {
	cfg    CSVConfig
	loc    *time.Location
	fields int // expected fields per record
}

// NewCSVReader checks cfg and returns a reader; it does not open the file.
func NewCSVReader(cfg CSVConfig) (*CSVReader, error) {
	if cfg.Path == "" {
		return nil, errors.New("cdr: csv: path is empty")
	}
	if cfg.MaxCallAge < 0 || cfg.MaxRows < 0 {
		return nil, errors.New("cdr: csv: MaxCallAge and MaxRows must not be negative")
	}
	if cfg.MaxCallAge == 0 {
		cfg.MaxCallAge = DefaultMaxCallAge
	}
	if cfg.MaxRows == 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	loc := cfg.Location
	if cfg.UseGMTime {
		loc = time.UTC
	} else if loc == nil {
		loc = time.Local
	}
	n := 16
	if cfg.LogUniqueID {
		n++
	}
	if cfg.LogUserField {
		n++
	}
	if cfg.NewCDRColumns {
		n += 3
	}
	return &CSVReader{cfg: cfg, loc: loc, fields: n}, nil
}

// Read returns the records whose Start lies in [from, to). See Source.
func (r *CSVReader) Read(ctx context.Context, from, to time.Time) ([]Row, error) {
	if !to.After(from) {
		return nil, fmt.Errorf("cdr: csv: empty window [%s, %s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	f, err := os.Open(r.cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("cdr: csv: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cdr: csv: %w", err)
	}
	return r.read(ctx, f, fi.Size(), from, to)
}

// read is Read over any ReaderAt of the given size (a file, or bytes in tests).
func (r *CSVReader) read(ctx context.Context, ra io.ReaderAt, size int64, from, to time.Time) ([]Row, error) {
	var start int64
	if !from.IsZero() {
		start = r.seek(ra, size, from.Add(-r.cfg.MaxCallAge))
	}
	stopAt := to.Add(r.cfg.MaxCallAge)
	sc := newScanner(ra, start, size)
	p := newFieldParser()
	var rows []Row
	for n := 0; ; n++ {
		if n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("cdr: csv: %w", err)
			}
		}
		rec, off, line, err := sc.next()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		var row Row
		if err == nil {
			err = r.parse(p, rec, &row)
		}
		if err != nil {
			re := &RecordError{File: r.cfg.Path, Line: line, Offset: off}
			var fe *fieldError
			if errors.As(err, &fe) {
				re.Field, re.Err = fe.field, fe.err
			} else {
				re.Err = err
			}
			if errors.Is(err, errReadFailed) {
				return nil, re
			}
			if r.cfg.OnBadRecord == nil {
				return nil, re
			}
			r.cfg.OnBadRecord(re)
			continue
		}
		if row.Start.IsZero() { // an empty line
			continue
		}
		if !row.Start.Before(from) && row.Start.Before(to) {
			if len(rows) == r.cfg.MaxRows {
				return nil, fmt.Errorf("%w: more than %d rows in %s between %s and %s", ErrTooManyRows,
					r.cfg.MaxRows, r.cfg.Path, from.Format(time.RFC3339), to.Format(time.RFC3339))
			}
			rows = append(rows, row)
		}
		if !row.End.Before(stopAt) {
			// Every later record was written after this one ended, and no record is written
			// more than MaxCallAge after its start: all later records start at or after to.
			return rows, nil
		}
	}
}

// seek returns a record boundary before which every record ended before threshold (and so,
// with threshold = from - MaxCallAge, was written before from and starts before from). It
// bisects the file, probing the first whole record after each midpoint; a probe that does not
// parse counts as "too late", so a damaged region only makes the seek less tight.
func (r *CSVReader) seek(ra io.ReaderAt, size int64, threshold time.Time) int64 {
	lo, hi := int64(0), size
	buf := make([]byte, 2*MaxRecordSize)
	p := newFieldParser()
	for hi-lo > seekBlock {
		mid := lo + (hi-lo)/2
		q, end, ok := r.probe(ra, mid, buf, p)
		if ok && end.Before(threshold) {
			lo = max(lo, q)
			hi = max(hi, lo)
		} else {
			hi = mid
		}
	}
	return lo
}

// probe parses the first whole record that starts after off and returns its offset and End.
func (r *CSVReader) probe(ra io.ReaderAt, off int64, buf []byte, p *fieldParser) (int64, time.Time, bool) {
	n, err := ra.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, time.Time{}, false
	}
	b := buf[:n]
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return 0, time.Time{}, false
	}
	b = b[i+1:]
	inQuote := false
	for j, c := range b {
		switch c {
		case '"':
			inQuote = !inQuote
		case '\n':
			if inQuote {
				continue
			}
			var row Row
			if r.parse(p, b[:j+1], &row) != nil || row.End.IsZero() {
				return 0, time.Time{}, false
			}
			return off + int64(i) + 1, row.End, true
		}
	}
	return 0, time.Time{}, false
}

// fieldError names the field a parse error is about.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return "field " + e.field + ": " + e.err.Error() }

// csvColumns are the names of cdr_csv's 16 standard columns, in file order.
var csvColumns = [16]string{"accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel",
	"lastapp", "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags"}

// parse fills row from one record. An empty line leaves row zero.
func (r *CSVReader) parse(p *fieldParser, rec []byte, row *Row) error {
	f, err := p.parse(rec)
	if err != nil || f == nil {
		return err
	}
	if len(f) != r.fields {
		return fmt.Errorf("%d fields, want %d (loguniqueid=%s, loguserfield=%s, newcdrcolumns=%s)",
			len(f), r.fields, yesNo(r.cfg.LogUniqueID), yesNo(r.cfg.LogUserField), yesNo(r.cfg.NewCDRColumns))
	}
	row.AccountCode, row.Src, row.Dst, row.DContext, row.CLID = f[0], f[1], f[2], f[3], f[4]
	row.Channel, row.DstChannel, row.LastApp, row.LastData = f[5], f[6], f[7], f[8]
	for i, dst := range [3]*time.Time{&row.Start, &row.Answer, &row.End} {
		s := f[9+i]
		if s == "" {
			if i == 1 { // answer is empty when never answered
				continue
			}
			return &fieldError{csvColumns[9+i], errors.New("empty")}
		}
		t, err := parseDateTime(s, r.loc)
		if err != nil {
			return &fieldError{csvColumns[9+i], err}
		}
		*dst = t
	}
	if row.Duration, err = parseSeconds(f[12]); err != nil {
		return &fieldError{"duration", err}
	}
	if row.BillSec, err = parseSeconds(f[13]); err != nil {
		return &fieldError{"billsec", err}
	}
	row.Disposition, row.AMAFlags = f[14], f[15]
	i := 16
	if r.cfg.LogUniqueID {
		row.UniqueID = f[i]
		i++
	}
	if r.cfg.LogUserField {
		row.UserField = f[i]
		i++
	}
	if r.cfg.NewCDRColumns {
		row.PeerAccount, row.LinkedID = f[i], f[i+1]
		if f[i+2] != "" {
			seq, err := strconv.Atoi(f[i+2])
			if err != nil || seq < 0 {
				return &fieldError{"sequence", fmt.Errorf("bad number %q", truncate(f[i+2], 40))}
			}
			row.Sequence = seq
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// errReadFailed marks an I/O error of the underlying file (not a malformed record).
var errReadFailed = errors.New("reading failed")

// scanner splits a cdr_csv file into records: physical lines, joined while a quoted field is
// open (a value with a newline), each at most MaxRecordSize bytes. A final record without its
// line end is one Asterisk is still writing and is not returned.
type scanner struct {
	br   *bufio.Reader
	off  int64 // offset of the next unread byte
	line int64 // line number of the next record, 0 when unknown
	buf  []byte
}

func newScanner(ra io.ReaderAt, start, size int64) *scanner {
	s := &scanner{br: bufio.NewReaderSize(io.NewSectionReader(ra, start, size-start), 8<<10), off: start}
	if start == 0 {
		s.line = 1
	}
	return s
}

// next returns the next record, its offset and line, io.EOF at the end, or an error for an
// over-long record (the scanner has then moved past it) or a failed read.
func (s *scanner) next() ([]byte, int64, int64, error) {
	s.buf = s.buf[:0]
	start, line := s.off, s.line
	inQuote, tooLong := false, false
	for {
		chunk, err := s.br.ReadSlice('\n')
		s.off += int64(len(chunk))
		if !tooLong {
			if len(s.buf)+len(chunk) > MaxRecordSize {
				tooLong = true
			} else {
				s.buf = append(s.buf, chunk...)
				inQuote = inQuote != (bytes.Count(chunk, []byte{'"'})%2 == 1)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil, start, line, io.EOF
		}
		if err != nil {
			return nil, start, line, fmt.Errorf("%w: %w", errReadFailed, err)
		}
		if s.line > 0 {
			s.line++
		}
		if tooLong {
			return nil, start, line, fmt.Errorf("record longer than %d bytes", MaxRecordSize)
		}
		if !inQuote {
			return s.buf, start, line, nil
		}
	}
}

// fieldParser splits one record into fields with encoding/csv (Asterisk quotes every string
// and doubles embedded quotes, which is RFC 4180), reusing one csv.Reader across records.
type fieldParser struct {
	src recordSource
	cr  *csv.Reader
	fed int64 // bytes given to cr since reset
}

type recordSource struct{ b []byte }

func (s *recordSource) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

func newFieldParser() *fieldParser {
	p := &fieldParser{}
	p.reset()
	return p
}

func (p *fieldParser) reset() {
	p.src.b, p.fed = nil, 0
	p.cr = csv.NewReader(&p.src)
	p.cr.FieldsPerRecord = -1
	p.cr.ReuseRecord = true
}

// parse returns the fields of rec (which ends with its line end), or nil for an empty line.
// The returned slice is valid until the next call; the strings in it stay valid.
func (p *fieldParser) parse(rec []byte) ([]string, error) {
	p.src.b = rec
	p.fed += int64(len(rec))
	f, err := p.cr.Read()
	if errors.Is(err, io.EOF) && p.cr.InputOffset() == p.fed {
		return nil, nil
	}
	if err != nil || p.cr.InputOffset() != p.fed {
		p.reset() // the reader may hold part of this record: start clean
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("column %d: %w", pe.Column, pe.Err)
		}
		if err == nil {
			return nil, errors.New("more than one record on the line")
		}
		return nil, err
	}
	return f, nil
}
