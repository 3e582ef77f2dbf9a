package cdr

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DefaultQueryTimeout bounds one MySQLReader query when MySQLConfig.QueryTimeout is zero.
const DefaultQueryTimeout = 10 * time.Second

// MySQLConfig describes a MySQL/MariaDB CDR table.
type MySQLConfig struct {
	// DSN in github.com/go-sql-driver/mysql's format, e.g.
	// "cdrreader:secret@unix(/var/run/mysqld/mysqld.sock)/asteriskcdrdb" or
	// "cdrreader:secret@tcp(10.0.0.5:3306)/asteriskcdrdb". It holds a password: never log it.
	// The reader needs SELECT on the table and on information_schema.COLUMNS.
	DSN string
	// Table is the CDR table, "cdr" by default, optionally "schema.table" (FreePBX:
	// asteriskcdrdb.cdr). Without a schema the DSN's database is used.
	Table string
	// Location is the time zone the PBX wrote calldate in: DATETIME columns carry no zone
	// (FreePBX writes the PBX's local time). nil means the local zone of this process.
	Location *time.Location
	// QueryTimeout bounds each query, on the server too (MariaDB max_statement_time, MySQL
	// MAX_EXECUTION_TIME). Default DefaultQueryTimeout.
	QueryTimeout time.Duration
	// MaxRows caps the rows one Read returns (ErrTooManyRows above). Default DefaultMaxRows.
	MaxRows int
	// OnBadRecord, when set, is told of every row that cannot be converted, which is then
	// skipped; when nil such a row fails the Read.
	OnBadRecord func(*RecordError)
}

// MySQLReader reads a CDR table. Each Read discovers the table's columns (so a FreePBX upgrade
// that adds some needs no restart), selects the ones Row has, and runs one parameterised query
// over the window on the start column (calldate, or start in cdr_adaptive_odbc tables that name
// it so), ordered by it, limited to MaxRows+1 rows.
//
// Tables without answer and end columns (FreePBX's) get them computed: End = calldate +
// duration, Answer = End - billsec when the row was answered or billsec > 0. Both are exact to
// the second Asterisk rounds duration and billsec to.
type MySQLReader struct {
	db            *sql.DB
	cfg           MySQLConfig
	schema, table string
	loc           *time.Location
}

// OpenMySQL checks cfg and returns a reader with a small connection pool; it does not connect
// (the first Read or Ping does). Close it when done.
func OpenMySQL(cfg MySQLConfig) (*MySQLReader, error) {
	if cfg.QueryTimeout < 0 || cfg.MaxRows < 0 {
		return nil, errors.New("cdr: mysql: QueryTimeout and MaxRows must not be negative")
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = DefaultQueryTimeout
	}
	if cfg.MaxRows == 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.Table == "" {
		cfg.Table = "cdr"
	}
	dc, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("cdr: mysql: dsn: %w", err) // the driver's messages do not echo the DSN
	}
	r := &MySQLReader{cfg: cfg, loc: cfg.Location}
	if r.loc == nil {
		r.loc = time.Local
	}
	r.table = cfg.Table
	if s, t, ok := strings.Cut(cfg.Table, "."); ok {
		r.schema, r.table = s, t
	} else {
		r.schema = dc.DBName
	}
	if !validIdent(r.schema) || !validIdent(r.table) {
		return nil, fmt.Errorf("cdr: mysql: table %q: want [schema.]name of letters, digits, _ and $ (and a database in the DSN when there is no schema)", cfg.Table)
	}
	// DATETIMEs come back as text and are parsed in Location here: the driver's own time
	// parsing would need its loc to match, and chokes on FreePBX's zero dates.
	dc.ParseTime = false
	if dc.Timeout == 0 {
		dc.Timeout = min(cfg.QueryTimeout, 5*time.Second)
	}
	conn, err := mysql.NewConnector(dc)
	if err != nil {
		return nil, fmt.Errorf("cdr: mysql: %w", err)
	}
	r.db = sql.OpenDB(conn)
	r.db.SetMaxOpenConns(2)
	r.db.SetMaxIdleConns(1)
	r.db.SetConnMaxIdleTime(time.Minute)
	return r, nil
}

// Close closes the connection pool.
func (r *MySQLReader) Close() error { return r.db.Close() }

