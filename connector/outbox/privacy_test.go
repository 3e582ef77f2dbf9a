package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The person to forget, in the forms a PBX and a CRM write them.
const (
	forgetE164  = "+79161234567"
	forgetLocal = "89161234567"
)

// callPayload is a call record's JSON as the daemon stores it.
func callPayload(key, customer string) []byte {
	return fmt.Appendf(nil, `{"call_id":%q,"direction":"inbound","customer":%q,"line":"+74951112233","rang":["101","102"],"padding":%q}`,
		key, customer, strings.Repeat("x", 300))
}

// personMatch finds the person in stored bytes: a whole digit run equal to the number's forms.
func personMatch(data []byte) bool {
	s := string(data)
	for i := 0; i < len(s); {
		if s[i] < '0' || s[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		run := s[i:j]
		if run == forgetE164[1:] || run == forgetLocal {
			return true
		}
		i = j
	}
	return false
}

var personErasure = Erasure{Needles: []string{"1234567"}, Match: personMatch}

// fileHas reports whether the database file or its WAL contains b.
func fileHas(t *testing.T, path string, b []byte) (db, wal bool) {
	t.Helper()
	for i, p := range []string{path, path + "-wal"} {
		data, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if bytes.Contains(data, b) {
			if i == 0 {
				db = true
			} else {
				wal = true
			}
		}
	}
	return db, wal
}

// TestForgetErasesEveryTrace: the person's calls in every state, their call state, timelines and
// open call, and mentions of them in other calls, are gone, while everything else stays; the
// raw database file and its WAL hold no trace of the number's digits afterwards (secure_delete
// and the truncating checkpoint: without them the digits stay in free space or old frames).
func TestForgetErasesEveryTrace(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "outbox.db")
	s := openAt(t, path, Options{Clock: clock.Now})
	ctx := t.Context()

	// 300 other calls, spread over the file, and the person's calls in between, each for two
	// connectors: enough rows for page splits, overflow-free payloads of ~400 bytes.
	var theirs []string
	for i := range 300 {
		key := fmt.Sprintf("lab/17000%05d.%d", i, i)
		customer := fmt.Sprintf("+7903%07d", i)
		if i%50 == 7 {
			customer = []string{forgetE164, forgetLocal}[(i/50)%2]
			theirs = append(theirs, key)
		}
		e := Entry{Key: key, StartedAt: clock.Now(), Payload: callPayload(key, customer), Connectors: []string{"b24", "amo"},
			Timeline: []TimelineEntry{{Kind: "call", Summary: "inbound call with " + customer, Detail: string(callPayload(key, customer))}}}
		mustEnqueue(t, s, e)
	}
	// Deliver most (done), bury some (dead), keep a few leased and the rest pending.
	rows := mustLease(t, s, "b24", 250, time.Hour)
	for i, r := range rows {
		var err error
		if i%10 == 7 {
			err = s.Bury(ctx, r, "400 bad phone "+forgetLocal)
		} else if i < 240 {
			err = s.Ack(ctx, r, TimelineEntry{Kind: "delivered", Summary: "logged", Detail: `{"PHONE_NUMBER":"` + forgetE164[1:] + `"}`})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Call state of the person's call, and of another call that mentions them.
	if err := s.CallState("b24").Set(ctx, theirs[0], "call_id", "externalCall.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CallState("b24").Set(ctx, "lab/other", "transfer_to", forgetE164); err != nil {
		t.Fatal(err)
	}
	if err := s.CallState("b24").Set(ctx, "lab/other", "user", "7"); err != nil {
		t.Fatal(err)
	}
	// A call of another customer whose timeline mentions the person (a transfer to them).
	if err := s.AppendTimeline(ctx, "lab/1700000001.1", TimelineEntry{Kind: "note", Summary: "transferred to " + forgetLocal}); err != nil {
		t.Fatal(err)
	}
	// The person's call in progress, and another one.
	if err := s.PutOpenCalls(ctx, []OpenCall{
		{Key: "lab/live.1", PBX: "lab", Data: []byte(`{"customer":"` + forgetE164 + `"}`)},
		{Key: "lab/live.2", PBX: "lab", Data: []byte(`{"customer":"+79035550000"}`)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Checkpoint(ctx); err != nil { // part of the data in the file, part in the WAL
		t.Fatal(err)
	}
	mustEnqueue(t, s, Entry{Key: "lab/late.1", StartedAt: clock.Now(), Payload: callPayload("lab/late.1", forgetE164), Connectors: []string{"b24"}})
	theirs = append(theirs, "lab/late.1")

	digits := []byte("9161234567")
	if db, wal := fileHas(t, path, digits); !db || !wal {
		t.Fatalf("before Forget the number is in the file %v, the WAL %v: the test would prove nothing", db, wal)
	}

	res, err := s.Forget(ctx, personErasure)
	if err != nil {
		t.Fatal(err)
	}
	wantCalls := append(slices.Clone(theirs), "lab/live.1")
	slices.Sort(wantCalls)
	if !slices.Equal(res.Calls, wantCalls) {
		t.Errorf("Calls = %v, want %v", res.Calls, wantCalls)
	}
	// 6 early calls of the person with two rows each, and the late one.
	if res.Rows() != 13 || !res.WALTruncated {
		t.Errorf("result %+v: want 13 rows, WAL truncated", res)
	}
	if res.OpenCalls != 1 || res.CallState != 2 || res.LastErrors == 0 {
		t.Errorf("result %+v: want 1 open call, 2 call state values, last errors cleared", res)
	}

	// Nothing of the person is left; everything else is.
	left, err := s.List(ctx, Filter{Limit: MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 600-12 {
		t.Errorf("%d rows left, want %d", len(left), 600-12)
	}
	for _, r := range left {
		if personMatch(r.Payload) || personMatch([]byte(r.LastError)) {
			t.Fatalf("row %d (%s) still mentions the person", r.ID, r.Key)
		}
	}
	for _, k := range theirs {
		if tl, _ := s.Timeline(ctx, k); len(tl) != 0 {
			t.Errorf("timeline of %s: %v", k, tl)
		}
	}
	if tl, _ := s.Timeline(ctx, "lab/1700000001.1"); len(tl) != 1 || tl[0].Kind != "call" {
		t.Errorf("timeline of another call: %+v, want its own call entry only", tl)
	}
	if _, ok, _ := s.CallState("b24").Get(ctx, "lab/other", "user"); !ok {
		t.Error("an unrelated call state value was erased")
	}
	if oc, _ := s.OpenCalls(ctx, "lab"); len(oc) != 1 || oc[0].Key != "lab/live.2" {
		t.Errorf("open calls left: %+v", oc)
	}
	if db, wal := fileHas(t, path, digits); db || wal {
		t.Fatalf("after Forget the number's digits are still in the file %v, the WAL %v", db, wal)
	}
	// The digits of the other customers are still there: the scan reads what it should.
	if db, wal := fileHas(t, path, []byte("79030000150")); !db && !wal {
		t.Fatal("another customer's number is gone from the file")
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestForgetRefusesBadErasure(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	for _, e := range []Erasure{{}, {Needles: []string{"1234567"}}, {Needles: []string{"123"}, Match: personMatch}} {
		if _, err := s.Forget(t.Context(), e); !errors.Is(err, ErrInvalid) {
			t.Errorf("Forget(%+v) = %v, want ErrInvalid", e, err)
		}
	}
}

// TestPruneEveryTable: with the store's clock, old done rows, dead rows past the dead-letter
// retention, stale open calls, and the call state and timelines of pruned calls are deleted;
// everything younger stays; meta is never pruned.
func TestPruneEveryTable(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Clock: clock.Now, Retention: 10 * 24 * time.Hour, DeadLetterRetention: 40 * 24 * time.Hour})
	ctx := t.Context()
	day := 24 * time.Hour

	bury := func(key string) {
		t.Helper()
		mustEnqueue(t, s, entry(key, clock.Now(), "b24"))
		r := mustLease(t, s, "b24", 1, 0)
		if err := s.Bury(ctx, r[0], "refused"); err != nil {
			t.Fatal(err)
		}
		if err := s.CallState("b24").Set(ctx, key, "f", "v"); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendTimeline(ctx, key, TimelineEntry{Kind: "dead"}); err != nil {
			t.Fatal(err)
		}
	}
	bury("dead-old")
	if err := s.PutOpenCalls(ctx, []OpenCall{{Key: "open-old", PBX: "lab", Data: []byte("{}")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMeta(ctx, "licensing.state", []byte("keep")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * day)
	bury("dead-young")
	if err := s.PutOpenCalls(ctx, []OpenCall{{Key: "open-young", PBX: "lab", Data: []byte("{}")}}, nil); err != nil {
		t.Fatal(err)
	}

	// Day 20: the dead letters are younger than 40 days; open-old is 20 days stale.
	res, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (PruneResult{OpenCalls: 1}); res != want {
		t.Fatalf("Prune at day 20 = %+v, want %+v", res, want)
	}
	// Day 41: dead-old is past 40 days (and its state and timeline past 10 once its row went).
	clock.Advance(21 * day)
	res, err = s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (PruneResult{Dead: 1, CallState: 1, Timeline: 1, OpenCalls: 1}); res != want {
		t.Fatalf("Prune at day 41 = %+v, want %+v", res, want)
	}
	left, _ := s.List(ctx, Filter{})
	if got := names(left); !slices.Equal(got, []string{"dead-young/b24"}) {
		t.Errorf("rows left %v", got)
	}
	if oc, _ := s.OpenCalls(ctx, "lab"); len(oc) != 0 {
		t.Errorf("open calls left %+v (open-young is 21 days stale too)", oc)
	}
	if _, ok, _ := s.CallState("b24").Get(ctx, "dead-young", "f"); !ok {
		t.Error("the call state of a dead letter within its retention was pruned")
	}
	if v, err := s.GetMeta(ctx, "licensing.state"); err != nil || string(v) != "keep" {
		t.Errorf("meta after 41 days = %q, %v", v, err)
	}
	// A requeued dead letter is pending: never pruned, however old.
	if n, err := s.Requeue(ctx, Filter{Key: "dead-young"}); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	clock.Advance(100 * day)
	if res, err := s.Prune(ctx); err != nil || res != (PruneResult{}) {
		t.Fatalf("Prune of a pending row = %+v, %v", res, err)
	}
}

// TestBackupWhileWriting: a backup taken while writers commit is a consistent outbox that Open
// accepts, holding every row committed before it began, and no torn transaction.
func TestBackupWhileWriting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openAt(t, filepath.Join(dir, "outbox.db"), Options{})
	ctx := t.Context()
	for i := range 200 {
		mustEnqueue(t, s, Entry{Key: fmt.Sprintf("before-%03d", i), StartedAt: time.Now(), Payload: callPayload("k", "+79030000000"), Connectors: []string{"b24", "amo"}})
	}
	if err := s.SetMeta(ctx, "licensing.state", []byte("blob")); err != nil {
		t.Fatal(err)
	}

	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				// Two connectors in one transaction: a backup holds both rows or neither.
				_ = s.Enqueue(wctx, Entry{Key: fmt.Sprintf("during-%d-%05d", w, i), StartedAt: time.Now(), Payload: []byte("{}"), Connectors: []string{"b24", "amo"}})
			}
		})
	}
	copyPath := filepath.Join(dir, "copy.db")
	size, err := s.Backup(ctx, copyPath)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(copyPath)
	if err != nil || fi.Size() != size || fi.Mode().Perm() != 0o600 {
		t.Fatalf("copy: %v, size %d (Backup said %d), mode %v", err, fi.Size(), size, fi.Mode())
	}
	if _, err := s.Backup(ctx, copyPath); !errors.Is(err, ErrInvalid) {
		t.Errorf("Backup over an existing file = %v, want ErrInvalid", err)
	}

	c := openAt(t, copyPath, Options{})
	if err := c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats(ctx)
	if err != nil || len(st) != 2 || st[0].Pending != st[1].Pending || st[0].Pending < 200 {
		t.Fatalf("copy stats %+v, %v: want both connectors with the same rows, at least 200", st, err)
	}
	if v, _ := c.GetMeta(ctx, "licensing.state"); string(v) != "blob" {
		t.Errorf("copy meta = %q", v)
	}
}

// TestSecureDeleteIsOn: every connection of the store overwrites deleted content.
func TestSecureDeleteIsOn(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	var w, r int
	if err := s.w.QueryRowContext(t.Context(), "PRAGMA secure_delete").Scan(&w); err != nil {
		t.Fatal(err)
	}
	if err := s.r.QueryRowContext(t.Context(), "PRAGMA secure_delete").Scan(&r); err != nil {
		t.Fatal(err)
	}
	if w != 1 || r != 1 {
		t.Fatalf("secure_delete writer %d, readers %d, want 1", w, r)
	}
}
