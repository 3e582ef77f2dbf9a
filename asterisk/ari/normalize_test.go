package ari

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

var recv = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

// TestToEventTranscripts normalises every ARI message of every transcript.
func TestToEventTranscripts(t *testing.T) {
	t.Parallel()
	for _, name := range transcripts.Scenarios() {
		src, err := transcripts.ARI(name)
		if err != nil {
			t.Fatal(err)
		}
		meta, _ := transcripts.Meta(name)
		var m struct {
			Counts map[string]int `json:"ari_event_counts"`
		}
		if err := json.Unmarshal(meta, &m); err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		sc := bufio.NewScanner(bytes.NewReader(src))
		sc.Buffer(nil, MaxMessageSize)
		for sc.Scan() {
			ev, ok, err := ToEvent(sc.Bytes(), "lab", recv)
			if err != nil || !ok {
				t.Fatalf("%s: %v (ok %v) on %s", name, err, ok, sc.Text())
			}
			counts[ev.Name]++
			if _, known := eventTypes[ev.Name]; known && ev.Type == asterisk.TypeUnknown {
				t.Errorf("%s: %s normalised to unknown", name, ev.Name)
			}
			if ev.Time.Equal(recv) || ev.Time.Location() != time.UTC {
				t.Errorf("%s: %s: timestamp not parsed: %v", name, ev.Name, ev.Time)
			}
			switch ev.Type {
			case asterisk.TypeNewChannel, asterisk.TypeHangup, asterisk.TypeBridgeEnter:
				if ev.Chan.Uniqueid == "" || ev.Chan.Name == "" || ev.Chan.Linkedid != "" {
					t.Errorf("%s: %s channel %+v", name, ev.Name, ev.Chan)
				}
			case asterisk.TypeDialBegin, asterisk.TypeDialState, asterisk.TypeDialEnd:
				if ev.Peer.Uniqueid == "" {
					t.Errorf("%s: Dial without peer", name)
				}
			}
		}
		for n, c := range m.Counts {
			if counts[n] != c {
				t.Errorf("%s: %d %s, meta says %d", name, counts[n], n, c)
			}
		}
	}
}

func TestToEventFields(t *testing.T) {
	t.Parallel()
	ev, ok, err := ToEvent([]byte(`{"type":"Dial","timestamp":"2026-11-22T00:03:04.938+0000","dialstatus":"ANSWER",
		"caller":{"id":"1.1","name":"PJSIP/provider-1","state":"Ring","caller":{"name":"","number":"+79001234567"},
		"connected":{"name":"","number":"<unknown>"},"dialplan":{"context":"from-pstn","exten":"74951112233","priority":3}},
		"peer":{"id":"1.2","name":"PJSIP/101-2","state":"Up","caller":{"name":"","number":"101"}}}`), "p", recv)
	if err != nil || !ok || ev.Type != asterisk.TypeDialEnd || ev.DialStatus != "ANSWER" || ev.Chan.Uniqueid != "1.1" ||
		ev.Chan.State != asterisk.StateRing || ev.Chan.CallerIDNum != "+79001234567" || ev.Chan.ConnectedNum != "" ||
		ev.Peer.State != asterisk.StateUp || ev.Chan.Context != "from-pstn" || ev.Chan.Priority != 3 ||
		!ev.Time.Equal(time.Date(2026, 11, 22, 0, 3, 4, 938e6, time.UTC)) {
		t.Errorf("Dial = %+v, %v, %v", ev, ok, err)
	}
	for status, typ := range map[string]asterisk.Type{"": asterisk.TypeDialBegin, "RINGING": asterisk.TypeDialState,
		"PROGRESS": asterisk.TypeDialState, "BUSY": asterisk.TypeDialEnd, "CANCEL": asterisk.TypeDialEnd} {
		ev, _, _ := ToEvent([]byte(`{"type":"Dial","dialstatus":"`+status+`","peer":{"id":"1.2"}}`), "", recv)
		if ev.Type != typ || !ev.Time.Equal(recv) {
			t.Errorf("Dial %q = %v", status, ev.Type)
		}
	}
	ev, _, _ = ToEvent([]byte(`{"type":"BridgeMerged","bridge":{"id":"to","bridge_class":"basic"},"bridge_from":{"id":"from"}}`), "", recv)
	if ev.Type != asterisk.TypeBridgeMerge || ev.BridgeID != "from" || ev.ToBridgeID != "to" {
		t.Errorf("BridgeMerged = %+v", ev)
	}
	ev, _, _ = ToEvent([]byte(`{"type":"ChannelEnteredBridge","bridge":{"id":"b","bridge_type":"mixing","bridge_class":"basic"},
		"channel":{"id":"1.2","name":"PJSIP/101-2","channelvars":{"PBXBRIDGE_ORIGINATE_ID":"x"}}}`), "", recv)
	if ev.Type != asterisk.TypeBridgeEnter || ev.BridgeID != "b" || ev.BridgeType != "basic" || ev.Vars["PBXBRIDGE_ORIGINATE_ID"] != "x" {
		t.Errorf("ChannelEnteredBridge = %+v", ev)
	}
	ev, _, _ = ToEvent([]byte(`{"type":"BridgeBlindTransfer","result":"Success","exten":"102","context":"from-internal-xfer",
		"is_external":true,"channel":{"id":"1.2"},"transferee":{"id":"1.1"},"bridge":{"id":"b"}}`), "", recv)
	if ev.Type != asterisk.TypeBlindTransfer || ev.Transfer.Exten != "102" || !ev.Transfer.External ||
		ev.Chan.Uniqueid != "1.2" || ev.Peer.Uniqueid != "1.1" {
		t.Errorf("BridgeBlindTransfer = %+v %+v", ev, ev.Transfer)
	}
	ev, _, _ = ToEvent([]byte(`{"type":"BridgeAttendedTransfer","result":"Success","destination_type":"bridge",
		"destination_bridge":"b1","transferer_first_leg":{"id":"1.2"},"transferer_second_leg":{"id":"1.5"},
		"transferee":{"id":"1.1"},"transfer_target":{"id":"1.6"},"transferer_first_leg_bridge":{"id":"b1"},
		"transferer_second_leg_bridge":{"id":"b2"}}`), "", recv)
	if ev.Type != asterisk.TypeAttendedTransfer || ev.Chan.Uniqueid != "1.2" || ev.Peer.Uniqueid != "1.1" ||
		ev.Transfer.Second.Uniqueid != "1.5" || ev.Transfer.Target.Uniqueid != "1.6" || ev.BridgeID != "b1" ||
		ev.ToBridgeID != "b2" || ev.Transfer.DestBridgeID != "b1" {
		t.Errorf("BridgeAttendedTransfer = %+v %+v", ev, ev.Transfer)
	}
	ev, _, _ = ToEvent([]byte(`{"type":"ChannelUserevent","eventname":"CRM","userevent":{"a":"1","n":2}}`), "", recv)
	if ev.Type != asterisk.TypeUserEvent || ev.Vars["UserEvent"] != "CRM" || ev.Vars["a"] != "1" || ev.Vars["n"] != "2" {
		t.Errorf("ChannelUserevent = %+v", ev)
	}
	ev, ok, err = ToEvent([]byte(`{"type":"StasisStart","channel":{"id":"1"}}`), "", recv)
	if err != nil || !ok || ev.Type != asterisk.TypeUnknown || ev.Name != "StasisStart" {
		t.Errorf("StasisStart = %+v %v %v", ev, ok, err)
	}
	if _, ok, err := ToEvent([]byte(`{"nope":1}`), "", recv); ok || err != nil {
		t.Errorf("message without type: ok %v err %v", ok, err)
	}
}

