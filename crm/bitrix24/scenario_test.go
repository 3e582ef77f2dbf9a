package bitrix24

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
)

// The scenarios below are built by hand from asterisk/transcripts/<name>.meta.json (what really
// happened on the lab PBX) until the call model lands: the same Live events and Record the model
// must produce for them.

func ts(f float64) time.Time {
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}

func tp(f float64) *time.Time { t := ts(f); return &t }

type scenario struct {
	name string
	live []call.Live
	rec  call.Record
	// recBytes is the size of the recording file (0: no recording).
	recBytes int

	wantType       int
	wantRegUser    int
	wantFinishUser int
	wantDuration   int
	wantStatus     string
	wantShown      []int // users the card was shown to while ringing (register + show)
	wantHidden     []int // users it was hidden from before the finish
	// beforeAnswer is the index of the first answered event: the card must exist before it.
	beforeAnswer int
}

func inboundEv(kind call.LiveKind, id, line, ext string, at float64, start float64) call.Live {
	return call.Live{Kind: kind, CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567",
		Line: line, Ext: ext, At: ts(at), StartedAt: ts(start)}
}

func scenarios() []scenario {
	var out []scenario
	{ // inbound_answered: DID +74951112233 -> 101 rings 2 s, answers, talk 3 s.
		id, line, st := "1795305782.0", "+74951112233", 1795305782.934
		out = append(out, scenario{
			name: "inbound_answered",
			live: []call.Live{
				inboundEv(call.LiveRinging, id, line, "101", 1795305782.938, st),
				inboundEv(call.LiveAnswered, id, line, "101", 1795305784.937, st),
				inboundEv(call.LiveHangup, id, line, "", 1795305787.939, st),
			},
			rec: call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: line,
				StartedAt: ts(st), AnsweredAt: tp(1795305784.937), EndedAt: ts(1795305787.939), Disposition: call.Answered,
				AnsweredBy: "101", Rang: []string{"101"}, RingSeconds: 2, TalkSeconds: 3,
				Legs:      []call.Leg{{Ext: "101", AnsweredAt: tp(1795305784.937), EndedAt: tp(1795305787.939), TalkSeconds: 3}},
				Recording: "/var/spool/asterisk/monitor/in-74951112233-79001234567-20261122-000302-1795305782.1.wav", HangupCause: 16},
			recBytes: 47404, wantType: 2, wantRegUser: 1269, wantFinishUser: 1269, wantDuration: 3, wantStatus: "200",
			wantShown: []int{1269}, beforeAnswer: 1,
		})
	}
	{ // inbound_ringgroup: Dial(101&102); 102 answers after 3 s, 101 is cancelled.
		id, line, st := "1795305823.39", "+74951112244", 1795305823.029
		out = append(out, scenario{
			name: "inbound_ringgroup",
			live: []call.Live{
				inboundEv(call.LiveRinging, id, line, "101", 1795305823.031, st),
				inboundEv(call.LiveRinging, id, line, "102", 1795305823.031, st),
				inboundEv(call.LiveAnswered, id, line, "102", 1795305826.032, st),
				inboundEv(call.LiveStopRinging, id, line, "101", 1795305826.032, st),
				inboundEv(call.LiveHangup, id, line, "", 1795305829.036, st),
			},
			rec: call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: line,
				StartedAt: ts(st), AnsweredAt: tp(1795305826.032), EndedAt: ts(1795305829.036), Disposition: call.Answered,
				AnsweredBy: "102", Rang: []string{"101", "102"}, RingSeconds: 3, TalkSeconds: 3,
				Legs:      []call.Leg{{Ext: "102", AnsweredAt: tp(1795305826.032), EndedAt: tp(1795305829.036), TalkSeconds: 3}},
				Recording: "/var/spool/asterisk/monitor/in-74951112244-79001234567-20261122-000343-1795305823.40.wav", HangupCause: 16},
			recBytes: 48044, wantType: 2, wantRegUser: 1269, wantFinishUser: 1270, wantDuration: 3, wantStatus: "200",
			wantShown: []int{1269, 1270}, wantHidden: []int{1269}, beforeAnswer: 2,
		})
	}
	{ // inbound_ringgroup_or_queue: Queue(sales) ringall; 101 never answers, 102 answers after 3 s.
		id, line, st := "1795305809.22", "+74951112200", 1795305809.996
		out = append(out, scenario{
			name: "inbound_ringgroup_or_queue",
			live: []call.Live{
				inboundEv(call.LiveRinging, id, line, "101", 1795305810.0, st),
				inboundEv(call.LiveRinging, id, line, "102", 1795305810.0, st),
				inboundEv(call.LiveAnswered, id, line, "102", 1795305813.02, st),
				inboundEv(call.LiveStopRinging, id, line, "101", 1795305813.02, st),
				inboundEv(call.LiveHangup, id, line, "", 1795305818.0, st),
			},
			rec: call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: line,
				StartedAt: ts(st), AnsweredAt: tp(1795305813.02), EndedAt: ts(1795305818.0), Disposition: call.Answered,
				AnsweredBy: "102", Rang: []string{"101", "102"}, RingSeconds: 3, TalkSeconds: 4, Flags: []string{"queue"},
				Legs:      []call.Leg{{Ext: "102", AnsweredAt: tp(1795305813.02), EndedAt: tp(1795305818.0), TalkSeconds: 4}},
				Recording: "/var/spool/asterisk/monitor/in-74951112200-79001234567-20261122-000329-1795305809.23.wav", HangupCause: 16},
			recBytes: 80000, wantType: 2, wantRegUser: 1269, wantFinishUser: 1270, wantDuration: 4, wantStatus: "200",
			wantShown: []int{1269, 1270}, wantHidden: []int{1269}, beforeAnswer: 2,
		})
	}
	{ // blind_transfer: 101 answers, blind-transfers to 102, 102 answers; talk 12 s in all.
		id, line, st := "1795305871.81", "+74951112233", 1795305871.137
		out = append(out, scenario{
			name: "blind_transfer",
			live: []call.Live{
				inboundEv(call.LiveRinging, id, line, "101", 1795305871.139, st),
				inboundEv(call.LiveAnswered, id, line, "101", 1795305872.142, st),
				{Kind: call.LiveTransferred, CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567",
					Line: line, Ext: "102", From: "101", At: ts(1795305874.643), StartedAt: ts(st)},
				inboundEv(call.LiveRinging, id, line, "102", 1795305874.646, st),
				inboundEv(call.LiveAnswered, id, line, "102", 1795305876.649, st),
				inboundEv(call.LiveHangup, id, line, "", 1795305884.145, st),
			},
			rec: call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: line,
				StartedAt: ts(st), AnsweredAt: tp(1795305872.142), EndedAt: ts(1795305884.145), Disposition: call.Answered,
				AnsweredBy: "101", Rang: []string{"101", "102"}, RingSeconds: 1, TalkSeconds: 12,
				Legs: []call.Leg{
					{Ext: "101", AnsweredAt: tp(1795305872.142), EndedAt: tp(1795305874.643), TalkSeconds: 2},
					{Ext: "102", AnsweredAt: tp(1795305876.649), EndedAt: tp(1795305884.145), TalkSeconds: 7},
				},
				Transfers: []call.Transfer{{Kind: "blind", From: "101", To: "102", At: ts(1795305874.643)}},
				Recording: "/var/spool/asterisk/monitor/in-74951112233-79001234567-20261122-000431-1795305871.82.wav", HangupCause: 16},
			recBytes: 159084, wantType: 2, wantRegUser: 1269, wantFinishUser: 1270, wantDuration: 12, wantStatus: "200",
			wantShown: []int{1269, 1270}, wantHidden: []int{1269}, beforeAnswer: 1,
		})
	}
	{ // inbound_missed: 101 never answers; the customer gives up after 6 s.
		id, line, st := "1795305792.7", "+74951112233", 1795305792.958
		out = append(out, scenario{
			name: "inbound_missed",
			live: []call.Live{
				inboundEv(call.LiveRinging, id, line, "101", 1795305792.96, st),
				inboundEv(call.LiveStopRinging, id, line, "101", 1795305799.117, st),
				inboundEv(call.LiveHangup, id, line, "", 1795305799.117, st),
			},
			rec: call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: line,
				StartedAt: ts(st), EndedAt: ts(1795305799.117), Disposition: call.NoAnswer, Rang: []string{"101"},
				RingSeconds: 6, HangupCause: 19,
				Recording: "/var/spool/asterisk/monitor/in-74951112233-79001234567-20261122-000312-1795305792.8.wav"},
			recBytes: 1024, wantType: 2, wantRegUser: 1269, wantFinishUser: 1269, wantDuration: 0, wantStatus: "304",
			wantShown: []int{1269}, wantHidden: []int{1269}, beforeAnswer: -1,
		})
	}
	{ // inbound_busy_ext: 101 is busy.
		id, line, st := "1795305804.14", "+74951112233", 1795305804.483
		out = append(out, scenario{
			name: "inbound_busy_ext",
			rec: call.Record{CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: line,
				StartedAt: ts(st), EndedAt: ts(1795305804.487), Disposition: call.Busy, Rang: []string{"101"}, HangupCause: 17},
			wantType: 2, wantRegUser: 1269, wantFinishUser: 1269, wantStatus: "486", beforeAnswer: -1,
		})
	}
	for _, o := range []struct {
		name, id   string
		disp       call.Disposition
		cause      int
		talk       int
		status     string
		start, end float64
		rec        string
	}{
		{"outbound_answered", "1795305834.50", call.Answered, 16, 3, "200", 1795305834.053, 1795305840.06, "out-89001234567-101-20261122-000354-1795305834.51.wav"},
		{"outbound_no_answer", "1795305845.57", call.NoAnswer, 0, 0, "304", 1795305845.084, 1795305855.088, ""},
		{"outbound_busy", "1795305860.65", call.Busy, 17, 0, "486", 1795305860.118, 1795305860.121, ""},
		{"outbound_congestion", "1795305865.73", call.Failed, 34, 0, "503", 1795305865.626, 1795305865.634, ""},
	} {
		rec := call.Record{CallID: o.id, PBX: "pbx1", Direction: call.Outbound, Customer: "+79001234567", Line: "+74951112233",
			StartedAt: ts(o.start), EndedAt: ts(o.end), Disposition: o.disp, TalkSeconds: o.talk, HangupCause: o.cause,
			Legs: []call.Leg{{Ext: "101"}}}
		// Every outbound call shows the caller its card when the customer's leg rings
		// (callmodel: LiveRinging for the dialling extension), answered or not.
		sc := scenario{name: o.name, wantType: 1, wantRegUser: 1269, wantFinishUser: 1269, wantDuration: o.talk, wantStatus: o.status,
			wantShown: []int{1269}, beforeAnswer: 1}
		mk := func(k call.LiveKind, ext string, at float64) call.Live {
			return call.Live{Kind: k, CallID: o.id, PBX: "pbx1", Direction: call.Outbound, Customer: "+79001234567",
				Line: "+74951112233", Ext: ext, At: ts(at), StartedAt: ts(o.start)}
		}
		live := []call.Live{mk(call.LiveRinging, "101", o.start)}
		if o.disp == call.Answered {
			ans := ts(o.end - 3)
			rec.AnsweredAt, rec.AnsweredBy = &ans, "101"
			rec.Legs[0].AnsweredAt, rec.Legs[0].TalkSeconds = &ans, o.talk
			rec.Recording = "/var/spool/asterisk/monitor/" + o.rec
			sc.recBytes = 96000
			live = append(live, mk(call.LiveAnswered, "101", o.end-3))
		}
		live = append(live, mk(call.LiveHangup, "", o.end))
		sc.rec, sc.live = rec, live
		out = append(out, sc)
	}
	return out
}

