package callmodel_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// sink collects what a Builder emits.
type sink struct {
	live []call.Live
	recs []*call.Record
}

func (s *sink) Live(l *call.Live)     { s.live = append(s.live, *l) }
func (s *sink) Record(r *call.Record) { s.recs = append(s.recs, r) }

func (s *sink) only(t *testing.T) *call.Record {
	t.Helper()
	if len(s.recs) != 1 {
		t.Fatalf("want 1 record, got %d: %+v", len(s.recs), s.recs)
	}
	return s.recs[0]
}

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// pbx writes events the way a PJSIP PBX reports them, with a clock advanced by hand.
type pbx struct {
	b   *callmodel.Builder
	now time.Time
	seq int
}

func newPBX(opts callmodel.Options, out callmodel.Output) *pbx {
	return &pbx{b: callmodel.NewBuilder(opts, out), now: t0}
}

func (p *pbx) wait(d time.Duration) { p.now = p.now.Add(d) }

func (p *pbx) apply(ev asterisk.Event) {
	p.now = p.now.Add(time.Millisecond)
	if ev.Time.IsZero() {
		ev.Time = p.now
	}
	p.b.Apply(&ev)
}

// channel creates a channel: state Ring for an incoming one, Down for one about to be dialled.
func (p *pbx) channel(name, cid, context, exten, linkedid string, state asterisk.ChannelState) asterisk.Channel {
	id := fmt.Sprintf("1795400000.%d", p.seq)
	p.seq++
	if linkedid == "" {
		linkedid = id
	}
	ch := asterisk.Channel{Name: name, Uniqueid: id, Linkedid: linkedid, State: state, CallerIDNum: cid,
		Context: context, Exten: exten}
	p.apply(asterisk.Event{Type: asterisk.TypeNewChannel, Chan: ch})
	return ch
}

func (p *pbx) dial(caller, dest asterisk.Channel, dialString string) {
	p.apply(asterisk.Event{Type: asterisk.TypeDialBegin, Chan: caller, Peer: dest, DialString: dialString})
}

func (p *pbx) dialEnd(caller, dest asterisk.Channel, status string) {
	p.apply(asterisk.Event{Type: asterisk.TypeDialEnd, Chan: caller, Peer: dest, DialStatus: status})
}

func (p *pbx) enter(bridge string, ch asterisk.Channel) {
	p.apply(asterisk.Event{Type: asterisk.TypeBridgeEnter, Chan: ch, BridgeID: bridge, BridgeType: "basic"})
}

func (p *pbx) leave(bridge string, ch asterisk.Channel) {
	p.apply(asterisk.Event{Type: asterisk.TypeBridgeLeave, Chan: ch, BridgeID: bridge, BridgeType: "basic"})
}

func (p *pbx) hangup(ch asterisk.Channel, cause int) {
	p.apply(asterisk.Event{Type: asterisk.TypeHangup, Chan: ch, Cause: cause})
}

func (p *pbx) varSet(ch asterisk.Channel, name, value string) {
	p.apply(asterisk.Event{Type: asterisk.TypeVarSet, Chan: ch, Variable: name, Value: value})
}

// answeredInbound plays a customer calling 101 through the provider trunk, answered after 2 s.
func (p *pbx) answeredInbound(cid, did, bridge string) (trunk, dev asterisk.Channel) {
	trunk = p.channel("PJSIP/provider-0000000"+fmt.Sprint(p.seq), cid, "from-pstn", did, "", asterisk.StateRing)
	dev = p.channel("PJSIP/101-0000000"+fmt.Sprint(p.seq), "101", "from-internal", did, trunk.Linkedid, asterisk.StateDown)
	p.dial(trunk, dev, "101/sip:101@192.0.2.1")
	p.wait(2 * time.Second)
	p.dialEnd(trunk, dev, "ANSWER")
	p.enter(bridge, dev)
	p.enter(bridge, trunk)
	return trunk, dev
}

func defaults(t *testing.T, region string) callmodel.Options {
	t.Helper()
	n, err := numbers.New(numbers.Config{DefaultRegion: region})
	if err != nil {
		t.Fatal(err)
	}
	o := callmodel.DefaultOptions()
	o.Normalize = n.Normalize
	return o
}

