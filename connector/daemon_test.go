package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/cli"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/connector/internal/golden"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fake"
)

// testConfig is a daemon config for a fake PBX at addr and one fake connector logging to a file.
func testConfig(t *testing.T, addr string, fakeBlock string) string {
	t.Helper()
	dir := t.TempDir()
	rootOwnedState(t, dir)
	host, port, _ := net.SplitHostPort(addr)
	cfg := fmt.Sprintf(`
state_dir: %[1]s/state
log: {level: debug}
http: {admin: {listen: ""}}
admin: {socket: %[1]s/admin.sock}
licensing: {dir: %[1]s/licenses.d}
recordings: {dir: %[1]s/no-recordings}
dispatch: {backoff_min: 10ms, backoff_max: 50ms, drain_timeout: 2s}
pbx:
  - name: lab
    ami: {host: %[2]s, port: %[3]s, username: pbxbridge, secret: secret, auth: md5, ping_interval: 1s}
    calls:
      extensions: ['^Local/(?P<ext>\d+)@phones-[0-9a-f]+;1$', '^Local/[^@]+@internal-[0-9a-f]+;1$']
      trunks: ['^Local/[^@]+@from-pstn-[0-9a-f]+;2$', '^Local/[^@]+@pstn-[0-9a-f]+;1$']
      originate_id_variables: [PBXBRIDGE_ORIGINATE_ID, CRM_ORIGINATE_ID]
      did_variables: [FROM_DID, LAB_DID]
connectors:
  - name: crm
    type: fake
    directions: [inbound, outbound]
    fake: {log_file: %[1]s/crm.jsonl%[4]s}
`, dir, host, port, fakeBlock)
	path := filepath.Join(dir, "pbxbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rootOwnedState creates dir/state for the daemon. Run as root, the command line becomes the
// owner of the state directory, and creates a missing one for the pbxbridge user when that user
// exists (a machine where the package is or was installed): a test process would then drop its
// root privileges half-way, or a daemon subprocess would be unable to read the test's files. A
// state directory that root already owns keeps everything as root.
func rootOwnedState(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		tb.Fatal(err)
	}
}

func startDaemon(t *testing.T, path string) (*connector.Daemon, context.CancelFunc) {
	t.Helper()
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	d, err := connector.New(cfg, connector.Options{Version: "test", Notify: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon Run: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "daemon started", func() bool { return d.Outbox() != nil && d.Adapter("crm") != nil })
	return d, cancel
}

// waitFor is testkit.WaitFor (the name the tests of this package grew up with).
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, limit, what, cond)
}

// waitSettled waits until the daemon has routed every given call (its timeline has a "routing"
// entry: queued for the connectors that want it, or not sent to any) and its outbox holds
// nothing pending or leased: every delivery those calls cause has happened, so the test can
// count them exactly. A call is given as the ids it may be keyed by under PBX "lab" (one for
// AMI; the ARI fake maps several channel ids).
func waitSettled(t *testing.T, d *connector.Daemon, calls ...[]string) {
	t.Helper()
	routed := func(key string) bool {
		rep, err := d.Call(context.Background(), key)
		return err == nil && slices.ContainsFunc(rep.Timeline, func(e outbox.TimelineEntry) bool { return e.Kind == "routing" })
	}
	testkit.Eventually(t, 15*time.Second, "every call routed and the outbox idle", func() error {
		for _, ids := range calls {
			if !slices.ContainsFunc(ids, func(id string) bool { return routed("lab/" + id) }) {
				return fmt.Errorf("call %v not routed yet", ids)
			}
		}
		stats, err := d.Outbox().Stats(context.Background())
		if err != nil {
			return err
		}
		for _, s := range stats {
			if s.Pending+s.Leased > 0 {
				return fmt.Errorf("%s: %d rows pending, %d leased", s.Connector, s.Pending, s.Leased)
			}
		}
		return nil
	})
}

// amiCalls returns the ids of the calls a played AMI scenario makes (its golden records' call
// ids as the fake PBX mapped them), one per call, for waitSettled.
func amiCalls(t *testing.T, played ...*fakepbx.Call) [][]string {
	t.Helper()
	var out [][]string
	for _, p := range played {
		for _, r := range golden.Records(t, p.Scenario) {
			out = append(out, []string{p.MapID(r.CallID)})
		}
	}
	return out
}

