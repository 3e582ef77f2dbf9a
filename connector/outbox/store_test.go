package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSchemaVersionMatchesMigrations(t *testing.T) {
	t.Parallel()
	if SchemaVersion != len(migrations) {
		t.Fatalf("SchemaVersion = %d, len(migrations) = %d", SchemaVersion, len(migrations))
	}
}

func TestOpenNewFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s := openAt(t, path, Options{})

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode = %o, want 600", mode)
	}
	var mode string
	if err := s.r.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	var syncMode, version, appID int
	if err := s.w.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&syncMode); err != nil {
		t.Fatal(err)
	}
	if syncMode != 2 {
		t.Errorf("writer synchronous = %d, want 2 (FULL)", syncMode)
	}
	if err := s.r.QueryRowContext(t.Context(), "PRAGMA user_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != SchemaVersion {
		t.Errorf("user_version = %d, want %d", version, SchemaVersion)
	}
	if err := s.r.QueryRowContext(t.Context(), "PRAGMA application_id").Scan(&appID); err != nil {
		t.Fatal(err)
	}
	if appID != applicationID {
		t.Errorf("application_id = %#x, want %#x", appID, applicationID)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	// The read pool must not write.
	if _, err := s.r.ExecContext(t.Context(), "DELETE FROM outbox"); err == nil {
		t.Error("read pool accepted a write")
	}
}

func TestOpenPathWithURISpecialCharacters(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state ?#%&=dir")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "out?box#1.db")
	s := openAt(t, path, Options{})
	mustEnqueue(t, s, entry("k1", time.Now(), "b24"))
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("WAL not next to the database: %v", err)
	}
}

func TestOpenOptionsValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		path string
		opts Options
	}{
		{"empty path", "", Options{}},
		{"negative retention", filepath.Join(dir, "a.db"), Options{Retention: -time.Hour}},
		{"negative lease ttl", filepath.Join(dir, "b.db"), Options{LeaseTTL: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), tc.path, tc.opts)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "outbox: ") {
				t.Fatalf("err = %v, want outbox: ... ErrInvalid", err)
			}
		})
	}
}

func TestOpenMissingDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "missing")
	_, err := Open(t.Context(), filepath.Join(dir, "outbox.db"), Options{})
	if err == nil {
		t.Fatal("Open succeeded in a missing directory")
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "create it") {
		t.Fatalf("err = %v, want the directory named and what to do", err)
	}
}

func TestOpenUnwritableFile(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		t.Skip("root ignores file permissions")
	}
	path := filepath.Join(t.TempDir(), "outbox.db")
	if err := os.WriteFile(path, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), path, Options{})
	if err == nil {
		t.Fatal("Open succeeded on a read-only file")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("err = %v, want path and permission advice", err)
	}
}

func TestOpenPathIsADirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := Open(t.Context(), dir, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "outbox: open "+dir) || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("Open(directory) = %v, want an error naming the path", err)
	}
}

func TestOpenTwiceIsLocked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(t.Context(), path, Options{})
	if err == nil {
		_ = s2.Close()
		t.Fatal("second Open of the same file succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want ErrLocked naming the path", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if err := s3.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenGarbageFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	garbage := []byte(strings.Repeat("this is not an sqlite database\n", 200))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), path, Options{})
	if err == nil {
		t.Fatal("Open accepted a garbage file")
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	for _, want := range []string{"outbox: ", path, "pbxbridge outbox salvage"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to contain %q", err, want)
		}
	}
	got, rerr := os.ReadFile(path)
	if rerr != nil || string(got) != string(garbage) {
		t.Fatalf("Open modified the garbage file (err %v)", rerr)
	}
}

func TestOpenForeignDatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "other.db")
	db := rawDB(t, path)
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), path, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not a pbxbridge outbox") {
		t.Fatalf("err = %v, want ErrCorrupt saying it is not an outbox", err)
	}
	var mode string
	if err := rawDB(t, path).QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "delete" {
		t.Fatalf("foreign database journal_mode = %q after Open, want it untouched (delete)", mode)
	}
}

func TestOpenTruncatedDatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var entries []Entry
	for i := range 600 {
		entries = append(entries, entry(fmt.Sprintf("call-%04d", i), time.Now(), "b24"))
	}
	mustEnqueue(t, s, entries...)
	if err := s.Close(); err != nil { // checkpoints the WAL into the file
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite the second half of the file with zeros: pages the schema
	// points to are gone.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, fi.Size()/2), fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(t.Context(), path, Options{})
	if err != nil {
		// Damage found at open: it must be the actionable corruption error.
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Fatalf("Open: %v, want ErrCorrupt naming the path", err)
		}
		return
	}
	defer func() { _ = s.Close() }()
	err = s.Check(t.Context())
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move the file") {
		t.Fatalf("Check on a damaged file: %v, want ErrCorrupt naming the path and what to do", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("Check error spans lines: %q", err)
	}
	// Reading the damaged rows fails with the same actionable error.
	_, err = s.List(t.Context(), Filter{Limit: MaxListLimit})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "move the file") {
		t.Fatalf("List on a damaged file: %v, want ErrCorrupt with advice", err)
	}
}