func TestLiveEventsRingGroup(t *testing.T) {
	var s sink
	p := newPBX(defaults(t, "RU"), &s)
	trunk := p.channel("PJSIP/provider-00000001", "89001234567", "from-pstn", "74951112244", "", asterisk.StateRing)
	d1 := p.channel("PJSIP/101-00000002", "101", "from-internal", "74951112244", trunk.Linkedid, asterisk.StateDown)
	d2 := p.channel("PJSIP/102-00000003", "102", "from-internal", "74951112244", trunk.Linkedid, asterisk.StateDown)
	p.dial(trunk, d1, "101")
	p.dial(trunk, d2, "102")
	p.wait(3 * time.Second)
	p.dialEnd(trunk, d2, "ANSWER")
	p.dialEnd(trunk, d1, "CANCEL")
	p.hangup(d1, 26)
	p.enter("b1", d2)
	p.enter("b1", trunk)
	p.wait(10 * time.Second)
	p.hangup(trunk, 16)
	p.hangup(d2, 16)

	var kinds []string
	for _, l := range s.live {
		if l.CallID != trunk.Linkedid || l.Direction != call.Inbound || l.Customer != "+79001234567" || l.Line != "+74951112244" {
			t.Errorf("live event with wrong call fields: %+v", l)
		}
		kinds = append(kinds, string(l.Kind)+":"+l.Ext)
	}
	want := "ringing:101 ringing:102 stop_ringing:101 answered:102 hangup:"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("live events = %q, want %q", got, want)
	}
	r := s.only(t)
	if r.AnsweredBy != "102" || r.Disposition != call.Answered || strings.Join(r.Rang, ",") != "101,102" ||
		r.RingSeconds != 3 || r.TalkSeconds != 10 {
		t.Errorf("record = %+v", r)
	}
}

// TestResync: the connection is lost while two calls are up; one ends during the outage and a
// third starts. After the reconnect the snapshot shows what is left.
func TestResync(t *testing.T) {
	var s sink
	p := newPBX(defaults(t, "RU"), &s)
	aTrunk, aDev := p.answeredInbound("+79001111111", "74951112233", "ba")
	bTrunk, bDev := p.answeredInbound("+79002222222", "74951112233", "bb")
	p.wait(5 * time.Second)
	disc := p.now
	p.apply(asterisk.Event{Type: asterisk.TypeDisconnected, Time: disc})
	// Outage: call A hangs up, call C starts (trunk + 103 talking for 4 s already).
	p.wait(20 * time.Second)
	p.apply(asterisk.Event{Type: asterisk.TypeConnected, Resync: true})
	cTrunk := asterisk.Channel{Name: "PJSIP/provider-00000009", Uniqueid: "1795400100.1", Linkedid: "1795400100.1",
		State: asterisk.StateUp, CallerIDNum: "+79003333333", Context: "from-pstn", Exten: "74951112233"}
	cDev := asterisk.Channel{Name: "PJSIP/103-0000000a", Uniqueid: "1795400100.2", Linkedid: "1795400100.1",
		State: asterisk.StateUp, CallerIDNum: "103", Context: "from-internal"}
	for _, snap := range []struct {
		ch     asterisk.Channel
		app    string
		bridge string
		dur    string
	}{
		{bTrunk, "Dial", "bb", "00:00:27"}, {bDev, "AppDial", "bb", "00:00:25"},
		{cTrunk, "Dial", "bc", "00:00:06"}, {cDev, "AppDial", "bc", "00:00:04"},
	} {
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshot, Chan: snap.ch, Application: snap.app, BridgeID: snap.bridge,
			Vars: map[string]string{"Duration": snap.dur}})
	}
	p.apply(asterisk.Event{Type: asterisk.TypeSnapshotEnd})

	if len(s.recs) != 1 {
		t.Fatalf("after the snapshot: want call A finished, got %d records", len(s.recs))
	}
	a := s.recs[0]
	if a.CallID != aTrunk.Linkedid || !a.EndedAt.Equal(disc) || !a.HasFlag(call.FlagResynced) ||
		a.Disposition != call.Answered || a.AnsweredBy != "101" || *a.Legs[0].EndedAt != disc {
		t.Errorf("call A = %+v (legs %+v), want answered by 101, ended at the disconnect %v, resynced", a, a.Legs, disc)
	}
	_ = aDev
	if p.b.Open() != 2 {
		t.Fatalf("open calls after resync = %d, want 2 (B continues, C from the snapshot)", p.b.Open())
	}
	p.wait(3 * time.Second)
	p.hangup(bTrunk, 16)
	p.hangup(bDev, 16)
	p.hangup(cTrunk, 16)
	p.hangup(cDev, 16)
	if len(s.recs) != 3 || p.b.Open() != 0 {
		t.Fatalf("want 3 records and nothing open, got %d records, %d open", len(s.recs), p.b.Open())
	}
	b, c := s.recs[1], s.recs[2]
	if b.CallID != bTrunk.Linkedid || !b.HasFlag(call.FlagResynced) || b.AnsweredBy != "101" || b.TalkSeconds != 28 {
		t.Errorf("call B = %+v", b)
	}
	if c.CallID != "1795400100.1" || c.Customer != "+79003333333" || c.AnsweredBy != "103" ||
		!c.HasFlag(call.FlagResynced) || c.Direction != call.Inbound {
		t.Errorf("call C = %+v", c)
	}
	// C's start comes from the trunk's Duration (6 s before the snapshot).
	if want := p.now.Add(-3*time.Second - 6*time.Second); c.StartedAt.Sub(want).Abs() > 50*time.Millisecond {
		t.Errorf("call C started at %v, want about %v", c.StartedAt, want)
	}
}

