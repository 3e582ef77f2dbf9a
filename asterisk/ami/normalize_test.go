package ami

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

func frame(tb testing.TB, text string) *Frame {
	tb.Helper()
	f, err := NewReader(strings.NewReader(strings.ReplaceAll(text, "\n", "\r\n") + "\r\n\r\n")).ReadFrame()
	if err != nil {
		tb.Fatalf("reading %q: %v", text, err)
	}
	return f
}

var recv = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

// TestToEventTranscripts normalises every frame of every transcript: each event the meta file
// counts is recognised (no TypeUnknown for a name the model uses), and the counts agree.
func TestToEventTranscripts(t *testing.T) {
	t.Parallel()
	for _, name := range transcripts.Scenarios() {
		src, err := transcripts.AMI(name)
		if err != nil {
			t.Fatal(err)
		}
		meta, err := transcripts.Meta(name)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Counts map[string]int `json:"ami_event_counts"`
		}
		if err := json.Unmarshal(meta, &m); err != nil {
			t.Fatal(err)
		}
		rd := NewReader(bytes.NewReader(src))
		if _, err := rd.ReadBanner(); err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for {
			f, err := rd.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ev, ok := ToEvent(f, "lab", recv)
			if !ok {
				continue
			}
			counts[ev.Name]++
			if want, known := eventTypes[ev.Name]; known && want != asterisk.TypeUnknown && ev.Type == asterisk.TypeUnknown {
				t.Errorf("%s: %s normalised to unknown", name, ev.Name)
			}
			if ev.Time.Equal(recv) && ev.Name != "FullyBooted" {
				t.Errorf("%s: %s: Timestamp header not used", name, ev.Name)
			}
			if ev.PBX != "lab" {
				t.Errorf("PBX not set")
			}
			switch ev.Type {
			case asterisk.TypeNewChannel, asterisk.TypeHangup, asterisk.TypeBridgeEnter, asterisk.TypeVarSet:
				if ev.Chan.Name == "" || ev.Chan.Uniqueid == "" || ev.Chan.Linkedid == "" {
					t.Errorf("%s: %s without channel identity: %+v", name, ev.Name, ev.Chan)
				}
			case asterisk.TypeDialBegin, asterisk.TypeDialEnd:
				if ev.Peer.Name == "" || ev.Peer.Uniqueid == "" {
					t.Errorf("%s: %s without destination", name, ev.Name)
				}
			case asterisk.TypeBlindTransfer, asterisk.TypeAttendedTransfer:
				if ev.Transfer == nil || ev.Transfer.Result != "Success" || ev.Peer.Uniqueid == "" {
					t.Errorf("%s: %s: %+v", name, ev.Name, ev.Transfer)
				}
			}
		}
		for ev, n := range m.Counts {
			if counts[ev] != n {
				t.Errorf("%s: %d %s events, meta says %d", name, counts[ev], ev, n)
			}
		}
	}
}

