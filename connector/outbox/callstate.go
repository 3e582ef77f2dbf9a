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
type CallState struct {
	s         *Store
	connector string
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
	if err := c.check("set", key, field); err != nil {
		return err
	}
	err := c.s.write(ctx, func(tx wtx, now time.Time) error {
		_, err := tx.exec(sqlCallStateSet, c.connector, key, field, value, now.UnixNano())
		if err != nil {
			return c.s.wrap(fmt.Sprintf("call state %s: set %q %q", c.connector, key, field), err)
		}
		return nil
	})
	return c.s.opErr("call state: set", err)
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
	return out, nil
}

// SetMany stores the fields of the call key in one transaction (all or none), replacing older
// values. It is durable when it returns nil.
func (c *CallState) SetMany(ctx context.Context, key string, fields map[string]string) error {
	for f := range fields {
		if err := c.check("set", key, f); err != nil {
			return err
		}
	}
	if len(fields) == 0 {
		return nil
	}
	err := c.s.write(ctx, func(tx wtx, now time.Time) error {
		for f, v := range fields {
			if _, err := tx.exec(sqlCallStateSet, c.connector, key, f, v, now.UnixNano()); err != nil {
				return c.s.wrap(fmt.Sprintf("call state %s: set %q %q", c.connector, key, f), err)
			}
		}
		return nil
	})
	return c.s.opErr("call state: set", err)
}

func (c *CallState) check(op, key, field string) error {
	if c.connector == "" || key == "" || field == "" {
		return fmt.Errorf("outbox: call state %s: %w: empty connector, key or field", op, ErrInvalid)
	}
	return nil
}