// TestResyncEverythingGone replays a real transcript, cuts the connection after the answer and
// reconnects to an empty PBX.
func TestResyncEverythingGone(t *testing.T) {
	opts := loadOptions(t, "testdata/lab.yaml")
	src, err := transcripts.AMI("inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	b := callmodel.NewBuilder(opts, &s)
	rd := ami.NewReader(bytes.NewReader(src))
	if _, err := rd.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			break
		}
		ev, ok := ami.ToEvent(f, "lab", last)
		if !ok {
			continue
		}
		last = ev.Time
		b.Apply(&ev)
		if ev.Type == asterisk.TypeBridgeEnter && ev.Chan.Name == "Local/+74951112233@from-pstn-00000000;2" {
			break // answered and bridged: now the connection drops
		}
	}
	disc := last.Add(time.Second)
	for _, ev := range []asterisk.Event{
		{Type: asterisk.TypeDisconnected, Time: disc},
		{Type: asterisk.TypeConnected, Time: disc.Add(2 * time.Second), Resync: true},
		{Type: asterisk.TypeSnapshotEnd, Time: disc.Add(2 * time.Second)},
	} {
		b.Apply(&ev)
	}
	r := s.only(t)
	if r.PBX != "lab" || r.Disposition != call.Answered || r.AnsweredBy != "101" || !r.EndedAt.Equal(disc) ||
		!r.HasFlag(call.FlagResynced) || r.Recording == "" || b.Open() != 0 {
		t.Errorf("record = %+v, open %d", r, b.Open())
	}
}

// TestResyncSnapshotFailed: when the PBX refuses CoreShowChannels the snapshot proves nothing
// and no call is finished by it.
func TestResyncSnapshotFailed(t *testing.T) {
	var s sink
	p := newPBX(defaults(t, "RU"), &s)
	trunk, dev := p.answeredInbound("+79001111111", "74951112233", "b1")
	p.apply(asterisk.Event{Type: asterisk.TypeDisconnected})
	p.apply(asterisk.Event{Type: asterisk.TypeConnected, Resync: true})
	p.apply(asterisk.Event{Type: asterisk.TypeSnapshotEnd, Vars: map[string]string{"error": "Permission denied"}})
	if len(s.recs) != 0 || p.b.Open() != 1 {
		t.Fatalf("a failed snapshot finished calls: %d records, %d open", len(s.recs), p.b.Open())
	}
	p.hangup(trunk, 16)
	p.hangup(dev, 16)
	if r := s.only(t); !r.HasFlag(call.FlagResynced) || r.AnsweredBy != "101" {
		t.Errorf("record = %+v", r)
	}
}

func TestFlush(t *testing.T) {
	var s sink
	o := defaults(t, "RU")
	o.MaxCallAge = time.Hour
	p := newPBX(o, &s)
	trunk, _ := p.answeredInbound("+79001111111", "74951112233", "b1")
	lastEvent := p.now
	p.b.Flush(t0.Add(30*time.Minute), false)
	if len(s.recs) != 0 {
		t.Fatalf("flushed a call younger than MaxCallAge")
	}
	p.b.Flush(t0.Add(61*time.Minute), false)
	r := s.only(t)
	if r.CallID != trunk.Linkedid || !r.HasFlag(call.FlagFlushed) || !r.EndedAt.Equal(lastEvent) || p.b.Open() != 0 {
		t.Errorf("aged record = %+v, want flushed at the last event %v", r, lastEvent)
	}
	// Shutdown: open calls end now.
	s.recs = nil
	p.answeredInbound("+79002222222", "74951112233", "b2")
	stop := p.now.Add(10 * time.Second)
	p.b.Flush(stop, true)
	r = s.only(t)
	if !r.HasFlag(call.FlagFlushed) || !r.EndedAt.Equal(stop) || r.TalkSeconds != 10 || *r.Legs[0].EndedAt != stop {
		t.Errorf("shutdown record = %+v", r)
	}
	p.b.Flush(stop.Add(time.Hour), true)
	if len(s.recs) != 1 || p.b.Open() != 0 {
		t.Errorf("a call finished twice or stayed open")
	}
}

