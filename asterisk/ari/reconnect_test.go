package ari_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// outcome is what a call must come out as whatever happened to the connection: everything
// but times, durations and the "resynced" flag.
type outcome struct {
	Direction   call.Direction
	Disposition call.Disposition
	AnsweredBy  string
	Customer    string
	Line        string
	Rang        string
	Legs        string
	Transfers   string
	HangupCause int
	Flags       string
	CallerExt   string
}

func outcomeOf(r call.Record) outcome {
	var legs, trs []string
	for _, l := range r.Legs {
		legs = append(legs, l.Ext)
	}
	for _, tr := range r.Transfers {
		trs = append(trs, tr.Kind+":"+tr.From+">"+tr.To)
	}
	flags := slices.DeleteFunc(slices.Clone(r.Flags), func(f string) bool { return f == call.FlagResynced })
	return outcome{r.Direction, r.Disposition, r.AnsweredBy, r.Customer, r.Line,
		strings.Join(r.Rang, ","), strings.Join(legs, ","), strings.Join(trs, ","), r.HangupCause,
		strings.Join(flags, ","), r.CallerExt}
}

func sortOutcomes(o []outcome) []outcome {
	o = slices.Clone(o)
	slices.SortFunc(o, func(a, b outcome) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return o
}

// wantOutcomes replays the transcripts' files.
func wantOutcomes(t *testing.T, scenarios []string) map[string][]outcome {
	t.Helper()
	want := map[string][]outcome{}
	for _, sc := range scenarios {
		for _, r := range fileRecords(t, sc) {
			want[sc] = append(want[sc], outcomeOf(r))
		}
	}
	return want
}

// gotOutcomes groups the model's records by the scenario whose replay made them.
func gotOutcomes(t *testing.T, recs []call.Record, calls []*fakepbx.ARICall) (map[string][]outcome, int) {
	t.Helper()
	scenarioOf := map[string]string{}
	for _, c := range calls {
		for _, fresh := range c.IDs() {
			scenarioOf[fresh] = c.Scenario
		}
	}
	got := map[string][]outcome{}
	resynced := 0
	for _, rec := range recs {
		sc, ok := scenarioOf[rec.CallID]
		if !ok {
			t.Errorf("record of a call no replay made: %+v", rec)
			continue
		}
		got[sc] = append(got[sc], outcomeOf(rec))
		if rec.HasFlag(call.FlagResynced) {
			resynced++
		}
	}
	return got, resynced
}

func compareOutcomes(t *testing.T, want, got map[string][]outcome) {
	t.Helper()
	for sc, w := range want {
		if g := got[sc]; !slices.Equal(sortOutcomes(w), sortOutcomes(g)) {
			t.Errorf("%s:\n got %+v\nwant %+v", sc, sortOutcomes(g), sortOutcomes(w))
		}
	}
}

// Acceptance 3 for ARI, with a dropped websocket: twelve calls are in flight when the fake drops
// the connection; the source announces the loss, reconnects within 2 s, sends the snapshot of
// GET /channels + /bridges, and every call comes out exactly as its uninterrupted transcript
// (but for the "resynced" flag), with no call left open. The replays are held while the client
// is away and the drop waits until the client has read everything sent, so that nothing is
// lost and the snapshot must reproduce the state exactly.
func TestReconnectMidCallsResyncs(t *testing.T) {
	t.Parallel()
	scenarios := []string{
		"inbound_answered", "inbound_missed", "inbound_busy_ext", "inbound_ringgroup",
		"inbound_ringgroup_or_queue", "outbound_answered", "outbound_no_answer", "outbound_busy",
		"internal_call", "blind_transfer", "attended_transfer", "redirect_transfer",
	}
	want := wantOutcomes(t, scenarios)
	total := 0
	for _, sc := range scenarios {
		total += messages(t, sc)
	}

	srv := startFake(t, fakepbx.ARIConfig{Speed: 4})
	r := runSource(t, fastOptions(srv), 256)
	if ev := r.next(t, 30*time.Second); ev.Type != asterisk.TypeConnected {
		t.Fatalf("first event %v", ev.Type)
	}
	out := &collector{}
	b := callmodel.NewBuilder(labOptions(t), out)
	var calls []*fakepbx.ARICall
	for _, sc := range scenarios {
		c, err := srv.Play(context.Background(), sc)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
	}
	allDone := make(chan struct{})
	go func() {
		for _, c := range calls {
			<-c.Done()
		}
		close(allDone)
	}()

	var (
		seen     []asterisk.Event // transport events
		snapshot int
		resume   func()
		n        int
		quiet    = time.NewTimer(time.Hour)
		done     = allDone
		limit    = time.After(60 * time.Second)
	)
	defer func() {
		if resume != nil {
			resume()
		}
	}()
	for finished := false; !finished; {
		select {
		case ev := <-r.out:
			n++
			switch ev.Type {
			case asterisk.TypeConnected, asterisk.TypeDisconnected:
				seen = append(seen, ev)
			case asterisk.TypeSnapshot:
				snapshot++
			case asterisk.TypeSnapshotEnd:
				seen = append(seen, ev)
				resume()
			}
			b.Apply(&ev)
			if resume == nil && n >= total/4 {
				resume = srv.Freeze()
				// Let the source read what was sent before the freeze (the consumer keeps up
				// meanwhile): with nothing in flight, nothing is lost by the drop.
				deadline := time.Now().Add(10 * time.Second)
				for int64(srv.Stats().EventsSent) != r.src.Status().Events || len(r.out) > 0 {
					select {
					case ev := <-r.out:
						n++
						b.Apply(&ev)
					case <-time.After(10 * time.Millisecond):
						if time.Now().After(deadline) {
							t.Fatalf("the source read %d messages, the fake sent %d", r.src.Status().Events, srv.Stats().EventsSent)
						}
					}
				}
				if srv.DropClients() != 1 {
					t.Fatal("no client to drop")
				}
			}
		case <-done:
			done = nil
			quiet.Reset(time.Second) // let the last events arrive
		case <-quiet.C:
			finished = true
		case <-limit:
			t.Fatal("calls did not finish")
		}
	}

	var kinds []string
	for _, ev := range seen {
		kinds = append(kinds, fmt.Sprintf("%s(resync=%v)", ev.Type, ev.Resync))
	}
	if len(seen) != 3 || seen[0].Type != asterisk.TypeDisconnected || seen[1].Type != asterisk.TypeConnected ||
		!seen[1].Resync || seen[2].Type != asterisk.TypeSnapshotEnd {
		t.Fatalf("transport events %v, want disconnected, connected(resync), snapshot_end", kinds)
	}
	gap := seen[1].Time.Sub(seen[0].Time)
	if gap > 2*time.Second {
		t.Errorf("reconnected %v after the drop, want within 2 s", gap)
	}
	t.Logf("reconnected %v after the drop; %d channels in the snapshot", gap.Round(time.Millisecond), snapshot)
	if seen[0].Vars["error"] == "" {
		t.Error("disconnected event without the reason")
	}
	if seen[2].Vars["error"] != "" || seen[2].Vars["channels"] != fmt.Sprint(snapshot) || snapshot == 0 {
		t.Errorf("snapshot end %v after %d snapshot events: want the channels of the calls in flight", seen[2].Vars, snapshot)
	}
	if open := b.Open(); open != 0 {
		t.Errorf("%d calls left open after the reconnect", open)
	}
	got, resynced := gotOutcomes(t, out.all(), calls)
	compareOutcomes(t, want, got)
	if resynced == 0 {
		t.Error("no record is flagged resynced: the drop did not hit a call in flight")
	}
	if m := metricValue(t, r.reg, "pbxbridge_ari_reconnects_total", nil); m != 1 {
		t.Errorf("reconnects_total = %v, want 1", m)
	}
	if m := metricValue(t, r.reg, "pbxbridge_ari_resyncs_total", map[string]string{"result": "ok"}); m != 1 {
		t.Errorf("resyncs_total{result=ok} = %v, want 1", m)
	}
	if st := r.src.Status(); !st.Connected || st.Reconnects != 1 || st.LastError != "" {
		t.Errorf("status %+v", st)
	}
}

// A call that ends while Asterisk is unreachable is finished from the snapshot (it is not in
// it) with what was known before the outage, flagged resynced; a call that stays up across the
// outage continues from the live events after the reconnect. Both come out as their
// transcripts, and no call is left open.
func TestOutageFinishesCallsEndedMeanwhile(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 1})
	opts := fastOptions(srv)
	r := runSource(t, opts, 256)
	if ev := r.next(t, 5*time.Second); ev.Type != asterisk.TypeConnected {
		t.Fatalf("first event %v", ev.Type)
	}
	out := &collector{}
	b := callmodel.NewBuilder(labOptions(t), out)
	long, err := srv.Play(context.Background(), "blind_transfer") // 102 answers at 5.5 s, ends at 13 s
	if err != nil {
		t.Fatal(err)
	}
	ext102 := long.MapID(firstChannelID(t, "blind_transfer", "Local/102@phones-", ";1"))
	var short *fakepbx.ARICall
	var shortTrunk string
	var seen []asterisk.Event
	outageAt := time.Time{}
	limit := time.After(40 * time.Second)
	for b.Open() > 0 || short == nil || !isDone(short) || !isDone(long) {
		var ev asterisk.Event
		select {
		case ev = <-r.out:
		case <-time.After(50 * time.Millisecond):
			continue
		case <-limit:
			t.Fatal("calls did not finish")
		}
		b.Apply(&ev)
		switch {
		case ev.Type == asterisk.TypeConnected || ev.Type == asterisk.TypeDisconnected || ev.Type == asterisk.TypeSnapshotEnd:
			seen = append(seen, ev)
		case short == nil && ev.Type == asterisk.TypeBridgeEnter && ev.Chan.Uniqueid == ext102:
			// The long call talks to 102 until 13 s: start a short one (answered at 2 s,
			// ended at 5 s).
			if short, err = srv.Play(context.Background(), "inbound_answered"); err != nil {
				t.Fatal(err)
			}
			// The trunk leg enters the bridge last when 101 answers.
			shortTrunk = short.MapID(firstChannelID(t, "inbound_answered", "Local/+74951112233@from-pstn-", ";2"))
		case outageAt.IsZero() && short != nil && ev.Type == asterisk.TypeBridgeEnter && ev.Chan.Uniqueid == shortTrunk:
			// The short call is answered: Asterisk becomes unreachable for 4 s, during which
			// the short call ends; the long one is still talking when the source is back.
			outageAt = time.Now()
			srv.Outage(4 * time.Second)
		}
	}
	if len(seen) != 3 || seen[0].Type != asterisk.TypeDisconnected || !seen[1].Resync || seen[2].Type != asterisk.TypeSnapshotEnd {
		t.Fatalf("transport events %+v", seen)
	}
	back := seen[1].Time.Sub(outageAt.Add(4 * time.Second))
	if back > 2*time.Second {
		t.Errorf("reconnected %v after Asterisk was reachable again, want within 2 s", back)
	}
	t.Logf("reconnected %v after Asterisk was reachable again", back.Round(time.Millisecond))
	got, resynced := gotOutcomes(t, out.all(), []*fakepbx.ARICall{long, short})
	want := wantOutcomes(t, []string{"blind_transfer", "inbound_answered"})
	// The hangup of the short call was never seen: its cause is unknown (0), all else is as
	// the transcript says.
	for i := range want["inbound_answered"] {
		want["inbound_answered"][i].HangupCause = 0
	}
	compareOutcomes(t, want, got)
	if resynced != 2 {
		t.Errorf("%d records flagged resynced, want both", resynced)
	}
	for _, rec := range out.all() {
		if rec.CallID == short.MapID(firstChannelID(t, "inbound_answered", "Local/+74951112233@from-pstn-", ";1")) {
			if rec.EndedAt.After(seen[0].Time.Add(time.Second)) {
				t.Errorf("short call ended at %v, want at the disconnect (%v)", rec.EndedAt, seen[0].Time)
			}
		}
	}
	if m := metricValue(t, r.reg, "pbxbridge_ari_connect_errors_total", map[string]string{"stage": "dial"}); m == 0 {
		t.Error("no connect error counted during the outage")
	}
}