func TestToEventErrors(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{
		``, `{`, `[1,2]`, `"Dial"`, `{"type":1}`, `{"type":"Dial","peer":"x"}`, `{"type":"ChannelDestroyed","cause":"16"}`,
		`{"type":"Dial"}`, `{"type":"ChannelCreated","channel":{"caller":[]}}`,
	} {
		_, ok, err := ToEvent([]byte(msg), "", recv)
		if err == nil || ok {
			t.Errorf("ToEvent(%q): want an error, got ok %v err %v", msg, ok, err)
		} else if !strings.HasPrefix(err.Error(), "ari: ") {
			t.Errorf("error %q lacks the component prefix", err)
		}
	}
	big := append([]byte(`{"type":"X","pad":"`), bytes.Repeat([]byte("a"), MaxMessageSize)...)
	if _, _, err := ToEvent(big, "", recv); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over-large message: %v", err)
	}
}

func TestSnapshot(t *testing.T) {
	t.Parallel()
	ev, err := Snapshot([]byte(`{"id":"1.2","name":"PJSIP/101-2","state":"Up","caller":{"number":"101"},
		"dialplan":{"context":"from-internal","exten":"102","app_name":"AppDial"},"creationtime":"2026-11-22T00:03:02.933+0000"}`),
		"b1", "p", recv)
	if err != nil || ev.Type != asterisk.TypeSnapshot || ev.BridgeID != "b1" || ev.Application != "AppDial" ||
		!ev.Chan.Created.Equal(time.Date(2026, 11, 22, 0, 3, 2, 933e6, time.UTC)) || ev.Chan.State != asterisk.StateUp {
		t.Errorf("Snapshot = %+v, %v", ev, err)
	}
	if _, err := Snapshot([]byte(`{"id":`), "", "", recv); err == nil {
		t.Error("broken channel JSON accepted")
	}
}

// FuzzToEvent: arbitrary messages never panic; errors are prefixed; events are complete.
func FuzzToEvent(f *testing.F) {
	for _, name := range []string{"inbound_answered", "attended_transfer", "blind_transfer"} {
		src, err := transcripts.ARI(name)
		if err != nil {
			f.Fatal(err)
		}
		for i, line := range bytes.Split(src, []byte("\n")) {
			if i%9 == 0 && len(line) > 0 {
				f.Add(line)
			}
		}
	}
	f.Add([]byte(`{"type":"Dial","peer":{"id":"1"},"timestamp":"2026-13-99T99:99:99.999+9999"}`))
	f.Add([]byte(`{"type":"ChannelUserevent","userevent":{"a":{"b":[1,2,{"c":null}]}}}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		ev, ok, err := ToEvent(msg, "fuzz", recv)
		if err != nil {
			if ok || !strings.HasPrefix(err.Error(), "ari: ") {
				t.Fatalf("error %v with ok %v", err, ok)
			}
			return
		}
		if ok && (ev.Name == "" || ev.PBX != "fuzz" || ev.Time.IsZero()) {
			t.Fatalf("incomplete event %+v", ev)
		}
		if ok && (ev.Type == asterisk.TypeBlindTransfer || ev.Type == asterisk.TypeAttendedTransfer) && ev.Transfer == nil {
			t.Fatal("transfer without Transfer")
		}
	})
}