// TestFinishDelayCdrRecording: without VarSet (AMI user without the dialplan class) the
// recording comes from the Cdr that follows the last hangup.
func TestFinishDelayCdrRecording(t *testing.T) {
	var s sink
	o := defaults(t, "RU")
	o.FinishDelay = 2 * time.Second
	p := newPBX(o, &s)
	trunk, dev := p.answeredInbound("+79001111111", "74951112233", "b1")
	p.wait(5 * time.Second)
	p.hangup(dev, 16)
	p.hangup(trunk, 16)
	end := p.now
	p.apply(asterisk.Event{Type: asterisk.TypeCdr, Chan: asterisk.Channel{Uniqueid: trunk.Uniqueid}, Recording: "in-1.wav"})
	if len(s.recs) != 0 || p.b.Open() != 1 {
		t.Fatalf("record emitted before FinishDelay")
	}
	p.b.Flush(end.Add(time.Second), false)
	if len(s.recs) != 0 {
		t.Fatalf("record emitted before FinishDelay")
	}
	p.b.Flush(end.Add(2*time.Second), false)
	r := s.only(t)
	if r.Recording != "in-1.wav" || !r.EndedAt.Equal(end) || r.HasFlag(call.FlagFlushed) || p.b.Open() != 0 {
		t.Errorf("record = %+v", r)
	}
}

// TestFMC: employees' mobiles listed in the configuration are extensions, on either side.
func TestFMC(t *testing.T) {
	var s sink
	n := numbers.MustNew(numbers.Config{DefaultRegion: "RU"})
	opts, err := callmodel.Config{FMC: map[string]string{"8 916 123-45-67": "105"}}.Compile(n.Normalize)
	if err != nil {
		t.Fatal(err)
	}
	p := newPBX(opts, &s)
	// Inbound call follows 105 to the mobile through the trunk.
	trunk := p.channel("PJSIP/provider-00000001", "+79001234567", "from-pstn", "74951112233", "", asterisk.StateRing)
	mob := p.channel("PJSIP/provider-00000002", "", "from-pstn", "74951112233", trunk.Linkedid, asterisk.StateDown)
	p.dial(trunk, mob, "+79161234567@provider")
	p.wait(4 * time.Second)
	p.dialEnd(trunk, mob, "ANSWER")
	p.enter("b1", mob)
	p.enter("b1", trunk)
	p.wait(6 * time.Second)
	p.hangup(trunk, 16)
	p.hangup(mob, 16)
	r := s.only(t)
	if r.Direction != call.Inbound || r.AnsweredBy != "105" || strings.Join(r.Rang, ",") != "105" || r.Customer != "+79001234567" {
		t.Errorf("forwarded call = %+v", r)
	}
	// The employee calls the office from the mobile: an internal call.
	s.recs = nil
	in := p.channel("PJSIP/provider-00000003", "89161234567", "from-pstn", "74951112233", "", asterisk.StateRing)
	d := p.channel("PJSIP/102-00000004", "102", "from-internal", "74951112233", in.Linkedid, asterisk.StateDown)
	p.dial(in, d, "102")
	p.dialEnd(in, d, "ANSWER")
	p.enter("b2", d)
	p.enter("b2", in)
	p.hangup(in, 16)
	p.hangup(d, 16)
	r = s.only(t)
	if r.Direction != call.Internal || r.CallerExt != "105" || r.AnsweredBy != "102" {
		t.Errorf("call from the mobile = %+v", r)
	}
}

// TestNoPhantoms: events about channels never seen created (a daemon started mid-call, events
// after a channel's hangup) create nothing.
func TestNoPhantoms(t *testing.T) {
	var s sink
	p := newPBX(defaults(t, ""), &s)
	ghost := asterisk.Channel{Name: "PJSIP/101-00000001", Uniqueid: "1.1", Linkedid: "1.1"}
	for _, typ := range []asterisk.Type{asterisk.TypeNewCallerID, asterisk.TypeNewState, asterisk.TypeVarSet,
		asterisk.TypeBridgeEnter, asterisk.TypeDialBegin, asterisk.TypeDialEnd, asterisk.TypeHangup, asterisk.TypeCdr,
		asterisk.TypeBlindTransfer, asterisk.TypePickup, asterisk.TypeSnapshotEnd, asterisk.TypeRename} {
		p.apply(asterisk.Event{Type: typ, Chan: ghost, Peer: ghost, BridgeID: "b", Transfer: &asterisk.Transfer{Kind: "blind"}})
	}
	if p.b.Open() != 0 || len(s.recs) != 0 || len(s.live) != 0 {
		t.Fatalf("phantom state: %d open, %d records, %d live", p.b.Open(), len(s.recs), len(s.live))
	}
	trunk, dev := p.answeredInbound("+79001111111", "74951112233", "b1")
	p.hangup(trunk, 16)
	p.hangup(dev, 16)
	p.apply(asterisk.Event{Type: asterisk.TypeNewCallerID, Chan: trunk})
	p.apply(asterisk.Event{Type: asterisk.TypeHangup, Chan: trunk})
	if p.b.Open() != 0 || len(s.recs) != 1 {
		t.Fatalf("after hangup: %d open, %d records", p.b.Open(), len(s.recs))
	}
}

