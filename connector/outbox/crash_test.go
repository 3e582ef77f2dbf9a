package outbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

// crashChildEnv makes TestCrashChild run as the crashing child process; its
// value is the database path.
const crashChildEnv = "PBXBRIDGE_OUTBOX_CRASH_CHILD"

// TestCrashRecovery runs a real child process (this test binary) that
// enqueues, leases, acks and buries in a loop and reports on stdout each call
// that returned nil. It SIGKILLs the child at random points several times,
// then proves from the reopened database that every acknowledged write is
// there exactly once and the file is intact.
func TestCrashRecovery(t *testing.T) {
	testkit.Tier(t, testkit.Slow)
	t.Parallel()
	path := filepath.Join(t.TempDir(), "outbox.db")
	var (
		enqueued = map[string]bool{} // keys whose Enqueue returned nil
		acked    = map[string]bool{} // b24 rows whose Ack returned nil
		buried   = map[string]bool{} // amo rows whose Bury returned nil
	)
	runs, maxReports := 6, 3000
	if testkit.RaceEnabled { // the race detector slows SQLite ~20×
		runs, maxReports = 3, 300
	}
	for run := range runs {
		lines := runCrashChild(t, path, run, maxReports)
		for _, l := range lines {
			kind, key, ok := strings.Cut(l, " ")
			if !ok {
				if l != "ready" {
					t.Fatalf("run %d: unexpected line %q", run, l)
				}
				continue
			}
			switch kind {
			case "enqueued":
				enqueued[key] = true
			case "acked":
				acked[key] = true
			case "buried":
				buried[key] = true
			default:
				t.Fatalf("run %d: unexpected line %q", run, l)
			}
		}
		t.Logf("run %d: killed after %d reports", run, len(lines))
	}
	if len(enqueued) == 0 || len(acked) == 0 || len(buried) == 0 {
		t.Fatalf("child made too little progress to prove anything: %d enqueued, %d acked, %d buried", len(enqueued), len(acked), len(buried))
	}

	s := openAt(t, path, Options{})
	ctx := t.Context()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("integrity check after %d SIGKILLs: %v", runs, err)
	}
	var integrity string
	if err := s.r.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("PRAGMA integrity_check = %q, %v", integrity, err)
	}

	// Exactly one row per (key, connector) for every acknowledged Enqueue.
	var dups int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT key, connector FROM outbox
		GROUP BY key, connector HAVING count(*) > 1)`).Scan(&dups); err != nil || dups != 0 {
		t.Fatalf("duplicated (key, connector) pairs: %d (%v)", dups, err)
	}
	rows := map[string]Row{}
	for after := int64(0); ; {
		page, err := s.List(ctx, Filter{AfterID: after, Limit: MaxListLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			rows[r.Key+"/"+r.Connector] = r
		}
		after = page[len(page)-1].ID
	}
	var lost []string
	for key := range enqueued {
		for _, c := range []string{"b24", "amo"} {
			if _, ok := rows[key+"/"+c]; !ok {
				lost = append(lost, key+"/"+c)
			}
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged rows lost, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	for key := range acked {
		if r := rows[key+"/b24"]; r.State != Done || r.DoneAt.IsZero() {
			t.Errorf("acknowledged Ack of %s lost: row %+v", key, r)
		}
	}
	for key := range buried {
		if r := rows[key+"/amo"]; r.State != Dead || r.LastError != "permanent: test" {
			t.Errorf("acknowledged Bury of %s lost: row %+v", key, r)
		}
	}

	// The killed workers' leases were released at open: every undelivered
	// row can be leased now, without waiting for the hour-long leases (the
	// amo worker held most of its rows leased when it was killed).
	redelivered := map[string]int{}
	for _, c := range []string{"b24", "amo"} {
		var undelivered, leased int
		for _, r := range rows {
			if r.Connector == c && r.State != Done && r.State != Dead {
				undelivered++
			}
		}
		for {
			got := mustLease(t, s, c, 500, time.Minute)
			if len(got) == 0 {
				break
			}
			leased += len(got)
			for _, r := range got {
				if err := s.Ack(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
		}
		if leased != undelivered {
			t.Fatalf("after restart leased %d %s rows, want every undelivered one (%d)", leased, c, undelivered)
		}
		redelivered[c] = leased
	}
	t.Logf("%d keys enqueued, %d acked and %d buried by the child; delivered after restart: %v",
		len(enqueued), len(acked), len(buried), redelivered)
}

// runCrashChild starts the child on path, lets it run to a random point
// (between maxReports/10 and 1.1×maxReports reported writes),
// SIGKILLs it and returns every complete line it reported.
func runCrashChild(t *testing.T, path string, run, maxReports int) []string {
	t.Helper()
	return runChildAndKill(t, "TestCrashChild", crashChildEnv, path, run, maxReports)
}

// runChildAndKill runs the test named child of this binary with env set to path, SIGKILLs it
// after a random number of reported lines (see runCrashChild) and returns every complete line.
func runChildAndKill(t *testing.T, child, env, path string, run, maxReports int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+child+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	var lines []string
	// Kill after a random number of reports (so at a random point of the
	// write stream), then read what was already in the pipe.
	killAt := maxReports/10 + rand.IntN(maxReports)
	killed := false
	var killErr error
	kill := make(chan struct{})
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			// A line cut by the kill has no newline: it was never complete.
			if !errors.Is(err, io.EOF) {
				t.Fatalf("run %d: reading child: %v", run, err)
			}
			break
		}
		lines = append(lines, strings.TrimSuffix(l, "\n"))
		if !killed && len(lines) >= killAt {
			// Up to 3 ms later, while the child goes on writing and reporting.
			time.AfterFunc(time.Duration(rand.IntN(3000))*time.Microsecond, func() {
				killErr = cmd.Process.Kill()
				close(kill)
			})
			killed = true
		}
	}
	if killed {
		<-kill
		if killErr != nil {
			t.Fatalf("run %d: kill: %v", run, killErr)
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("run %d: child exited on its own after %d lines: %v\n%s", run, len(lines), err, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
		t.Fatalf("run %d: child not killed by a signal: %v\n%s", run, err, stderr.String())
	}
	return lines
}

// TestCrashChild is the child process of TestCrashRecovery; it skips unless
// started by it. It never returns: the parent kills it.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("helper process of TestCrashRecovery")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute) // in case the parent is gone
	defer cancel()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		// One write per line: a line is either whole in the pipe or absent.
		if _, err := fmt.Fprintf(os.Stdout, format+"\n", args...); err != nil {
			os.Exit(3)
		}
	}
	report("ready")
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	const producers = 4
	var wg sync.WaitGroup
	for g := range producers {
		wg.Go(func() {
			// Every run starts again at 0: earlier keys are enqueued again,
			// which must not duplicate or resurrect them.
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("call-%07d", i*producers+g)
				e := Entry{Key: key, StartedAt: time.Now(), Payload: []byte(`{"call_id":"` + key + `"}`), Connectors: []string{"b24", "amo"}}
				if err := s.Enqueue(ctx, e); err != nil {
					fail(err)
				}
				report("enqueued %s", key)
			}
		})
	}
	for range 2 { // b24 workers: ack, sometimes retry
		wg.Go(func() {
			for ctx.Err() == nil {
				rows, err := s.Lease(ctx, "b24", 16, time.Hour)
				if err != nil {
					fail(err)
				}
				if len(rows) == 0 {
					time.Sleep(time.Millisecond)
				}
				for _, r := range rows {
					if r.ID%7 == 0 && r.Attempts == 0 {
						if err := s.Retry(ctx, r, time.Time{}, "transient: test"); err != nil {
							fail(err)
						}
						continue
					}
					if err := s.Ack(ctx, r); err != nil {
						fail(err)
					}
					report("acked %s", r.Key)
				}
			}
		})
	}
	wg.Go(func() { // amo worker: bury every 5th, leave the rest leased
		for ctx.Err() == nil {
			rows, err := s.Lease(ctx, "amo", 8, time.Hour)
			if err != nil {
				fail(err)
			}
			if len(rows) == 0 {
				time.Sleep(time.Millisecond)
			}
			for _, r := range rows {
				if r.ID%5 == 0 {
					if err := s.Bury(ctx, r, "permanent: test"); err != nil {
						fail(err)
					}
					report("buried %s", r.Key)
				}
			}
		}
	})
	wg.Wait()
	fail(errors.New("crash child ran for 4 minutes without being killed"))
}
