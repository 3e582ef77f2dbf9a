package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"
)

// State is the delivery state of a row.
type State string

// The row states. A row moves pending -> leased -> done | pending (retry) |
// dead; an expired lease makes a leased row leasable again; operators move
// dead -> pending (Requeue) and done -> pending (Redeliver).
const (
	Pending State = "pending" // waiting for its next_attempt_at
	Leased  State = "leased"  // a worker is delivering it until the lease expires
	Done    State = "done"    // delivered; kept for Retention, then pruned
	Dead    State = "dead"    // failed permanently; kept for an operator for DeadLetterRetention
)

// ParseState parses a state name as printed by State.
func ParseState(s string) (State, error) {
	switch st := State(s); st {
	case Pending, Leased, Done, Dead:
		return st, nil
	}
	return "", fmt.Errorf("outbox: %w: unknown state %q (want pending, leased, done or dead)", ErrInvalid, s)
}

// Entry is one finished call record to deliver to one or more connectors.
type Entry struct {
	// Key identifies the call record (the record's call id); with the
	// connector it is the idempotency key of a row. Required.
	Key string
	// StartedAt is the call's start time, used by Redeliver and List ranges.
	// Required.
	StartedAt time.Time
	// Payload is the serialised record, stored and returned unchanged.
	Payload []byte
	// Connectors names the connector instances that must receive the record,
	// one row each. At least one, no duplicates, none empty.
	Connectors []string
	// Timeline entries are appended to the call's timeline in the same
	// transaction (each needs a Kind), so that a finished call costs one
	// durable commit. They are appended on every Enqueue of the entry, also
	// when its rows were already stored.
	Timeline []TimelineEntry
}

// Row is one outbox row: one call record for one connector. Lease returns rows
// in state Leased with LeaseID set; Ack, Retry, Bury and Release use only ID
// and LeaseID.
type Row struct {
	ID             int64
	Key            string
	Connector      string
	Payload        []byte
	StartedAt      time.Time
	EnqueuedAt     time.Time
	UpdatedAt      time.Time
	State          State
	Attempts       int // finished delivery attempts: Ack, Retry and Bury add one
	NextAttemptAt  time.Time
	LastError      string
	LeaseID        string    // empty unless leased
	LeaseExpiresAt time.Time // zero unless leased
	DoneAt         time.Time // zero unless done
}

// rowColumns lists the columns scanRow reads, in order.
const rowColumns = `id, key, connector, payload, started_at, enqueued_at, updated_at, state, attempts,
	next_attempt_at, last_error, lease_id, lease_expires_at, done_at`

type scanner interface{ Scan(dest ...any) error }

