package ari_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// Acceptance 3 for ARI, with a dropped websocket: twelve calls are in flight when the fake drops
// the connection; the source announces the loss, reconnects within 2 s and sends the snapshot
// of GET /channels + /bridges, which holds exactly the channels the events left in existence
// at the drop; every channel is then seen to end. The replays are held while the client is
// away and the drop waits until the client has read everything sent, so that nothing is lost
// and the snapshot must reproduce the state exactly. (That every call then comes out as its
// uninterrupted transcript is connector/e2e's TestARIReconnectMidCallsResyncs.)
func TestReconnectMidCallsResyncs(t *testing.T) {
	t.Parallel()
	scenarios := []string{
		"inbound_answered", "inbound_missed", "inbound_busy_ext", "inbound_ringgroup",
		"inbound_ringgroup_or_queue", "outbound_answered", "outbound_no_answer", "outbound_busy",
		"internal_call", "blind_transfer", "attended_transfer", "redirect_transfer",
	}
	total := 0
	for _, sc := range scenarios {
		total += messages(t, sc)
	}

	srv := startFake(t, fakepbx.ARIConfig{Speed: 4})
	r := runSource(t, fastOptions(srv), 256)
	if ev := r.next(t, 30*time.Second); ev.Type != asterisk.TypeConnected {
		t.Fatalf("first event %v", ev.Type)
	}
	chans := newChannelSet()
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
		atDrop   map[string]string // the channels that existed when the connection was dropped
		resume   func()
		n        int
		done     = allDone
		limit    = time.After(60 * time.Second)
	)
	defer func() {
		if resume != nil {
			resume()
		}
	}()
	for done != nil || len(chans.open) > 0 {
		select {
		case ev := <-r.out:
			n++
			chans.apply(&ev)
			switch ev.Type {
			case asterisk.TypeConnected, asterisk.TypeDisconnected:
				seen = append(seen, ev)
			case asterisk.TypeSnapshot:
				snapshot++
			case asterisk.TypeSnapshotEnd:
				seen = append(seen, ev)
				if !maps.Equal(chans.open, atDrop) {
					t.Errorf("the snapshot holds the channels\n%v\nthe events left\n%v", chans.open, atDrop)
				}
				resume()
			}
			if resume == nil && n >= total/4 {
				resume = srv.Freeze()
				// Let the source read what was sent before the freeze (the consumer keeps up
				// meanwhile): with nothing in flight, nothing is lost by the drop.
				deadline := time.Now().Add(10 * time.Second)
				for int64(srv.Stats().EventsSent) != r.src.Status().Events || len(r.out) > 0 {
					select {
					case ev := <-r.out:
						n++
						chans.apply(&ev)
					case <-time.After(10 * time.Millisecond):
						if time.Now().After(deadline) {
							t.Fatalf("the source read %d messages, the fake sent %d", r.src.Status().Events, srv.Stats().EventsSent)
						}
					}
				}
				atDrop = maps.Clone(chans.open)
				if srv.DropClients() != 1 {
					t.Fatal("no client to drop")
				}
			}
		case <-done:
			done = nil
		case <-limit:
			t.Fatalf("calls did not finish; channels not seen to end: %v", chans.open)
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

// A call that ends while Asterisk is unreachable is not in the snapshot after the reconnect,
// and nothing more of it arrives; a call that stays up across the outage is, and its channels
// are seen to end from the live events after the reconnect. (What the call model makes of
// both is connector/e2e's TestARIOutageFinishesCallsEndedMeanwhile.)
func TestOutageFinishesCallsEndedMeanwhile(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 1})
	opts := fastOptions(srv)
	r := runSource(t, opts, 256)
	if ev := r.next(t, 5*time.Second); ev.Type != asterisk.TypeConnected {
		t.Fatalf("first event %v", ev.Type)
	}
	chans := newChannelSet()
	long, err := srv.Play(context.Background(), "blind_transfer") // 102 answers at 5.5 s, ends at 13 s
	if err != nil {
		t.Fatal(err)
	}
	ext102 := long.MapID(firstChannelID(t, "blind_transfer", "Local/102@phones-", ";1"))
	var short *fakepbx.ARICall
	var shortTrunk string
	var shortIDs map[string]bool
	var seen []asterisk.Event
	var inSnapshot map[string]string
	var lateShort []asterisk.Event // events of the short call after the reconnect
	outageAt := time.Time{}
	limit := time.After(40 * time.Second)
	for len(chans.open) > 0 || short == nil || !isDone(short) || !isDone(long) {
		var ev asterisk.Event
		select {
		case ev = <-r.out:
		case <-time.After(50 * time.Millisecond):
			continue
		case <-limit:
			t.Fatalf("calls did not finish; channels not seen to end: %v", chans.open)
		}
		chans.apply(&ev)
		if len(seen) > 1 && shortIDs[ev.Chan.Uniqueid] {
			lateShort = append(lateShort, ev)
		}
		switch {
		case ev.Type == asterisk.TypeConnected || ev.Type == asterisk.TypeDisconnected || ev.Type == asterisk.TypeSnapshotEnd:
			seen = append(seen, ev)
			if ev.Type == asterisk.TypeSnapshotEnd {
				inSnapshot = maps.Clone(chans.open)
			}
		case short == nil && ev.Type == asterisk.TypeBridgeEnter && ev.Chan.Uniqueid == ext102:
			// The long call talks to 102 until 13 s: start a short one (answered at 2 s,
			// ended at 5 s).
			if short, err = srv.Play(context.Background(), "inbound_answered"); err != nil {
				t.Fatal(err)
			}
			shortIDs = freshIDs(short)
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
	longIDs := freshIDs(long)
	var longIn int
	for id, name := range inSnapshot {
		switch {
		case shortIDs[id]:
			t.Errorf("the snapshot holds %s of the call that ended during the outage", name)
		case longIDs[id]:
			longIn++
		}
	}
	if longIn == 0 {
		t.Errorf("the snapshot %v holds no channel of the call that is still up", inSnapshot)
	}
	for _, ev := range lateShort {
		t.Errorf("after the reconnect, %s of %s of the call that ended during the outage", ev.Type, ev.Chan.Name)
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

// freshIDs returns the ids a replay uses (channel ids, channel-name suffixes, bridge ids).
func freshIDs(c *fakepbx.ARICall) map[string]bool {
	ids := map[string]bool{}
	for _, fresh := range c.IDs() {
		ids[fresh] = true
	}
	return ids
}

// A call that starts while Asterisk is unreachable and still rings when the source is back: its
// channels are known only from the snapshot, and ARI channel objects have no Linkedid. The
// source asks CHANNEL(linkedid) for each, so that the model can keep them in one call instead
// of splitting the trunk and the ringing phone into two (connector/e2e's
// TestARICallBornDuringOutageKeepsItsChannels); the live events then end them all.
func TestCallBornDuringOutageKeepsItsChannels(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakepbx.ARIConfig{Speed: 2}) // inbound_missed rings for 3.1 s
	r := runSource(t, fastOptions(srv), 256)
	r.next(t, 5*time.Second)
	chans := newChannelSet()
	srv.Outage(time.Second)
	played, err := srv.Play(context.Background(), "inbound_missed")
	if err != nil {
		t.Fatal(err)
	}
	linked := played.MapID(firstChannelID(t, "inbound_missed", "Local/+74951112233@from-pstn-", ";1"))
	snapshots := 0
	limit := time.After(30 * time.Second)
	for !isDone(played) || len(r.out) > 0 || len(chans.open) > 0 {
		select {
		case ev := <-r.out:
			if ev.Type == asterisk.TypeSnapshot {
				snapshots++
				if ev.Chan.Linkedid != linked {
					t.Errorf("snapshot of %s: linkedid %q, want %q", ev.Chan.Name, ev.Chan.Linkedid, linked)
				}
			}
			chans.apply(&ev)
		case <-time.After(20 * time.Millisecond):
		case <-limit:
			t.Fatalf("the call did not finish; channels not seen to end: %v", chans.open)
		}
	}
	if snapshots != 4 {
		t.Fatalf("%d channels in the snapshot, want the 4 of the ringing call", snapshots)
	}
	if v := metricValue(t, r.reg, "pbxbridge_ari_request_duration_seconds",
		map[string]string{"request": "GET /channels/{id}/variable", "code": "200"}); v != 4 {
		t.Errorf("CHANNEL(linkedid) requests: %v, want 4", v)
	}
}