// TestTranscriptScenarios feeds the live events and the record of each transcript scenario and
// checks the fake portal: one call with the right user, type, duration, status code and
// recording; the card registered before the answer, shown to every ringing agent, hidden from
// those who did not answer.
func TestTranscriptScenarios(t *testing.T) {
	t.Parallel()
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			f := crmtest.StartBitrix24(t)
			e := newEnv(t, f)
			if err := e.a.users.refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			if sc.recBytes > 0 {
				writeWAV(t, e.recs, baseName(sc.rec.Recording), sc.recBytes)
			}
			key := sc.rec.Key()
			for i, ev := range sc.live {
				if i == sc.beforeAnswer {
					c := onlyCall(t, f.State(), key)
					mustf(t, c.State == "registered", "before the answer the call is %s", c.State)
					mustf(t, len(c.VisibleTo) > 0, "no card is shown before the answer")
					var ringing []int
					for _, prev := range sc.live[:i] {
						if prev.Kind == call.LiveRinging {
							ringing = append(ringing, map[string]int{"101": 1269, "102": 1270, "103": 1271}[prev.Ext])
						}
					}
					slices.Sort(ringing)
					mustf(t, slices.Equal(c.VisibleTo, ringing), "before the answer the card is shown to %v, want every ringing agent %v", c.VisibleTo, ringing)
				}
				e.live(ev)
			}
			before := f.State().Requests
			e.deliver(&sc.rec)
			e.deliver(&sc.rec) // a redelivery changes nothing
			s := f.State()
			c := onlyCall(t, s, key)
			mustf(t, c.State == "finished", "call is %s, want finished", c.State)
			mustf(t, c.Type == sc.wantType, "TYPE %d, want %d", c.Type, sc.wantType)
			mustf(t, c.UserID == sc.wantRegUser, "registered for user %d, want %d", c.UserID, sc.wantRegUser)
			mustf(t, c.FinishUserID == sc.wantFinishUser, "finished as user %d, want %d", c.FinishUserID, sc.wantFinishUser)
			mustf(t, c.Duration == sc.wantDuration, "DURATION %d, want %d", c.Duration, sc.wantDuration)
			mustf(t, c.StatusCode == sc.wantStatus, "STATUS_CODE %s, want %s", c.StatusCode, sc.wantStatus)
			mustf(t, c.AddToChat == "1", "ADD_TO_CHAT %q, want 1 (explicit)", c.AddToChat)
			mustf(t, c.Phone == "+79001234567", "PHONE_NUMBER %s", c.Phone)
			wantLine := sc.rec.Line
			mustf(t, c.Line == wantLine, "LINE_NUMBER %q, want %q", c.Line, wantLine)
			mustf(t, c.StartDate == sc.rec.StartedAt.In(e.a.loc).Format(isoOffset), "CALL_START_DATE %q", c.StartDate)
			mustf(t, c.RecordAttaches <= 1, "recording attached %d times", c.RecordAttaches)
			if sc.recBytes > 0 {
				mustf(t, c.Record != nil && c.Record.Size == sc.recBytes && c.Record.Filename == baseName(sc.rec.Recording),
					"recording %+v, want %s of %d bytes", c.Record, baseName(sc.rec.Recording), sc.recBytes)
			} else {
				mustf(t, c.Record == nil, "unexpected recording %+v", c.Record)
			}
			var shown, hidden []int
			for _, ce := range s.Cards {
				if ce.CallID != c.CallID {
					continue
				}
				switch ce.Action {
				case "register", "show":
					shown = append(shown, ce.Users...)
				case "hide":
					hidden = append(hidden, ce.Users...)
				}
			}
			slices.Sort(shown)
			slices.Sort(hidden)
			mustf(t, slices.Equal(shown, sc.wantShown), "card shown to %v, want %v (events %+v)", shown, sc.wantShown, s.Cards)
			mustf(t, slices.Equal(hidden, sc.wantHidden), "card hidden from %v, want %v (events %+v)", hidden, sc.wantHidden, s.Cards)
			// The redelivery made no request.
			after := s.Requests
			for m, n := range after {
				if m == "telephony.externalcall.finish" || m == "telephony.externalcall.register" || m == "telephony.externalcall.attachrecord" {
					mustf(t, n-before[m] <= 1, "%s sent %d times by the deliveries", m, n-before[m])
				}
			}
		})
	}
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// TestInternalCallIgnored: internal calls never reach Bitrix24.
func TestInternalCallIgnored(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	rec := &call.Record{CallID: "1795305976.152", PBX: "pbx1", Direction: call.Internal, Disposition: call.Answered,
		AnsweredBy: "102", Rang: []string{"102"}, TalkSeconds: 3, StartedAt: ts(1795305976.332), EndedAt: ts(1795305981.338)}
	e.live(call.Live{Kind: call.LiveRinging, CallID: rec.CallID, PBX: "pbx1", Direction: call.Internal, Ext: "102"})
	e.deliver(rec)
	mustf(t, len(f.State().Calls) == 0, "internal call reached Bitrix24: %+v", f.State().Calls)
}