// Ping checks that the database answers and the table has the columns Read needs.
func (r *MySQLReader) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.QueryTimeout)
	defer cancel()
	_, _, err := r.columns(ctx)
	return err
}

// column kinds
const (
	colString = iota
	colSeconds
	colInt
	colTime
	colAMA
)

// sqlColumns are the CDR columns Row has, by the names cdr_adaptive_odbc / FreePBX give them.
func sqlColumn(name string) (kind int, ok bool) {
	switch name {
	case "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
		"disposition", "uniqueid", "userfield", "linkedid", "peeraccount", "did", "recordingfile",
		"cnum", "cnam", "outbound_cnum", "outbound_cnam", "dst_cnam":
		return colString, true
	case "duration", "billsec":
		return colSeconds, true
	case "sequence":
		return colInt, true
	case "calldate", "start", "answer", "end":
		return colTime, true
	case "amaflags":
		return colAMA, true
	}
	return 0, false
}

// columns returns the known columns of the table (lower case) and the server's flavour.
func (r *MySQLReader) columns(ctx context.Context) ([]string, bool, error) {
	var version string
	if err := r.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return nil, false, fmt.Errorf("cdr: mysql: %w", err)
	}
	rows, err := r.db.QueryContext(ctx,
		"SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
		r.schema, r.table)
	if err != nil {
		return nil, false, fmt.Errorf("cdr: mysql: listing the columns of %s.%s: %w", r.schema, r.table, err)
	}
	defer func() { _ = rows.Close() }()
	var cols []string
	have := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, false, fmt.Errorf("cdr: mysql: listing the columns of %s.%s: %w", r.schema, r.table, err)
		}
		name = strings.ToLower(name)
		if _, ok := sqlColumn(name); ok && !have[name] {
			cols = append(cols, name)
			have[name] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("cdr: mysql: listing the columns of %s.%s: %w", r.schema, r.table, err)
	}
	if len(have) == 0 {
		return nil, false, fmt.Errorf("cdr: mysql: table %s.%s not found (or no CDR columns, or no access to it)", r.schema, r.table)
	}
	if !have["calldate"] && !have["start"] {
		return nil, false, fmt.Errorf("cdr: mysql: table %s.%s has neither calldate nor start", r.schema, r.table)
	}
	for _, c := range []string{"channel", "duration", "billsec", "disposition"} {
		if !have[c] {
			return nil, false, fmt.Errorf("cdr: mysql: table %s.%s has no %s column", r.schema, r.table, c)
		}
	}
	return cols, strings.Contains(strings.ToLower(version), "mariadb"), nil
}

