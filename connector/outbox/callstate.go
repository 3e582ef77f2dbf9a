package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// CallState is a small per-call key/value store for one connector, kept in
// the outbox database: an adapter saves what it learned about a call while it
// was live (for example the Bitrix24 CALL_ID returned while the phone rang)
// and the final delivery reads it back, across restarts. Values are pruned
// with the outbox retention once no outbox row of the call and connector
// remains. Safe for concurrent use.
//
// Three ways to write, from the most to the least expensive:
//
//   - Set and SetMany are durable when they return (an fsync'd commit).
//   - SetLazy is committed when it returns, without an fsync of its own: the
//     value survives a crash or kill -9 of the daemon; a power loss may undo
//     it until the store's next durable commit (the next Enqueue or Ack of any
//     call: at the latest the acknowledgement of this call's own delivery).
//     For write-ahead markers ("a request is about to go out").
//   - SetLater returns at once: the value is written with the next commit of
//     the store, within LaterWithin, and every Get and GetAll of this
//     process sees it from the moment SetLater returned. A crash in between
//     loses it. For results an adapter would look up or redo harmlessly, and
//     for state written during a delivery (its acknowledgement follows at
//     once and carries it).
type CallState struct {
	s         *Store
	connector string
}

// LaterWithin bounds how long a SetLater value waits for another write to
// share its commit.
const LaterWithin = 50 * time.Millisecond

// laterKey identifies one call's fields in the overlay of values not committed yet.
type laterKey struct{ connector, key string }

// laterValue is a value of SetLater not committed yet; seq tells a newer SetLater of the same
// field from the one being committed.
type laterValue struct {
	value string
	seq   uint64
}

// CallState returns the call state of connector.
func (s *Store) CallState(connector string) *CallState {
	return &CallState{s: s, connector: connector}
}

// Get returns the value of field for the call key, and whether it is set.
func (c *CallState) Get(ctx context.Context, key, field string) (string, bool, error) {
	if err := c.check("get", key, field); err != nil {
		return "", false, err
	}
	if v, ok := c.s.laterValue(laterKey{c.connector, key}, field); ok {
		return v, true, nil
	}
	leave, err := c.s.enter()
	if err != nil {
		return "", false, err
	}
	defer leave()
	var v string
	err = c.s.r.QueryRowContext(ctx, `SELECT value FROM call_state WHERE connector = ? AND key = ? AND field = ?`,
		c.connector, key, field).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, c.s.wrap(fmt.Sprintf("call state %s: get %q %q", c.connector, key, field), err)
	}
	return v, true, nil
}

// Set stores value for field of the call key, replacing an older value. It is
// durable when it returns nil.
func (c *CallState) Set(ctx context.Context, key, field, value string) error {
	return c.SetMany(ctx, key, map[string]string{field: value})
}

// GetAll returns every field set for the call key (an empty map when none).
func (c *CallState) GetAll(ctx context.Context, key string) (map[string]string, error) {
	if err := c.check("get all", key, "-"); err != nil {
		return nil, err
	}
	leave, err := c.s.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	// The values not committed yet, taken before the read: one committed meanwhile is in the
	// read, a newer one in the overlay.
	lk := laterKey{c.connector, key}
	overlay := map[string]string{}
	c.s.laterOverlay(lk, overlay)
	q, err := c.s.r.QueryContext(ctx, `SELECT field, value FROM call_state WHERE connector = ? AND key = ?`, c.connector, key)
	if err != nil {
		return nil, c.s.wrap(fmt.Sprintf("call state %s: get all %q", c.connector, key), err)
	}
	defer func() { _ = q.Close() }()
	out := map[string]string{}
	for q.Next() {
		var f, v string
		if err := q.Scan(&f, &v); err != nil {
			return nil, c.s.damaged(fmt.Sprintf("call state %s: get all %q", c.connector, key), err)
		}
		out[f] = v
	}
	if err := q.Err(); err != nil {
		return nil, c.s.wrap(fmt.Sprintf("call state %s: get all %q", c.connector, key), err)
	}
	for f, v := range overlay {
		out[f] = v
	}
	return out, nil
}

