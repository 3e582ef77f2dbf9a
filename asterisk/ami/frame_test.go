package ami

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

func TestReadTranscripts(t *testing.T) {
	t.Parallel()
	for _, name := range transcripts.Scenarios() {
		t.Run(name, func(t *testing.T) {
			data, err := transcripts.AMI(name)
			if err != nil {
				t.Fatal(err)
			}
			r := NewReader(bytes.NewReader(data))
			if _, err := r.ReadBanner(); err != nil {
				t.Fatal(err)
			}
			events, unknown := 0, 0
			for {
				f, err := r.ReadFrame()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("frame %d: %v", events, err)
				}
				recv := time.Unix(1, 0)
				ev, ok := ToEvent(f, "lab", recv)
				if !ok {
					continue
				}
				events++
				if _, has := f.Lookup("Timestamp"); has && ev.Time.Equal(recv) {
					t.Fatalf("event %s: Timestamp %q not used", ev.Name, f.Get("Timestamp"))
				}
				if ev.Type == asterisk.TypeUnknown {
					unknown++
				}
			}
			if events == 0 {
				t.Fatal("no events")
			}
			t.Logf("%d events, %d of unused types", events, unknown)
		})
	}
}

func TestReadFrameTolerance(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", MaxFrameSize+10)
	in := "Asterisk Call Manager/11.0.0\n" +
		"Event: A\nKey: v: with colon\n\n" + // \n endings, value with ": "
		"Event: Big\r\nData: " + long + "\r\n\r\n" + // dropped
		"Response: Follows\r\nPrivilege: Command\r\nline one\r\nline two\r\n--END COMMAND--\r\n\r\n" +
		"Event: B\r\n\r\n"
	r := NewReader(strings.NewReader(in))
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	f, err := r.ReadFrame()
	if err != nil || f.Event() != "A" || f.Get("Key") != "v: with colon" {
		t.Fatalf("frame A: %+v %v", f, err)
	}
	if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("big frame: got %v, want ErrFrameTooLarge", err)
	}
	f, err = r.ReadFrame()
	if err != nil || f.Response() != "Follows" || strings.Join(f.Output, "|") != "line one|line two" {
		t.Fatalf("follows: %+v %v", f, err)
	}
	f, err = r.ReadFrame()
	if err != nil || f.Event() != "B" {
		t.Fatalf("frame B: %+v %v", f, err)
	}
	if _, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}

// TestReadFrameToReuses: reading every transcript (and a command response, which has Output)
// into one reused Frame gives the frames ReadFrame gives, and the strings of earlier frames
// stay intact while the Frame is reused.
func TestReadFrameToReuses(t *testing.T) {
	t.Parallel()
	var in bytes.Buffer
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.AMI(name)
		if err != nil {
			t.Fatal(err)
		}
		in.Write(data[len(banner):])
		in.WriteString("Response: Follows\r\nPrivilege: Command\r\nline one\r\n\r\nline two\r\n--END COMMAND--\r\n\r\n")
	}
	data := append([]byte(banner), in.Bytes()...)
	plain, reused := NewReader(bytes.NewReader(data)), NewReader(bytes.NewReader(data))
	_, _ = plain.ReadBanner()
	_, _ = reused.ReadBanner()
	var f Frame
	var kept []Field // a field of every frame read into f, checked at the end
	var want []Field
	for n := 0; ; n++ {
		p, perr := plain.ReadFrame()
		rerr := reused.ReadFrameTo(&f)
		if !errors.Is(rerr, perr) {
			t.Fatalf("frame %d: ReadFrameTo: %v, ReadFrame: %v", n, rerr, perr)
		}
		if perr != nil {
			break
		}
		if !slices.Equal(f.Fields, p.Fields) || !slices.Equal(f.Output, p.Output) {
			t.Fatalf("frame %d: %+v, want %+v", n, f, *p)
		}
		kept, want = append(kept, f.Fields[len(f.Fields)-1]), append(want, p.Fields[len(p.Fields)-1])
	}
	if len(kept) < 1000 || !slices.Equal(kept, want) {
		t.Fatalf("%d fields kept; the reused frame's strings changed: %v", len(kept), !slices.Equal(kept, want))
	}
}