// Every older schema version opens, migrates to the current one with its
// rows intact, and ends up exactly like a fresh database.
func TestMigrateFromEveryOlderVersion(t *testing.T) {
	t.Parallel()
	fresh := openTest(t, Options{})
	want := schemaOf(t, fresh.r)
	for version := 1; version < SchemaVersion; version++ {
		t.Run(fmt.Sprintf("from %d", version), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "outbox.db")
			started := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
			// A database as schema version `version` left it, with rows in it:
			// one pending and one leased by the run that wrote it.
			old, err := open(t.Context(), path, Options{}, migrations[:version])
			if err != nil {
				t.Fatal(err)
			}
			mustEnqueue(t, old, entry("call-1", started, "b24"), entry("call-2", started, "b24"))
			if got := mustLease(t, old, "b24", 1, time.Hour); len(got) != 1 || got[0].Key != "call-1" {
				t.Fatalf("fixture lease = %v", keysOf(got))
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			var v int
			if err := rawDB(t, path).QueryRowContext(t.Context(), "PRAGMA user_version").Scan(&v); err != nil || v != version {
				t.Fatalf("fixture user_version = %d (%v), want %d", v, err, version)
			}

			s := openAt(t, path, Options{})
			if err := s.r.QueryRowContext(t.Context(), "PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion {
				t.Fatalf("user_version after Open = %d (%v), want %d", v, err, SchemaVersion)
			}
			for _, key := range []string{"call-1", "call-2"} {
				r := rowByKey(t, s, key, "b24")
				if !r.StartedAt.Equal(started) || string(r.Payload) != `{"call_id":"`+key+`"}` || r.State != Pending {
					t.Fatalf("row after migration = %+v", r)
				}
			}
			if err := s.CallState("b24").Set(t.Context(), "call-1", "call_id", "X1"); err != nil {
				t.Fatalf("call state after migration: %v", err)
			}
			if got := keysOf(mustLease(t, s, "b24", 10, time.Minute)); !slices.Equal(got, []string{"call-1", "call-2"}) {
				t.Fatalf("lease after migration = %v", got)
			}
			if got := schemaOf(t, s.r); !slices.Equal(got, want) {
				t.Fatalf("migrated schema differs from a fresh one:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	if _, err := db.ExecContext(t.Context(), fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), path, Options{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("err = %v, want ErrSchemaTooNew", err)
	}
	want := fmt.Sprintf("schema version %d, this pbxbridge knows up to %d", SchemaVersion+1, SchemaVersion)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %q, want it to contain %q and the path", err, want)
	}
}

func TestCloseThenCalls(t *testing.T) {
	t.Parallel()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := t.Context()
	checks := map[string]error{
		"Enqueue": s.Enqueue(ctx, entry("k", time.Now(), "b24")),
		"Ack":     s.Ack(ctx, Row{ID: 1, LeaseID: "x"}),
		"Set":     s.CallState("b24").Set(ctx, "k", "f", "v"),
		"Append":  s.AppendTimeline(ctx, "k", TimelineEntry{Kind: "x"}),
		"Check":   s.Check(ctx),
	}
	_, checks["Lease"] = s.Lease(ctx, "b24", 1, 0)
	_, checks["List"] = s.List(ctx, Filter{})
	_, checks["Stats"] = s.Stats(ctx)
	_, checks["Prune"] = s.Prune(ctx)
	_, checks["Timeline"] = s.Timeline(ctx, "k")
	_, _, checks["Get"] = s.CallState("b24").Get(ctx, "k", "f")
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestOpenReleasesLeasesOfPreviousRun(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	clock := newFakeClock()
	s, err := Open(t.Context(), path, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, s, entry("a", clock.Now(), "b24"), entry("b", clock.Now(), "b24"))
	leased := mustLease(t, s, "b24", 10, time.Hour)
	if len(leased) != 2 {
		t.Fatalf("leased %d rows, want 2", len(leased))
	}
	if err := s.Close(); err != nil { // the worker "died" holding the leases
		t.Fatal(err)
	}

	s = openAt(t, path, Options{Clock: clock.Now}) // same clock: the hour-long leases have not expired
	again := mustLease(t, s, "b24", 10, time.Hour)
	if got := keysOf(again); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("leased after reopen: %v, want [a b]", got)
	}
	if err := s.Ack(t.Context(), leased[0]); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Ack with the previous run's lease: %v, want ErrLeaseLost", err)
	}
}