func isDone(c *fakepbx.ARICall) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// A call that starts while Asterisk is unreachable and still rings when the source is back: its
// channels are known only from the snapshot, and ARI channel objects have no Linkedid. The
// source asks CHANNEL(linkedid) for each, so the model keeps them in one call instead of
// splitting the trunk and the ringing phone into two.
func TestCallBornDuringOutageKeepsItsChannels(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 2}) // inbound_missed rings for 3.1 s
	r := runSource(t, fastOptions(srv), 256)
	r.next(t, 5*time.Second)
	out := &collector{}
	b := callmodel.NewBuilder(labOptions(t), out)
	srv.Outage(time.Second)
	played, err := srv.Play(context.Background(), "inbound_missed")
	if err != nil {
		t.Fatal(err)
	}
	linked := played.MapID(firstChannelID(t, "inbound_missed", "Local/+74951112233@from-pstn-", ";1"))
	snapshots := 0
	limit := time.After(30 * time.Second)
	for !isDone(played) || len(r.out) > 0 || b.Open() > 0 {
		select {
		case ev := <-r.out:
			if ev.Type == asterisk.TypeSnapshot {
				snapshots++
				if ev.Chan.Linkedid != linked {
					t.Errorf("snapshot of %s: linkedid %q, want %q", ev.Chan.Name, ev.Chan.Linkedid, linked)
				}
			}
			b.Apply(&ev)
		case <-time.After(20 * time.Millisecond):
		case <-limit:
			t.Fatal("the call did not finish")
		}
	}
	if snapshots != 4 {
		t.Fatalf("%d channels in the snapshot, want the 4 of the ringing call", snapshots)
	}
	recs := out.all()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1: %+v", len(recs), recs)
	}
	rec := recs[0]
	if rec.CallID != linked || rec.Direction != call.Inbound || rec.Disposition != call.NoAnswer ||
		!slices.Equal(rec.Rang, []string{"101"}) || rec.Customer != "+79001234567" || rec.HangupCause != 19 {
		t.Errorf("record %+v", rec)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_request_duration_seconds",
		map[string]string{"request": "GET /channels/{id}/variable", "code": "200"}); v != 4 {
		t.Errorf("CHANNEL(linkedid) requests: %v, want 4", v)
	}
}
