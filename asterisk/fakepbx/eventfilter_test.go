package fakepbx

import (
	"bytes"
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

const (
	evNewchannel = "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/101-0000002a\r\nExten: 101\r\n\r\n"
	evVarSet     = "Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: Local/101@phones-00000001;1\r\nVariable: __FROM_DID\r\nValue: 74951112200\r\n\r\n"
	evHangupReq  = "Event: HangupRequest\r\nPrivilege: call,all\r\nChannel: PJSIP/101-0000002a\r\nCause: 16\r\n\r\n"
	evChanVar    = "Event: Newstate\r\nChannel: PJSIP/101-0000002a\r\nChanVariable: FROM_DID=1\r\n\r\n"
)

// TestEventFilterRules: the rules of Asterisk's manager (see EventFilter), one case each.
func TestEventFilterRules(t *testing.T) {
	t.Parallel()
	all := []string{evNewchannel, evVarSet, evHangupReq, evChanVar}
	for _, tc := range []struct {
		name  string
		lines []string
		pass  []string // of all, in order
	}{
		{"no filter", nil, all},
		{"legacy include is unanchored", []string{"eventfilter = Event: Hangup"}, []string{evHangupReq}},
		{"legacy includes combine with OR", []string{"eventfilter = Event: Newchannel", "eventfilter = Variable: __FROM_DID"},
			[]string{evNewchannel, evVarSet}},
		{"legacy exclude only", []string{"eventfilter = !Event: VarSet"}, []string{evNewchannel, evHangupReq, evChanVar}},
		{"include then exclude", []string{"eventfilter = Channel: PJSIP/", "eventfilter = !Event: HangupRequest"},
			[]string{evNewchannel, evChanVar}},
		{"dot matches line ends", []string{"eventfilter = ^Event: VarSet[[:space:]].*[[:space:]]Variable: _{0,2}FROM_DID[[:space:]]"},
			[]string{evVarSet}},
		{"ChanVariable is not Variable", []string{"eventfilter = [[:space:]]Variable: FROM_DID"}, nil},
		{"advanced name", []string{"eventfilter(action(include),name(Newchannel)) ="}, []string{evNewchannel}},
		{"advanced name is exact", []string{"eventfilter(name(Hangup)) ="}, nil},
		{"advanced header regex", []string{"eventfilter(name(VarSet),header(Variable),method(regex)) = ^_{0,2}FROM_DID$"},
			[]string{evVarSet}},
		{"advanced header starts_with", []string{"eventfilter(header(Channel),method(starts_with)) = PJSIP/"},
			[]string{evNewchannel, evHangupReq, evChanVar}},
		{"advanced header exact", []string{"eventfilter(header(Cause),method(exact)) = 16"}, []string{evHangupReq}},
		{"advanced header without the header", []string{"eventfilter(header(Cause)) ="}, []string{evHangupReq}},
		{"advanced exclude", []string{"eventfilter(action(exclude),name(VarSet)) ="}, []string{evNewchannel, evHangupReq, evChanVar}},
		{"bang excludes an advanced line", []string{"eventfilter(name(VarSet),header(Value),method(contains)) = !7495"},
			[]string{evNewchannel, evHangupReq, evChanVar}},
		{"action wins over bang", []string{"eventfilter(action(include),name(VarSet),header(Value),method(ends_with)) = !2200"},
			[]string{evVarSet}},
		{"comments and blanks", []string{"; a comment", "", "eventfilter = Newchannel"}, []string{evNewchannel}},
	} {
		f, err := ParseEventFilter(tc.lines)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var got []string
		for _, ev := range all {
			if f.Pass([]byte(ev)) {
				got = append(got, ev)
			}
		}
		if !slices.Equal(got, tc.pass) {
			t.Errorf("%s: passed %q, want %q", tc.name, names(got), names(tc.pass))
		}
	}
	var nilFilter *EventFilter
	if !nilFilter.Pass([]byte(evVarSet)) {
		t.Error("a nil filter refused an event")
	}
}

func names(frames []string) []string {
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = eventName([]byte(f))
	}
	return out
}

