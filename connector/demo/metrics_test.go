package demo_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// TestMetricsExposition scrapes a live daemon's /metrics (the demo environment, before any call):
// the series the alerts and docs/operations.md name are there from the start (a counter absent
// until its first event makes rate() and increase() alerts silent), and `promtool check metrics`
// finds nothing to complain about (run when promtool is installed; CI installs it). The scrape is
// written to $PBXBRIDGE_METRICS_OUT when set.
func TestMetricsExposition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the demo environment")
	}
	env, err := demo.Start(context.Background(), demo.Options{Speed: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Close() }()
	resp, err := http.Get(env.BaseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp.Status, err)
	}
	text := string(body)
	for _, want := range []string{
		// dispatch
		`pbxbridge_deliveries_total{connector="amo-demo",result="delivered"} 0`,
		`pbxbridge_crm_auth_ok{connector="b24-demo"} 1`,
		// the daemon
		`pbxbridge_calls_total{direction="inbound",disposition="answered",pbx="lab"} 0`,
		`pbxbridge_calls_total{direction="outbound",disposition="no_answer",pbx="lab"} 0`,
		`pbxbridge_calls_ended_unseen_total{pbx="lab"} 0`,
		`pbxbridge_calls_open{pbx="lab"} 0`,
		`pbxbridge_calls_unrouted_total{direction="internal"} 0`,
		`pbxbridge_live_events_total{connector="kommo-demo",result="ok"} 0`,
		`pbxbridge_crm_requests_total{connector="b24-demo"}`,
		`pbxbridge_click_to_call_requests_total{connector="b24-demo",result="originated"} 0`,
		`pbxbridge_routing_queries_throttled_total{connector="amo-demo"} 0`,
		`pbxbridge_config_reloads_total{result="refused"} 0`,
		`pbxbridge_outbox_write_errors_total 0`,
		`pbxbridge_intake_held_records 0`,
		// the PBX source
		`pbxbridge_ami_connected{pbx="lab"} 1`,
		`pbxbridge_ami_reconnects_total{pbx="lab"}`,
		// licensing: seconds, not days
		`pbxbridge_license_remaining_seconds{connector="amo-demo"}`,
		`pbxbridge_license_state{connector="amo-demo",state="active"} 1`,
		`pbxbridge_license_clock_rollback_total 0`,
	} {
		if !strings.Contains(text, want+" ") && !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, "pbxbridge_license_days_left") {
		t.Error("pbxbridge_license_days_left is still exported (days are not a base unit: use pbxbridge_license_remaining_seconds)")
	}
	checkDocumentedSeries(t, text)
	if out := os.Getenv("PBXBRIDGE_METRICS_OUT"); out != "" {
		if err := os.WriteFile(out, body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed: exposition lint skipped")
		return
	}
	f := filepath.Join(t.TempDir(), "metrics.txt")
	if err := os.WriteFile(f, body, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// conditionalSeries are used by the alerts or the dashboard but exported only in some setups.
var conditionalSeries = map[string]string{
	"pbxbridge_ari_connected":        "only with an ARI PBX (the demo's is AMI)",
	"pbxbridge_cdr_gap_pending":      "only for a PBX with a cdr block (the demo has none)",
	"pbxbridge_cdr_recoveries_total": "only for a PBX with a cdr block (the demo has none)",
	"pbxbridge_hook_failures_total":  "only for a connector with hooks (the demo has none)",
}

// checkDocumentedSeries: every pbxbridge_* series the alert rules and the dashboard use is in the
// scrape, and the licence states the alerts match are states licensing exports.
func checkDocumentedSeries(t *testing.T, scrape string) {
	t.Helper()
	exported := map[string]bool{}
	for _, line := range strings.Split(scrape, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		exported[name] = true
	}
	seriesRE := regexp.MustCompile(`pbxbridge_[a-z_]+`)
	for _, doc := range []string{"../../docs/prometheus-alerts.yml", "../../docs/grafana-dashboard.json"} {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range seriesRE.FindAllString(string(data), -1) {
			if !exported[name] && conditionalSeries[name] == "" {
				t.Errorf("%s uses %s, which a running daemon does not export", filepath.Base(doc), name)
			}
		}
		for _, m := range regexp.MustCompile(`pbxbridge_license_state\{state=~"([^"]+)"\}`).FindAllStringSubmatch(string(data), -1) {
			for _, st := range strings.Split(m[1], "|") {
				if !slices.Contains(licensing.AllStates, licensing.State(st)) {
					t.Errorf("%s matches licence state %q, which licensing never exports (states: %v)", filepath.Base(doc), st, licensing.AllStates)
				}
			}
		}
	}
}
