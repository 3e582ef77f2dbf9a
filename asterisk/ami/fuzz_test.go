package ami

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes to the frame reader. It must never panic, always make
// progress, keep every frame within MaxFrameSize with well-formed keys, and frames it returns
// must survive a write/read round trip. The seed corpus (testdata/fuzz/FuzzReadFrame) holds
// slices of every transcript and framing edge cases.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte(banner + "Event: A\r\nKey: v\r\n\r\n"))
	f.Add([]byte(banner + "Response: Follows\r\nPrivilege: Command\r\nx\n\ny--END COMMAND--\r\n\r\n"))
	f.Add([]byte(banner + "Event: V\nValue: a\nb\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		_, _ = r.ReadBanner()
		for n := 0; ; n++ {
			if n > len(data)+1 {
				t.Fatalf("no progress after %d frames", n)
			}
			fr, err := r.ReadFrame()
			if errors.Is(err, ErrFrameTooLarge) {
				continue
			}
			if err != nil {
				return
			}
			checkFrame(t, fr, n < 4)
		}
	})
}

// FuzzReadFrameFilter: with a Filter, the reader returns exactly the frames it returns without
// one, minus those whose first header names a discarded event, with VarSets of other variables
// trimmed; frame errors come in the same places.
func FuzzReadFrameFilter(f *testing.F) {
	f.Add([]byte(banner + "Event: CEL\r\nA: b\r\n\r\nEvent: VarSet\r\nChannel: x\r\nUniqueid: 1\r\nVariable: __B\r\nValue: 2\r\nChanVariable(x): K=v\r\n\r\n"))
	f.Add([]byte(banner + "Event: CEL\r\nResponse: Follows\r\n\r\nx\r\n--END COMMAND--\r\n\r\nEvent: VarSet\r\nVariable: _KEEP\r\n\r\n"))
	f.Add([]byte(banner + "Event: DeviceStateChange\nz\n\nEvent: VarSet\nVariable: X\nValue: a\nb\n\n"))
	filter := Filter{Discard: []string{"CEL", "DeviceStateChange"}, VarSetKeep: []string{"KEEP"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, filtered := NewReader(bytes.NewReader(data)), NewReader(bytes.NewReader(data))
		filtered.SetFilter(filter)
		_, _ = plain.ReadBanner()
		_, _ = filtered.ReadBanner()
		var discarded uint64
		for n := 0; n <= len(data)+1; n++ {
			want, werr := plain.ReadFrame()
			// The filter decides on the first line alone (Asterisk never continues an Event line).
			if werr == nil && len(want.Fields) > 0 && want.Fields[0].Key == "Event" &&
				slices.Contains(filter.Discard, firstLine(want.Fields[0].Value)) {
				discarded++
				continue
			}
			got, gerr := filtered.ReadFrame()
			if (werr == nil) != (gerr == nil) || (werr != nil && !errors.Is(gerr, werr) && !errors.Is(werr, gerr)) {
				t.Fatalf("frame %d: error %v with the filter, %v without", n, gerr, werr)
			}
			if werr != nil {
				if !errors.Is(werr, ErrFrameTooLarge) {
					if filtered.Discarded() != discarded {
						t.Fatalf("Discarded() = %d, want %d", filtered.Discarded(), discarded)
					}
					return
				}
				continue
			}
			if len(want.Fields) > 0 && want.Fields[0].Key == "Event" && firstLine(want.Fields[0].Value) == "VarSet" {
				if i := slices.IndexFunc(want.Fields, func(f Field) bool { return f.Key == "Variable" }); i > 0 &&
					strings.TrimLeft(firstLine(want.Fields[i].Value), "_") != "KEEP" {
					want = trimmedCopy(want)
				}
			}
			if !slices.Equal(want.Fields, got.Fields) || !slices.Equal(want.Output, got.Output) {
				t.Fatalf("frame %d:\nwant %+v\ngot  %+v", n, want, got)
			}
		}
		t.Fatal("no progress")
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// trimmedCopy is what the filter makes of a VarSet whose variable is not kept.
func trimmedCopy(f *Frame) *Frame {
	out := &Frame{Fields: []Field{}, Output: f.Output}
	for _, fl := range f.Fields {
		if strings.HasPrefix(fl.Key, "ChanVariable") || slices.Contains(varSetFields, fl.Key) {
			out.Fields = append(out.Fields, fl)
		}
	}
	return out
}

// checkFrame checks a frame's invariants and, when roundTrip is set, that AppendTo writes it back
// in a form that reads back identically.
func checkFrame(t *testing.T, fr *Frame, roundTrip bool) {
	t.Helper()
	if len(fr.Fields)+len(fr.Output) == 0 {
		t.Fatal("empty frame returned")
	}
	size := 0
	for _, fl := range fr.Fields {
		if fl.Key == "" || strings.ContainsAny(fl.Key, ": \n") {
			t.Fatalf("malformed key %q", fl.Key)
		}
		size += len(fl.Key) + len(fl.Value)
	}
	for _, o := range fr.Output {
		if strings.Contains(o, "\n") {
			t.Fatalf("output line with a line break: %q", o)
		}
		size += len(o)
	}
	if size > MaxFrameSize {
		t.Fatalf("frame of %d bytes exceeds the limit", size)
	}
	if !roundTrip || fr.Response() == "Follows" {
		return // a legacy body is written back as Output lines, a different (equivalent) form
	}
	again, err := NewReader(bytes.NewReader(fr.AppendTo(nil))).ReadFrame()
	if err != nil {
		t.Fatalf("re-reading %q: %v", fr.AppendTo(nil), err)
	}
	if !slices.Equal(fr.Fields, again.Fields) || !slices.Equal(fr.Output, again.Output) {
		t.Fatalf("round trip changed the frame:\n%+v\n%+v", fr, again)
	}
}

// FuzzActionEncode: an action is either refused with ErrInvalidHeader or written as exactly one
// frame that reads back with the same headers — never a second action.
func FuzzActionEncode(f *testing.F) {
	f.Add("Originate", "CallerID", `"CRM: 89001234567" <101>`)
	f.Add("Ping", "X", "a\r\nAction: Logoff")
	f.Add("Login", "Secret", "p:w d")
	f.Fuzz(func(t *testing.T, name, key, value string) {
		a := Action{Name: name, ID: "id-1"}.Set(key, value)
		b, err := a.AppendTo(nil)
		if err != nil {
			if !errors.Is(err, ErrInvalidHeader) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		r := NewReader(bytes.NewReader(b))
		fr, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("reading %q: %v", b, err)
		}
		if key == "Output" { // a header named Output reads back as an output line
			if len(fr.Output) != 1 || fr.Output[0] != value {
				t.Fatalf("output header changed: %q → %+v", b, fr)
			}
			return
		}
		if fr.Get("Action") != name || fr.Fields[len(fr.Fields)-1].Key != key {
			t.Fatalf("headers changed: %q → %+v", b, fr.Fields)
		}
		if _, err := r.ReadFrame(); err == nil {
			t.Fatalf("one action produced two frames: %q", b)
		}
	})
}
