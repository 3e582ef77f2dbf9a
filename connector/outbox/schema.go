package outbox

import (
	"context"
	"fmt"
)

// applicationID marks the file as a pbxbridge outbox ("pbxo") in the SQLite
// header, so that Open refuses to migrate someone else's database.
const applicationID = 0x7062786f

// migrations are the schema steps in order: migrations[i] takes the schema
// from version i to version i+1 (PRAGMA user_version). A released step is
// never edited; a change is a new step appended at the end.
//
// Times are INTEGER unix nanoseconds (UTC). Operators can read them with
// datetime(x / 1e9, 'unixepoch').
var migrations = []string{
	// 1: the queue.
	`CREATE TABLE outbox (
		id               INTEGER PRIMARY KEY AUTOINCREMENT,
		key              TEXT    NOT NULL,
		connector        TEXT    NOT NULL,
		payload          BLOB    NOT NULL,
		started_at       INTEGER NOT NULL,
		enqueued_at      INTEGER NOT NULL,
		updated_at       INTEGER NOT NULL,
		state            TEXT    NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'dead')),
		attempts         INTEGER NOT NULL DEFAULT 0,
		next_attempt_at  INTEGER NOT NULL,
		last_error       TEXT    NOT NULL DEFAULT '',
		lease_id         TEXT,
		lease_expires_at INTEGER,
		done_at          INTEGER,
		UNIQUE (key, connector)
	) STRICT;
	CREATE INDEX outbox_due ON outbox (connector, state, next_attempt_at);
	CREATE INDEX outbox_started ON outbox (connector, started_at);
	CREATE INDEX outbox_done ON outbox (state, done_at);`,

	// 2: adapter state per call, and the per-call timeline.
	`CREATE TABLE call_state (
		connector  TEXT    NOT NULL,
		key        TEXT    NOT NULL,
		field      TEXT    NOT NULL,
		value      TEXT    NOT NULL,
		updated_at INTEGER NOT NULL,
		PRIMARY KEY (connector, key, field)
	) STRICT, WITHOUT ROWID;
	CREATE INDEX call_state_updated ON call_state (updated_at);
	CREATE TABLE timeline (
		key       TEXT    NOT NULL,
		seq       INTEGER NOT NULL,
		at        INTEGER NOT NULL,
		connector TEXT    NOT NULL DEFAULT '',
		kind      TEXT    NOT NULL,
		summary   TEXT    NOT NULL,
		detail    TEXT    NOT NULL DEFAULT '',
		PRIMARY KEY (key, seq)
	) STRICT;
	CREATE INDEX timeline_at ON timeline (at);`,

	// 3: partial indexes, so that a state change touches fewer index entries:
	// expired leases are found without reading every leased row, and only
	// done rows are in the prune index.
	`CREATE INDEX outbox_leases ON outbox (connector, lease_expires_at) WHERE state = 'leased';
	DROP INDEX outbox_done;
	CREATE INDEX outbox_done ON outbox (done_at) WHERE state = 'done';`,

	// 4: the calls in progress as the daemon last knew them (OpenCalls), so
	// that a restart can finish calls that ended while it was not running.
	`CREATE TABLE open_calls (
		key        TEXT    NOT NULL PRIMARY KEY,
		pbx        TEXT    NOT NULL,
		data       BLOB    NOT NULL,
		updated_at INTEGER NOT NULL
	) STRICT, WITHOUT ROWID;
	CREATE INDEX open_calls_pbx ON open_calls (pbx);`,

	// 5: small named values the daemon keeps beside the calls (Meta), e.g. the
	// licence state's second copy; never pruned.
	`CREATE TABLE meta (
		name       TEXT    NOT NULL PRIMARY KEY,
		value      BLOB    NOT NULL,
		updated_at INTEGER NOT NULL
	) STRICT, WITHOUT ROWID;`,

	// 6: dead rows by the time they died, so that Prune finds dead letters past
	// Options.DeadLetterRetention without reading every row.
	`CREATE INDEX outbox_dead ON outbox (updated_at) WHERE state = 'dead';`,
}

// SchemaVersion is the schema version this build writes (len(migrations)).
const SchemaVersion = 6

// prepareFile checks that the file is an outbox this build can use, switches
// it to WAL and applies the missing steps, each in its own transaction
// together with its user_version bump.
func (s *Store) prepareFile(ctx context.Context, steps []string) error {
	var version, appID, objects int
	// The first read of the file: a file that is not a database fails here.
	if err := s.w.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return s.wrap("open", err)
	}
	if err := s.w.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return s.wrap("open", err)
	}
	if err := s.w.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&objects); err != nil {
		return s.wrap("open", err)
	}
	switch {
	case version == 0 && objects > 0, version > 0 && appID != applicationID:
		return fmt.Errorf("outbox: open: %w: %s is an SQLite database but not a pbxbridge outbox (application_id %#x, user_version %d); check the configured path", ErrCorrupt, s.path, appID, version)
	case version > len(steps):
		return fmt.Errorf("outbox: open: %w: %s has schema version %d, this pbxbridge knows up to %d; run the newer pbxbridge that wrote it, or restore a backup taken before the upgrade", ErrSchemaTooNew, s.path, version, len(steps))
	}

	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return s.wrap("open: enabling WAL", err)
	}
	var syncMode int
	if err := s.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil {
		return s.wrap("open", err)
	}
	if mode != "wal" || syncMode != 2 {
		return fmt.Errorf("outbox: open %s: journal_mode=%s synchronous=%d, want wal and 2 (full); WAL needs a local file system with shared memory (not NFS)", s.path, mode, syncMode)
	}

	for v := version; v < len(steps); v++ {
		if err := s.applyStep(ctx, v, steps[v]); err != nil {
			return err
		}
		s.log.Info("outbox: migrated schema", "path", s.path, "from", v, "to", v+1)
	}
	return nil
}

// applyStep runs steps[v] and sets user_version to v+1 in one transaction.
func (s *Store) applyStep(ctx context.Context, v int, step string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap("migrate", err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	if _, err := tx.ExecContext(ctx, step); err != nil {
		return s.wrap(fmt.Sprintf("migrating schema to version %d", v+1), err)
	}
	if v == 0 {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return s.wrap("migrate", err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return s.wrap("migrate", err)
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(fmt.Sprintf("migrating schema to version %d", v+1), err)
	}
	return nil
}
