package ami

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// readAll reads every frame after the banner, counting dropped frames.
func readAll(t *testing.T, in string) (frames []*Frame, dropped int, end error) {
	t.Helper()
	r := NewReader(strings.NewReader(in))
	if _, err := r.ReadBanner(); err != nil {
		t.Fatalf("banner: %v", err)
	}
	for {
		f, err := r.ReadFrame()
		switch {
		case errors.Is(err, ErrFrameTooLarge):
			dropped++
			continue
		case err != nil:
			return frames, dropped, err
		}
		frames = append(frames, f)
	}
}

const banner = "Asterisk Call Manager/11.0.0\r\n"

func TestReaderFraming(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []Frame
		dropped int
		end     error
	}{
		{
			name: "crlf and lf mixed, blank lines between frames",
			in:   banner + "\r\n\r\nEvent: A\r\nX: 1\r\n\r\n\n\nEvent: B\nY: 2\n\n",
			want: []Frame{
				{Fields: []Field{{"Event", "A"}, {"X", "1"}}},
				{Fields: []Field{{"Event", "B"}, {"Y", "2"}}},
			},
			end: io.EOF,
		},
		{
			name: "values with colons, empty values, no space after colon",
			in:   banner + "Event: A\r\nAppData: Dial(PJSIP/101,30): x\r\nEmpty: \r\nBare:\r\nTight:v\r\n\r\n",
			want: []Frame{{Fields: []Field{
				{"Event", "A"}, {"AppData", "Dial(PJSIP/101,30): x"}, {"Empty", ""}, {"Bare", ""}, {"Tight", "v"},
			}}},
			end: io.EOF,
		},
		{
			name: "multi-line value continues the previous header",
			in:   banner + "Event: VarSet\r\nVariable: NOTE\r\nValue: line one\r\nline two\r\nline three\r\nUniqueid: 1.2\r\n\r\n",
			want: []Frame{{Fields: []Field{
				{"Event", "VarSet"}, {"Variable", "NOTE"}, {"Value", "line one\nline two\nline three"}, {"Uniqueid", "1.2"},
			}}},
			end: io.EOF,
		},
		{
			name: "asterisk 14+ Output lines",
			in:   banner + "Response: Success\r\nActionID: 7\r\nMessage: Command output follows\r\nOutput: Name/username\r\nOutput: \r\nOutput: 2 objects found.\r\n\r\n",
			want: []Frame{{
				Fields: []Field{{"Response", "Success"}, {"ActionID", "7"}, {"Message", "Command output follows"}},
				Output: []string{"Name/username", "", "2 objects found."},
			}},
			end: io.EOF,
		},
		{
			name: "legacy Follows body with blank lines and colons",
			in: banner + "Response: Follows\r\nPrivilege: Command\r\nActionID: 9\r\n" +
				"Channel              Location\n\nVerbosity: 3\nlast line--END COMMAND--\r\n\r\n" +
				"Event: After\r\n\r\n",
			want: []Frame{
				{
					Fields: []Field{{"Response", "Follows"}, {"Privilege", "Command"}, {"ActionID", "9"}},
					Output: []string{"Channel              Location", "", "Verbosity: 3", "last line"},
				},
				{Fields: []Field{{"Event", "After"}}},
			},
			end: io.EOF,
		},
		{
			name:    "over-long line: frame dropped, stream continues",
			in:      banner + "Event: Big\r\nData: " + strings.Repeat("x", MaxLineSize+5) + "\r\nMore: 1\r\n\r\nEvent: Next\r\n\r\n",
			want:    []Frame{{Fields: []Field{{"Event", "Next"}}}},
			dropped: 1,
			end:     io.EOF,
		},
		{
			name:    "frame over the size limit made of many lines: dropped, stream continues",
			in:      banner + "Event: Big\r\n" + strings.Repeat("Key: "+strings.Repeat("y", 1000)+"\r\n", 70) + "\r\nEvent: Next\r\n\r\n",
			want:    []Frame{{Fields: []Field{{"Event", "Next"}}}},
			dropped: 1,
			end:     io.EOF,
		},
		{
			name: "oversized legacy body with blank lines stays in sync",
			in: banner + "Response: Follows\r\nPrivilege: Command\r\n" +
				strings.Repeat(strings.Repeat("z", 1000)+"\n\n", 70) + "--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n",
			want:    []Frame{{Fields: []Field{{"Event", "Next"}}}},
			dropped: 1,
			end:     io.EOF,
		},
		{
			name: "stream ends inside a frame",
			in:   banner + "Event: A\r\n\r\nEvent: Cut\r\nKey: v\r\n",
			want: []Frame{{Fields: []Field{{"Event", "A"}}}},
			end:  io.ErrUnexpectedEOF,
		},
		{
			name: "stream ends inside a line",
			in:   banner + "Event: A\r\n\r\nEvent: Cut\r\nKe",
			want: []Frame{{Fields: []Field{{"Event", "A"}}}},
			end:  io.ErrUnexpectedEOF,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames, dropped, end := readAll(t, tt.in)
			got := make([]Frame, len(frames))
			for i, f := range frames {
				got[i] = *f
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("frames (-want +got):\n%s", diff)
			}
			if dropped != tt.dropped {
				t.Errorf("dropped %d frames, want %d", dropped, tt.dropped)
			}
			if !errors.Is(end, tt.end) {
				t.Errorf("end: %v, want %v", end, tt.end)
			}
		})
	}
}

