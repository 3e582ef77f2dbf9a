package callmodel_test

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

var (
	fuzzOnce    sync.Once
	fuzzStreams [][]asterisk.Event
	fuzzOpts    callmodel.Options
)

func readAMIEvents(tb testing.TB, src []byte) []asterisk.Event {
	tb.Helper()
	rd := ami.NewReader(bytes.NewReader(src))
	if _, err := rd.ReadBanner(); err != nil {
		tb.Fatal(err)
	}
	var out []asterisk.Event
	var clock time.Time
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return out
		}
		ev, ok := ami.ToEvent(f, "", clock)
		if ok && ev.Type != asterisk.TypeUnknown && ev.Type != asterisk.TypeCel {
			clock = ev.Time
			out = append(out, ev)
		}
	}
}

func fuzzSetup(tb testing.TB) {
	tb.Helper()
	fuzzOnce.Do(func() {
		fuzzOpts = loadOptions(tb, "testdata/lab.yaml")
		for _, name := range []string{"inbound_ringgroup_or_queue", "attended_transfer", "click_to_call_norec", "redirect_transfer"} {
			src, err := transcripts.AMI(name)
			if err != nil {
				tb.Fatal(err)
			}
			fuzzStreams = append(fuzzStreams, readAMIEvents(tb, src))
		}
		src, err := os.ReadFile("testdata/synthetic/pjsip_attended_transfer/events.ami")
		if err != nil {
			tb.Fatal(err)
		}
		fuzzStreams = append(fuzzStreams, readAMIEvents(tb, src))
	})
}

// checkSink collects output and checks the live/record invariants as they arrive.
type checkSink struct {
	t       *testing.T
	seq     int            // number of the Apply in progress
	records map[string]int // records per call id
	lastRec map[string]int // seq of the Apply that emitted the call's last record
	created map[string]int // seq of the last Apply of an event that could (re)create the call id
	hungup  map[string]bool
	live    map[string]bool
}

func (s *checkSink) Live(l *call.Live) {
	if s.hungup[l.CallID] && s.created[l.CallID] < s.lastRec[l.CallID] {
		s.t.Fatalf("live %s for call %s after its hangup", l.Kind, l.CallID)
	}
	// live: the call has shown something a CRM card may display and not hung up yet.
	s.live[l.CallID] = l.Kind != call.LiveHangup
	if l.Kind == call.LiveHangup {
		s.hungup[l.CallID] = true
	}
}

func (s *checkSink) Record(r *call.Record) {
	// A finished call's id can legitimately come back when the perturbed stream creates a
	// channel under it again (in the same Apply that released the previous record, at the
	// earliest); otherwise a second record means the call finished twice.
	if s.records[r.CallID] > 0 && s.created[r.CallID] < s.lastRec[r.CallID] {
		s.t.Fatalf("call %s finished twice", r.CallID)
	}
	s.records[r.CallID]++
	s.lastRec[r.CallID] = s.seq
	if r.Rang == nil || r.Legs == nil || r.Transfers == nil {
		s.t.Fatalf("nil list in %+v", r)
	}
	switch r.Disposition {
	case call.Answered:
		if r.AnsweredAt == nil || (len(r.Legs) > 0 && r.AnsweredBy != r.Legs[0].Ext) {
			s.t.Fatalf("answered record inconsistent: %+v", r)
		}
	case call.NoAnswer, call.Busy, call.Failed:
		if r.AnsweredAt != nil || len(r.Legs) != 0 || r.TalkSeconds != 0 {
			s.t.Fatalf("unanswered record with answer data: %+v", r)
		}
	default:
		s.t.Fatalf("bad disposition %q", r.Disposition)
	}
	switch r.Direction {
	case call.Inbound, call.Outbound, call.Internal:
	default:
		s.t.Fatalf("bad direction %q", r.Direction)
	}
	if r.RingSeconds < 0 || r.TalkSeconds < 0 || r.EndedAt.Before(r.StartedAt) {
		s.t.Fatalf("negative durations: %+v", r)
	}
	for _, l := range r.Legs {
		if l.AnsweredAt == nil || l.EndedAt == nil || l.TalkSeconds < 0 || l.Ext == "" {
			s.t.Fatalf("bad leg %+v", l)
		}
	}
}