func scanRow(sc scanner) (Row, error) {
	var (
		r                                Row
		started, enqueued, updated, next int64
		state                            string
		leaseID                          sql.NullString
		leaseExp, doneAt                 sql.NullInt64
	)
	if err := sc.Scan(&r.ID, &r.Key, &r.Connector, &r.Payload, &started, &enqueued, &updated, &state,
		&r.Attempts, &next, &r.LastError, &leaseID, &leaseExp, &doneAt); err != nil {
		return Row{}, err
	}
	r.StartedAt, r.EnqueuedAt, r.UpdatedAt, r.NextAttemptAt = fromNanos(started), fromNanos(enqueued), fromNanos(updated), fromNanos(next)
	r.State = State(state)
	r.LeaseID = leaseID.String
	if leaseExp.Valid {
		r.LeaseExpiresAt = fromNanos(leaseExp.Int64)
	}
	if doneAt.Valid {
		r.DoneAt = fromNanos(doneAt.Int64)
	}
	if r.Payload == nil {
		r.Payload = []byte{}
	}
	return r, nil
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// Enqueue stores the entries, one row per (key, connector), all in one
// transaction. When it returns nil the rows are committed and fsync'd: they
// survive a crash or power loss. It is idempotent: a (key, connector) that is
// already stored, in any state, is left as it is (the first payload wins and a
// done row is not resurrected), so the daemon may enqueue a call again after a
// crash. On error the entries may or may not have been stored (ctx ended
// while the call waited, or the disk failed during the commit); enqueuing
// them again is safe. Invalid entries are refused before anything is written.
func (s *Store) Enqueue(ctx context.Context, entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	for _, e := range entries {
		if err := e.validate(); err != nil {
			return err
		}
	}
	err := s.write(ctx, func(tx wtx, now time.Time) error {
		for _, e := range entries {
			for _, c := range e.Connectors {
				_, err := tx.exec(sqlEnqueue, e.Key, c, payloadOf(e.Payload), e.StartedAt.UnixNano(), now.UnixNano())
				if err != nil {
					return s.wrap(fmt.Sprintf("enqueue %q for %q", e.Key, c), err)
				}
			}
			if err := s.appendTimeline(tx, now, e.Key, e.Timeline); err != nil {
				return err
			}
			// The call is finished: it leaves the open calls in the same commit.
			if !s.openCalls {
				continue
			}
			if _, err := tx.exec(sqlOpenCallDelete, e.Key); err != nil {
				return s.wrap(fmt.Sprintf("enqueue %q: closing the open call", e.Key), err)
			}
		}
		return nil
	})
	return s.opErr("enqueue", err)
}

func payloadOf(p []byte) []byte {
	if p == nil {
		return []byte{}
	}
	return p
}

func (e Entry) validate() error {
	switch {
	case e.Key == "":
		return fmt.Errorf("outbox: enqueue: %w: empty key", ErrInvalid)
	case e.StartedAt.IsZero():
		return fmt.Errorf("outbox: enqueue %q: %w: zero StartedAt", e.Key, ErrInvalid)
	case len(e.Connectors) == 0:
		return fmt.Errorf("outbox: enqueue %q: %w: no connectors", e.Key, ErrInvalid)
	}
	if err := validTimeline(e.Timeline); err != nil {
		return fmt.Errorf("outbox: enqueue %q: %w", e.Key, err)
	}
	for i, c := range e.Connectors {
		if c == "" {
			return fmt.Errorf("outbox: enqueue %q: %w: empty connector name", e.Key, ErrInvalid)
		}
		if slices.Contains(e.Connectors[:i], c) {
			return fmt.Errorf("outbox: enqueue %q: %w: connector %q listed twice", e.Key, ErrInvalid, c)
		}
	}
	return nil
}

// Lease takes up to limit rows of connector that are due (pending with
// next_attempt_at <= now, or leased with an expired lease), marks them leased
// under one fresh lease id until now+ttl (ttl 0: Options.LeaseTTL) and returns
// them ordered by next_attempt_at, then id (enqueue order for first attempts).
// It returns an empty slice when nothing is due. Concurrent Lease calls never
// return the same row while its lease is valid. The lease is committed before
// Lease returns, without an fsync of its own (see writeLazy): it survives a
// crash of the daemon, a power loss may undo it, which only leaves the rows
// pending as Open leaves every row of a previous process. If ctx ends while
// waiting, rows may stay leased until the lease expires.
func (s *Store) Lease(ctx context.Context, connector string, limit int, ttl time.Duration) ([]Row, error) {
	rows, _, err := s.LeaseNext(ctx, connector, limit, ttl)
	return rows, err
}

// LeaseNext is Lease that also says when to lease again: when it returns
// fewer than limit rows, next is the earliest moment a row of connector
// becomes due without anything else happening (the earliest next_attempt_at
// of its pending rows and lease expiry of its rows leased before; zero when
// it has none); when it returns limit rows, next is now (more may be due).
// The rows it returns are not counted: the caller settles them, and one it
// cannot settle is due again when its lease expires (Row.LeaseExpiresAt). A
// worker that sleeps until then, or until an Enqueue, Requeue or Redeliver
// of the connector wakes it, never polls an idle outbox.
func (s *Store) LeaseNext(ctx context.Context, connector string, limit int, ttl time.Duration) ([]Row, time.Time, error) {
	switch {
	case connector == "":
		return nil, time.Time{}, fmt.Errorf("outbox: lease: %w: empty connector", ErrInvalid)
	case limit <= 0:
		return nil, time.Time{}, fmt.Errorf("outbox: lease: %w: limit %d, want > 0", ErrInvalid, limit)
	case ttl < 0:
		return nil, time.Time{}, fmt.Errorf("outbox: lease: %w: negative ttl", ErrInvalid)
	}
	if ttl == 0 {
		ttl = s.leaseTTL
	}
	leaseID := rand.Text()
	// The writer goroutine fills rows and next; they are read only once it has answered (err ==
	// nil). A caller whose ctx ends first returns without touching them while the writer may still
	// run fn, so they are locals of this call, not its named results.
	var (
		rows []Row
		next time.Time
	)
	err := s.writeLazy(ctx, func(tx wtx, now time.Time) error {
		rows, next = rows[:0], time.Time{}
		if _, err := tx.exec(sqlExpireLeases, connector, now.UnixNano()); err != nil {
			return s.wrap("lease", err)
		}
		var scanErr error
		err := tx.query(sqlLeaseSelect, []any{connector, now.UnixNano()}, func(q *sql.Rows) (bool, error) {
			r, err := scanRow(q)
			if err != nil {
				scanErr = err
				return false, err
			}
			rows = append(rows, r)
			return len(rows) < limit, nil
		})
		switch {
		case scanErr != nil:
			return s.damaged("lease", scanErr)
		case err != nil:
			return s.wrap("lease", err)
		}
		exp := now.Add(ttl)
		for i := range rows {
			if _, err := tx.exec(sqlLeaseRow, leaseID, exp.UnixNano(), now.UnixNano(), rows[i].ID); err != nil {
				return s.wrap("lease", err)
			}
			rows[i].State, rows[i].LeaseID, rows[i].LeaseExpiresAt, rows[i].UpdatedAt = Leased, leaseID, exp, now
		}
		if len(rows) == limit {
			next = now
			return nil
		}
		var due sql.NullInt64
		if err := tx.query(sqlNextDue, []any{connector, leaseID}, func(q *sql.Rows) (bool, error) {
			return false, q.Scan(&due)
		}); err != nil {
			return s.wrap("lease", err)
		}
		if due.Valid {
			next = fromNanos(due.Int64)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, s.opErr("lease", err)
	}
	if rows == nil {
		rows = []Row{}
	}
	return rows, next, nil
}

// Ack marks a leased row delivered (done). It fails with ErrLeaseLost if the
// row is no longer leased under row.LeaseID. An ack after the lease expired
// still succeeds until a Lease call of the connector reclaims the row. The
// timeline entries, if any, are appended to the call's timeline in the same
// transaction, only when the row was acknowledged.
func (s *Store) Ack(ctx context.Context, row Row, timeline ...TimelineEntry) error {
	return s.finish(ctx, "ack", row, sqlAck, nil, "", timeline)
}

// Retry returns a leased row to pending, due at next (zero: now), with one
// more attempt counted and errMsg recorded as its last error. It fails with
// ErrLeaseLost if the row is no longer leased under row.LeaseID. Timeline
// entries are appended as with Ack.
func (s *Store) Retry(ctx context.Context, row Row, next time.Time, errMsg string, timeline ...TimelineEntry) error {
	var nextN any // nil: now
	if !next.IsZero() {
		nextN = next.UnixNano()
	}
	return s.finish(ctx, "retry", row, sqlRetry, nextN, truncateError(errMsg), timeline)
}

// Bury moves a leased row to dead (a permanent failure) with reason recorded
// as its last error and one more attempt counted. Dead rows stay until an
// operator requeues or drops them, or Prune deletes them after
// Options.DeadLetterRetention. It fails with ErrLeaseLost if the row is no
// longer leased under row.LeaseID. Timeline entries are appended as with Ack.
func (s *Store) Bury(ctx context.Context, row Row, reason string, timeline ...TimelineEntry) error {
	return s.finish(ctx, "bury", row, sqlBury, nil, truncateError(reason), timeline)
}

// finish runs one of sqlAck, sqlRetry, sqlBury on the row if it is still
// leased under row.LeaseID, and then appends timeline to the row's call.
func (s *Store) finish(ctx context.Context, op string, row Row, stmt string, next any, text string, timeline []TimelineEntry) error {
	if row.ID <= 0 || row.LeaseID == "" {
		return fmt.Errorf("outbox: %s row %d: %w: not a leased row", op, row.ID, ErrInvalid)
	}
	if err := validTimeline(timeline); err != nil {
		return fmt.Errorf("outbox: %s row %d: %w", op, row.ID, err)
	}
	if len(timeline) > 0 && row.Key == "" {
		return fmt.Errorf("outbox: %s row %d: %w: timeline entries for a row without its key", op, row.ID, ErrInvalid)
	}
	err := s.write(ctx, func(tx wtx, now time.Time) error {
		res, err := tx.exec(stmt, now.UnixNano(), next, text, row.ID, row.LeaseID)
		if err != nil {
			return s.wrap(fmt.Sprintf("%s row %d", op, row.ID), err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return s.wrap(fmt.Sprintf("%s row %d", op, row.ID), err)
		} else if n == 0 {
			return fmt.Errorf("outbox: %s row %d: %w: it was re-leased, acknowledged, re-queued or dropped since lease %s", op, row.ID, ErrLeaseLost, row.LeaseID)
		}
		return s.appendTimeline(tx, now, row.Key, timeline)
	})
	return s.opErr(op, err)
}

// Release returns leased rows to pending without counting an attempt and
// without changing their due time, for a worker that stops before delivering
// them (graceful drain). Rows no longer leased under their LeaseID are
// skipped. It returns how many rows were released.
func (s *Store) Release(ctx context.Context, rows ...Row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	var n int
	err := s.write(ctx, func(tx wtx, now time.Time) error {
		n = 0
		for _, r := range rows {
			res, err := tx.exec(sqlRelease, now.UnixNano(), r.ID, r.LeaseID)
			if err != nil {
				return s.wrap("release", err)
			}
			k, err := res.RowsAffected()
			if err != nil {
				return s.wrap("release", err)
			}
			n += int(k)
		}
		return nil
	})
	if err != nil {
		return 0, s.opErr("release", err)
	}
	return n, nil
}

// opErr prefixes errors that do not carry the package prefix yet: context
// and commit errors are returned by write unwrapped or already wrapped.
func (s *Store) opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("outbox: %s: %w", op, err)
	}
	return err
}

// truncateError bounds an error text to maxErrorLen bytes on a rune boundary.
func truncateError(msg string) string {
	if len(msg) <= maxErrorLen {
		return msg
	}
	cut := maxErrorLen
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}
