package fakepbx

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// customerRe matches a customer's number of the transcripts in any of its formats.
var customerRe = regexp.MustCompile(`(\+?)([78])(9\d{9})\b`)

// With Config.Customers, a replay carries the numbers it was given in every header where its
// transcript had a customer's number, in the transcript's format (+7…, 7…, 8…), and nowhere
// else anything changes.
func TestCustomersReplaceEveryOccurrence(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"inbound_answered", "outbound_answered", "inbound_busy_ext", "click_to_call", "concurrent"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			given := map[string]string{} // original E.164 -> replacement
			s := start(t, Config{Speed: math.Inf(1), Customers: func(scenario string, orig []string) []string {
				mu.Lock()
				defer mu.Unlock()
				if scenario != name {
					t.Errorf("Customers called for %q, want %q", scenario, name)
				}
				out := make([]string, len(orig))
				for i, o := range orig {
					out[i] = fmt.Sprintf("+7916%07d", 1000+i)
					given[o] = out[i]
				}
				return out
			}})
			c := dial(t, s, "on")
			orig := transcriptFrames(t, name)
			played, err := s.Play(context.Background(), name)
			if err != nil {
				t.Fatal(err)
			}
			got := collect(t, c, len(orig))
			<-played.Done()
			mu.Lock()
			defer mu.Unlock()
			if len(given) == 0 {
				t.Fatal("Customers got no numbers")
			}
			if cs := played.Customers(); len(cs) != len(given) || cs[0] != "+79160001000" {
				t.Errorf("Call.Customers() = %v, want the %d numbers given", cs, len(given))
			}
			replaced := 0
			for i, of := range orig {
				for k, fl := range of.Fields {
					want := customerRe.ReplaceAllStringFunc(fl.Value, func(m string) string {
						p := customerRe.FindStringSubmatch(m)
						r, ok := given["+7"+p[3]]
						if !ok {
							t.Fatalf("frame %d %s: customer %s was not given to Customers", i, fl.Key, m)
						}
						switch {
						case p[1] == "+":
							return r
						case p[2] == "8":
							return "8" + r[2:]
						}
						return r[1:]
					})
					if want == fl.Value {
						continue
					}
					replaced++
					g := got[i].Fields[k]
					if g.Key != fl.Key || mask(g.Value) != mask(want) {
						t.Fatalf("frame %d (%s) %s: got %q, want %q", i, of.Event(), fl.Key, g.Value, want)
					}
				}
			}
			for i, f := range got {
				for _, fl := range f.Fields {
					for o := range given {
						if strings.Contains(fl.Value, o[2:]) {
							t.Fatalf("frame %d %s = %q still has the transcript's customer %s", i, fl.Key, fl.Value, o)
						}
					}
				}
			}
			t.Logf("%d customers, %d headers rewritten", len(given), replaced)
		})
	}
}

// mask hides the ids a replay makes fresh.
func mask(v string) string {
	return suffixRe.ReplaceAllString(uidRe.ReplaceAllString(v, "UID"), "-SUFFIX")
}

// Without Config.Customers, or with "" for a customer, the transcript's numbers stay; a number
// that is not E.164 is refused by Play with an error naming it.
func TestCustomersKeptOrRefused(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Speed: math.Inf(1), Customers: func(scenario string, orig []string) []string {
		if scenario == "outbound_busy" {
			return []string{"8 916 000"}
		}
		return []string{""}
	}})
	played, err := s.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	if cs := played.Customers(); len(cs) != 1 || cs[0] != "+79001234567" {
		t.Errorf("Customers() = %v, want the transcript's +79001234567", cs)
	}
	<-played.Done()
	_, err = s.Play(context.Background(), "outbound_busy")
	if err == nil || !strings.Contains(err.Error(), `"8 916 000"`) || !strings.Contains(err.Error(), "+79001234567") {
		t.Fatalf("Play with a bad number: %v", err)
	}
	if n := s.Stats().CallsStarted; n != 1 {
		t.Errorf("%d calls started, want 1 (the refused one must not play)", n)
	}
}
