package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/cli"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fake"
)

// cdrTestConfig is testConfig with the PBX's Master.csv as its CDR, read 300 ms after a login.
func cdrTestConfig(t *testing.T, addr, csvPath string) string {
	t.Helper()
	return cdrTestConfigDelay(t, addr, csvPath, "300ms")
}

func cdrTestConfigDelay(t *testing.T, addr, csvPath, delay string) string {
	t.Helper()
	path := testConfig(t, addr, "")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block := "      did_variables: [FROM_DID, LAB_DID]\n" +
		"    cdr:\n" +
		"      csv: {path: " + csvPath + ", loguniqueid: true, loguserfield: true, timezone: UTC}\n" +
		"      delay: " + delay + "\n"
	out := strings.Replace(string(data), "      did_variables: [FROM_DID, LAB_DID]\n", block, 1)
	if out == string(data) {
		t.Fatal("cannot place the cdr block")
	}
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// labLinkedid is the Linkedid of a lab transcript's (first) call.
func labLinkedid(t *testing.T, scenario string) string {
	t.Helper()
	b, err := transcripts.Meta(scenario)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Calls []struct {
			Linkedid string `json:"linkedid"`
		} `json:"calls"`
	}
	if err := json.Unmarshal(b, &m); err != nil || len(m.Calls) == 0 {
		t.Fatalf("%s meta: %v", scenario, err)
	}
	return m.Calls[0].Linkedid
}

// delivered counts the deliveries of each key by the fake connectors of the daemons given.
func delivered(ds ...*connector.Daemon) map[string][]call.Record {
	out := map[string][]call.Record{}
	for _, d := range ds {
		for _, l := range d.Adapter("crm").(*fake.Adapter).Delivered() {
			out[l.Key] = append(out[l.Key], *l.Record)
		}
	}
	return out
}

