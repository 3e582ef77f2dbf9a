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
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// card is one ringing live event: an extension shown a call card for a call (inbound: the
// extension is dialled; outbound: the extension placed the call and the customer's leg rings),
// with the direction and customer the card shows.
type card struct{ call, ext, dir, customer string }

// cardLog is a callmodel.Output keeping the ringing events and the ids of the finished calls.
type cardLog struct {
	ringing []call.Live
	calls   map[string]bool
}

func (l *cardLog) Live(ev *call.Live) {
	if ev.Kind == call.LiveRinging {
		l.ringing = append(l.ringing, *ev)
	}
}

func (l *cardLog) Record(r *call.Record) { l.calls[r.CallID] = true }

// cards applies events to a Builder and returns the set of (call, extension) ringing events of
// the calls that were recorded, sorted, and how many ringing events named a call id that
// finished under another id (merged into an older call: ARI has no Linkedid, so a Local leg may
// start as a call of its own until its Dial ties it to the customer's call).
func cards(tb testing.TB, events func(yield func(*asterisk.Event))) (set []card, transient int) {
	tb.Helper()
	ringing, calls := ringingEvents(tb, events)
	for _, ev := range ringing {
		c := card{ev.CallID, ev.Ext, string(ev.Direction), ev.Customer}
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
		if a.ext != b.ext {
			return strings.Compare(a.ext, b.ext)
		}
		return strings.Compare(a.customer, b.customer)
	})
	return set, transient
}

// ringingEvents applies events to a Builder and returns the ringing events and the ids of the
// recorded calls.
func ringingEvents(tb testing.TB, events func(yield func(*asterisk.Event))) ([]call.Live, map[string]bool) {
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
// other, inbound and outbound alike (with the same direction and customer). Over every transcript, the set of (call, extension) ringing events of the recorded
// calls is the same from the AMI capture and from the ARI stream of the same calls; the
// synthetic ARI streams (the same calls reported in another order) must give the set of the
// AMI capture they were derived from.
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
	total, outbound := 0, 0
	for _, cs := range amiCards {
		total += len(cs)
		for _, c := range cs {
			if c.dir == string(call.Outbound) {
				outbound++
			}
		}
	}
	if total < len(amiCards) {
		t.Fatalf("%d ringing events on AMI over %d transcripts: the comparison would prove nothing", total, len(amiCards))
	}
	// Every outbound lab transcript (4 direct calls, 3 click-to-calls) gives its caller a card.
	if outbound < 7 {
		t.Fatalf("%d outbound cards on AMI, want one per outbound transcript (7)", outbound)
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
	for _, name := range transcripts.SyntheticScenarios() {
		src, err := transcripts.SyntheticARI(name)
		if err != nil {
			t.Fatal(err)
		}
		check(name, transcripts.SyntheticBase(name), src)
	}
}

// TestQueueInnerDialFirst: when a queue member's own Dial (Local/101@internal;2 → 101's phone)
// reaches ARI before app_queue's Dial of the member Local channel (customer → Local/101@internal;1),
// the agent still gets the ringing event of the customer's call: the card a real Asterisk 22
// showed on AMI but not on ARI for 2 of 18 queue legs.
func TestQueueInnerDialFirst(t *testing.T) {
	t.Parallel()
	src, err := transcripts.SyntheticARI("inbound_ringgroup_or_queue+inner_dial_first")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := cards(t, ariEvents(t, src))
	const callID = "1795305809.22" // the customer's Originate'd channel: the call's Linkedid
	want := []card{{callID, "101", "inbound", "+79001234567"}, {callID, "102", "inbound", "+79001234567"}}
	if !slices.Equal(got, want) {
		t.Fatalf("ringing (call, extension) %v, want %v", got, want)
	}
	// The card a CRM shows: an inbound call from the customer to the queue's line.
	ringing, _ := ringingEvents(t, ariEvents(t, src))
	for _, ev := range ringing {
		if ev.CallID == callID && (ev.Direction != call.Inbound || ev.Customer != "+79001234567" || ev.Line != "+74951112200") {
			t.Errorf("ringing event %+v, want inbound from +79001234567 to +74951112200", ev)
		}
	}
	// The records do not depend on the order either.
	var a, b bytes.Buffer
	orig, _ := transcripts.ARI("inbound_ringgroup_or_queue")
	if err := ARI(bytes.NewReader(orig), labOptions(t), &a); err != nil {
		t.Fatal(err)
	}
	if err := ARI(bytes.NewReader(src), labOptions(t), &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("records differ:\n%s\nwant\n%s", b.Bytes(), a.Bytes())
	}
}
