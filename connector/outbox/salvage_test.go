package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A damaged page is found when the store opens (at 1bda728 the daemon started on such a file,
// said the outbox was fine, held every call in memory and could not be stopped), and Salvage
// copies what can still be read into a new outbox, moving the damaged file aside.
func TestDamagedFileRefusedAndSalvaged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for i := range n {
		e := entry(fmt.Sprintf("lab/%d.%d", 1795300000+i, i), start.Add(time.Duration(i)*time.Second), "b24")
		e.Payload = []byte(fmt.Sprintf(`{"call_id":"%d","customer":"+7900%07d","pad":"%s"}`, i, i, strings.Repeat("x", 200)))
		if err := s.Enqueue(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Overwrite a few pages in the middle of the file (after a checkpoint at Close, the data
	// is in the main file).
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 4096/4*3))
	if _, err := f.WriteAt(junk, (st.Size()/2/4096)*4096); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	_, err = Open(t.Context(), path, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "pbxbridge outbox salvage") {
		t.Fatalf("opening the damaged file: %v, want ErrCorrupt naming the salvage", err)
	}

	rep, err := Salvage(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var copied int
	for _, tb := range rep.Tables {
		if tb.Name == "outbox" {
			copied = tb.Copied
			if tb.Lost == "" {
				t.Errorf("outbox table: nothing reported lost after a damaged page: %+v", tb)
			}
		}
	}
	if copied < n/2 || copied >= n {
		t.Errorf("%d of %d rows salvaged; want most but not all (three pages were overwritten): %+v", copied, n, rep)
	}
	if _, err := os.Stat(rep.Damaged); err != nil {
		t.Errorf("the damaged file was not kept aside: %v", err)
	}
	s2, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("the salvaged outbox does not open: %v", err)
	}
	defer s2.Close()
	stats, err := s2.Stats(t.Context())
	if err != nil || len(stats) != 1 || stats[0].Pending != int64(copied) {
		t.Errorf("salvaged outbox stats %+v, %v; want %d pending", stats, err, copied)
	}
	if err := s2.Check(t.Context()); err != nil {
		t.Errorf("the salvaged outbox fails the full check: %v", err)
	}
}

// Salvage refuses a file an open store holds (the daemon runs).
func TestSalvageRefusesAFileInUse(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Salvage(t.Context(), path, Options{}); err == nil || !strings.Contains(err.Error(), "stop pbxbridge first") {
		t.Fatalf("salvage of a file in use: %v", err)
	}
}
