package ari_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// Every transcript, sent by the fake ARI server over a real websocket with fresh ids and read
// by the Source, gives the events ToEvent gives for the file's lines: nothing lost, nothing
// reordered, nothing altered but the ids and times the fake refreshes. (The call records built
// from them are compared with replay.ARI of the file by connector/e2e's
// TestARITranscriptsThroughSourceMatchReplay.)
func TestTranscriptsThroughSourceMatchFile(t *testing.T) {
	t.Parallel()
	for _, sc := range transcripts.Scenarios() {
		t.Run(sc, func(t *testing.T) {
			want := fileEvents(t, sc)
			srv := startFake(t, fakepbx.ARIConfig{Speed: inf, TranscriptTiming: true})
			opts := fastOptions(srv)
			opts.ForwardUnknown = true // every message comes out, so that all can be compared
			r := runSource(t, opts, 64)
			if ev := r.next(t, 5*time.Second); ev.Type != asterisk.TypeConnected || ev.Resync {
				t.Fatalf("first event %v resync=%v, want connected", ev.Type, ev.Resync)
			}
			played, err := srv.Play(context.Background(), sc)
			if err != nil {
				t.Fatal(err)
			}
			var got []asterisk.Event
			for len(got) < len(want) {
				ev := r.next(t, 30*time.Second)
				if ev.Type == asterisk.TypeDisconnected {
					t.Fatalf("disconnected: %v", ev.Vars["error"])
				}
				got = append(got, ev)
			}
			<-played.Done()

			back := unmapper(played)
			for i := range got {
				got[i] = back(t, got[i])
			}
			if diff := gocmp.Diff(want, got); diff != "" {
				t.Errorf("events differ from ToEvent of the file (-file +source):\n%s", diff)
			}
			if n := r.src.Status().Events; n != int64(len(want)) {
				t.Errorf("source counted %d events, want %d", n, len(want))
			}
		})
	}
}

// fileEvents returns ToEvent of every line of a transcript, as the Source named "lab" makes
// them.
func fileEvents(tb testing.TB, scenario string) []asterisk.Event {
	tb.Helper()
	data, err := transcripts.ARI(scenario)
	if err != nil {
		tb.Fatal(err)
	}
	var evs []asterisk.Event
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		ev, ok, err := ari.ToEvent(l, "lab", time.Time{})
		if err != nil || !ok {
			tb.Fatalf("%s: %v (ok %v) on %s", scenario, err, ok, l)
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		tb.Fatalf("%s has no message", scenario)
	}
	return evs
}

// unmapper returns a function turning an event of the replay back into the transcript's: the
// fake's fresh ids (channel ids, channel-name suffixes, bridge ids) become the originals,
// wherever they stand, and every time loses the replay's shift.
func unmapper(played *fakepbx.ARICall) func(testing.TB, asterisk.Event) asterisk.Event {
	back := map[string]string{} // fresh → original
	for orig, fresh := range played.IDs() {
		back[fresh] = orig
	}
	// Longest first: a Replacer tries its pairs in order, and "1795305929.1" is a prefix of
	// "1795305929.12".
	fresh := slices.SortedFunc(maps.Keys(back), func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
	pairs := make([]string, 0, 2*len(fresh))
	for _, f := range fresh {
		pairs = append(pairs, f, back[f])
	}
	ids := strings.NewReplacer(pairs...)
	shift := played.TimeShift()
	return func(tb testing.TB, ev asterisk.Event) asterisk.Event {
		tb.Helper()
		chans := []*asterisk.Channel{&ev.Chan, &ev.Peer}
		if ev.Transfer != nil {
			tr := *ev.Transfer
			ev.Transfer = &tr
			chans = append(chans, &tr.Transferer, &tr.Second, &tr.Target)
		}
		ev.Time = ev.Time.Add(-shift)
		for _, c := range chans {
			if !c.Created.IsZero() {
				c.Created = c.Created.Add(-shift)
			}
		}
		data, err := json.Marshal(ev)
		if err != nil {
			tb.Fatal(err)
		}
		var out asterisk.Event
		if err := json.Unmarshal([]byte(ids.Replace(string(data))), &out); err != nil {
			tb.Fatal(err)
		}
		return out
	}
}