func TestLabCallsMatchesTestdata(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("callmodel/testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var lab struct {
		CallModel callmodel.Config `yaml:"callmodel"`
	}
	if err := yaml.Unmarshal(data, &lab); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(lab.CallModel, demo.LabCalls()) {
		t.Fatalf("demo.LabCalls() drifted from callmodel/testdata/lab.yaml:\n%+v\n%+v", demo.LabCalls(), lab.CallModel)
	}
}

// End to end: real AMI over a socket, the call model, the outbox and delivery.
func TestDaemonDeliversPBXCalls(t *testing.T) {
	t.Parallel()
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	d, _ := startDaemon(t, testConfig(t, pbx.Addr(), ""))
	waitFor(t, 10*time.Second, "AMI login", func() bool { return pbx.Stats().Logins > 0 })

	var calls []*fakepbx.Call
	for _, sc := range []string{"inbound_answered", "inbound_missed", "outbound_answered", "internal_call"} {
		played, err := pbx.Play(context.Background(), sc)
		if err != nil {
			t.Fatal(err)
		}
		<-played.Done()
		calls = append(calls, played)
	}
	adapter := d.Adapter("crm").(*fake.Adapter)
	waitSettled(t, d, amiCalls(t, calls...)...)
	got := adapter.Delivered()
	if len(got) != 3 {
		t.Fatalf("delivered %d calls, want 3 (the internal call is not sent): %+v", len(got), got)
	}
	byDir := map[call.Direction][]call.Disposition{}
	for _, l := range got {
		byDir[l.Record.Direction] = append(byDir[l.Record.Direction], l.Record.Disposition)
		if l.Record.PBX != "lab" || !strings.HasPrefix(l.Key, "lab/") {
			t.Errorf("record key %q / pbx %q", l.Key, l.Record.PBX)
		}
	}
	if len(byDir[call.Inbound]) != 2 || len(byDir[call.Outbound]) != 1 {
		t.Fatalf("directions %v", byDir)
	}

	// Metrics: the outbox and delivery series.
	rec := httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`pbxbridge_deliveries_total{connector="crm",result="delivered"} 3`,
		`pbxbridge_outbox_pending{connector="crm"} 0`,
		`pbxbridge_outbox_dead{connector="crm"} 0`,
		`pbxbridge_outbox_done{connector="crm"} 3`,
		`pbxbridge_outbox_oldest_age_seconds{connector="crm"} 0`,
		`pbxbridge_calls_total{direction="internal",disposition="answered",pbx="lab"} 1`,
		`pbxbridge_crm_requests_per_call_count{connector="crm"} 3`,
		`pbxbridge_ami_connected{pbx="lab"} 1`,
		`pbxbridge_build_info{`,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	n, err := testutil.GatherAndCount(d.Registry(), "pbxbridge_deliveries_total")
	if err != nil || n < 7 {
		t.Errorf("deliveries_total series: %d, %v", n, err)
	}

	// The call's timeline explains it.
	key := got[0].Key
	rep, err := d.Call(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range rep.Timeline {
		kinds = append(kinds, e.Kind)
	}
	if !strings.Contains(strings.Join(kinds, ","), "call,routing") || kinds[len(kinds)-1] != "delivered" {
		t.Errorf("timeline kinds %v", kinds)
	}

	// The same call by its bare id (one PBX configured) and, for unknown keys, a plain "not
	// found" after a bounded number of look-ups. At 1bda728 an unknown key recursed forever
	// (the bare-id fallback grew the key and called itself): one unauthenticated GET took the
	// daemon to 24 GB.
	if rep2, err := d.Call(context.Background(), strings.TrimPrefix(key, "lab/")); err != nil || rep2.Key != key {
		t.Errorf("bare id: key %q, %v", rep2.Key, err)
	}
	for _, unknown := range []string{"lab/123.typo", "123.typo", "no/such/pbx/1.2", strings.Repeat("9", 4000)} {
		if _, err := d.Call(context.Background(), unknown); err == nil || !strings.Contains(err.Error(), "no call") {
			t.Errorf("Call(%.20q): %v, want \"no call\"", unknown, err)
		}
		rec := httptest.NewRecorder()
		d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/calls/"+unknown, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET /calls/%.20s: %d, want 404", unknown, rec.Code)
		}
	}

	// Readiness.
	rec = httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/readyz: %d %s", rec.Code, rec.Body)
	}
}

