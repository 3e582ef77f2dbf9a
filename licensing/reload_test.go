package licensing_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// TestHotReload: with Run watching the directory (the 60 s rescan disabled so only fsnotify can
// act), adding, replacing, corrupting and deleting the bitrix24 licence changes that connector's
// state within 1 s, with no restart, while the amoCRM connector keeps delivering throughout.
func TestHotReload(t *testing.T) {
	keys := newKeys(t)
	today := licensing.DateOf(time.Now().UTC())
	valid := func(lid string) []byte {
		return sign(t, keys.paid, paidClaims(lid, 1, today.AddDays(-10).String(), today.AddDays(30).String(), today.AddDays(36).String(), "UTC"))
	}
	expired := sign(t, keys.paid, paidClaims("L-B24", 1, today.AddDays(-90).String(), today.AddDays(-60).String(), today.AddDays(-54).String(), "UTC"))
	amo := paidClaims("L-AMO", 1, today.AddDays(-10).String(), today.AddDays(30).String(), today.AddDays(36).String(), "UTC")
	amo.Connector = amoType

	e := newEnv(t, keys, time.Now(), func(o *licensing.Options) {
		o.Clock = time.Now
		o.RescanInterval = time.Hour
	})
	e.write("amo.lic", sign(t, keys.paid, amo))
	e.reload()
	e.register("b24", b24, "101")
	e.register("amo", amoType, "101")
	if !e.svc.Allowed("amo") || e.svc.Allowed("b24") {
		t.Fatal("initial state")
	}
	changes, unsubscribe := e.svc.Subscribe()
	defer unsubscribe()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- e.svc.Run(ctx) })
	// "Dispatch" of the other connector: it must never see its gate closed.
	var amoCalls, amoDenied atomic.Int64
	wg.Go(func() {
		for ctx.Err() == nil {
			amoCalls.Add(1)
			if !e.svc.Allowed("amo") || !e.svc.ExtensionAllowed("amo", "101") {
				amoDenied.Add(1)
			}
			_ = e.svc.Status()
		}
	})
	// Give the watcher a moment to be installed before the first change (Run adds it first thing;
	// a change before that is still caught by the rescan, which this test disabled).
	waitWatching(t, e)

	path := filepath.Join(e.dir, "b24.lic")
	renameIn := func(data []byte) {
		tmp := filepath.Join(e.dir, ".incoming.tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name  string
		act   func()
		state licensing.State
	}{
		{"add", func() { renameIn(valid("L-B24")) }, licensing.StateActive},
		{"replace with an expired one", func() { renameIn(expired) }, licensing.StateExpired},
		{"replace with a valid one", func() { renameIn(valid("L-B24-2")) }, licensing.StateActive},
		{"corrupt in place", func() { must(t, os.WriteFile(path, []byte("-----BEGIN PBXBRIDGE LICENSE-----\ngarbage\n"), 0o644)) }, licensing.StateNone},
		{"rewrite in place", func() { must(t, os.WriteFile(path, valid("L-B24-3"), 0o644)) }, licensing.StateActive},
		{"delete", func() { must(t, os.Remove(path)) }, licensing.StateNone},
	}
	for _, s := range steps {
		drain(changes)
		start := time.Now()
		s.act()
		deadline := time.After(time.Second)
		for e.conn("b24").State != s.state {
			select {
			case <-changes:
			case <-time.After(20 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s: state still %s after 1 s, want %s", s.name, e.conn("b24").State, s.state)
			}
		}
		t.Logf("%s: %s after %v", s.name, s.state, time.Since(start).Round(time.Millisecond))
		if e.svc.Allowed("b24") != s.state.On() {
			t.Fatalf("%s: gate disagrees with the state", s.name)
		}
	}
	cancel()
	wg.Wait()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := amoDenied.Load(); n != 0 {
		t.Fatalf("the amoCRM connector was denied %d of %d times", n, amoCalls.Load())
	}
	t.Logf("amoCRM gate consulted %d times, never denied", amoCalls.Load())
	// Run persisted the state on return.
	if _, err := os.Stat(filepath.Join(e.state, licensing.StateFile)); err != nil {
		t.Fatal(err)
	}
}

// waitWatching writes and removes a probe file until the service has seen one, which proves
// the directory watch is active, then waits until the service has seen the probe's removal too,
// so that reload cannot be taken for the reaction to the test's first change.
func waitWatching(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	probe := filepath.Join(e.dir, "probe.lic")
	seen := func() bool {
		return slices.ContainsFunc(e.svc.Status().Files, func(f licensing.FileStatus) bool { return filepath.Base(f.Path) == "probe.lic" })
	}
	for {
		must(t, os.WriteFile(probe, []byte("x"), 0o644))
		if testkit.Until(500*time.Millisecond, seen) {
			break
		}
		must(t, os.Remove(probe))
		if time.Now().After(deadline) {
			t.Fatal("the directory watch never fired")
		}
	}
	must(t, os.Remove(probe))
	testkit.WaitFor(t, 5*time.Second, "the reload after the probe's removal", func() bool { return !seen() })
}

// TestRescanFindsMissedChanges: without a working watch (the directory did not exist when Run
// started), the periodic rescan picks the licence up and re-adds the watch.
func TestRescanFindsMissedChanges(t *testing.T) {
	keys := newKeys(t)
	today := licensing.DateOf(time.Now().UTC())
	e := newEnv(t, keys, time.Now(), func(o *licensing.Options) {
		o.Clock = time.Now
		o.RescanInterval = 50 * time.Millisecond
	})
	must(t, os.RemoveAll(e.dir))
	e.reload2()
	e.register("b24", b24)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx) }()
	must(t, os.MkdirAll(e.dir, 0o755))
	e.write("l.lic", sign(t, keys.paid, paidClaims("L-1", 1, today.AddDays(-1).String(), today.AddDays(30).String(), today.AddDays(36).String(), "UTC")))
	deadline := time.After(10 * time.Second)
	for !e.svc.Allowed("b24") {
		select {
		case <-deadline:
			t.Fatal("rescan never picked the licence up")
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// reload2 reloads and tolerates a missing directory (expected in the rescan test).
func (e *env) reload2() {
	if err := e.svc.Reload(context.Background()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.t.Fatal(err)
	}
}