// TestAsterisk11 feeds the pre-Asterisk 12 event names (Dial SubEvent, Bridge Link/Unlink, no
// Linkedid) through the AMI normaliser.
func TestAsterisk11(t *testing.T) {
	frames := `Event: Newchannel
Channel: SIP/provider-00000001
ChannelState: 4
CallerIDNum: +79001234567
Context: from-pstn
Exten: 74951112233
Uniqueid: 1400000000.1

Event: Newchannel
Channel: SIP/101-00000002
ChannelState: 0
CallerIDNum: 101
Context: from-internal
Exten: 74951112233
Uniqueid: 1400000000.2

Event: Dial
SubEvent: Begin
Channel: SIP/provider-00000001
Destination: SIP/101-00000002
CallerIDNum: +79001234567
UniqueID: 1400000000.1
DestUniqueID: 1400000000.2
Dialstring: 101

Event: Bridge
Bridgestate: Link
Bridgetype: core
Channel1: SIP/provider-00000001
Channel2: SIP/101-00000002
Uniqueid1: 1400000000.1
Uniqueid2: 1400000000.2
CallerID1: +79001234567
CallerID2: 101

Event: Bridge
Bridgestate: Unlink
Channel1: SIP/provider-00000001
Channel2: SIP/101-00000002
Uniqueid1: 1400000000.1
Uniqueid2: 1400000000.2

Event: Hangup
Channel: SIP/provider-00000001
Uniqueid: 1400000000.1
Cause: 16

Event: Hangup
Channel: SIP/101-00000002
Uniqueid: 1400000000.2
Cause: 16

`
	var s sink
	b := callmodel.NewBuilder(defaults(t, "RU"), &s)
	rd := ami.NewReader(strings.NewReader(frames))
	clock := t0
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			break
		}
		clock = clock.Add(time.Second)
		ev, ok := ami.ToEvent(f, "", clock)
		if ok {
			b.Apply(&ev)
		}
	}
	r := s.only(t)
	if r.CallID != "1400000000.1" || r.Direction != call.Inbound || r.AnsweredBy != "101" ||
		r.Line != "+74951112233" || r.TalkSeconds != 3 || r.Legs[0].TalkSeconds != 1 {
		t.Errorf("record = %+v", r)
	}
}

