package replay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
)

// card is one ringing live event: an extension shown an incoming-call card for a call.
type card struct{ call, ext string }

// cardLog is a callmodel.Output keeping the ringing events and the ids of the finished calls.
type cardLog struct {
	ringing []callmodel.Live
	calls   map[string]bool
}

func (l *cardLog) Live(ev *callmodel.Live) {
	if ev.Kind == callmodel.LiveRinging {
		l.ringing = append(l.ringing, *ev)
	}
}

func (l *cardLog) Record(r *callmodel.Record) { l.calls[r.CallID] = true }

// cards applies events to a Builder and returns the set of (call, extension) ringing events of
// the calls that were recorded, sorted, and how many ringing events named a call id that
// finished under another id (merged into an older call: ARI has no Linkedid, so a Local leg may
// start as a call of its own until its Dial ties it to the customer's call).
func cards(tb testing.TB, events func(yield func(*asterisk.Event))) (set []card, transient int) {
	tb.Helper()
	ringing, calls := ringingEvents(tb, events)
	for _, ev := range ringing {
		c := card{ev.CallID, ev.Ext}
		if !calls[c.call] {
			transient++
			continue
		}
		if !slices.Contains(set, c) {
			set = append(set, c)
		}
	}
	slices.SortFunc(set, func(a, b card) int {
		if a.call != b.call {
			return strings.Compare(a.call, b.call)
		}
		return strings.Compare(a.ext, b.ext)
	})
	return set, transient
}

// ringingEvents applies events to a Builder and returns the ringing events and the ids of the
// recorded calls.
func ringingEvents(tb testing.TB, events func(yield func(*asterisk.Event))) ([]callmodel.Live, map[string]bool) {
	tb.Helper()
	log := &cardLog{calls: map[string]bool{}}
	b := callmodel.NewBuilder(labOptions(tb), log)
	var last time.Time
	events(func(ev *asterisk.Event) {
		last = ev.Time
		b.Apply(ev)
	})
	b.Flush(last, true)
	return log.ringing, log.calls
}

// amiEvents reads an AMI capture as the daemon's source does (read-time filter included).
func amiEvents(tb testing.TB, src []byte) func(func(*asterisk.Event)) {
	tb.Helper()
	opts := labOptions(tb)
	return func(yield func(*asterisk.Event)) {
		rd := ami.NewReader(bufio.NewReader(bytes.NewReader(src)))
		rd.SetFilter(ami.SourceFilter(opts.Variables()))
		if _, err := rd.ReadBanner(); err != nil {
			tb.Fatal(err)
		}
		for {
			f, err := rd.ReadFrame()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				tb.Fatal(err)
			}
			if ev, ok := ami.ToEvent(f, "", time.Time{}); ok {
				yield(&ev)
			}
		}
	}
}

// ariEvents reads ARI websocket messages, one per line.
func ariEvents(tb testing.TB, src []byte) func(func(*asterisk.Event)) {
	tb.Helper()
	return func(yield func(*asterisk.Event)) {
		for line := range bytes.Lines(src) {
			ev, ok, err := ari.ToEvent(bytes.TrimSpace(line), "", time.Time{})
			if err != nil {
				tb.Fatal(err)
			}
			if ok {
				yield(&ev)
			}
		}
	}
}

// TestRingingSameOnAMIAndARI: every card an extension gets on AMI it also gets on ARI, and no
// other. Over every transcript, the set of (call, extension) ringing events of the recorded
// calls is the same from the AMI capture and from the ARI stream of the same calls.
func TestRingingSameOnAMIAndARI(t *testing.T) {
	t.Parallel()
	amiCards := map[string][]card{}
	for _, name := range transcripts.Scenarios() {
		src, err := transcripts.AMI(name)
		if err != nil {
			t.Fatal(err)
		}
		amiCards[name], _ = cards(t, amiEvents(t, src))
	}
	total := 0
	for _, c := range amiCards {
		total += len(c)
	}
	if total < len(amiCards) {
		t.Fatalf("%d ringing events on AMI over %d transcripts: the comparison would prove nothing", total, len(amiCards))
	}
	check := func(name, base string, src []byte) {
		t.Helper()
		want := amiCards[base]
		got, transient := cards(t, ariEvents(t, src))
		if !slices.Equal(got, want) {
			t.Errorf("%s: ringing (call, extension) on ARI\n got %v\nwant %v (AMI)", name, got, want)
		}
		if transient > 0 {
			t.Logf("%s: %d ringing events for a call id merged away", name, transient)
		}
	}
	for _, name := range transcripts.Scenarios() {
		src, err := transcripts.ARI(name)
		if err != nil {
			t.Fatal(err)
		}
		check(name, name, src)
	}
}
