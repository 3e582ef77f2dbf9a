package connector

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// When the outbox cannot take finished calls, stopping a PBX does not wait forever (at 1bda728
// a daemon on a damaged outbox ignored SIGTERM): after its grace the records go to the spill
// file, and the next start imports them. Nothing is lost, and the held count the status and the
// metric report includes the record being retried.
func TestStopSpillsWhatTheOutboxWillNotTake(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store, err := outbox.Open(t.Context(), filepath.Join(dir, "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = store.Close() // every write now fails
	d, p := intakeOnly(dir, store, 10, 200*time.Millisecond)
	var enq sync.WaitGroup
	for range 2 {
		enq.Add(1)
		go func() { defer enq.Done(); p.enqueueLoop() }()
	}
	go func() { <-p.quit; p.held.close(); enq.Wait(); close(p.done) }()
	for _, id := range []string{"1.1", "1.2", "1.3"} {
		p.Record(&call.Record{CallID: id, Direction: call.Inbound, Customer: "+79001234567", StartedAt: time.Now(), EndedAt: time.Now()})
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.HeldCalls() != 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := d.HeldCalls(); n != 3 {
		t.Fatalf("held %d, want 3 (queued and retrying)", n)
	}
	stopped := make(chan struct{})
	go func() { p.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stopping the PBX did not finish")
	}
	f, err := os.Open(d.spillPath())
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		lines++
	}
	_ = f.Close()
	if lines != 3 {
		t.Fatalf("%d records in the spill file, want 3", lines)
	}

	// The next start imports them.
	store2, err := outbox.Open(t.Context(), filepath.Join(dir, "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store2.Close()
	d.store = store2
	if err := d.importSpill(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1.1", "1.2", "1.3"} {
		tl, err := store2.Timeline(t.Context(), "office/"+id)
		if err != nil || len(tl) == 0 {
			t.Errorf("call %s not imported: %v %v", id, tl, err)
		}
	}
	if _, err := os.Stat(d.spillPath()); !os.IsNotExist(err) {
		t.Errorf("the spill file is still there: %v", err)
	}
}

// Imported spill files go once they are older than the outbox retention, like their calls.
func TestImportedSpillFilesArePruned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = dir
	now := time.Now()
	d := &Daemon{log: slog.New(slog.DiscardHandler), cfg: cfg, now: func() time.Time { return now }}
	old := filepath.Join(dir, spillFile+".imported-20260101T000000Z")
	recent := filepath.Join(dir, spillFile+".imported-20261201T000000Z")
	for _, f := range []string{old, recent} {
		if err := os.WriteFile(f, []byte("{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := now.Add(-time.Duration(cfg.Outbox.RetentionDays+1) * 24 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	d.pruneSpills()
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the old imported spill file is still there: %v", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("the recent one is gone: %v", err)
	}
}

// While the outbox writes, nothing is "held": readiness and the status page say so only when
// writes fail (at 4c38148 every record being written counted, and /readyz answered 503 under
// load). UnstoredCalls, which the drain checks use, counts a record from the queue to its
// commit without a gap.
func TestHeldOnlyWhenWritesFail(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store, err := outbox.Open(t.Context(), filepath.Join(dir, "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	d, p := intakeOnly(dir, store, 1000, time.Second)
	enq := make(chan struct{})
	go func() { defer close(enq); p.enqueueLoop() }()

	const n = 200
	for i := range n {
		p.Record(&call.Record{CallID: fmt.Sprintf("1.%d", i), Direction: call.Inbound, Customer: "+79001234567", StartedAt: time.Now(), EndedAt: time.Now()})
	}
	maxUnstored := 0
	for {
		if h := d.HeldCalls(); h != 0 {
			t.Fatalf("%d calls reported held while the outbox writes", h)
		}
		u := d.UnstoredCalls()
		maxUnstored = max(maxUnstored, u)
		stored, err := store.Stored(t.Context(), []string{fmt.Sprintf("office/1.%d", n-1)})
		if err != nil {
			t.Fatal(err)
		}
		// No gap: once the last call is not counted as unstored, it is in the outbox.
		if u == 0 {
			if !stored[fmt.Sprintf("office/1.%d", n-1)] {
				t.Fatal("no call unstored, but the last one is not in the outbox")
			}
			break
		}
	}
	if maxUnstored == 0 {
		t.Error("UnstoredCalls never counted the calls on their way to the outbox")
	}
	p.held.close()
	<-enq
}

// intakeOnly is a daemon with no connectors and one PBX "office" whose finished calls go to
// store through a queue of size queue: the intake's path to the outbox and nothing else.
func intakeOnly(dir string, store *outbox.Store, queue int, grace time.Duration) (*Daemon, *pbxRT) {
	cfg := config.Default()
	cfg.StateDir = dir
	d := &Daemon{log: slog.New(slog.DiscardHandler), cfg: cfg, store: store, now: time.Now, click: newClickGate(nil, time.Now),
		pbxs: map[string]*pbxRT{}, recent: newRecentCalls(10)}
	reg := prometheus.NewRegistry()
	d.m = newMetrics(reg, d, "test")
	empty := []*connRT{}
	d.rt.Store(&empty)
	src := &sourceRT{cancel: func() {}, done: make(chan struct{}), reg: newUnitRegisterer(reg)}
	close(src.done)
	p := &pbxRT{name: "office", d: d, log: d.log, held: newRecordQueue(queue), src: src, ledger: newLedger(store, "office", d.log, time.Now),
		quit: make(chan struct{}), done: make(chan struct{}), abandon: make(chan struct{}), grace: grace}
	d.pbxs["office"] = p
	return d, p
}