// TestCDRGapRecovery: calls that begin and end while the AMI connection is down are recovered
// from Master.csv once it is back (flag recovered_from_cdr, a timeline entry, the metric), and so
// are calls that begin and end while the daemon is stopped; a call that began in the gap and is
// still up at the reconnect, whose first rows are already in the file, is followed by the model
// and delivered once, not recovered; nothing is delivered twice.
func TestCDRGapRecovery(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "Master.csv")
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 10, CDR: &fakepbx.CDRConfig{CSVPath: csv}})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	path := cdrTestConfig(t, pbx.Addr(), csv)
	d1, stop1 := runDaemon(t, path, connector.Options{})
	waitFor(t, 10*time.Second, "AMI login", func() bool { return pbx.Stats().Logins > 0 })
	ctx := context.Background()
	play := func(sc string) *fakepbx.Call {
		t.Helper()
		c, err := pbx.Play(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key := func(c *fakepbx.Call) string { return "lab/" + c.MapID(labLinkedid(t, c.Scenario)) }

	// Seen live.
	live := play("inbound_answered")
	<-live.Done()
	waitFor(t, 10*time.Second, "the live call", func() bool { return len(delivered(d1)[key(live)]) == 1 })

	// The connection drops; two calls begin and end before it is back, a third begins and is
	// still up (frozen) when the daemon logs in again.
	logins := pbx.Stats().Logins
	pbx.Outage(2 * time.Second)
	missed, outbound := play("inbound_missed"), play("outbound_answered")
	<-missed.Done()
	<-outbound.Done()
	longCall := play("attended_transfer")
	waitFor(t, 10*time.Second, "the transfer's first CDR rows", func() bool { return longCall.Position() > 12*time.Second })
	pbx.Pause()
	waitFor(t, 20*time.Second, "the AMI login after the outage", func() bool { return pbx.Stats().Logins > logins })
	recoveries := func(d *connector.Daemon) float64 { return metric(d, "pbxbridge_cdr_recoveries_total", "result", "ok") }
	waitFor(t, 20*time.Second, "the CDR recovery", func() bool { return recoveries(d1) >= 1 })
	pbx.Resume()
	<-longCall.Done()
	waitFor(t, 15*time.Second, "4 calls delivered", func() bool { return len(delivered(d1)) >= 4 })

	got := delivered(d1)
	for _, c := range []*fakepbx.Call{missed, outbound} {
		recs := got[key(c)]
		if len(recs) != 1 || !slices.Contains(recs[0].Flags, call.FlagRecoveredFromCDR) {
			t.Fatalf("%s (%s): delivered %+v, want once, recovered from the CDR", c.Scenario, key(c), recs)
		}
	}
	if recs := got[key(longCall)]; len(recs) != 1 || slices.Contains(recs[0].Flags, call.FlagRecoveredFromCDR) {
		t.Fatalf("the call up at the reconnect: %+v, want once from the model", recs)
	}
	if n := metric(d1, "pbxbridge_calls_recovered_from_cdr_total", "pbx", "lab"); n != 2 {
		t.Errorf("recovered metric %v, want 2", n)
	}
	rep, err := d1.Call(ctx, key(missed))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range rep.Timeline {
		kinds = append(kinds, e.Kind)
		if e.Kind == "recovered" && e.Summary != "recovered from the CDR: the daemon did not see this call" {
			t.Errorf("timeline entry %q", e.Summary)
		}
	}
	if !strings.Contains(strings.Join(kinds, ","), "call,recovered,routing") {
		t.Errorf("timeline kinds %v", kinds)
	}
	rec := httptest.NewRecorder()
	d1.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/readyz", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `{"name":"pbx/lab/cdr","ok":true,"detail":"gap `) {
		t.Errorf("/readyz %d: %s", rec.Code, rec.Body)
	}

	// The daemon stops; a call begins and ends meanwhile; the next start recovers it.
	before := delivered(d1)
	stop1()
	down := play("outbound_busy")
	<-down.Done()
	d2, _ := runDaemon(t, path, connector.Options{})
	waitFor(t, 20*time.Second, "the call of the downtime", func() bool { return len(delivered(d2)[key(down)]) == 1 })
	after := play("inbound_ringgroup")
	<-after.Done()
	waitFor(t, 10*time.Second, "a live call after the restart", func() bool { return len(delivered(d2)[key(after)]) == 1 })
	// The fake connector's log file outlives the daemon: d2's holds d1's deliveries too.
	all := delivered(d2)
	for k := range before {
		if _, ok := all[k]; !ok {
			t.Errorf("%s: delivered before the restart, not in the log after it", k)
		}
	}
	for k, recs := range all {
		if len(recs) != 1 {
			t.Errorf("%s delivered %d times", k, len(recs))
		}
	}
	if recs := all[key(down)]; !slices.Contains(recs[0].Flags, call.FlagRecoveredFromCDR) || recs[0].Disposition != call.Busy {
		t.Errorf("the call of the downtime: %+v", recs[0])
	}
	if len(all) != 6 {
		t.Errorf("%d calls delivered, want 6: %v", len(all), all)
	}
}

// metric returns the value of the counter or gauge series of name that has the label, or 0.
func metric(d *connector.Daemon, name, label, value string) float64 {
	mfs, _ := d.Registry().Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// `pbxbridge doctor` reads the last day of each PBX's CDR and says whether it can.
func TestDoctorCDR(t *testing.T) {
	pbx, err := fakepbx.Start(fakepbx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	dir := t.TempDir()
	csv := filepath.Join(dir, "Master.csv")
	path := cdrTestConfig(t, pbx.Addr(), csv)
	doctor := func() string {
		var out, errOut bytes.Buffer
		cli.MainIO(context.Background(), "test", []string{"doctor", "--config", path, "--timeout", "5s"}, &out, &errOut)
		return out.String()
	}
	if out := doctor(); !strings.Contains(out, "FAIL  pbx lab: cdr") || !strings.Contains(out, "no such file") {
		t.Errorf("no Master.csv:\n%s", out)
	}
	now := time.Now().UTC().Add(-time.Hour).Format("2006-01-02 15:04:05")
	row := `"","101","102","from-internal","""A"" <101>","PJSIP/101-00000001","PJSIP/102-00000002","Dial","PJSIP/102","` +
		now + `",,"` + now + `",0,0,"NO ANSWER","DOCUMENTATION","1700000000.1",""` + "\n"
	if err := os.WriteFile(csv, []byte(row), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := doctor(); !strings.Contains(out, "OK    pbx lab: cdr") || !strings.Contains(out, "1 rows in the last 24 h") {
		t.Errorf("one row:\n%s", out)
	}
}

// TestCDRLateRows: Asterisk may write a call's rows well after it ended (batch mode, a slow
// disk). A gap is read a second time three delays after the first read: rows that were not
// there at the first read are recovered then, once.
func TestCDRLateRows(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "Master.csv")
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 10, CDR: &fakepbx.CDRConfig{CSVPath: csv, Lag: 3500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	d, _ := runDaemon(t, cdrTestConfigDelay(t, pbx.Addr(), csv, "1s"), connector.Options{})
	waitFor(t, 10*time.Second, "AMI login", func() bool { return pbx.Stats().Logins > 0 })
	logins := pbx.Stats().Logins
	pbx.Outage(2 * time.Second)
	c, err := pbx.Play(context.Background(), "inbound_missed")
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	waitFor(t, 20*time.Second, "the AMI login after the outage", func() bool { return pbx.Stats().Logins > logins })
	k := "lab/" + c.MapID(labLinkedid(t, c.Scenario))
	waitFor(t, 20*time.Second, "the late call", func() bool { return len(delivered(d)[k]) == 1 })
	if recs := delivered(d)[k]; !recs[0].HasFlag(call.FlagRecoveredFromCDR) {
		t.Fatalf("record %+v", recs[0])
	}
	waitFor(t, 10*time.Second, "both reads", func() bool { return metric(d, "pbxbridge_cdr_recoveries_total", "result", "ok") >= 2 })
	if n := metric(d, "pbxbridge_calls_recovered_from_cdr_total", "pbx", "lab"); n != 1 {
		t.Fatalf("%v calls recovered, want 1", n)
	}
}

// A csv block that does not match the file (here: loguserfield left out) makes every record
// malformed: the recovery says so in the pbx/<name>/cdr check, and the daemon stays ready.
func TestCDRWrongLayoutIsVisible(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "Master.csv")
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 10, CDR: &fakepbx.CDRConfig{CSVPath: csv}})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	path := cdrTestConfig(t, pbx.Addr(), csv)
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), "loguserfield: true", "loguserfield: false", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := runDaemon(t, path, connector.Options{})
	waitFor(t, 10*time.Second, "AMI login", func() bool { return pbx.Stats().Logins > 0 })
	logins := pbx.Stats().Logins
	pbx.Outage(time.Second)
	c, _ := pbx.Play(context.Background(), "inbound_missed")
	<-c.Done()
	waitFor(t, 20*time.Second, "the AMI login after the outage", func() bool { return pbx.Stats().Logins > logins })
	var body string
	waitFor(t, 20*time.Second, "the failing cdr check", func() bool {
		rec := httptest.NewRecorder()
		d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/readyz", nil))
		body = rec.Body.String()
		return rec.Code == http.StatusOK && strings.Contains(body, `"name":"pbx/lab/cdr","ok":false`)
	})
	if !strings.Contains(body, "malformed CDR records skipped") || !strings.Contains(body, "18 fields, want 17") {
		t.Fatalf("/readyz: %s", body)
	}
}