// A dead letter is listed by `outbox list --dead` and re-queued by `outbox retry`, through the admin socket, as an operator would.
func TestDeadLetterListAndRetry(t *testing.T) {
	t.Parallel()
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	path := testConfig(t, pbx.Addr(), `, permanent_fail_customer: "+79009998877"`)
	d, _ := startDaemon(t, path)
	cfg, _ := config.Load(path, func(string) string { return "" })

	rec := call.Record{CallID: "1700000000.1", PBX: "lab", Direction: call.Inbound, Customer: "+79009998877",
		Line: "+74951112233", StartedAt: time.Now().Add(-time.Minute).UTC(), EndedAt: time.Now().UTC(), Disposition: call.NoAnswer}
	line, _ := json.Marshal(rec)
	if _, err := d.Import(context.Background(), bytes.NewReader(line)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "dead letter", func() bool {
		rows, _ := d.Outbox().List(context.Background(), outbox.Filter{State: outbox.Dead})
		return len(rows) == 1
	})

	out := runCLI(t, 0, "--socket", cfg.Admin.Socket, "outbox", "list", "--dead")
	if !strings.Contains(out, "lab/1700000000.1") || !strings.Contains(out, "dead") || !strings.Contains(out, "refused by configuration") {
		t.Fatalf("outbox list --dead:\n%s", out)
	}
	rows, _ := d.Outbox().List(context.Background(), outbox.Filter{State: outbox.Dead})
	out = runCLI(t, 0, "--socket", cfg.Admin.Socket, "outbox", "retry", fmt.Sprint(rows[0].ID))
	if !strings.Contains(out, "re-queued 1 dead letter") {
		t.Fatalf("outbox retry: %s", out)
	}
	// It fails again (the customer is still refused) and comes back as a dead letter after a
	// fresh attempt.
	waitFor(t, 10*time.Second, "second attempt", func() bool {
		return d.Adapter("crm").(*fake.Adapter).Attempts() >= 2
	})
	out = runCLI(t, 0, "--socket", cfg.Admin.Socket, "calls", "show", "lab/1700000000.1")
	if !strings.Contains(out, "dead letter") || !strings.Contains(out, "inbound call with +79009998877") {
		t.Fatalf("calls show:\n%s", out)
	}
}

// runCLI runs the pbxbridge command line in-process and returns its standard output.
func runCLI(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.MainIO(context.Background(), "test", args, &out, &errOut)
	if code != wantCode {
		t.Fatalf("pbxbridge %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out.String(), errOut.String())
	}
	return out.String()
}

func TestStatusPageRenders(t *testing.T) {
	t.Parallel()
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	d, _ := startDaemon(t, testConfig(t, pbx.Addr(), ""))
	waitFor(t, 10*time.Second, "AMI login", func() bool { return pbx.Stats().Logins > 0 })
	played, _ := pbx.Play(context.Background(), "inbound_answered")
	<-played.Done()
	adapter := d.Adapter("crm").(*fake.Adapter)
	waitFor(t, 10*time.Second, "delivery", func() bool {
		rows, _ := d.Outbox().List(context.Background(), outbox.Filter{State: outbox.Done})
		return len(rows) == 1
	})
	rec := httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, `data-connector="crm"`) || !strings.Contains(body, "crm: delivered") {
		t.Fatalf("status page %d:\n%s", rec.Code, body)
	}
	key := adapter.Delivered()[0].Key
	rec = httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/calls/"+key, nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `data-kind="delivered"`) {
		t.Fatalf("call page %d:\n%s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "http://127.0.0.1/actions/retry-dead", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("an unauthenticated action answered %d", rec.Code)
	}
}

// `pbxbridge doctor` logs in to the PBX and checks the rights pbxbridge needs.
func TestDoctor(t *testing.T) {
	t.Parallel()
	pbx, err := fakepbx.Start(fakepbx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	path := testConfig(t, pbx.Addr(), "")
	var out, errOut bytes.Buffer
	code := cli.MainIO(context.Background(), "test", []string{"doctor", "--config", path, "--timeout", "5s"}, &out, &errOut)
	text := out.String()
	for _, want := range []string{
		"OK    config", "OK    state directory",
		"OK    pbx lab                          AMI login to 127.0.0.1:",
		"OK    pbx lab: rights                  Originate, CoreShowChannels and ExtensionState allowed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("doctor output lacks %q:\n%s%s", want, text, errOut.String())
		}
	}
	// The recordings directory of the test config does not exist here: a FAIL with a fix, exit 1.
	if code != 1 || !strings.Contains(text, "FAIL  recordings") {
		t.Errorf("exit %d; want 1 with a recordings failure:\n%s", code, text)
	}
}
