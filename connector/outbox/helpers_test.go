package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Options.Clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openTest opens a store in a fresh temporary directory, closed at cleanup.
func openTest(t *testing.T, opts Options) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "outbox.db"), opts)
}

// openAt opens the store at path, closed at cleanup.
func openAt(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// entry builds an Entry with a payload derived from key.
func entry(key string, started time.Time, connectors ...string) Entry {
	return Entry{Key: key, StartedAt: started, Payload: []byte(`{"call_id":"` + key + `"}`), Connectors: connectors}
}

func mustEnqueue(t *testing.T, s *Store, entries ...Entry) {
	t.Helper()
	if err := s.Enqueue(t.Context(), entries...); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
}

func mustLease(t *testing.T, s *Store, connector string, limit int, ttl time.Duration) []Row {
	t.Helper()
	rows, err := s.Lease(t.Context(), connector, limit, ttl)
	if err != nil {
		t.Fatalf("Lease(%s, %d): %v", connector, limit, err)
	}
	return rows
}

// rowByKey returns the one row of (key, connector), failing the test if there
// is not exactly one.
func rowByKey(t *testing.T, s *Store, key, connector string) Row {
	t.Helper()
	rows, err := s.List(t.Context(), Filter{Key: key, Connector: connector})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(rows) != 1 {
		t.Fatalf("rows of (%s, %s): got %d, want 1", key, connector, len(rows))
	}
	return rows[0]
}

func keysOf(rows []Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Key
	}
	return out
}

// rawDB opens the file with a plain connection (no store), closed at cleanup.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// schemaOf returns the schema SQL of the database, sorted, for comparison.
func schemaOf(t *testing.T, db *sql.DB) []string {
	t.Helper()
	q, err := db.QueryContext(context.Background(), "SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Close() }()
	var out []string
	for q.Next() {
		var typ, name, text string
		if err := q.Scan(&typ, &name, &text); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s: %s", typ, name, text))
	}
	if err := q.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