// FuzzBuilder perturbs real event streams (drops, duplicates, reorders, rewires channel and
// call ids, changes types, injects disconnects, snapshots and flushes) and checks that the model
// never panics, finishes every call exactly once, emits no live event for a call after its
// hangup, and leaves nothing open after Flush(all).
func FuzzBuilder(f *testing.F) {
	fuzzSetup(f)
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{1, 6, 200, 200, 200, 7, 9, 9, 9, 8})
	f.Add([]byte{2, 3, 17, 4, 5, 99, 10, 11, 7, 12})
	f.Add(bytes.Repeat([]byte{14, 15, 16, 3, 250}, 40))
	f.Fuzz(runFuzzOps)
}

func runFuzzOps(t *testing.T, ops []byte) {
	fuzzSetup(t)
	{
		next := func() byte {
			if len(ops) == 0 {
				return 255
			}
			b := ops[0]
			ops = ops[1:]
			return b
		}
		opts := fuzzOpts
		if next()%2 == 1 {
			opts.FinishDelay = 2 * time.Second
		}
		s := &checkSink{t: t, records: map[string]int{}, lastRec: map[string]int{}, created: map[string]int{},
			hungup: map[string]bool{}, live: map[string]bool{}}
		b := callmodel.NewBuilder(opts, s)
		base := fuzzStreams[int(next())%len(fuzzStreams)]
		var ids []string
		for _, ev := range base {
			if ev.Chan.Uniqueid != "" {
				ids = append(ids, ev.Chan.Uniqueid)
			}
		}
		pick := func() string {
			if len(ids) == 0 {
				return ""
			}
			return ids[int(next())%len(ids)]
		}
		apply := func(ev *asterisk.Event) {
			s.seq++
			if ev.Type == asterisk.TypeNewChannel || ev.Type == asterisk.TypeSnapshot {
				s.created[ev.Chan.Linkedid] = s.seq
				s.created[ev.Chan.Uniqueid] = s.seq
			}
			b.Apply(ev)
		}
		evs := append([]asterisk.Event(nil), base...)
		var last time.Time
		for i := 0; i < len(evs); i++ {
			ev := evs[i]
			switch next() % 20 {
			case 0:
				continue // dropped
			case 1:
				apply(&ev) // duplicated
			case 2:
				if i+1 < len(evs) {
					evs[i], evs[i+1] = evs[i+1], evs[i]
					ev = evs[i]
				}
			case 3:
				ev.Chan.Uniqueid = pick()
			case 4:
				ev.Chan.Linkedid = ""
			case 5:
				ev.Chan.Linkedid = pick()
			case 6:
				apply(&asterisk.Event{Type: asterisk.TypeDisconnected, Time: ev.Time})
			case 7:
				apply(&asterisk.Event{Type: asterisk.TypeConnected, Time: ev.Time, Resync: true})
			case 8:
				apply(&asterisk.Event{Type: asterisk.TypeSnapshotEnd, Time: ev.Time})
			case 9:
				apply(&asterisk.Event{Type: asterisk.TypeSnapshot, Time: ev.Time, Chan: ev.Chan, BridgeID: ev.BridgeID})
			case 10:
				ev.Time = ev.Time.Add(time.Duration(int8(next())) * time.Second)
			case 11:
				ev.Type = asterisk.Type(next() % 48)
			case 12:
				s.seq++
				b.Flush(ev.Time.Add(time.Duration(next())*time.Minute), false)
			case 13:
				ev.Peer.Uniqueid = pick()
			case 14:
				ev.BridgeID = pick()
			}
			if ev.Time.After(last) {
				last = ev.Time
			}
			apply(&ev)
		}
		s.seq++
		b.Flush(last.Add(time.Hour), true)
		if n := b.Open(); n != 0 {
			t.Fatalf("%d calls open after Flush(all)", n)
		}
		for id, open := range s.live {
			if open {
				t.Fatalf("call %s had live events but no hangup", id)
			}
		}
		b.Flush(last.Add(2*time.Hour), true)
	}
}
