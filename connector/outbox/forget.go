package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Erasure selects what Forget erases: the stored traces of one person. The package does not
// read payloads, so the caller says what belongs to the person.
type Erasure struct {
	// Needles pre-select what is examined: only stored values that contain one of them (as a
	// substring of their bytes) are passed to Match; a value that contains none is kept without
	// being read. At least one, none shorter than 4 bytes (a phone number's last digits, say).
	Needles []string
	// Match reports whether a stored value mentions the person. Required. It is given outbox
	// payloads and open calls' data (a match erases the whole call: every row of its key, its
	// call state, timeline and open call), and timeline entries' summary and detail, call state
	// values and outbox rows' last error of the other calls (a match erases that entry or value;
	// a last error is cleared, its row kept).
	Match func(data []byte) bool
}

// minNeedle is the shortest accepted needle: a shorter one would select nearly every row.
const minNeedle = 4

// ForgetResult says what Forget erased.
type ForgetResult struct {
	// Calls are the keys of the calls erased whole, sorted.
	Calls []string `json:"calls"`
	// Outbox rows deleted, by state.
	Pending int64 `json:"pending"`
	Leased  int64 `json:"leased"`
	Done    int64 `json:"done"`
	Dead    int64 `json:"dead"`
	// CallState values, Timeline entries and OpenCalls deleted (of the erased calls, and
	// entries of other calls that mention the person).
	CallState int64 `json:"call_state"`
	Timeline  int64 `json:"timeline"`
	OpenCalls int64 `json:"open_calls"`
	// LastErrors cleared on rows of other calls.
	LastErrors int64 `json:"last_errors"`
	// WALTruncated: the WAL was checkpointed and truncated afterwards, so no earlier version
	// of an erased page remains in it (false: the store stayed busy; a later checkpoint does it).
	WALTruncated bool `json:"wal_truncated"`
}

// Rows is the number of outbox rows deleted.
func (r ForgetResult) Rows() int64 { return r.Pending + r.Leased + r.Done + r.Dead }

// Forget erases the person e selects from every table but meta, in one durable transaction,
// then checkpoints and truncates the WAL (Checkpoint). With secure_delete on (every
// connection of the store), the erased bytes are overwritten with zeros in the database file,
// and the truncated WAL holds no earlier copy of them. A worker holding a lease on a deleted row
// gets ErrLeaseLost; an erased call is never delivered. It reads every row that contains a
// needle while it holds the writer, so deliveries pause for the time it takes (about a
// second for a few hundred thousand calls).
//
// What Forget does not reach: copies outside the database file (backups, the CRM, logs), and
// a call still in progress, which the caller's open-call ledger writes again when it changes.
func (s *Store) Forget(ctx context.Context, e Erasure) (ForgetResult, error) {
	if e.Match == nil || len(e.Needles) == 0 {
		return ForgetResult{}, fmt.Errorf("outbox: forget: %w: no needles or no match function", ErrInvalid)
	}
	for _, n := range e.Needles {
		if len(n) < minNeedle {
			return ForgetResult{}, fmt.Errorf("outbox: forget: %w: needle %q shorter than %d bytes", ErrInvalid, n, minNeedle)
		}
	}
	var res ForgetResult
	err := s.write(ctx, func(tx wtx, _ time.Time) error {
		res = ForgetResult{}
		return s.forget(tx, e, &res)
	})
	if err != nil {
		return ForgetResult{}, s.opErr("forget", err)
	}
	ok, err := s.Checkpoint(ctx)
	if err != nil {
		return res, err
	}
	res.WALTruncated = ok
	return res, nil
}

// anyNeedle returns the condition "col contains one of the needles" and its arguments.
func anyNeedle(col string, needles []string) (string, []any) {
	conds := make([]string, len(needles))
	args := make([]any, len(needles))
	for i, n := range needles {
		conds[i] = "instr(" + col + ", ?) > 0"
		args[i] = n
	}
	return "(" + strings.Join(conds, " OR ") + ")", args
}

