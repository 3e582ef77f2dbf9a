package outbox

import (
	"context"
	"fmt"
	"time"
)

// OpenCall is a call in progress as the daemon last knew it: Data is the caller's encoding of
// what it knew (connector's callmodel summary). The row of a call goes away when its record is
// enqueued (in the same commit) or by DeleteOpenCalls; what remains after a crash are the calls
// that were open when the daemon stopped.
type OpenCall struct {
	Key       string
	PBX       string
	Data      []byte
	UpdatedAt time.Time
}

// PutOpenCalls stores calls (replacing older versions) and deletes the keys in gone, in one
// commit. The commit survives a crash of the daemon when PutOpenCalls returns nil; it is not
// fsync'd on its own (see writeLazy), so a power loss or an OS crash may undo the latest
// changes, as it ends the PBX's calls on the same host anyway. Enqueue deletes the row of its
// record's call in its own, durable commit.
func (s *Store) PutOpenCalls(ctx context.Context, calls []OpenCall, gone []string) error {
	return s.PutOpenCallsWithin(ctx, 0, calls, gone)
}

// PutOpenCallsWithin is PutOpenCalls that waits, up to within, for another write to share its
// commit (under load it costs no commit of its own); within 0 commits at once.
func (s *Store) PutOpenCallsWithin(ctx context.Context, within time.Duration, calls []OpenCall, gone []string) error {
	if len(calls) == 0 && len(gone) == 0 {
		return nil
	}
	for _, c := range calls {
		if c.Key == "" || c.PBX == "" {
			return fmt.Errorf("outbox: open calls: %w: empty key or pbx", ErrInvalid)
		}
	}
	write := s.writeLazy
	if within > 0 {
		write = func(ctx context.Context, fn func(wtx, time.Time) error) error { return s.writeRiding(ctx, within, fn) }
	}
	err := write(ctx, func(tx wtx, now time.Time) error {
		for _, c := range calls {
			at := c.UpdatedAt
			if at.IsZero() {
				at = now
			}
			if _, err := tx.exec(sqlOpenCallPut, c.Key, c.PBX, payloadOf(c.Data), at.UnixNano()); err != nil {
				return s.wrap(fmt.Sprintf("open calls: put %q", c.Key), err)
			}
		}
		for _, k := range gone {
			if _, err := tx.exec(sqlOpenCallDelete, k); err != nil {
				return s.wrap(fmt.Sprintf("open calls: delete %q", k), err)
			}
		}
		return nil
	})
	return s.opErr("open calls", err)
}

// DeleteOpenCalls removes calls from the open calls.
func (s *Store) DeleteOpenCalls(ctx context.Context, keys ...string) error {
	return s.PutOpenCalls(ctx, nil, keys)
}

// OpenCalls returns the open calls of pbx, oldest update first.
func (s *Store) OpenCalls(ctx context.Context, pbx string) ([]OpenCall, error) {
	leave, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	q, err := s.r.QueryContext(ctx, `SELECT key, pbx, data, updated_at FROM open_calls WHERE pbx = ? ORDER BY updated_at, key`, pbx)
	if err != nil {
		return nil, s.wrap("open calls: list", err)
	}
	defer func() { _ = q.Close() }()
	var out []OpenCall
	for q.Next() {
		var c OpenCall
		var at int64
		if err := q.Scan(&c.Key, &c.PBX, &c.Data, &at); err != nil {
			return nil, s.wrap("open calls: list", err)
		}
		c.UpdatedAt = time.Unix(0, at).UTC()
		out = append(out, c)
	}
	if err := q.Err(); err != nil {
		return nil, s.wrap("open calls: list", err)
	}
	return out, nil
}
