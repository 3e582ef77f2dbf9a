package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// maxMetaSize bounds one Meta value.
const maxMetaSize = 1 << 20

// GetMeta returns the value stored under name, or nil (and no error) when none is.
func (s *Store) GetMeta(ctx context.Context, name string) ([]byte, error) {
	leave, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	var v []byte
	err = s.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE name = ?`, name).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, s.wrap(fmt.Sprintf("meta: get %q", name), err)
	}
	return v, nil
}

// SetMeta stores value under name, replacing an older one. It is durable when it returns nil.
// Meta values are small named values kept beside the calls and never pruned.
func (s *Store) SetMeta(ctx context.Context, name string, value []byte) error {
	if name == "" || len(value) > maxMetaSize {
		return fmt.Errorf("outbox: meta: set %q: empty name or value over %d bytes", name, maxMetaSize)
	}
	err := s.write(ctx, func(tx wtx, now time.Time) error {
		_, err := tx.exec(`INSERT INTO meta (name, value, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			name, value, now.UnixNano())
		if err != nil {
			return s.wrap(fmt.Sprintf("meta: set %q", name), err)
		}
		return nil
	})
	return s.opErr("meta: set", err)
}

// DeleteMeta removes the value stored under name (nothing when there is none). It is durable when
// it returns nil.
func (s *Store) DeleteMeta(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx wtx, _ time.Time) error {
		if _, err := tx.exec(`DELETE FROM meta WHERE name = ?`, name); err != nil {
			return s.wrap(fmt.Sprintf("meta: delete %q", name), err)
		}
		return nil
	})
	return s.opErr("meta: delete", err)
}
