package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// maintenance runs fn on a connection of its own to the store's file (not the writer, not the
// read pool, whose connections are query_only): a checkpoint or a VACUUM INTO must not run
// inside the writer's transactions, and neither holds the writer while it waits or copies.
// Errors are returned as they come (callers wrap them), ErrClosed after Close.
func (s *Store) maintenance(ctx context.Context, fn func(*sql.Conn) error) error {
	leave, err := s.enter()
	if err != nil {
		return err
	}
	defer leave()
	db, err := sql.Open("sqlite", dsnFor(s.path))
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	return fn(conn)
}

// Checkpoint copies every page of the WAL into the database file and truncates the WAL to zero
// bytes (PRAGMA wal_checkpoint(TRUNCATE)), so that the WAL holds no earlier version of any page
// (after Forget, say). It waits up to the busy timeout (5 s) for a moment without a write in
// progress, and reports false, without an error, when the store stayed busy: the WAL is then
// checkpointed later by SQLite itself, but not necessarily truncated.
func (s *Store) Checkpoint(ctx context.Context) (bool, error) {
	var busy, logPages, done int
	err := s.maintenance(ctx, func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done)
	})
	switch {
	case errors.Is(err, ErrClosed):
		return false, err
	case err != nil:
		return false, s.wrap("checkpoint", err)
	}
	return busy == 0, nil
}

// Backup writes a consistent copy of the database to path while the store runs: SQLite's
// VACUUM INTO reads one snapshot (a read transaction: writes go on meanwhile), and the copy is
// compact (no free pages, hence no remains of deleted content) and holds every committed change
// of that snapshot, WAL included. The file is created with mode 0600 and must not exist; it is
// fsync'd before Backup returns its size. A failed Backup removes what it wrote. The copy is a
// complete outbox: Open accepts it (its schema version and application id are kept).
//
// Backup writes path only: making it visible atomically (a temporary name, then a rename) is the
// caller's business.
func (s *Store) Backup(ctx context.Context, path string) (size int64, err error) {
	if path == "" {
		return 0, fmt.Errorf("outbox: backup: %w: empty path", ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, fmt.Errorf("outbox: backup: %w", err)
	}
	if abs == s.path {
		return 0, fmt.Errorf("outbox: backup: %w: %s is the database itself", ErrInvalid, abs)
	}
	// SQLite would create the file with the umask's mode; the copy holds personal data.
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("outbox: backup: %w: %s exists", ErrInvalid, abs)
		}
		return 0, fmt.Errorf("outbox: backup: %w", err)
	}
	_ = f.Close()
	defer func() {
		if err != nil {
			_ = os.Remove(abs)
		}
	}()
	err = s.maintenance(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, "VACUUM INTO ?", abs)
		return err
	})
	switch {
	case errors.Is(err, ErrClosed):
		return 0, err
	case err != nil:
		return 0, s.wrap("backup to "+abs, err)
	}
	f, err = os.Open(abs)
	if err != nil {
		return 0, fmt.Errorf("outbox: backup: %w", err)
	}
	defer func() { _ = f.Close() }()
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("outbox: backup: syncing %s: %w", abs, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("outbox: backup: %w", err)
	}
	return fi.Size(), nil
}

// LockFile takes the process lock that Open takes on the database file at path, without opening
// the database, for tools that replace the file while no Store may have it open (a restore). It
// fails with ErrLocked while a Store, in this process or another, has the file open. A missing
// file is not created: there is nothing to lock, and unlock does nothing.
func LockFile(path string) (unlock func() error, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return func() error { return nil }, nil
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: lock %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		_ = f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("outbox: lock %s: %w (is pbxbridge running?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("outbox: lock %s: %w", path, err)
	}
	return f.Close, nil
}