func TestToEventFields(t *testing.T) {
	t.Parallel()
	// The Originate's own dial has no Channel: only the destination.
	ev, ok := ToEvent(frame(t, `Event: DialBegin
Privilege: call,all
Timestamp: 1795305929.727315
DestChannel: Local/101@internal-00000020;1
DestChannelState: 0
DestCallerIDNum: 101
DestCallerIDName: CRM: 89001234567
DestConnectedLineNum: <unknown>
DestUniqueid: 1795305929.121
DestLinkedid: 1795305929.121
DialString: 101@internal`), "p", recv)
	if !ok || ev.Type != asterisk.TypeDialBegin || ev.Chan.Name != "" || ev.Peer.Uniqueid != "1795305929.121" ||
		ev.Peer.ConnectedNum != "" || ev.DialString != "101@internal" ||
		!ev.Time.Equal(time.Unix(1795305929, 727315000).UTC()) {
		t.Errorf("originate DialBegin = %+v", ev)
	}

	ev, _ = ToEvent(frame(t, `Event: BridgeEnter
BridgeUniqueid: 76d9
BridgeType: basic
Channel: Local/102@phones-0000001f;1
Uniqueid: 1795305911.109
Linkedid: 1795305907.103
SwapUniqueid: 1795305911.107`), "", recv)
	if ev.Type != asterisk.TypeBridgeEnter || ev.BridgeID != "76d9" || ev.BridgeType != "basic" ||
		ev.Vars["SwapUniqueid"] != "1795305911.107" || !ev.Time.Equal(recv) {
		t.Errorf("BridgeEnter = %+v", ev)
	}

	ev, _ = ToEvent(frame(t, `Event: VarSet
Channel: PJSIP/101-00000001
Uniqueid: 1.1
Variable: MIXMONITOR_FILENAME
Value: /var/spool/asterisk/monitor/a.wav
ChanVariable(PJSIP/101-00000001): PBXBRIDGE_ORIGINATE_ID=abc=def`), "", recv)
	if ev.Variable != "MIXMONITOR_FILENAME" || ev.Value != "/var/spool/asterisk/monitor/a.wav" ||
		ev.Vars["PBXBRIDGE_ORIGINATE_ID"] != "abc=def" {
		t.Errorf("VarSet = %+v", ev)
	}

	ev, _ = ToEvent(frame(t, `Event: CoreShowChannel
ActionID: resync-1
Channel: PJSIP/101-00000001
Uniqueid: 1.1
Linkedid: 1.0
ChannelState: 6
Application: AppDial
BridgeId: b-1
Duration: 01:02:03`), "", recv)
	if ev.Type != asterisk.TypeSnapshot || ev.BridgeID != "b-1" || ev.Application != "AppDial" ||
		ev.Chan.State != asterisk.StateUp || !ev.Chan.Created.Equal(recv.Add(-(time.Hour + 2*time.Minute + 3*time.Second))) {
		t.Errorf("CoreShowChannel = %+v", ev)
	}

	ev, ok = ToEvent(frame(t, `Response: Success
ActionID: 1
Message: Pong`), "", recv)
	if ok {
		t.Errorf("a response was taken for an event: %+v", ev)
	}

	ev, ok = ToEvent(frame(t, `Event: DeviceStateChange
Device: PJSIP/101
State: INUSE`), "", recv)
	if !ok || ev.Type != asterisk.TypeUnknown || ev.Name != "DeviceStateChange" {
		t.Errorf("unknown event = %+v, %v", ev, ok)
	}

	// A Timestamp that is not a number falls back to the receive time.
	ev, _ = ToEvent(frame(t, "Event: Hangup\nTimestamp: soon\nChannel: X/1\nUniqueid: 1.1\nCause: 16\nCause-txt: Normal Clearing"), "", recv)
	if !ev.Time.Equal(recv) || ev.Cause != 16 || ev.CauseText != "Normal Clearing" {
		t.Errorf("Hangup = %+v", ev)
	}
}

// TestToEventAsterisk11 covers the old event names: Dial with SubEvent, Bridge Link/Unlink,
// Rename, Newcallerid, LocalBridge with Channel1/Channel2.
func TestToEventAsterisk11(t *testing.T) {
	t.Parallel()
	ev, _ := ToEvent(frame(t, "Event: Dial\nSubEvent: Begin\nChannel: SIP/a-1\nUniqueID: 1.1\nDestination: SIP/101-2\nDestUniqueID: 1.2\nDialstring: 101"), "", recv)
	if ev.Type != asterisk.TypeDialBegin || ev.Chan.Uniqueid != "1.1" || ev.Peer.Name != "SIP/101-2" ||
		ev.Peer.Uniqueid != "1.2" || ev.DialString != "101" {
		t.Errorf("Dial Begin = %+v", ev)
	}
	ev, _ = ToEvent(frame(t, "Event: Dial\nSubEvent: End\nChannel: SIP/a-1\nUniqueID: 1.1\nDialStatus: BUSY"), "", recv)
	if ev.Type != asterisk.TypeDialEnd || ev.DialStatus != "BUSY" {
		t.Errorf("Dial End = %+v", ev)
	}
	ev, _ = ToEvent(frame(t, "Event: Bridge\nBridgestate: Link\nChannel1: SIP/a-1\nChannel2: SIP/101-2\nUniqueid1: 1.1\nUniqueid2: 1.2\nCallerID1: 555\nCallerID2: 101"), "", recv)
	if ev.Type != asterisk.TypeBridgeEnter || ev.Chan.Uniqueid != "1.1" || ev.Peer.Uniqueid != "1.2" ||
		ev.BridgeID != "1.1|1.2" || ev.Chan.CallerIDNum != "555" {
		t.Errorf("Bridge Link = %+v", ev)
	}
	ev, _ = ToEvent(frame(t, "Event: Bridge\nBridgestate: Unlink\nChannel1: SIP/a-1\nChannel2: SIP/101-2\nUniqueid1: 1.1\nUniqueid2: 1.2"), "", recv)
	if ev.Type != asterisk.TypeBridgeLeave || ev.BridgeID != "1.1|1.2" {
		t.Errorf("Bridge Unlink = %+v", ev)
	}
	ev, _ = ToEvent(frame(t, "Event: Rename\nChannel: SIP/101-2\nNewname: SIP/102-3\nUniqueid: 1.2"), "", recv)
	if ev.Type != asterisk.TypeRename || ev.Chan.Name != "SIP/101-2" || ev.Peer.Name != "SIP/102-3" || ev.Chan.Uniqueid != "1.2" {
		t.Errorf("Rename = %+v", ev)
	}
	ev, _ = ToEvent(frame(t, "Event: Rename\nOldname: SIP/101-2\nNewname: SIP/102-3\nUniqueid: 1.2"), "", recv)
	if ev.Chan.Name != "SIP/101-2" {
		t.Errorf("Rename (Oldname) = %+v", ev)
	}
	ev, _ = ToEvent(frame(t, "Event: Newcallerid\nChannel: SIP/a-1\nUniqueid: 1.1\nCallerIDNum: 555"), "", recv)
	if ev.Type != asterisk.TypeNewCallerID || ev.Chan.CallerIDNum != "555" {
		t.Errorf("Newcallerid = %+v", ev)
	}
	ev, _ = ToEvent(frame(t, "Event: LocalBridge\nChannel1: Local/1@a-1;1\nChannel2: Local/1@a-1;2\nUniqueid1: 1.1\nUniqueid2: 1.2"), "", recv)
	if ev.Type != asterisk.TypeLocalBridge || ev.Chan.Uniqueid != "1.1" || ev.Peer.Uniqueid != "1.2" {
		t.Errorf("LocalBridge 11 = %+v", ev)
	}
}