// forget runs inside the writer's transaction.
func (s *Store) forget(tx wtx, e Erasure, res *ForgetResult) error {
	wrap := func(err error) error { return s.wrap("forget", err) }
	keys := map[string]bool{}
	// collect runs q and calls each for every row whose scanned value matches.
	collect := func(q string, args []any, scan func(*sql.Rows) ([]byte, error), each func()) error {
		return tx.query(q, args, func(r *sql.Rows) (bool, error) {
			data, err := scan(r)
			if err != nil {
				return false, err
			}
			if e.Match(data) {
				each()
			}
			return true, nil
		})
	}

	// The calls that are the person's: by their payload, or their open call's data. The
	// conditions built by anyNeedle hold only placeholders.
	cond, args := anyNeedle("payload", e.Needles)
	var key string
	if err := collect(`SELECT key, payload FROM outbox WHERE `+cond, args, func(r *sql.Rows) ([]byte, error) {
		var p []byte
		err := r.Scan(&key, &p)
		return p, err
	}, func() { keys[key] = true }); err != nil {
		return wrap(err)
	}
	if s.openCalls {
		cond, args := anyNeedle("data", e.Needles)
		if err := collect(`SELECT key, data FROM open_calls WHERE `+cond, args, func(r *sql.Rows) ([]byte, error) {
			var d []byte
			err := r.Scan(&key, &d)
			return d, err
		}, func() { keys[key] = true }); err != nil {
			return wrap(err)
		}
	}
	res.Calls = make([]string, 0, len(keys))
	for k := range keys {
		res.Calls = append(res.Calls, k)
	}
	slices.Sort(res.Calls)

	count := func(n *int64, q string, args ...any) error {
		r, err := tx.exec(q, args...)
		if err != nil {
			return wrap(err)
		}
		k, err := r.RowsAffected()
		if err != nil {
			return wrap(err)
		}
		*n += k
		return nil
	}
	for _, k := range res.Calls {
		for _, st := range []struct {
			state State
			n     *int64
		}{{Pending, &res.Pending}, {Leased, &res.Leased}, {Done, &res.Done}, {Dead, &res.Dead}} {
			if err := count(st.n, `DELETE FROM outbox WHERE key = ? AND state = ?`, k, string(st.state)); err != nil {
				return err
			}
		}
		if err := count(&res.CallState, `DELETE FROM call_state WHERE key = ?`, k); err != nil {
			return err
		}
		if err := count(&res.Timeline, `DELETE FROM timeline WHERE key = ?`, k); err != nil {
			return err
		}
		if s.openCalls {
			if err := count(&res.OpenCalls, `DELETE FROM open_calls WHERE key = ?`, k); err != nil {
				return err
			}
		}
	}

	// Mentions in other calls: timeline entries, call state values, last errors.
	var rowids []int64
	var rowid int64
	c1, a1 := anyNeedle("summary", e.Needles)
	c2, a2 := anyNeedle("detail", e.Needles)
	if err := collect(`SELECT rowid, summary || char(10) || detail FROM timeline WHERE `+c1+` OR `+c2, append(a1, a2...),
		func(r *sql.Rows) ([]byte, error) {
			var text string
			err := r.Scan(&rowid, &text)
			return []byte(text), err
		}, func() { rowids = append(rowids, rowid) }); err != nil {
		return wrap(err)
	}
	for _, id := range rowids {
		if err := count(&res.Timeline, `DELETE FROM timeline WHERE rowid = ?`, id); err != nil {
			return err
		}
	}

	type csKey struct{ connector, key, field string }
	var states []csKey
	var ck csKey
	cond, args = anyNeedle("value", e.Needles)
	if err := collect(`SELECT connector, key, field, value FROM call_state WHERE `+cond, args, func(r *sql.Rows) ([]byte, error) {
		var v string
		err := r.Scan(&ck.connector, &ck.key, &ck.field, &v)
		return []byte(v), err
	}, func() { states = append(states, ck) }); err != nil {
		return wrap(err)
	}
	for _, c := range states {
		if err := count(&res.CallState, `DELETE FROM call_state WHERE connector = ? AND key = ? AND field = ?`, c.connector, c.key, c.field); err != nil {
			return err
		}
	}

	var ids []int64
	var id int64
	cond, args = anyNeedle("last_error", e.Needles)
	if err := collect(`SELECT id, last_error FROM outbox WHERE `+cond, args, func(r *sql.Rows) ([]byte, error) {
		var v string
		err := r.Scan(&id, &v)
		return []byte(v), err
	}, func() { ids = append(ids, id) }); err != nil {
		return wrap(err)
	}
	for _, id := range ids {
		if err := count(&res.LastErrors, `UPDATE outbox SET last_error = '' WHERE id = ?`, id); err != nil {
			return err
		}
	}
	return nil
}