// Read returns the rows whose calldate lies in [from, to). See Source.
func (r *MySQLReader) Read(ctx context.Context, from, to time.Time) ([]Row, error) {
	if !to.After(from) {
		return nil, fmt.Errorf("cdr: mysql: empty window [%s, %s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	// The server-side limit stops the query; the context also covers the round trips, with at
	// least 2 s to spare so the server's own "query timed out" (which names the cause) normally
	// arrives first, even on a loaded host.
	ctx, cancel := context.WithTimeout(ctx, r.cfg.QueryTimeout+max(r.cfg.QueryTimeout/2, 2*time.Second))
	defer cancel()
	cols, mariadb, err := r.columns(ctx)
	if err != nil {
		return nil, err
	}
	startCol := "calldate"
	if !slices.Contains(cols, startCol) {
		startCol = "start"
	}
	var q strings.Builder
	if mariadb {
		fmt.Fprintf(&q, "SET STATEMENT max_statement_time=%.3f FOR SELECT ", r.cfg.QueryTimeout.Seconds())
	} else {
		fmt.Fprintf(&q, "SELECT /*+ MAX_EXECUTION_TIME(%d) */ ", r.cfg.QueryTimeout.Milliseconds())
	}
	for i, c := range cols {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("`" + c + "`") // names from sqlColumn's fixed list
	}
	fmt.Fprintf(&q, " FROM `%s`.`%s` WHERE ", r.schema, r.table) // validated by validIdent
	var args []any
	if !from.IsZero() {
		fmt.Fprintf(&q, "`%s` >= ? AND ", startCol)
		args = append(args, sqlTime(from, r.loc))
	}
	fmt.Fprintf(&q, "`%s` < ? ORDER BY `%s` LIMIT ?", startCol, startCol)
	args = append(args, sqlTime(to, r.loc), r.cfg.MaxRows+1)

	rows, err := r.db.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("cdr: mysql: reading %s.%s: %w", r.schema, r.table, err)
	}
	defer func() { _ = rows.Close() }()
	vals := make([]sql.NullString, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	var out []Row
	for n := int64(1); rows.Next(); n++ {
		if len(out) == r.cfg.MaxRows {
			return nil, fmt.Errorf("%w: more than %d rows in %s.%s between %s and %s", ErrTooManyRows,
				r.cfg.MaxRows, r.schema, r.table, from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("cdr: mysql: reading %s.%s: %w", r.schema, r.table, err)
		}
		var row Row
		if field, err := r.fill(&row, cols, vals); err != nil {
			re := &RecordError{File: r.schema + "." + r.table, Line: n, Field: field, Err: err}
			if r.cfg.OnBadRecord == nil {
				return nil, re
			}
			r.cfg.OnBadRecord(re)
			continue
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cdr: mysql: reading %s.%s: %w", r.schema, r.table, err)
	}
	return out, nil
}

// fill converts one result row; on error it names the column.
func (r *MySQLReader) fill(row *Row, cols []string, vals []sql.NullString) (string, error) {
	var hasAnswer, hasEnd bool
	for i, c := range cols {
		v := vals[i].String
		kind, _ := sqlColumn(c)
		switch kind {
		case colString:
			if p := stringField(row, c); p != nil {
				*p = v
			}
		case colAMA:
			row.AMAFlags = amaFlagName(v)
		case colSeconds, colInt:
			n, err := parseSeconds(v)
			if err != nil {
				return c, err
			}
			switch c {
			case "duration":
				row.Duration = n
			case "billsec":
				row.BillSec = n
			default:
				row.Sequence = n
			}
		case colTime:
			var t time.Time
			if v != "" && !strings.HasPrefix(v, "0000-00-00") {
				var err error
				if t, err = parseDateTime(v, r.loc); err != nil {
					return c, err
				}
			}
			switch c {
			case "calldate", "start":
				if t.IsZero() {
					return c, errors.New("empty")
				}
				row.Start = t
			case "answer":
				row.Answer, hasAnswer = t, true
			case "end":
				row.End, hasEnd = t, true
			}
		}
	}
	if !hasEnd {
		row.End = row.Start.Add(time.Duration(row.Duration) * time.Second)
	}
	if !hasAnswer && (row.BillSec > 0 || row.Disposition == DispositionAnswered) {
		row.Answer = row.End.Add(-time.Duration(row.BillSec) * time.Second)
	}
	return "", nil
}

func stringField(row *Row, col string) *string {
	switch col {
	case "accountcode":
		return &row.AccountCode
	case "src":
		return &row.Src
	case "dst":
		return &row.Dst
	case "dcontext":
		return &row.DContext
	case "clid":
		return &row.CLID
	case "channel":
		return &row.Channel
	case "dstchannel":
		return &row.DstChannel
	case "lastapp":
		return &row.LastApp
	case "lastdata":
		return &row.LastData
	case "disposition":
		return &row.Disposition
	case "uniqueid":
		return &row.UniqueID
	case "userfield":
		return &row.UserField
	case "linkedid":
		return &row.LinkedID
	case "peeraccount":
		return &row.PeerAccount
	case "did":
		return &row.DID
	case "recordingfile":
		return &row.RecordingFile
	case "cnum":
		return &row.CNum
	case "cnam":
		return &row.CNam
	case "outbound_cnum":
		return &row.OutboundCNum
	case "outbound_cnam":
		return &row.OutboundCNam
	case "dst_cnam":
		return &row.DstCNam
	}
	return nil // sqlColumn and stringField list the same names
}

// sqlTime formats t as a DATETIME literal in loc, keeping a fraction when t has one.
func sqlTime(t time.Time, loc *time.Location) string {
	return t.In(loc).Format("2006-01-02 15:04:05.999999")
}

func validIdent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		ok := c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}

var (
	_ Source = (*CSVReader)(nil)
	_ Source = (*MySQLReader)(nil)
)