// FuzzToEvent feeds arbitrary bytes through the frame reader and the normaliser: no panic, and
// what comes out is a valid event.
func FuzzToEvent(f *testing.F) {
	for _, name := range []string{"inbound_answered", "attended_transfer", "click_to_call_norec"} {
		src, err := transcripts.AMI(name)
		if err != nil {
			f.Fatal(err)
		}
		// Seed with single frames (whole transcripts are too large to mutate usefully).
		for i, fr := range bytes.Split(src, []byte("\r\n\r\n")) {
			if i%7 == 0 {
				f.Add(append(fr, "\r\n\r\n"...))
			}
		}
	}
	f.Add([]byte("Event: Dial\nSubEvent: End\nChannel: SIP/a-1\n\nEvent: Bridge\nBridgestate: Unlink\n\n"))
	f.Add([]byte("Event: CoreShowChannel\nDuration: 99:99:99999999999999999999\nTimestamp: 1.9999999999999\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data))
		for i := 0; i < 64; i++ {
			fr, err := rd.ReadFrame()
			if errors.Is(err, ErrFrameTooLarge) {
				continue
			}
			if err != nil {
				return
			}
			ev, ok := ToEvent(fr, "fuzz", recv)
			if !ok {
				continue
			}
			if ev.Name == "" || ev.PBX != "fuzz" || ev.Time.IsZero() {
				t.Fatalf("incomplete event %+v", ev)
			}
			if ev.Type.String() == "" {
				t.Fatalf("type without a name: %d", ev.Type)
			}
			if (ev.Type == asterisk.TypeBlindTransfer || ev.Type == asterisk.TypeAttendedTransfer) && ev.Transfer == nil {
				t.Fatalf("transfer event without Transfer")
			}
		}
	})
}

// TestSlotLookup: the fast table finds every header of keySlots and nothing else.
func TestSlotLookup(t *testing.T) {
	t.Parallel()
	maxProbe := 0
	for k, want := range keySlots {
		got, ok := slotLookup.lookup(k)
		if !ok || got != want {
			t.Errorf("%q: slot %d %v, want %d", k, got, ok, want)
		}
		n := 0
		for i := slotHash(k); slotLookup.keys[i] != k; i = (i + 1) & (slotTableSize - 1) {
			n++
		}
		maxProbe = max(maxProbe, n)
	}
	for _, k := range []string{"", "Privilege", "ChannelStateDesc", "Language", "channel", "Channel ", "ChanVariable(x)", "Uniqueid2x"} {
		if slot, ok := slotLookup.lookup(k); ok {
			t.Errorf("%q found (slot %d)", k, slot)
		}
	}
	t.Logf("%d keys, longest probe %d", len(keySlots), maxProbe)
}
