package fakepbx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	withcdr "github.com/pbxbridge/pbxbridge/asterisk/transcripts/with-cdr"
)

// TestCdrEventsAreMasterCSV: the with-cdr recordings hold, for the same calls, the AMI stream
// (with cdr_manager's Cdr events) and cdr_csv's Master.csv. Rendering every Cdr event of the
// streams as the simulated PBX writes its rows, with the recording's own ids and times, gives
// the recorded Master.csv line for line: the rows a replay writes are the rows Asterisk wrote.
func TestCdrEventsAreMasterCSV(t *testing.T) {
	t.Parallel()
	var got []string
	for _, name := range withcdr.Scenarios() {
		data, err := withcdr.AMI(name)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := compile(name, data, "", "")
		if err != nil {
			t.Fatal(err)
		}
		in := identityInstance(t, sc, data)
		for i := range sc.frames {
			if sc.frames[i].event == "Cdr" {
				got = append(got, string(in.cdrRow(i).csvLine(time.UTC)))
			}
		}
	}
	var want []string
	sc := bufio.NewScanner(bytes.NewReader(withcdr.MasterCSV()))
	for sc.Scan() {
		want = append(want, sc.Text()+"\n")
	}
	if len(want) != 115 || len(got) != len(want) {
		t.Fatalf("%d rows rendered from Cdr events, %d in Master.csv", len(got), len(want))
	}
	slices.Sort(got)
	slices.Sort(want)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("rendered rows differ from Master.csv, first at sorted row %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}
}

// identityInstance is a replay of sc at its recorded time with its recorded ids (for comparing
// what it renders with the recording).
func identityInstance(t *testing.T, sc *scenario, data []byte) *instance {
	t.Helper()
	frames := transcriptFramesOf(t, data)
	t0, ok := frameTime(frames[0])
	if !ok {
		t.Fatal("no timestamp")
	}
	s := &Server{}
	s.pause.Store(&pauseState{})
	in := &instance{srv: s, sc: sc, start: time.Unix(0, int64(t0*1e9)), speed: 1, done: make(chan struct{})}
	in.uids = make([]string, len(sc.uidIndex))
	for orig, k := range sc.uidIndex {
		in.uids[k] = orig
	}
	in.chans = make([]string, len(sc.chanIndex))
	for orig, k := range sc.chanIndex {
		in.chans[k] = orig
	}
	in.bridges = make([]string, sc.nBridges)
	return in
}

func transcriptFramesOf(t *testing.T, data []byte) []*ami.Frame {
	t.Helper()
	r := ami.NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	var out []*ami.Frame
	for {
		f, err := r.ReadFrame()
		if err != nil {
			break
		}
		if ev := f.Event(); ev != "" && !sessionEvents[ev] {
			out = append(out, f)
		}
	}
	return out
}

// meta returns the linkedids of a lab transcript's calls (its .meta.json).
func metaLinkedids(t *testing.T, name string) []string {
	t.Helper()
	b, err := transcripts.Meta(name)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Calls []struct {
			Linkedid string `json:"linkedid"`
		} `json:"calls"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range m.Calls {
		out = append(out, c.Linkedid)
	}
	return out
}

// TestReplayWritesCDR: replays write Master.csv rows with their fresh ids and shifted times,
// whether or not a client listens and whatever the event filter keeps from clients; read back
// with asterisk/cdr, each replay is one call whose id is the replay's Linkedid and whose rows
// lie within its events.
func TestReplayWritesCDR(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "Master.csv")
	msk := time.FixedZone("MSK", 3*3600)
	s := start(t, Config{Speed: 20, ExcludeEvents: []string{"Cdr"}, CDR: &CDRConfig{CSVPath: path, Location: msk, Lag: 50 * time.Millisecond}})
	scenarios := []string{"inbound_answered", "blind_transfer", "outbound_busy", "inbound_ringgroup_or_queue"}
	var plays []*Call
	begin := time.Now()
	for _, sc := range scenarios {
		c, err := s.Play(context.Background(), sc)
		if err != nil {
			t.Fatal(err)
		}
		plays = append(plays, c)
	}
	for _, c := range plays {
		<-c.Done()
	}
	end := time.Now()
	if err := s.Close(); err != nil { // writes the rows still in their lag
		t.Fatal(err)
	}
	if s.CDRErrors() != 0 {
		t.Fatalf("%d CDR write errors", s.CDRErrors())
	}
	r, err := cdr.NewCSVReader(cdr.CSVConfig{Path: path, LogUniqueID: true, LogUserField: true, Location: msk})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := r.Read(context.Background(), begin.Add(-2*time.Second), end.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	wantRows := 0
	for _, sc := range scenarios {
		for _, f := range s.scenarios[sc].frames {
			if f.event == "Cdr" {
				wantRows++
			}
		}
	}
	if len(rows) != wantRows {
		t.Fatalf("%d rows, want %d (one per Cdr event)", len(rows), wantRows)
	}
	calls := cdr.Group(rows)
	if len(calls) != len(scenarios) {
		t.Fatalf("%d calls, want %d", len(calls), len(scenarios))
	}
	for i, c := range plays {
		want := c.MapID(metaLinkedids(t, scenarios[i])[0])
		k := slices.IndexFunc(calls, func(x cdr.Call) bool { return x.ID == want })
		if k < 0 {
			t.Fatalf("%s: no call %s in the CDR", scenarios[i], want)
		}
		got := calls[k]
		if got.Start().Before(c.Start().Add(-2*time.Second)) || got.End().After(end) {
			// Master.csv keeps whole seconds and a recorded call's CDR may start a moment
			// before its first event: two seconds of slack.
			t.Errorf("%s: rows %s - %s outside the replay %s - %s", scenarios[i], got.Start(), got.End(), c.Start(), end)
		}
		for _, row := range got.Rows {
			if !strings.Contains(row.Channel, "-") || row.UniqueID == "" || row.Start.Location() != msk {
				t.Errorf("%s: row %+v", scenarios[i], row)
			}
		}
	}
}

// TestReplayWritesFreePBXTable: with a MySQL DSN the rows also go into FreePBX's cdr table, with
// the linkedid, DID and recording file FreePBX records, and read back by linkedid they are the
// calls of the replays.
func TestReplayWritesFreePBXTable(t *testing.T) {
	t.Parallel()
	dsn := mariaDB.Database(t, FreePBXCDRSchema)
	s := start(t, Config{Speed: 20, CDR: &CDRConfig{MySQLDSN: dsn}})
	scenarios := []string{"inbound_answered", "attended_transfer", "outbound_answered"}
	var plays []*Call
	for _, sc := range scenarios {
		c, err := s.Play(context.Background(), sc)
		if err != nil {
			t.Fatal(err)
		}
		plays = append(plays, c)
	}
	for _, c := range plays {
		<-c.Done()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.CDRErrors() != 0 {
		t.Fatalf("%d CDR write errors", s.CDRErrors())
	}
	r, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: dsn, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rows, err := r.Read(context.Background(), time.Time{}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	calls := cdr.Group(rows)
	if len(calls) != len(scenarios) {
		t.Fatalf("%d calls, want %d", len(calls), len(scenarios))
	}
	for i, c := range plays {
		want := c.MapID(metaLinkedids(t, scenarios[i])[0])
		k := slices.IndexFunc(calls, func(x cdr.Call) bool { return x.ID == want })
		if k < 0 {
			t.Fatalf("%s: no call %s", scenarios[i], want)
		}
		var did, rec string
		for _, row := range calls[k].Rows {
			if row.LinkedID != want || row.Sequence == 0 {
				t.Errorf("%s: row linkedid %q sequence %d", scenarios[i], row.LinkedID, row.Sequence)
			}
			if did == "" {
				did = row.DID
			}
			if rec == "" {
				rec = row.RecordingFile
			}
		}
		if scenarios[i] != "outbound_answered" && did != "+74951112233" {
			t.Errorf("%s: did %q", scenarios[i], did)
		}
		if !strings.HasSuffix(rec, ".wav") || strings.Contains(rec, "/") {
			t.Errorf("%s: recordingfile %q, want a file name", scenarios[i], rec)
		}
	}
}
