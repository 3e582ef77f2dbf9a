package outbox

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestMeta(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if v, err := s.GetMeta(ctx, "none"); v != nil || err != nil {
		t.Fatalf("GetMeta of nothing: %q, %v", v, err)
	}
	if err := s.SetMeta(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMetaLazy(ctx, "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMetaLazy(ctx, "b", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMetaLazy(ctx, "", []byte("x")); err == nil {
		t.Fatal("empty name accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{})
	for name, want := range map[string]string{"a": "1", "b": "3"} {
		if v, err := s.GetMeta(ctx, name); err != nil || !bytes.Equal(v, []byte(want)) {
			t.Errorf("after reopening, %s = %q, %v; want %q", name, v, err, want)
		}
	}
}

func TestStored(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx := context.Background()
	now := time.Now()
	if err := s.Enqueue(ctx, entry("p/queued", now, "crm")); err != nil {
		t.Fatal(err)
	}
	// A record routed nowhere leaves its "call" timeline entry only.
	if err := s.AppendTimeline(ctx, "p/unrouted", TimelineEntry{Kind: "call", Summary: "internal call"}); err != nil {
		t.Fatal(err)
	}
	// Other entries (what a connector did while the call rang) are not a record.
	if err := s.AppendTimeline(ctx, "p/live", TimelineEntry{Kind: "live", Summary: "card shown"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Stored(ctx, []string{"p/queued", "p/unrouted", "p/live", "p/none", "p/queued"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"p/queued": true, "p/unrouted": true, "p/live": false, "p/none": false}
	if len(got) != len(want) {
		t.Fatalf("Stored = %v", got)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("Stored[%s] = %v, want %v", k, got[k], w)
		}
	}
}
