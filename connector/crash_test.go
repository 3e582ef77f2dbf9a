package connector_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/cli"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// TestMain lets the test binary act as the pbxbridge command: the crash test runs the daemon as
// a real subprocess (this binary with PBXBRIDGE_TEST_MAIN=1) so it can SIGKILL it.
func TestMain(m *testing.M) {
	if os.Getenv("PBXBRIDGE_TEST_MAIN") == "1" {
		os.Exit(cli.Main("test", os.Args[1:]))
	}
	os.Exit(m.Run())
}

// crashDaemon is the daemon subprocess under test.
type crashDaemon struct {
	t      *testing.T
	config string
	socket string
	cmd    *exec.Cmd
	logs   testkit.Buffer
}

func (c *crashDaemon) start() {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "run", "--config", c.config)
	cmd.Env = append(os.Environ(), "PBXBRIDGE_TEST_MAIN=1")
	cmd.Stdout = &c.logs
	cmd.Stderr = &c.logs
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd = cmd
	adminc := admin.NewClient(c.socket)
	waitFor(c.t, 20*time.Second, "daemon admin socket", func() bool {
		return adminc.Do(context.Background(), "GET", "/v1/status", nil, nil) == nil
	})
}

func (c *crashDaemon) kill() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

func (c *crashDaemon) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
		c.t.Error("daemon did not stop on SIGTERM within 20s")
	}
}

// TestCrashLosesNothing feeds 1,000 call records to a daemon subprocess, SIGKILLs it at random
// points three times (while records are being accepted and while they are being delivered),
// restarts it, and proves that every record was delivered, none was lost and none was delivered
// twice.
func TestCrashLosesNothing(t *testing.T) {
	testkit.Tier(t, testkit.Slow)
	t.Parallel()
	if testkit.RaceEnabled {
		// The race detector slows the pure-Go SQLite ~20×; this test exercises process kills,
		// not data races.
		t.Skip("subprocess crash test: runs without -race (see .ci/run)")
	}
	const total, batch = 1000, 25
	dir := t.TempDir()
	rootOwnedState(t, dir)
	socket := filepath.Join(dir, "admin.sock")
	crmLog := filepath.Join(dir, "crm.jsonl")
	// The pbx entry only names the source the records come from (nothing listens there; the
	// records are fed through the admin API).
	cfg := fmt.Sprintf(`
pbx:
  - {name: lab, ami: {host: 127.0.0.1, port: 1, username: u, secret: s}}
state_dir: %[1]s/state
http: {admin: {listen: ""}}
admin: {socket: %[2]s}
licensing: {dir: %[1]s/licenses.d}
dispatch: {workers: 4, backoff_min: 5ms, backoff_max: 20ms, drain_timeout: 1s}
connectors:
  - name: crm
    type: fake
    directions: [inbound, outbound]
    fake: {log_file: %[3]s, latency: 1ms, fail_rate: 0.05}
`, dir, socket, crmLog)
	cfgPath := filepath.Join(dir, "pbxbridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	d := &crashDaemon{t: t, config: cfgPath, socket: socket}
	d.start()
	defer func() {
		if t.Failed() {
			t.Logf("daemon output (tail):\n%s", tail(d.logs.String(), 4000))
		}
	}()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	records := make([][]byte, total)
	base := time.Now().Add(-time.Hour).UTC()
	for i := range records {
		rec := call.Record{CallID: fmt.Sprintf("1790000000.%d", i), PBX: "lab", Direction: call.Inbound,
			Customer: "+7900" + fmt.Sprintf("%07d", i), Line: "+74951112233", StartedAt: base.Add(time.Duration(i) * time.Second),
			EndedAt: base.Add(time.Duration(i)*time.Second + 30*time.Second), Disposition: call.Answered, AnsweredBy: "101"}
		records[i], _ = json.Marshal(rec)
	}

	// Kill points: two while feeding (after a random number of batches), one during delivery.
	kills := map[int]bool{rng.IntN(total/batch/2) + 1: true, total/batch/2 + rng.IntN(total/batch/2-1) + 1: true}
	adminc := admin.NewClient(socket)
	killed := 0
	began := time.Now()
	for b := 0; b*batch < total; {
		if kills[b] {
			delete(kills, b)
			// Kill at a random moment while this batch is being accepted.
			proc := d.cmd.Process
			time.AfterFunc(time.Duration(rng.IntN(20))*time.Millisecond, func() { _ = proc.Signal(syscall.SIGKILL) })
		}
		body := bytes.Join(records[b*batch:min((b+1)*batch, total)], []byte("\n"))
		err := adminc.Do(context.Background(), "POST", "/v1/outbox/import", bytes.NewReader(body), nil)
		if err != nil {
			// Not acknowledged: the daemon died. Restart it and send the batch again (some of
			// it may already be stored: enqueueing is idempotent).
			_ = d.cmd.Wait()
			killed++
			d.start()
			continue
		}
		b++
	}
	if killed < 2 {
		t.Fatalf("only %d kills happened while feeding", killed)
	}
	// Third kill: while the backlog is being delivered.
	t.Logf("fed %d records with %d kills in %v", total, killed, time.Since(began).Round(time.Millisecond))
	// At a random point of the delivery: after 1 to 300 calls reached the CRM.
	atLeast := 1 + rng.IntN(300)
	waitFor(t, 30*time.Second, fmt.Sprintf("%d deliveries", atLeast), func() bool { return countLines(t, crmLog) >= atLeast })
	d.kill()
	killed++
	d.start()
	defer d.stop()

	t.Logf("third kill after %v", time.Since(began).Round(time.Millisecond))
	waitFor(t, 60*time.Second, "all 1000 calls in the CRM", func() bool { return countLines(t, crmLog) >= total })
	// Anything extra (a redelivery of a call whose acknowledgement died with a kill) is written
	// before its row leaves the outbox: once nothing is pending or leased, the log is final.
	waitFor(t, 30*time.Second, "the outbox drained", func() bool {
		var st admin.StatusReport
		if err := adminc.Do(context.Background(), "GET", "/v1/status", nil, &st); err != nil {
			return false
		}
		for _, o := range st.Outbox {
			if o.Pending+o.Leased > 0 {
				return false
			}
		}
		return len(st.Outbox) > 0
	})
	keys := map[string]int{}
	f, err := os.Open(crmLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Key string `json:"key"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("CRM log has a corrupt line: %q", sc.Text())
		}
		keys[l.Key]++
	}
	for i := range total {
		k := fmt.Sprintf("lab/1790000000.%d", i)
		switch keys[k] {
		case 1:
		case 0:
			t.Errorf("call %s was lost", k)
		default:
			t.Errorf("call %s was delivered %d times", k, keys[k])
		}
	}
	if len(keys) != total {
		t.Errorf("the CRM has %d distinct calls, want %d", len(keys), total)
	}
	t.Logf("%d kills, %d distinct calls delivered once each, %v in all", killed, len(keys), time.Since(began).Round(time.Millisecond))
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(data, []byte("\n"))
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
