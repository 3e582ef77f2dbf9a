package e2e_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Every transcript, sent by the fake ARI server over a real websocket with fresh ids, read by
// the Source and built by the call model, gives the records replay.ARI gives for the file:
// nothing lost, nothing reordered, nothing altered but the ids and times the fake refreshes.
// (asterisk/ari's TestTranscriptsThroughSourceMatchFile compares the events themselves.)
func TestARITranscriptsThroughSourceMatchReplay(t *testing.T) {
	t.Parallel()
	for _, sc := range transcripts.Scenarios() {
		t.Run(sc, func(t *testing.T) {
			want := fileRecords(t, sc)
			if len(want) == 0 {
				t.Fatalf("replay of %s gives no record", sc)
			}
			p := startARIRig(t, fakepbx.ARIConfig{Speed: math.Inf(1), TranscriptTiming: true}, nil)
			played, err := p.srv.Play(context.Background(), sc)
			if err != nil {
				t.Fatal(err)
			}
			n := lines(t, sc)
			p.until(t, "every message applied", 30*time.Second, func() bool { return p.read == n })
			<-played.Done()
			if tr := p.transitions(); len(tr) != 1 {
				t.Fatalf("transport events %v, want only connected", tr)
			}
			p.mu.Lock()
			p.b.Flush(p.last, true)
			p.mu.Unlock()

			back := map[string]string{}
			for orig, fresh := range played.IDs() {
				back[fresh] = orig
			}
			var got []call.Record
			for _, rec := range p.all() {
				rec.PBX = ""
				got = append(got, unmap(rec, back, played.TimeShift()))
			}
			sortRecords(got)
			sortRecords(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("records differ from replay.ARI of the file (-file +source):\n%s", diff)
			}
		})
	}
}