// SetMany stores the fields of the call key in one transaction (all or none), replacing older
// values. It is durable when it returns nil.
func (c *CallState) SetMany(ctx context.Context, key string, fields map[string]string) error {
	return c.setMany(ctx, key, fields, c.s.write)
}

// SetLazy is SetMany committed without an fsync of its own: when it returns nil the values
// survive a crash of the daemon, and the store's next durable commit makes them durable (see
// CallState).
func (c *CallState) SetLazy(ctx context.Context, key string, fields map[string]string) error {
	return c.setMany(ctx, key, fields, c.s.writeLazy)
}

func (c *CallState) setMany(ctx context.Context, key string, fields map[string]string, write func(context.Context, func(wtx, time.Time) error) error) error {
	for f := range fields {
		if err := c.check("set", key, f); err != nil {
			return err
		}
	}
	if len(fields) == 0 {
		return nil
	}
	err := write(ctx, func(tx wtx, now time.Time) error {
		for f, v := range fields {
			if _, err := tx.exec(sqlCallStateSet, c.connector, key, f, v, now.UnixNano()); err != nil {
				return c.s.wrap(fmt.Sprintf("call state %s: set %q %q", c.connector, key, f), err)
			}
		}
		return nil
	})
	return c.s.opErr("call state: set", err)
}

// SetLater sets the fields of the call key without waiting: they are written with the store's
// next commit, within LaterWithin, and Get and GetAll see them at once (see CallState). A
// value that cannot be written (the disk is full) is logged and forgotten. It fails only for
// invalid arguments and after Close.
func (c *CallState) SetLater(key string, fields map[string]string) error {
	for f := range fields {
		if err := c.check("set", key, f); err != nil {
			return err
		}
	}
	if len(fields) == 0 {
		return nil
	}
	lk := laterKey{c.connector, key}
	vals := make(map[string]laterValue, len(fields))
	s := c.s
	s.laterMu.Lock()
	if s.later == nil {
		s.later = map[laterKey]map[string]laterValue{}
	}
	pending := s.later[lk]
	if pending == nil {
		pending = map[string]laterValue{}
		s.later[lk] = pending
	}
	for f, v := range fields {
		s.laterSeq++
		lv := laterValue{value: v, seq: s.laterSeq}
		pending[f] = lv
		vals[f] = lv
	}
	s.laterMu.Unlock()
	err := s.writeLater(s.laterWithin, func(tx wtx, now time.Time) error {
		for f, v := range vals {
			if _, err := tx.exec(sqlCallStateSet, c.connector, key, f, v.value, now.UnixNano()); err != nil {
				return s.wrap(fmt.Sprintf("call state %s: set %q %q", c.connector, key, f), err)
			}
		}
		return nil
	}, func(err error) {
		if err != nil {
			s.log.Warn("outbox: call state not stored", "connector", c.connector, "call", key, "err", err)
		}
		s.laterDone(lk, vals)
	})
	if err != nil {
		s.laterDone(lk, vals)
		return err
	}
	return nil
}

// laterValue returns a SetLater value of field not committed yet.
func (s *Store) laterValue(lk laterKey, field string) (string, bool) {
	s.laterMu.Lock()
	defer s.laterMu.Unlock()
	v, ok := s.later[lk][field]
	return v.value, ok
}

// laterOverlay puts the SetLater values of lk not committed yet into out.
func (s *Store) laterOverlay(lk laterKey, out map[string]string) {
	s.laterMu.Lock()
	defer s.laterMu.Unlock()
	for f, v := range s.later[lk] {
		out[f] = v.value
	}
}

// laterDone forgets the overlay values of vals once they are committed (or lost), unless a newer
// SetLater replaced them meanwhile.
func (s *Store) laterDone(lk laterKey, vals map[string]laterValue) {
	s.laterMu.Lock()
	defer s.laterMu.Unlock()
	pending := s.later[lk]
	for f, v := range vals {
		if pending[f].seq == v.seq {
			delete(pending, f)
		}
	}
	if len(pending) == 0 {
		delete(s.later, lk)
	}
}

func (c *CallState) check(op, key, field string) error {
	if c.connector == "" || key == "" || field == "" {
		return fmt.Errorf("outbox: call state %s: %w: empty connector, key or field", op, ErrInvalid)
	}
	return nil
}
