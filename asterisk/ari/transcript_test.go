package ari_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Every transcript, sent by the fake ARI server over a real websocket with fresh ids, read by
// the Source and built by the call model, gives the records replay.ARI gives for the file:
// nothing lost, nothing reordered, nothing altered but the ids and times the fake refreshes.
func TestTranscriptsThroughSourceMatchReplay(t *testing.T) {
	t.Parallel()
	for _, sc := range transcripts.Scenarios() {
		t.Run(sc, func(t *testing.T) {
			want := fileRecords(t, sc)
			if len(want) == 0 {
				t.Fatalf("replay of %s gives no record", sc)
			}
			srv := startFake(t, fakepbx.ARIConfig{Speed: inf, TranscriptTiming: true})
			r := runSource(t, fastOptions(srv), 64)
			if ev := r.next(t, 5*time.Second); ev.Type != asterisk.TypeConnected || ev.Resync {
				t.Fatalf("first event %v resync=%v, want connected", ev.Type, ev.Resync)
			}
			out := &collector{}
			b := callmodel.NewBuilder(labOptions(t), out)
			played, err := srv.Play(context.Background(), sc)
			if err != nil {
				t.Fatal(err)
			}
			wantEvents := int64(messages(t, sc))
			var last time.Time
			r.drain(t, wantEvents, 30*time.Second, func(ev asterisk.Event) {
				if ev.Type == asterisk.TypeDisconnected {
					t.Fatalf("disconnected: %v", ev.Vars["error"])
				}
				b.Apply(&ev)
				last = ev.Time
			})
			<-played.Done()
			b.Flush(last, true)

			back := map[string]string{}
			for orig, fresh := range played.IDs() {
				back[fresh] = orig
			}
			var got []call.Record
			for _, rec := range out.all() {
				rec.PBX = ""
				got = append(got, unmap(rec, back, played.TimeShift()))
			}
			sortRecords(got)
			sortRecords(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("records differ from replay.ARI of the file (-file +source):\n%s", diff)
			}
			if n := r.src.Status().Events; n != wantEvents {
				t.Errorf("source counted %d events, want %d", n, wantEvents)
			}
		})
	}
}