// TestHotPathAllocations: the events that make up most of the stream (dialplan steps,
// variables, caller ID updates) cost no allocation once the channel exists.
func TestHotPathAllocations(t *testing.T) {
	var s sink
	p := newPBX(defaults(t, "RU"), &s)
	trunk, _ := p.answeredInbound("+79001111111", "74951112233", "b1")
	evs := []asterisk.Event{
		{Type: asterisk.TypeNewExten, Time: p.now, Chan: trunk, Application: "Set", AppData: "X=1"},
		{Type: asterisk.TypeVarSet, Time: p.now, Chan: trunk, Variable: "BRIDGEPEER", Value: "PJSIP/101-00000002"},
		{Type: asterisk.TypeNewCallerID, Time: p.now, Chan: trunk},
		{Type: asterisk.TypeCel, Time: p.now, Chan: trunk},
		{Type: asterisk.TypeNewState, Time: p.now, Chan: trunk},
	}
	allocs := testing.AllocsPerRun(200, func() {
		for i := range evs {
			p.b.Apply(&evs[i])
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run of hot-path events, want 0", allocs)
	}
}

// TestHoldKeepsLeg: an extension that leaves the customer's bridge and comes back with nobody
// in between (hold, bridge moves) keeps one leg; the recording comes from MIXMONITOR_FILENAME.
func TestHoldKeepsLeg(t *testing.T) {
	var s sink
	p := newPBX(defaults(t, "RU"), &s)
	trunk, dev := p.answeredInbound("+79001111111", "74951112233", "b1")
	p.varSet(trunk, "MIXMONITOR_FILENAME", "/var/spool/asterisk/monitor/x.wav")
	p.wait(5 * time.Second)
	p.leave("b1", dev)
	p.wait(20 * time.Second)
	p.enter("b1", dev)
	p.wait(5 * time.Second)
	p.hangup(trunk, 16)
	p.hangup(dev, 16)
	r := s.only(t)
	if len(r.Legs) != 1 || len(r.Transfers) != 0 || r.Legs[0].TalkSeconds != 30 || r.Recording != "/var/spool/asterisk/monitor/x.wav" {
		t.Errorf("record = %+v, legs %+v", r, r.Legs)
	}
	answered := 0
	for _, l := range s.live {
		if l.Kind == call.LiveAnswered {
			answered++
		}
	}
	if answered != 1 {
		t.Errorf("%d answered live events, want 1", answered)
	}
}

func TestConfigCompile(t *testing.T) {
	cases := []struct {
		cfg  callmodel.Config
		want string
	}{
		{callmodel.Config{Extensions: []string{"("}}, "callmodel: extensions[0]"},
		{callmodel.Config{Trunks: []string{""}}, "callmodel: trunks[0]: empty pattern"},
		{callmodel.Config{TrunkContexts: []string{"a", "["}}, "callmodel: trunk_contexts[1]"},
		{callmodel.Config{ExtensionNumber: "(?P<"}, "callmodel: extension_number"},
		{callmodel.Config{MaxCallAge: "forever"}, "callmodel: max_call_age"},
		{callmodel.Config{FinishDelay: "-1s"}, "callmodel: finish_delay: negative"},
		{callmodel.Config{FMC: map[string]string{"+79161234567": ""}}, "callmodel: fmc"},
		{callmodel.Config{Extensions: []string{`^PJSIP/(?P<num>\d+)-`}}, `callmodel: extensions[0]: named groups other than "ext"`},
	}
	for _, c := range cases {
		_, err := c.cfg.Compile(nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compile(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	o, err := callmodel.Config{TrunkContexts: []string{}, MaxCallAge: "90m"}.Compile(nil)
	if err != nil || len(o.TrunkContexts) != 0 || o.MaxCallAge != 90*time.Minute || len(o.Extensions) != 1 {
		t.Errorf("explicit empty list / duration: %+v, %v", o, err)
	}
}

// TestResyncCallContinues cuts every lab transcript's AMI stream in the middle, reconnects with a
// snapshot of the channels that are still up (what CoreShowChannels would list) and plays the
// rest: the records are the golden ones, flagged "resynced".
func TestResyncCallContinues(t *testing.T) {
	opts := loadOptions(t, "testdata/lab.yaml")
	for _, name := range transcripts.Scenarios() {
		src, err := transcripts.AMI(name)
		if err != nil {
			t.Fatal(err)
		}
		evs := readAMIEvents(t, src)
		exp, err := os.ReadFile(filepath.Join("testdata", name, "expected.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		want := readRecords(t, exp)

		var s sink
		b := callmodel.NewBuilder(opts, &s)
		type live struct {
			ch     asterisk.Channel
			bridge string
		}
		up := map[string]*live{}
		var order []string
		cut := len(evs) / 2
		for i := range evs {
			ev := evs[i]
			if i == cut {
				t0 := ev.Time
				b.Apply(&asterisk.Event{Type: asterisk.TypeDisconnected, Time: t0})
				b.Apply(&asterisk.Event{Type: asterisk.TypeConnected, Time: t0, Resync: true})
				for _, id := range order {
					if l := up[id]; l != nil {
						b.Apply(&asterisk.Event{Type: asterisk.TypeSnapshot, Time: t0, Chan: l.ch, BridgeID: l.bridge})
					}
				}
				b.Apply(&asterisk.Event{Type: asterisk.TypeSnapshotEnd, Time: t0})
			}
			switch ev.Type {
			case asterisk.TypeNewChannel:
				up[ev.Chan.Uniqueid] = &live{ch: ev.Chan}
				order = append(order, ev.Chan.Uniqueid)
			case asterisk.TypeHangup:
				delete(up, ev.Chan.Uniqueid)
			case asterisk.TypeBridgeEnter:
				if l := up[ev.Chan.Uniqueid]; l != nil {
					l.bridge = ev.BridgeID
				}
			case asterisk.TypeBridgeLeave:
				if l := up[ev.Chan.Uniqueid]; l != nil && l.bridge == ev.BridgeID {
					l.bridge = ""
				}
			}
			if l := up[ev.Chan.Uniqueid]; l != nil && ev.Chan.Name != "" && ev.Type != asterisk.TypeBridgeEnter {
				br := l.bridge
				l.ch = ev.Chan
				l.bridge = br
			}
			b.Apply(&ev)
		}
		b.Flush(evs[len(evs)-1].Time, true)
		var got []call.Record
		for _, r := range s.recs {
			if !r.HasFlag(call.FlagResynced) && r.StartedAt.Before(evs[cut].Time) && r.EndedAt.After(evs[cut].Time) {
				t.Errorf("%s: call %s spanned the outage but is not flagged resynced", name, r.CallID)
			}
			var flags []string
			for _, f := range r.Flags {
				if f != call.FlagResynced {
					flags = append(flags, f)
				}
			}
			r.Flags = flags
			got = append(got, *r)
		}
		got = readRecords(t, mustJSONLines(t, got))
		if diff := cmp.Diff(want, got, cmpopts.EquateApproxTime(timeMargin), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: records after a mid-stream reconnect differ (-want +got):\n%s", name, diff)
		}
	}
}

func mustJSONLines(tb testing.TB, recs []call.Record) []byte {
	tb.Helper()
	var buf bytes.Buffer
	for i := range recs {
		line, err := json.Marshal(&recs[i])
		if err != nil {
			tb.Fatal(err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// TestResyncRingingBeforeSnapshot: the daemon (re)starts while a customer is calling 101. The
// call's Newchannel events were never seen, and its DialBegin and Newstate arrive after the login
// but before CoreShowChannels lists the channels: they are about channels the Builder does not
// know yet. The snapshot shows 101 ringing (AppDial, not answered). 101 must still get its
// ringing live event (the incoming-call card, and the open-calls ledger row), be in Rang, and
// the call must end with the right disposition.
func TestResyncRingingBeforeSnapshot(t *testing.T) {
	trunk := asterisk.Channel{Name: "PJSIP/provider-00000010", Uniqueid: "1795400200.1", Linkedid: "1795400200.1",
		State: asterisk.StateRing, CallerIDNum: "89001234567", Context: "from-pstn", Exten: "74951112233"}
	dev := asterisk.Channel{Name: "PJSIP/101-00000011", Uniqueid: "1795400200.2", Linkedid: "1795400200.1",
		State: asterisk.StateRinging, CallerIDNum: "101", Context: "from-internal", Exten: "74951112233"}
	start := func(t *testing.T, s *sink) *pbx {
		t.Helper()
		p := newPBX(defaults(t, "RU"), s)
		p.apply(asterisk.Event{Type: asterisk.TypeConnected, Resync: true})
		// Live events between the login and the snapshot, for channels not known yet.
		p.dial(trunk, dev, "101/sip:101@192.0.2.1")
		p.apply(asterisk.Event{Type: asterisk.TypeNewState, Chan: dev})
		// CoreShowChannels: creation order, the dialled device in AppDial, still ringing.
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshot, Chan: trunk, Application: "Dial", AppData: "PJSIP/101,30",
			Vars: map[string]string{"Duration": "00:00:04"}})
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshot, Chan: dev, Application: "AppDial", AppData: "(Outgoing Line)",
			Vars: map[string]string{"Duration": "00:00:04"}})
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshotEnd})
		return p
	}
	kinds := func(s *sink) string {
		var k []string
		for _, l := range s.live {
			k = append(k, string(l.Kind)+":"+l.Ext)
		}
		return strings.Join(k, " ")
	}

	t.Run("answered", func(t *testing.T) {
		var s sink
		p := start(t, &s)
		if got := kinds(&s); got != "ringing:101" {
			t.Fatalf("live events after the snapshot = %q, want %q", got, "ringing:101")
		}
		if l := s.live[0]; l.CallID != trunk.Linkedid || l.Direction != call.Inbound || l.Customer != "+79001234567" ||
			l.Line != "+74951112233" {
			t.Errorf("ringing event = %+v", l)
		}
		p.wait(2 * time.Second)
		p.dialEnd(trunk, dev, "ANSWER")
		p.enter("b1", dev)
		p.enter("b1", trunk)
		p.wait(10 * time.Second)
		p.hangup(trunk, 16)
		p.hangup(dev, 16)
		if got, want := kinds(&s), "ringing:101 answered:101 hangup:"; got != want {
			t.Errorf("live events = %q, want %q", got, want)
		}
		r := s.only(t)
		if r.Disposition != call.Answered || r.AnsweredBy != "101" || strings.Join(r.Rang, ",") != "101" ||
			r.TalkSeconds != 10 || !r.HasFlag(call.FlagResynced) {
			t.Errorf("record = %+v", r)
		}
	})

	t.Run("caller hangs up", func(t *testing.T) {
		var s sink
		p := start(t, &s)
		p.wait(5 * time.Second)
		p.dialEnd(trunk, dev, "CANCEL")
		p.hangup(dev, 26)
		p.hangup(trunk, 16)
		if got, want := kinds(&s), "ringing:101 stop_ringing:101 hangup:"; got != want {
			t.Errorf("live events = %q, want %q", got, want)
		}
		r := s.only(t)
		if r.Disposition != call.NoAnswer || r.AnsweredBy != "" || strings.Join(r.Rang, ",") != "101" {
			t.Errorf("record = %+v", r)
		}
	})

	// The Dial ends between the device's snapshot and the end of the snapshot: nothing rings.
	t.Run("dial ended before the snapshot end", func(t *testing.T) {
		var s sink
		p := newPBX(defaults(t, "RU"), &s)
		p.apply(asterisk.Event{Type: asterisk.TypeConnected, Resync: true})
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshot, Chan: trunk, Application: "Dial"})
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshot, Chan: dev, Application: "AppDial"})
		p.dialEnd(trunk, dev, "NOANSWER")
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshotEnd})
		p.hangup(dev, 19)
		p.hangup(trunk, 16)
		if got := kinds(&s); got != "" {
			t.Errorf("live events = %q, want none", got)
		}
		if r := s.only(t); r.Disposition != call.NoAnswer || strings.Join(r.Rang, ",") != "101" {
			t.Errorf("record = %+v", r)
		}
	})

	// A device the snapshot shows already answered (Up, in a bridge) is not ringing: no card.
	t.Run("already answered", func(t *testing.T) {
		var s sink
		p := newPBX(defaults(t, "RU"), &s)
		p.apply(asterisk.Event{Type: asterisk.TypeConnected, Resync: true})
		up, devUp := trunk, dev
		up.State, devUp.State = asterisk.StateUp, asterisk.StateUp
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshot, Chan: up, Application: "Dial", BridgeID: "b1"})
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshot, Chan: devUp, Application: "AppDial", BridgeID: "b1"})
		p.apply(asterisk.Event{Type: asterisk.TypeSnapshotEnd})
		p.hangup(up, 16)
		p.hangup(devUp, 16)
		if got, want := kinds(&s), "answered:101 hangup:"; got != want {
			t.Errorf("live events = %q, want %q", got, want)
		}
		if r := s.only(t); r.Disposition != call.Answered || strings.Join(r.Rang, ",") != "101" {
			t.Errorf("record = %+v", r)
		}
	})
}

