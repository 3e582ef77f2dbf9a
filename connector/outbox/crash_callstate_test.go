package outbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

// callStateCrashEnv makes TestCallStateCrashChild run as the crashing child process; its value
// is the database path.
const callStateCrashEnv = "PBXBRIDGE_OUTBOX_CALLSTATE_CRASH_CHILD"

// TestCallStateCrash SIGKILLs a child process (this test binary) that writes call state the way
// the adapters do during a delivery: a write-ahead marker with SetLazy, the request, its result
// with SetLater, then the durable write that follows (here an Enqueue, in the daemon the Ack);
// and a SetLater with nothing after it. It proves the guarantees CallState documents for a crash
// of the daemon:
//   - every SetLazy that returned is there;
//   - every SetLater followed by a write that returned is there, with that write;
//   - a SetLater with no write after it may be lost (it is not checked), but what is there is
//     whole.
func TestCallStateCrash(t *testing.T) {
	testkit.Tier(t, testkit.Slow) // kills child processes mid-write
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	marked, carried, alone := map[string]bool{}, map[string]bool{}, 0
	runs, maxReports := 5, 2000
	if testkit.RaceEnabled { // the race detector slows SQLite ~20×
		runs, maxReports = 2, 200
	}
	for run := range runs {
		lines := runChildAndKill(t, "TestCallStateCrashChild", callStateCrashEnv, path, run, maxReports)
		for _, l := range lines {
			kind, key, _ := strings.Cut(l, " ")
			switch kind {
			case "ready":
			case "marked":
				marked[key] = true
			case "carried":
				carried[key] = true
			case "alone":
				alone++
			default:
				t.Fatalf("run %d: unexpected line %q", run, l)
			}
		}
		t.Logf("run %d: killed after %d reports", run, len(lines))
	}
	if len(marked) == 0 || len(carried) == 0 {
		t.Fatalf("child made too little progress: %d marked, %d carried", len(marked), len(carried))
	}
	s := openAt(t, path, Options{})
	ctx := t.Context()
	cs := s.CallState("b24")
	for key := range marked {
		all, err := cs.GetAll(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if all["finish_sent"] != "1" {
			t.Errorf("%s: the SetLazy marker that returned is lost after a kill: %v", key, all)
		}
		if r, ok := all["finished"]; ok && r != "done:"+key {
			t.Errorf("%s: finished = %q", key, r)
		}
	}
	var lost []string
	for key := range carried {
		all, err := cs.GetAll(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if all["finished"] != "done:"+key {
			lost = append(lost, key)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d SetLater values followed by a durable write that returned are lost, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	t.Logf("%d markers, %d carried results, %d lone SetLater calls", len(marked), len(carried), alone)
}

// TestCallStateCrashChild is the child process of TestCallStateCrash; it skips unless started by
// it. It never returns: the parent kills it.
func TestCallStateCrashChild(t *testing.T) {
	path := os.Getenv(callStateCrashEnv)
	if path == "" {
		t.Skip("helper process of TestCallStateCrash")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintf(os.Stdout, format+"\n", args...); err != nil {
			os.Exit(3)
		}
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	report("ready")
	cs := s.CallState("b24")
	const workers = 4
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("call-%d-%07d", g, i)
				if err := cs.SetLazy(ctx, key, map[string]string{"finish_sent": "1"}); err != nil {
					fail(err)
				}
				report("marked %s", key)
				if err := cs.SetLater(key, map[string]string{"finished": "done:" + key}); err != nil {
					fail(err)
				}
				if i%3 == 0 {
					// Nothing follows at once: it commits alone within LaterWithin, or is lost.
					if err := cs.SetLater(key, map[string]string{"shown": "1"}); err != nil {
						fail(err)
					}
					report("alone %s", key)
					continue
				}
				e := Entry{Key: key, StartedAt: time.Now(), Payload: []byte(`{}`), Connectors: []string{"b24"}}
				if err := s.Enqueue(ctx, e); err != nil && !errors.Is(err, context.Canceled) {
					fail(err)
				}
				report("carried %s", key)
			}
		})
	}
	wg.Wait()
	fail(errors.New("call state crash child ran for 4 minutes without being killed"))
}