// TestEventFilterRefuses: the lines Asterisk refuses are errors naming the line.
func TestEventFilterRefuses(t *testing.T) {
	t.Parallel()
	for _, line := range []string{
		"eventfilter =",
		"eventfilter = !",
		"eventfilter = XX[X",
		"eventfilter(method(regex)) = XX[X",
		"eventfilter() = XXX",
		"eventfilter(action(include) =",
		"eventfilter(action(inlude)) =",
		"eventfilter(nnnn(yyy)) = XXX",
		"eventfilter(name(VarSet),method(contains)) =",
		"eventfilter(name(VarSet)) = XXX",
		"eventfilter(method(none)) =",
		"eventfilter(name()) =",
		"manager = x",
		"eventfilter",
	} {
		_, err := ParseEventFilter([]string{line})
		if err == nil || !strings.Contains(err.Error(), line) {
			t.Errorf("%q: err %v, want an error naming the line", line, err)
		}
	}
	if _, err := Start(Config{EventFilter: []string{"eventfilter ="}}); err == nil {
		t.Error("Start accepted a refused line")
	}
}

// TestFilterCapture keeps responses and the events the filter passes, byte for byte.
func TestFilterCapture(t *testing.T) {
	t.Parallel()
	f, err := ParseEventFilter([]string{"eventfilter(name(Newchannel)) ="})
	if err != nil {
		t.Fatal(err)
	}
	resp := "Response: Success\r\nActionID: 1\r\n\r\n"
	in := "Asterisk Call Manager/11.0.0\r\n" + resp + evVarSet + evNewchannel + "\r\n" + evHangupReq + "Event: Newchannel\r\nCut: x\r\n"
	want := "Asterisk Call Manager/11.0.0\r\n" + resp + evNewchannel + "Event: Newchannel\r\nCut: x\r\n"
	if got := string(f.FilterCapture([]byte(in))); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

// TestServerEventFilter: a server with EventFilter sends only the events the lines pass, the
// replays' and its own (UserEvent), and still answers actions.
func TestServerEventFilter(t *testing.T) {
	t.Parallel()
	lines := []string{"eventfilter(action(include),name(Newchannel)) =",
		"eventfilter(action(include),name(UserEvent),header(UserEvent),method(exact)) = keep"}
	s := start(t, Config{Speed: math.Inf(1), EventFilter: lines})
	c := dial(t, s, "on")
	var want []string
	for _, f := range transcriptFrames(t, "inbound_answered") {
		if f.Event() == "Newchannel" {
			want = append(want, f.Get("Channel"))
		}
	}
	played, err := s.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	<-played.Done()
	s.UserEvent("drop")
	s.UserEvent("keep")
	var got []string
	for _, f := range collect(t, c, len(want)+1) {
		switch f.Event() {
		case "Newchannel":
			got = append(got, f.Get("Channel"))
		case "UserEvent":
			if f.Get("UserEvent") != "keep" || len(got) != len(want) {
				t.Fatalf("UserEvent %q after %d channels", f.Get("UserEvent"), len(got))
			}
		default:
			t.Fatalf("event %s passed the filter", f.Event())
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d channels, want %d", len(got), len(want))
	}
	for i := range got { // fresh ids, same technology and extension
		if before, _, _ := strings.Cut(got[i], "-"); !strings.HasPrefix(want[i], before) {
			t.Errorf("channel %d %q, want one like %q", i, got[i], want[i])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// FuzzEventFilter: any line either is refused or decides any event without panicking, and a
// capture filtered with it only loses event frames.
func FuzzEventFilter(f *testing.F) {
	f.Add("eventfilter = ^Event: (Newchannel|Hangup)[[:space:]]", []byte(evNewchannel))
	f.Add("eventfilter(action(include),name(VarSet),header(Variable),method(regex)) = ^_{0,2}(FROM_DID)$", []byte(evVarSet))
	f.Add("eventfilter(name(VarSet),header(Channel),method(exact)) = !ZZZ", []byte(evVarSet+evChanVar))
	f.Add("eventfilter(header(Channel ),method(ends_with)) = a", []byte("Event: X\nChannel:  \t\n\n"))
	f.Fuzz(func(t *testing.T, line string, capture []byte) {
		flt, err := ParseEventFilter([]string{line})
		if err != nil {
			return
		}
		_ = flt.Pass(capture)
		out := flt.FilterCapture(capture)
		if len(out) > len(capture) {
			t.Fatalf("filtered capture grew: %d > %d bytes", len(out), len(capture))
		}
		again := flt.FilterCapture(out)
		if !bytes.Equal(again, out) {
			t.Fatalf("filtering twice changed the capture:\n%q\n%q", out, again)
		}
	})
}

// TestTranscriptsFilterCapture: filtering with no line keeps every transcript whole.
func TestTranscriptsFilterCapture(t *testing.T) {
	t.Parallel()
	f, err := ParseEventFilter(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.AMI(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.FilterCapture(data); !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes became %d", name, len(data), len(got))
		}
	}
}