// TestKnows: what the CDR recovery asks the model about a call it finds in the CDR.
func TestKnows(t *testing.T) {
	t.Parallel()
	var out sink
	p := newPBX(defaults(t, ""), &out)
	if p.b.Knows("") || !p.b.OldestStart().IsZero() || len(p.b.ChannelNames()) != 0 {
		t.Fatal("an empty model knows something")
	}
	trunk, dev := p.answeredInbound("+79001234567", "74951112233", "b1")
	for _, id := range []string{trunk.Linkedid, trunk.Uniqueid, dev.Uniqueid} {
		if !p.b.Knows(id) {
			t.Errorf("Knows(%s) = false during the call", id)
		}
	}
	if p.b.Knows("1795400000.99") {
		t.Error("Knows an unknown uniqueid")
	}
	names := p.b.ChannelNames()
	if len(names) != 2 || !slices.Contains(names, trunk.Name) || !slices.Contains(names, dev.Name) {
		t.Errorf("ChannelNames = %v", names)
	}
	if got := p.b.OldestStart(); !got.Equal(t0.Add(time.Millisecond)) {
		t.Errorf("OldestStart = %v", got)
	}
	p.hangup(dev, 16)
	if !p.b.Knows(dev.Uniqueid) {
		t.Error("a hung-up channel of an open call is forgotten")
	}
	p.hangup(trunk, 16)
	out.only(t)
	if p.b.Knows(trunk.Linkedid) || p.b.Knows(dev.Uniqueid) || len(p.b.ChannelNames()) != 0 || !p.b.OldestStart().IsZero() {
		t.Error("a finished call is still known")
	}
}

