package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/cli"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/fake"
)

// The customer of the lab transcripts' external calls.
const labCustomer = "+79001234567"

// runDaemon starts a daemon on the config at path and returns it with a function that stops it
// as SIGTERM does and waits for Run to return.
func runDaemon(t *testing.T, path string, opts connector.Options) (*connector.Daemon, func()) {
	t.Helper()
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	opts.Version, opts.Notify = "test", func(string) {}
	d, err := connector.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("daemon Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, 10*time.Second, "daemon started", func() bool {
		select {
		case err := <-done:
			t.Fatalf("daemon Run: %v", err)
		default:
		}
		return d.Outbox() != nil && d.Adapter("crm") != nil
	})
	return d, stop
}

// editConfig rewrites the config file at path.
func editConfig(t *testing.T, path string, edit func(string) string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(edit(string(b))), 0o600); err != nil {
		t.Fatal(err)
	}
}

func startPBX(t *testing.T) *fakepbx.Server {
	t.Helper()
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pbx.Close() })
	return pbx
}

func play(t *testing.T, pbx *fakepbx.Server, scenario string) *fakepbx.Call {
	t.Helper()
	c, err := pbx.Play(context.Background(), scenario)
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	return c
}

// outboxCount counts the outbox rows in a state.
func outboxCount(t *testing.T, d *connector.Daemon, st outbox.State) int {
	t.Helper()
	rows, err := d.Outbox().List(context.Background(), outbox.Filter{State: st, Limit: outbox.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	return len(rows)
}

// TestRedactNumbersInLogs: with log.redact_numbers, a daemon that takes a call, stores it and
// has it refused by the CRM logs the customer's number masked in every line (the daemon's own
// debug line and the connector's delivery error), never whole.
func TestRedactNumbersInLogs(t *testing.T) {
	t.Parallel()
	pbx := startPBX(t)
	path := testConfig(t, pbx.Addr(), ", permanent_fail_customer: '"+labCustomer+"'")
	editConfig(t, path, func(s string) string {
		return strings.Replace(s, "log: {level: debug}", "log: {level: debug, redact_numbers: true}", 1)
	})
	var logs testkit.Buffer
	d, _ := runDaemon(t, path, connector.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	waitFor(t, 10*time.Second, "AMI login", func() bool { return pbx.Stats().Logins > 0 })
	play(t, pbx, "inbound_answered")
	waitFor(t, 15*time.Second, "the call refused by the CRM", func() bool { return outboxCount(t, d, outbox.Dead) == 1 })

	out := logs.String()
	masked := connector.RedactNumber(labCustomer)
	if !strings.Contains(out, "customer="+masked) || !strings.Contains(out, "customer "+masked+" is refused") {
		t.Errorf("the log lacks the masked number %s in the stored call and in the CRM's refusal:\n%s", masked, out)
	}
	if strings.Contains(out, labCustomer[2:]) {
		t.Errorf("the log holds the whole number %s:\n%s", labCustomer, out)
	}
	if !strings.Contains(out, "lab/") {
		t.Errorf("call keys were masked too:\n%s", out)
	}
}

// TestForgetThroughAdminSocketAndOffline: `pbxbridge forget` erases a number through the running
// daemon (outbox, recent calls), says what it erased, names the backups that still hold it and
// the CRM's copy; with the daemon stopped, it edits the outbox itself.
func TestForgetThroughAdminSocketAndOffline(t *testing.T) {
	t.Parallel()
	pbx := startPBX(t)
	path := testConfig(t, pbx.Addr(), "")
	d, stop := runDaemon(t, path, connector.Options{})
	waitFor(t, 10*time.Second, "AMI login", func() bool { return pbx.Stats().Logins > 0 })
	for _, sc := range []string{"inbound_answered", "outbound_answered", "internal_call"} {
		play(t, pbx, sc)
	}
	adapter := d.Adapter("crm").(*fake.Adapter)
	waitFor(t, 15*time.Second, "2 deliveries", func() bool { return len(adapter.Delivered()) == 2 })
	waitFor(t, 10*time.Second, "the automatic backup at start", func() bool { return len(connector.BackupFiles(d.Config().Backup.Dir)) == 1 })

	var out, errOut bytes.Buffer
	if code := cli.MainIO(context.Background(), "test", []string{"--config", path, "forget", "8 (900) 123-45-67", "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("forget: exit %d: %s", code, errOut.String())
	}
	var rep admin.ForgetReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.E164 != labCustomer || len(rep.Outbox.Calls) != 2 || rep.Outbox.Done != 2 || rep.Recent != 2 || len(rep.Backups) != 1 || rep.Offline {
		t.Fatalf("report %+v", rep)
	}
	if !rep.Outbox.WALTruncated || rep.Outbox.Timeline < 4 {
		t.Errorf("report %+v: want the calls' timelines erased and the WAL truncated", rep.Outbox)
	}
	for _, k := range rep.Outbox.Calls {
		if _, err := d.Call(context.Background(), k); err == nil {
			t.Errorf("call %s is still known", k)
		}
	}
	for _, rc := range d.Recent() {
		if rc.Record.Customer == labCustomer {
			t.Errorf("recent calls still list %s", rc.Record.Key())
		}
	}
	if len(d.Recent()) != 1 { // the internal call stays
		t.Errorf("%d recent calls left, want 1", len(d.Recent()))
	}
	// The text report says what to do about the CRM and the backups.
	out.Reset()
	if code := cli.MainIO(context.Background(), "test", []string{"--config", path, "forget", labCustomer}, &out, &errOut); code != 0 {
		t.Fatalf("forget: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"calls             0", "stay in the CRM: erase the contact", "backup(s) still hold"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("forget output lacks %q:\n%s", want, out.String())
		}
	}
	// A bad number is refused, naming the problem.
	errOut.Reset()
	if code := cli.MainIO(context.Background(), "test", []string{"--config", path, "forget", "101"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "not a phone number") {
		t.Errorf("forget 101: exit %d, %s", code, errOut.String())
	}

	// Offline: one more call, the daemon stopped, then forget.
	play(t, pbx, "inbound_missed")
	waitFor(t, 15*time.Second, "the missed call delivered", func() bool { return len(adapter.Delivered()) == 3 })
	stop()
	out.Reset()
	if code := cli.MainIO(context.Background(), "test", []string{"--config", path, "forget", labCustomer, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("offline forget: exit %d: %s", code, errOut.String())
	}
	rep = admin.ForgetReport{}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Offline || len(rep.Outbox.Calls) != 1 || rep.Outbox.Done != 1 {
		t.Fatalf("offline report %+v", rep)
	}
}

// TestAutomaticBackups: a daemon with no backup writes one at start, with the outbox, the
// connectors' files and the licence state; the metrics show it; a restart within the interval
// writes none; `backup now` keeps backup.keep generations.
func TestAutomaticBackups(t *testing.T) {
	t.Parallel()
	pbx := startPBX(t)
	path := testConfig(t, pbx.Addr(), "")
	editConfig(t, path, func(s string) string { return s + "backup: {interval: 1h, keep: 2}\n" })
	d, stop := runDaemon(t, path, connector.Options{})
	dir := d.Config().Backup.Dir
	token := filepath.Join(d.Config().StateDir, "connectors", "crm", "token.json")
	if err := os.WriteFile(token, []byte(`{"refresh":"r1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the backup at start", func() bool {
		return len(connector.BackupFiles(dir)) == 1 && strings.Contains(scrape(t, d), "pbxbridge_backup_last_success_timestamp_seconds 1.")
	})
	first := connector.BackupFiles(dir)[0]
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("backup dir: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(first); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, %v", fi.Mode(), err)
	}
	body := scrape(t, d)
	for _, want := range []string{"pbxbridge_backup_last_success_timestamp_seconds 1.", "pbxbridge_backup_interval_seconds 3600", "pbxbridge_backup_failures_total 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "pbxbridge_backup_last_size_bytes 0\n") {
		t.Error("backup size metric is 0")
	}
	stop()
	d, _ = runDaemon(t, path, connector.Options{})
	time.Sleep(300 * time.Millisecond)
	if n := len(connector.BackupFiles(dir)); n != 1 {
		t.Fatalf("%d backups after a restart within the interval, want 1", n)
	}
	var res admin.BackupResult
	for range 2 {
		var out, errOut bytes.Buffer
		if code := cli.MainIO(context.Background(), "test", []string{"--config", path, "backup", "now", "--json"}, &out, &errOut); code != 0 {
			t.Fatalf("backup now: exit %d: %s", code, errOut.String())
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
	}
	files := connector.BackupFiles(dir)
	if len(files) != 2 || files[0] != res.Path || len(res.Removed) != 1 || res.Removed[0] != first {
		t.Fatalf("after two more backups with keep 2: %v, last result %+v", files, res)
	}
	want := []string{"outbox.db", "connectors/crm/token.json"}
	for _, w := range want {
		found := false
		for _, f := range res.Files {
			found = found || f == w
		}
		if !found {
			t.Errorf("backup files %v lack %s", res.Files, w)
		}
	}
	_ = d
}

func scrape(t *testing.T, d *connector.Daemon) string {
	t.Helper()
	rec := httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}
