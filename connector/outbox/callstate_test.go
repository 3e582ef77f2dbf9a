package outbox

import (
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

func TestCallState(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	b24, amo := s.CallState("b24-main"), s.CallState("amo")

	if v, ok, err := b24.Get(ctx, "1763768521.12", "call_id"); err != nil || ok || v != "" {
		t.Fatalf("Get of a missing field = %q, %v, %v", v, ok, err)
	}
	for _, kv := range [][3]string{
		{"1763768521.12", "call_id", "externalCall.123"},
		{"1763768521.12", "call_id", "externalCall.456"}, // overwrite
		{"1763768521.12", "user", "7"},
		{"1763768530.40", "call_id", ""}, // an empty value is a value
	} {
		if err := b24.Set(ctx, kv[0], kv[1], kv[2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := amo.Set(ctx, "1763768521.12", "call_id", "amo-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Everything survives a restart.
	s = openAt(t, path, Options{})
	b24, amo = s.CallState("b24-main"), s.CallState("amo")
	for _, tc := range []struct {
		cs           *CallState
		key, field   string
		want         string
		wantPresence bool
	}{
		{b24, "1763768521.12", "call_id", "externalCall.456", true},
		{b24, "1763768521.12", "user", "7", true},
		{b24, "1763768530.40", "call_id", "", true},
		{b24, "1763768530.40", "user", "", false},
		{amo, "1763768521.12", "call_id", "amo-1", true},
		{amo, "1763768521.12", "user", "", false},
		{s.CallState("kommo"), "1763768521.12", "call_id", "", false},
	} {
		v, ok, err := tc.cs.Get(ctx, tc.key, tc.field)
		if err != nil || ok != tc.wantPresence || v != tc.want {
			t.Errorf("%s %s %s = %q, %v, %v; want %q, %v", tc.cs.connector, tc.key, tc.field, v, ok, err, tc.want, tc.wantPresence)
		}
	}
}

func TestCallStateValidation(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	for _, tc := range []struct {
		connector, key, field string
	}{{"", "k", "f"}, {"b24", "", "f"}, {"b24", "k", ""}} {
		if err := s.CallState(tc.connector).Set(t.Context(), tc.key, tc.field, "v"); !errors.Is(err, ErrInvalid) {
			t.Errorf("Set(%q, %q, %q): %v, want ErrInvalid", tc.connector, tc.key, tc.field, err)
		}
		if _, _, err := s.CallState(tc.connector).Get(t.Context(), tc.key, tc.field); !errors.Is(err, ErrInvalid) {
			t.Errorf("Get(%q, %q, %q): %v, want ErrInvalid", tc.connector, tc.key, tc.field, err)
		}
	}
}

func TestTimeline(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if tl, err := s.Timeline(ctx, "call-1"); err != nil || tl == nil || len(tl) != 0 {
		t.Fatalf("Timeline of an unknown call = %#v, %v, want empty", tl, err)
	}
	t0 := clock.Now()
	explicit := t0.Add(-time.Minute)
	appends := []TimelineEntry{
		{Kind: "finished", Summary: "answered by 102 after 4s"},
		{At: explicit, Connector: "b24", Kind: "live", Summary: "card shown to 101, 102", Detail: "CALL_ID externalCall.1"},
		{Connector: "b24", Kind: "retry", Summary: "503 from portal", Detail: "attempt 1"},
	}
	for i, e := range appends {
		if err := s.AppendTimeline(ctx, "call-1", e); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := s.AppendTimeline(ctx, "call-2", TimelineEntry{Kind: "finished"}); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(time.Second)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{Clock: clock.Now})
	got, err := s.Timeline(ctx, "call-1")
	if err != nil {
		t.Fatal(err)
	}
	want := []TimelineEntry{
		{Seq: 1, At: t0, Kind: "finished", Summary: "answered by 102 after 4s"},
		{Seq: 2, At: explicit, Connector: "b24", Kind: "live", Summary: "card shown to 101, 102", Detail: "CALL_ID externalCall.1"},
		{Seq: 3, At: t0.Add(2 * time.Second), Connector: "b24", Kind: "retry", Summary: "503 from portal", Detail: "attempt 1"},
	}
	if !slices.EqualFunc(got, want, func(a, b TimelineEntry) bool {
		return a.Seq == b.Seq && a.At.Equal(b.At) && a.Connector == b.Connector && a.Kind == b.Kind && a.Summary == b.Summary && a.Detail == b.Detail
	}) {
		t.Fatalf("Timeline =\n%+v\nwant\n%+v", got, want)
	}
	other, err := s.Timeline(ctx, "call-2")
	if err != nil || len(other) != 1 || other[0].Seq != 1 {
		t.Fatalf("second call's timeline = %+v, %v", other, err)
	}
	for _, tc := range []struct {
		key string
		e   TimelineEntry
	}{{"", TimelineEntry{Kind: "x"}}, {"k", TimelineEntry{Summary: "no kind"}}} {
		if err := s.AppendTimeline(ctx, tc.key, tc.e); !errors.Is(err, ErrInvalid) {
			t.Errorf("AppendTimeline(%q, %+v): %v, want ErrInvalid", tc.key, tc.e, err)
		}
	}
}

// TestAppendTimelines: the entries of several calls in one lazy write, after what the calls
// already had; survives a reopen; bad input is refused whole.
func TestAppendTimelines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.AppendTimeline(ctx, "a", TimelineEntry{Kind: "call"}); err != nil {
		t.Fatal(err)
	}
	err = s.AppendTimelines(ctx, map[string][]TimelineEntry{
		"a": {{Kind: "request", Summary: "POST register"}, {Kind: "response", Summary: "register: http 200"}},
		"b": {{Kind: "request", Summary: "POST show"}},
		"c": nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{})
	for key, want := range map[string][]string{"a": {"call", "request", "response"}, "b": {"request"}, "c": {}} {
		got, err := s.Timeline(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		kinds := []string{}
		for i, e := range got {
			kinds = append(kinds, e.Kind)
			if e.Seq != int64(i+1) {
				t.Errorf("%s: entry %d has seq %d", key, i, e.Seq)
			}
		}
		if !slices.Equal(kinds, want) {
			t.Errorf("%s: %v, want %v", key, kinds, want)
		}
	}
	for _, bad := range []map[string][]TimelineEntry{{"": {{Kind: "x"}}}, {"d": {{Summary: "no kind"}}}} {
		if err := s.AppendTimelines(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("AppendTimelines(%v): %v, want ErrInvalid", bad, err)
		}
	}
}

// TestCallStateBatch: SetMany writes fields together, GetAll reads every field of one call of
// one connector.
func TestCallStateBatch(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx := t.Context()
	b24, amo := s.CallState("b24"), s.CallState("amo")
	if all, err := b24.GetAll(ctx, "k1"); err != nil || all == nil || len(all) != 0 {
		t.Fatalf("GetAll of an unknown call = %v, %v", all, err)
	}
	if err := b24.SetMany(ctx, "k1", map[string]string{"call_id": "c1", "user": "7", "empty": ""}); err != nil {
		t.Fatal(err)
	}
	if err := b24.SetMany(ctx, "k1", map[string]string{"user": "8"}); err != nil {
		t.Fatal(err)
	}
	if err := b24.Set(ctx, "k2", "call_id", "c2"); err != nil {
		t.Fatal(err)
	}
	if err := amo.SetMany(ctx, "k1", map[string]string{"call": "a1"}); err != nil {
		t.Fatal(err)
	}
	if err := b24.SetMany(ctx, "k1", nil); err != nil {
		t.Fatalf("SetMany of nothing: %v", err)
	}
	all, err := b24.GetAll(ctx, "k1")
	want := map[string]string{"call_id": "c1", "user": "8", "empty": ""}
	if err != nil || !maps.Equal(all, want) {
		t.Fatalf("GetAll = %v, %v; want %v", all, err, want)
	}
	if v, ok, _ := b24.Get(ctx, "k1", "user"); !ok || v != "8" {
		t.Fatalf("Get after SetMany = %q, %v", v, ok)
	}
	for name, err := range map[string]error{
		"empty field": b24.SetMany(ctx, "k1", map[string]string{"ok": "1", "": "x"}),
		"empty key":   b24.SetMany(ctx, "", map[string]string{"ok": "1"}),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := b24.GetAll(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("GetAll with an empty key: %v", err)
	}
	if all, _ := b24.GetAll(ctx, "k1"); all["ok"] != "" {
		t.Fatalf("a refused SetMany wrote %v", all)
	}
}

// SetLazy commits without an fsync of its own; SetLater returns at once, is read back at once,
// and rides along in the next commit of another write (here a durable Enqueue) instead of
// committing on its own; Close writes what is still waiting.
func TestCallStateLazyAndLater(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cs := s.CallState("b24")
	if err := cs.SetLazy(ctx, "lab/1", map[string]string{"finish_sent": "1"}); err != nil {
		t.Fatal(err)
	}
	if ws := s.WriterStats(); ws.DurableCommits != 0 || ws.LazyCommits != 1 {
		t.Fatalf("after SetLazy: %+v, want 1 lazy commit", ws)
	}

	s.laterWithin = time.Hour // it waits for the Enqueue below, however slow the machine
	if err := cs.SetLater("lab/1", map[string]string{"call_id": "externalCall.7", "shown": "12"}); err != nil {
		t.Fatal(err)
	}
	all, err := cs.GetAll(ctx, "lab/1")
	if err != nil || !maps.Equal(all, map[string]string{"finish_sent": "1", "call_id": "externalCall.7", "shown": "12"}) {
		t.Fatalf("GetAll before the commit = %v, %v", all, err)
	}
	if v, ok, err := cs.Get(ctx, "lab/1", "shown"); err != nil || !ok || v != "12" {
		t.Fatalf("Get before the commit = %q, %v, %v", v, ok, err)
	}
	mustEnqueue(t, s, entry("lab/1", time.Now(), "b24"))
	if ws := s.WriterStats(); ws.DurableCommits != 1 || ws.LazyCommits != 1 || ws.Writes != 3 {
		t.Fatalf("after the Enqueue: %+v, want the SetLater in the Enqueue's commit", ws)
	}
	s.laterMu.Lock()
	pending := len(s.later)
	s.laterMu.Unlock()
	if pending != 0 {
		t.Fatalf("%d calls with values waiting after their commit", pending)
	}

	// Alone, a SetLater value commits after laterWithin; a newer value of a field wins.
	s.laterWithin = time.Millisecond
	for _, v := range []string{"12,13", "13"} {
		if err := cs.SetLater("lab/1", map[string]string{"shown": v}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the SetLater alone committed", func() bool { return s.WriterStats().Writes >= 5 })
	s.laterWithin = time.Hour
	if err := cs.SetLater("lab/2", map[string]string{"call_id": "externalCall.8"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cs.SetLater("lab/2", map[string]string{"call_id": "x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetLater after Close: %v, want ErrClosed", err)
	}

	s = openAt(t, path, Options{})
	cs = s.CallState("b24")
	for key, want := range map[string]map[string]string{
		"lab/1": {"finish_sent": "1", "call_id": "externalCall.7", "shown": "13"},
		"lab/2": {"call_id": "externalCall.8"},
	} {
		if all, err := cs.GetAll(ctx, key); err != nil || !maps.Equal(all, want) {
			t.Errorf("%s after a restart = %v, %v; want %v", key, all, err, want)
		}
	}
}