func TestReadBannerRejectsNonAMI(t *testing.T) {
	t.Parallel()
	r := NewReader(strings.NewReader("SSH-2.0-OpenSSH_9.6\r\n"))
	if _, err := r.ReadBanner(); err == nil || !strings.Contains(err.Error(), "unexpected banner") {
		t.Fatalf("got %v, want unexpected banner", err)
	}
	r = NewReader(strings.NewReader(""))
	if _, err := r.ReadBanner(); !errors.Is(err, io.EOF) {
		t.Fatalf("empty stream: got %v, want EOF", err)
	}
}

// TestFrameRoundTrip checks that AppendTo writes what Reader reads back, over every transcript.
func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.AMI(name)
		if err != nil {
			t.Fatal(err)
		}
		frames, _, end := readAll(t, string(data))
		if !errors.Is(end, io.EOF) {
			t.Fatalf("%s: %v", name, end)
		}
		var buf []byte
		buf = append(buf, banner...)
		for _, f := range frames {
			buf = f.AppendTo(buf)
		}
		again, _, end := readAll(t, string(buf))
		if !errors.Is(end, io.EOF) {
			t.Fatalf("%s: re-read: %v", name, end)
		}
		if len(again) != len(frames) {
			t.Fatalf("%s: %d frames re-read, want %d", name, len(again), len(frames))
		}
		for i := range frames {
			if !slices.Equal(frames[i].Fields, again[i].Fields) || !slices.Equal(frames[i].Output, again[i].Output) {
				t.Fatalf("%s: frame %d differs:\n%s", name, i, cmp.Diff(frames[i], again[i]))
			}
		}
		// The transcripts are exactly what Asterisk wrote: our writer reproduces them byte for
		// byte.
		if !bytes.Equal(buf[len(banner):], data[len(banner):]) {
			t.Errorf("%s: rewritten stream differs from the transcript", name)
		}
	}
}

func TestFrameLookup(t *testing.T) {
	t.Parallel()
	f := &Frame{Fields: []Field{{"Event", "CEL"}, {"CallerIDnum", "101"}, {"ActionID", "a"}, {"Response", "Success"}}}
	if got := f.Get("CallerIDNum"); got != "101" {
		t.Errorf("case-insensitive Get: %q", got)
	}
	if _, ok := f.Lookup("Missing"); ok {
		t.Error("Lookup found a missing key")
	}
	if f.IsResponse() {
		t.Error("an event with a Response header is not a response")
	}
	if f.ActionID() != "a" {
		t.Errorf("ActionID = %q", f.ActionID())
	}
}

func TestActionEncoding(t *testing.T) {
	t.Parallel()
	a := Action{Name: "Originate", ID: "x1"}.Set("Channel", "PJSIP/101").Set("Variable", "A=1").Set("Variable", "B=2")
	got, err := a.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "Action: Originate\r\nActionID: x1\r\nChannel: PJSIP/101\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n"
	if string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	bad := []Action{
		{Name: "Ping\r\nAction: Logoff"},
		{Name: ""},
		{Name: "Ping", ID: "a\nb"},
		Action{Name: "Originate"}.Set("CallerID", "evil\r\nAction: Hangup"),
		Action{Name: "Originate"}.Set("Exten", "101\n"),
		Action{Name: "Originate"}.Set("Bad Key", "v"),
		Action{Name: "Originate"}.Set("Bad:Key", "v"),
		Action{Name: "Originate"}.Set("", "v"),
		Action{Name: "Originate"}.Set("K", "nul\x00"),
	}
	for _, a := range bad {
		out, err := a.AppendTo([]byte("keep"))
		if !errors.Is(err, ErrInvalidHeader) {
			t.Errorf("%+v: got %v, want ErrInvalidHeader", a, err)
		}
		if string(out) != "keep" {
			t.Errorf("%+v: dst modified on error: %q", a, out)
		}
	}
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: 100e6, Max: 1e9, Multiplier: 2, Rand: func() float64 { return 0 }}
	// Lower bound (jitter 0) is half the exponential step, capped.
	want := []int64{50e6, 100e6, 200e6, 400e6, 500e6, 500e6}
	for n, w := range want {
		if got := b.Delay(n); int64(got) != w {
			t.Errorf("Delay(%d) low = %v, want %v", n, got, w)
		}
	}
	b.Rand = func() float64 { return 0.999999 }
	for n := range 10 {
		hi := b.Delay(n)
		if hi > b.Max {
			t.Errorf("Delay(%d) = %v exceeds Max", n, hi)
		}
	}
	if got := b.Delay(1000); got > b.Max {
		t.Errorf("Delay(1000) = %v exceeds Max", got)
	}
	b.Rand = func() float64 { return 7 } // a broken source is clamped
	if got := b.Delay(0); got != 50e6 {
		t.Errorf("bad jitter: %v", got)
	}
}
