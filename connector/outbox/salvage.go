package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// quickCheck runs SQLite's quick check (every page read once; no index cross-check) when the
// store opens, so a damaged file is refused at start instead of failing call by call: a daemon
// that ran on a damaged outbox held every call in memory and could not stop.
func (s *Store) quickCheck(ctx context.Context) error {
	q, err := s.w.QueryContext(ctx, "PRAGMA quick_check(20)")
	if err != nil {
		return s.wrap("open: checking the file", err)
	}
	defer func() { _ = q.Close() }()
	var msgs []string
	for q.Next() {
		var m string
		if err := q.Scan(&m); err != nil {
			return s.wrap("open: checking the file", err)
		}
		msgs = append(msgs, m)
	}
	if err := q.Err(); err != nil {
		return s.wrap("open: checking the file", err)
	}
	if len(msgs) == 1 && msgs[0] == "ok" {
		return nil
	}
	return fmt.Errorf("outbox: open: %w: %s: %s; %s", ErrCorrupt, s.path,
		strings.ReplaceAll(strings.Join(msgs, "; "), "\n", "; "), corruptAdvice)
}

// SalvageReport is what Salvage copied, per table.
type SalvageReport struct {
	Damaged string          `json:"damaged"` // where the damaged file was moved
	Tables  []SalvagedTable `json:"tables"`
}

// SalvagedTable is one table's part of a salvage.
type SalvagedTable struct {
	Name   string `json:"name"`
	Copied int    `json:"copied"`
	// Lost says what could not be read (row ranges or "the rest of the table"), "" when nothing.
	Lost string `json:"lost,omitempty"`
}

// salvageTables are the tables Salvage copies, each with the column that orders a scan in
// pages (rowid tables page on rowid and can skip a damaged page; the others are scanned whole
// and stop at the first damaged page).
var salvageTables = []struct{ name, key string }{
	{"outbox", "id"}, {"timeline", "rowid"}, {"call_state", ""}, {"open_calls", ""}, {"meta", ""},
}

// Salvage copies every row that can still be read from the damaged outbox at path into a new
// outbox, then moves the damaged file (and its -wal and -shm) aside as path.damaged-<time> and
// puts the new one in its place. pbxbridge must not be running (the daemon holds the file).
// Rows past a damaged page of a rowid table are reached by skipping ahead; a table without
// rowids stops at its first damaged page. The report says what was copied and lost.
func Salvage(ctx context.Context, path string, opts Options) (SalvageReport, error) {
	var rep SalvageReport
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("outbox: salvage: %w", err)
	}
	lock, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return rep, fmt.Errorf("outbox: salvage: %w", err)
	}
	if err := lockFile(lock); err != nil {
		_ = lock.Close()
		return rep, fmt.Errorf("outbox: salvage: %s is in use (stop pbxbridge first): %w", path, err)
	}
	src, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro&_pragma=query_only(1)")
	if err != nil {
		_ = lock.Close()
		return rep, fmt.Errorf("outbox: salvage: %w", err)
	}
	tmp := path + ".salvage"
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(tmp + suffix)
	}
	dst, err := Open(ctx, tmp, opts)
	if err != nil {
		_ = src.Close()
		_ = lock.Close()
		return rep, fmt.Errorf("outbox: salvage: creating the new outbox: %w", err)
	}
	for _, t := range salvageTables {
		st := copyTable(ctx, src, dst, t.name, t.key)
		rep.Tables = append(rep.Tables, st)
	}
	_ = src.Close()
	if err := dst.Close(); err != nil {
		_ = lock.Close()
		return rep, fmt.Errorf("outbox: salvage: %w", err)
	}
	rep.Damaged = fmt.Sprintf("%s.damaged-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(path+suffix, rep.Damaged+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = lock.Close()
			return rep, fmt.Errorf("outbox: salvage: moving the damaged file aside: %w", err)
		}
	}
	_ = lock.Close()
	for _, suffix := range []string{"-wal", "-shm"} {
		_ = os.Remove(tmp + suffix)
	}
	if err := os.Rename(tmp, path); err != nil {
		return rep, fmt.Errorf("outbox: salvage: %w", err)
	}
	return rep, nil
}

// copyTable copies the readable rows of one table. Columns are those both files have (the
// damaged file may be of an older schema).
func copyTable(ctx context.Context, src *sql.DB, dst *Store, table, key string) SalvagedTable {
	st := SalvagedTable{Name: table}
	cols, err := commonColumns(ctx, src, dst.w, table)
	if err != nil {
		st.Lost = "the whole table: " + firstLine(err.Error())
		return st
	}
	if len(cols) == 0 {
		return st
	}
	list := strings.Join(cols, ", ")
	// Table and column names come from salvageTables and the schema itself, never from input.
	insert := fmt.Sprintf("INSERT OR IGNORE INTO %s (%s) VALUES (%s)", table, list, strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ")) //nolint:gosec // names from our own schema
	put := func(vals []any) {
		if _, err := dst.w.ExecContext(ctx, insert, vals...); err == nil {
			st.Copied++
		}
	}
	if key == "" {
		n, err := scanRows(ctx, src, fmt.Sprintf("SELECT %s FROM %s", list, table), len(cols), put)
		if err != nil {
			st.Lost = fmt.Sprintf("the rest of the table after %d rows: %s", n, firstLine(err.Error()))
		}
		return st
	}
	var lost []string
	after := int64(-1)
	var maxKey int64
	if err := src.QueryRowContext(ctx, fmt.Sprintf("SELECT coalesce(max(%s), 0) FROM %s", key, table)).Scan(&maxKey); err != nil {
		maxKey = 1 << 40 // unknown: skip ahead until nothing answers
	}
	const page = 256
	for after < maxKey {
		last := after
		q := fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s > ? ORDER BY %s LIMIT %d", key, list, table, key, key, page)
		n, err := scanRows(ctx, src, q, len(cols)+1, func(vals []any) {
			if k, ok := vals[0].(int64); ok {
				last = k
			}
			put(vals[1:])
		}, after)
		if err == nil && n < page {
			break
		}
		if err == nil {
			after = last
			continue
		}
		// A damaged page: skip ahead until a query answers again.
		from := last + 1
		skip := int64(1)
		for after = last + skip; after < maxKey; after = last + skip {
			var probe int64
			perr := src.QueryRowContext(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s > ? ORDER BY %s LIMIT 1", key, table, key, key), after).Scan(&probe)
			if perr == nil || errors.Is(perr, sql.ErrNoRows) {
				break
			}
			skip *= 4
		}
		lost = append(lost, fmt.Sprintf("%s %d to %d", key, from, after))
		if ctx.Err() != nil {
			break
		}
	}
	st.Lost = strings.Join(lost, ", ")
	return st
}

// scanRows runs q and hands each row's values to put; it returns how many rows it read.
func scanRows(ctx context.Context, db *sql.DB, q string, ncols int, put func([]any), args ...any) (int, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	n := 0
	for rows.Next() {
		vals := make([]any, ncols)
		ptrs := make([]any, ncols)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		put(vals)
		n++
	}
	return n, rows.Err()
}

// commonColumns lists the columns table has in both databases, in the new one's order.
func commonColumns(ctx context.Context, src, dst *sql.DB, table string) ([]string, error) {
	have, err := columns(ctx, src, table)
	if err != nil {
		return nil, err
	}
	want, err := columns(ctx, dst, table)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range want {
		for _, h := range have {
			if c == h {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

func columns(ctx context.Context, db *sql.DB, table string) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT name FROM pragma_table_info(?)", table)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
