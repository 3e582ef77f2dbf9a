package callmodel_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
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

// metaCall is the part of a transcript's .meta.json an outbound card is checked against: what
// the recording PBX did, not what the model made of it.
type metaCall struct {
	Linkedid string `json:"linkedid"`
	Channels []struct {
		Name   string  `json:"name"`
		Hungup float64 `json:"hungup"`
	} `json:"channels"`
	Dials []struct {
		To     string  `json:"to"`
		Status string  `json:"status"`
		Begin  float64 `json:"begin"`
		End    float64 `json:"end"`
	} `json:"dials"`
}

func readMeta(tb testing.TB, name string) []metaCall {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "asterisk", "transcripts", name+".meta.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var m struct {
		Calls []metaCall `json:"calls"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		tb.Fatalf("%s.meta.json: %v", name, err)
	}
	return m.Calls
}

func unixTime(f float64) time.Time {
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}

// liveOf replays a transcript through a Builder and returns the live events and records.
func liveOf(tb testing.TB, opts callmodel.Options, transport, name string) *sink {
	tb.Helper()
	s := &sink{}
	b := callmodel.NewBuilder(opts, s)
	var last time.Time
	apply := func(ev *asterisk.Event) {
		last = ev.Time
		b.Apply(ev)
	}
	switch transport {
	case "ami":
		src, err := transcripts.AMI(name)
		if err != nil {
			tb.Fatal(err)
		}
		rd := ami.NewReader(bufio.NewReader(bytes.NewReader(src)))
		rd.SetFilter(ami.SourceFilter(opts.Variables()))
		if _, err := rd.ReadBanner(); err != nil {
			tb.Fatal(err)
		}
		for {
			f, err := rd.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatal(err)
			}
			if ev, ok := ami.ToEvent(f, "", last); ok {
				apply(&ev)
			}
		}
	default:
		src, err := transcripts.ARI(name)
		if err != nil {
			tb.Fatal(err)
		}
		for line := range bytes.Lines(src) {
			ev, ok, err := ari.ToEvent(bytes.TrimSpace(line), "", last)
			if err != nil {
				tb.Fatal(err)
			}
			if ok {
				apply(&ev)
			}
		}
	}
	b.Flush(last, true)
	return s
}

// TestGoldenOutboundCards: the live events of every outbound lab call, AMI and ARI (contract of
// ringOutbound in doc.go, "Live events"). The extension that dials (101) gets LiveRinging with
// the dialled number when the trunk leg is dialled, LiveAnswered when the customer answers,
// LiveHangup at the end, and nothing else: no LiveStopRinging for the trunk leg, and for a
// click-to-call no event while only the agent's own phone rings (one card, when the customer's
// leg rings). Times come from the transcripts' meta files: the Dial of the trunk leg
// (Local/…@pstn-…;1) and the last hang-up of the call's channels.
func TestGoldenOutboundCards(t *testing.T) {
	t.Parallel()
	opts := loadOptions(t, "testdata/lab.yaml")
	scenarios := []string{"outbound_answered", "outbound_busy", "outbound_no_answer", "outbound_congestion",
		"click_to_call", "click_to_call_noopt", "click_to_call_norec"}
	for _, name := range scenarios {
		meta := readMeta(t, name)
		if len(meta) != 1 {
			t.Fatalf("%s: %d calls in the meta file, want 1", name, len(meta))
		}
		mc := meta[0]
		var trunkBegin, trunkAnswer, end time.Time
		for _, d := range mc.Dials {
			if strings.Contains(d.To, "@pstn-") {
				trunkBegin = unixTime(d.Begin)
				if d.Status == "ANSWER" {
					trunkAnswer = unixTime(d.End)
				}
			}
		}
		for _, ch := range mc.Channels {
			if at := unixTime(ch.Hungup); at.After(end) {
				end = at
			}
		}
		if trunkBegin.IsZero() {
			t.Fatalf("%s: no Dial of the trunk leg in the meta file", name)
		}
		type want struct {
			kind call.LiveKind
			ext  string
			at   time.Time
		}
		wants := []want{{call.LiveRinging, "101", trunkBegin}}
		if !trunkAnswer.IsZero() {
			wants = append(wants, want{call.LiveAnswered, "101", trunkAnswer})
		}
		wants = append(wants, want{call.LiveHangup, "", end})
		for _, tr := range []string{"ami", "ari"} {
			s := liveOf(t, opts, tr, name)
			var got []call.Live
			for _, l := range s.live {
				if l.CallID == mc.Linkedid {
					got = append(got, l)
				}
			}
			if len(got) != len(wants) {
				t.Errorf("%s %s: %d live events %v, want %d", name, tr, len(got), kinds(got), len(wants))
				continue
			}
			for i, w := range wants {
				g := got[i]
				if g.Kind != w.kind || g.Ext != w.ext || g.Direction != call.Outbound || g.Customer != "+79001234567" {
					t.Errorf("%s %s: event %d = %s ext %q %s customer %q, want %s ext %q outbound customer +79001234567",
						name, tr, i, g.Kind, g.Ext, g.Direction, g.Customer, w.kind, w.ext)
				}
				if d := g.At.Sub(w.at); d < -timeMargin || d > timeMargin {
					t.Errorf("%s %s: %s at %v, want %v (meta) ± %v", name, tr, g.Kind, g.At, w.at, timeMargin)
				}
			}
			if strings.HasPrefix(name, "click_to_call") && (len(s.recs) != 1 || s.recs[0].OriginateID == "") {
				t.Errorf("%s %s: the click-to-call was not recognised (records %+v)", name, tr, s.recs)
			}
		}
	}
}

func kinds(evs []call.Live) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Kind) + ":" + e.Ext
	}
	return out
}

// TestOutboundCardsEverywhere checks the outbound card contract on every transcript, lab (AMI
// and ARI) and synthetic (PJSIP/FreePBX, default options): each outbound call that dialled a
// trunk gives its calling extension exactly one LiveRinging, with the record's customer, before
// anything else about that extension; no outbound call rings anybody without a customer (a
// click-to-call agent's own phone); a call that never reached a trunk (no route) rings nobody.
func TestOutboundCardsEverywhere(t *testing.T) {
	t.Parallel()
	check := func(name string, s *sink) {
		t.Helper()
		n := 0
		for _, r := range s.recs {
			if r.Direction != call.Outbound {
				continue
			}
			var ringing []call.Live
			for _, l := range s.live {
				if l.CallID != r.CallID {
					continue
				}
				if l.Kind == call.LiveRinging {
					ringing = append(ringing, l)
				}
				if l.Kind == call.LiveStopRinging && l.Ext == r.CallerExt {
					t.Errorf("%s: call %s: LiveStopRinging for the calling extension %s", name, r.CallID, r.CallerExt)
				}
			}
			if r.Trunk == "" {
				if len(ringing) != 0 {
					t.Errorf("%s: call %s never reached a trunk but rang %v", name, r.CallID, kinds(ringing))
				}
				continue
			}
			n++
			if len(ringing) != 1 || ringing[0].Ext != r.CallerExt || ringing[0].Customer != r.Customer ||
				ringing[0].Direction != call.Outbound {
				t.Errorf("%s: call %s (caller %s, customer %s): ringing events %+v, want one for the caller with the customer",
					name, r.CallID, r.CallerExt, r.Customer, ringing)
			}
		}
		if n == 0 && strings.Contains(name, "outbound") {
			t.Errorf("%s: no outbound call with a trunk", name)
		}
	}
	lab := loadOptions(t, "testdata/lab.yaml")
	for _, name := range transcripts.Scenarios() {
		for _, tr := range []string{"ami", "ari"} {
			check(name+" "+tr, liveOf(t, lab, tr, name))
		}
	}
	synth := defaults(t, "")
	dirs, err := filepath.Glob("testdata/synthetic/*/events.ami")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no synthetic transcripts (%v)", err)
	}
	for _, events := range dirs {
		src, err := os.ReadFile(events)
		if err != nil {
			t.Fatal(err)
		}
		s := &sink{}
		b := callmodel.NewBuilder(synth, s)
		rd := ami.NewReader(bufio.NewReader(bytes.NewReader(src)))
		var last time.Time
		for {
			f, err := rd.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev, ok := ami.ToEvent(f, "", last); ok {
				last = ev.Time
				b.Apply(&ev)
			}
		}
		b.Flush(last, true)
		check(filepath.Base(filepath.Dir(events)), s)
	}
}
