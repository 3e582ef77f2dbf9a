package outbox

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Open calls survive a reopen, are replaced by key, leave with their record's Enqueue (same
// commit) or DeleteOpenCalls, and are listed per PBX.
func TestOpenCalls(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s := openAt(t, path, Options{})
	at := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	put := func(key, pbx, data string, at time.Time) OpenCall {
		return OpenCall{Key: key, PBX: pbx, Data: []byte(data), UpdatedAt: at}
	}
	if err := s.PutOpenCalls(t.Context(), []OpenCall{put("office/1", "office", "v1", at), put("office/2", "office", "v1", at.Add(time.Second)), put("shop/9", "shop", "v1", at)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.PutOpenCalls(t.Context(), []OpenCall{put("office/1", "office", "v2", at.Add(2*time.Second))}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{})
	got, err := s.OpenCalls(t.Context(), "office")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keysAndData(got)) != "[office/2=v1 office/1=v2]" || !got[1].UpdatedAt.Equal(at.Add(2*time.Second)) {
		t.Fatalf("open calls after reopen %v", keysAndData(got))
	}
	mustEnqueue(t, s, entry("office/2", at, "b24"))
	if err := s.DeleteOpenCalls(t.Context(), "shop/9"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.OpenCalls(t.Context(), "office")
	shop, _ := s.OpenCalls(t.Context(), "shop")
	if fmt.Sprint(keysAndData(got)) != "[office/1=v2]" || len(shop) != 0 {
		t.Fatalf("after enqueue and delete: office %v, shop %v", keysAndData(got), keysAndData(shop))
	}
	if err := s.PutOpenCalls(t.Context(), []OpenCall{{Key: "", PBX: "office"}}, nil); err == nil {
		t.Fatal("an open call without a key was stored")
	}
}

func keysAndData(cs []OpenCall) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Key+"="+string(c.Data))
	}
	return out
}
