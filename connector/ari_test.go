package connector_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fake"
)

// ariTestConfig is a daemon config reading the fake ARI server at url.
func ariTestConfig(t *testing.T, url string) string {
	t.Helper()
	dir := t.TempDir()
	rootOwnedState(t, dir)
	cfg := fmt.Sprintf(`
state_dir: %[1]s/state
log: {level: debug}
http: {admin: {listen: ""}}
admin: {socket: %[1]s/admin.sock}
licensing: {dir: %[1]s/licenses.d}
dispatch: {backoff_min: 10ms, backoff_max: 50ms, drain_timeout: 2s}
pbx:
  - name: lab
    type: ari
    ari: {url: %[2]s, username: pbxbridge, password: secret, app: pbxbridge-test}
    calls:
      extensions: ['^Local/(?P<ext>\d+)@phones-[0-9a-f]+;1$', '^Local/[^@]+@internal-[0-9a-f]+;1$']
      trunks: ['^Local/[^@]+@from-pstn-[0-9a-f]+;2$', '^Local/[^@]+@pstn-[0-9a-f]+;1$']
      originate_id_variables: [PBXBRIDGE_ORIGINATE_ID, CRM_ORIGINATE_ID]
      did_variables: [FROM_DID, LAB_DID]
connectors:
  - name: crm
    type: fake
    directions: [inbound, outbound]
    fake: {log_file: %[1]s/crm.jsonl}
`, dir, url)
	path := filepath.Join(dir, "pbxbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// End to end over ARI: the daemon with `type: ari` reads the fake ARI server's websocket, builds
// the calls and delivers them, exactly as with AMI; a dropped websocket is survived.
func TestDaemonDeliversARICalls(t *testing.T) {
	t.Parallel()
	pbx, err := fakepbx.StartARI(fakepbx.ARIConfig{Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pbx.Close() }()
	d, _ := startDaemon(t, ariTestConfig(t, pbx.URL()))
	waitFor(t, 10*time.Second, "ARI connection", func() bool { return pbx.Stats().Sessions == 1 })

	adapter := d.Adapter("crm").(*fake.Adapter)
	var calls [][]string
	for i, sc := range []string{"inbound_answered", "inbound_missed", "outbound_answered", "internal_call"} {
		played, err := pbx.Play(context.Background(), sc)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, id := range played.IDs() {
			ids = append(ids, id)
		}
		calls = append(calls, ids)
		if i == 1 {
			// In the middle of the missed call (it rang at the CRM): the websocket drops, the
			// daemon reconnects.
			waitFor(t, 10*time.Second, "the missed call ringing at the CRM", func() bool {
				return slices.ContainsFunc(adapter.LiveEvents(), func(ev call.Live) bool { return slices.Contains(ids, strings.TrimPrefix(ev.CallID, "lab/")) })
			})
			if pbx.DropClients() != 1 {
				t.Fatal("no ARI client to drop")
			}
		}
		<-played.Done()
		if i == 1 { // the next calls start once the daemon is back
			waitFor(t, 10*time.Second, "reconnection", func() bool { return pbx.Stats().Connects == 2 })
		}
	}
	waitSettled(t, d, calls...)
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
	slices.Sort(byDir[call.Inbound])
	if !slices.Equal(byDir[call.Inbound], []call.Disposition{call.Answered, call.NoAnswer}) ||
		!slices.Equal(byDir[call.Outbound], []call.Disposition{call.Answered}) {
		t.Fatalf("directions %v", byDir)
	}

	metrics := func() string {
		rec := httptest.NewRecorder()
		d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/metrics", nil))
		return rec.Body.String()
	}
	wantMetrics := []string{
		`pbxbridge_ari_connected{pbx="lab"} 1`,
		`pbxbridge_ari_reconnects_total{pbx="lab"} 1`,
		// A snapshot at the first connection (the daemon asks for it) and one after the reconnect.
		`pbxbridge_ari_resyncs_total{pbx="lab",result="ok"} 2`,
		`pbxbridge_ari_events_total{pbx="lab",type="hangup"}`,
		`pbxbridge_ari_request_duration_seconds_count{code="200",pbx="lab",request="GET /channels"} 2`,
		`pbxbridge_deliveries_total{connector="crm",result="delivered"} 3`,
		`pbxbridge_calls_total{direction="internal",disposition="answered",pbx="lab"} 1`,
	}
	lacks := func() []string {
		body := metrics()
		var out []string
		for _, w := range wantMetrics {
			if !strings.Contains(body, w) {
				out = append(out, w)
			}
		}
		return out
	}
	// The metrics are updated by the goroutines that did the work, a moment after it.
	_ = testkit.Until(10*time.Second, func() bool { return len(lacks()) == 0 })
	for _, w := range lacks() {
		t.Errorf("/metrics lacks %q", w)
	}
	st := d.Status(context.Background())
	if len(st.PBX) != 1 || st.PBX[0].Kind != "ari" || !st.PBX[0].Connected || st.PBX[0].Reconnects != 1 || st.PBX[0].PBXVersion == "" {
		t.Errorf("status %+v", st.PBX)
	}
	rec := httptest.NewRecorder()
	d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/readyz: %d %s", rec.Code, rec.Body)
	}
}