// TestCallVariables: the channel variables listed in Config.Variables reach Record.Vars with
// their first non-empty value, from VarSet (with or without the inheritance underscores) and
// from the ChanVariable headers of any channel event; others do not; a long value is cut.
func TestCallVariables(t *testing.T) {
	t.Parallel()
	var s sink
	o, err := callmodel.Config{Variables: []string{"__IVR_DEAL", "CAMPAIGN", "LONG"}}.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(o.Variables(), "IVR_DEAL") || !slices.Contains(o.Variables(), "CAMPAIGN") {
		t.Errorf("Variables() = %v, want the call variables among them (the AMI read filter keeps them)", o.Variables())
	}
	p := newPBX(o, &s)
	trunk := p.channel("PJSIP/provider-00000001", "+79001234567", "from-pstn", "74951112233", "", asterisk.StateRing)
	p.varSet(trunk, "__IVR_DEAL", "")
	p.varSet(trunk, "__IVR_DEAL", "4711")
	p.varSet(trunk, "IVR_DEAL", "9999") // not the first value
	p.varSet(trunk, "OTHER", "x")
	p.varSet(trunk, "LONG", strings.Repeat("я", 200))
	p.apply(asterisk.Event{Type: asterisk.TypeNewExten, Chan: trunk, Vars: map[string]string{"CAMPAIGN": "spring"}})
	p.hangup(trunk, 16)
	r := s.only(t)
	if r.Vars["IVR_DEAL"] != "4711" || r.Vars["CAMPAIGN"] != "spring" || len(r.Vars) != 3 {
		t.Errorf("Vars = %v, want IVR_DEAL=4711 CAMPAIGN=spring LONG", r.Vars)
	}
	if l := r.Vars["LONG"]; len(l) > 256 || !utf8.ValidString(l) || l == "" {
		t.Errorf("a long value was kept as %d bytes (valid UTF-8: %v), want at most 256", len(l), utf8.ValidString(l))
	}
	many := make([]string, 17)
	for i := range many {
		many[i] = fmt.Sprintf("V%d", i)
	}
	if _, err := (callmodel.Config{Variables: many}).Compile(nil); err == nil {
		t.Error("17 variables compiled, want an error")
	}
}
