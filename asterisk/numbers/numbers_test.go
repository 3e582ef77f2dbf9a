package numbers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestNormalizeRU(t *testing.T) {
	t.Parallel()
	n := MustNew(Config{DefaultRegion: "RU"})
	cases := []struct{ in, want string }{
		{"+79001234567", "+79001234567"},
		{"89001234567", "+79001234567"},
		{"79001234567", "+79001234567"},
		{"9001234567", "+79001234567"},
		{"+7 (900) 123-45-67", "+79001234567"},
		{"  8 900 123 45 67 ", "+79001234567"},
		{"+74951112233", "+74951112233"},
		{"84951112233", "+74951112233"},
		{"+442079460000", "+442079460000"}, // a foreign number keeps its country
		{"101", "101"},                     // short: kept as written
		{"112", "112"},
		{"anonymous", "anonymous"},
		{"*97", "*97"},
		{"", ""},
		{"   ", ""},
		{"+7900", "+7900"}, // too short to be valid: kept
	}
	for _, c := range cases {
		if got := n.Normalize(c.in); got != c.want {
			t.Errorf("Normalize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestNormalizeNoRegion(t *testing.T) {
	t.Parallel()
	n := MustNew(Config{})
	cases := []struct{ in, want string }{
		{"+79001234567", "+79001234567"},
		{"+1 (415) 555-2671", "+14155552671"},
		{"89001234567", "89001234567"}, // national: no region to read it in
		{"4155552671", "4155552671"},
	}
	for _, c := range cases {
		if got := n.Normalize(c.in); got != c.want {
			t.Errorf("Normalize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestRewriteRulesInOrder(t *testing.T) {
	t.Parallel()
	n := MustNew(Config{DefaultRegion: "RU", Rewrite: []Rule{
		{Match: `^9(\d{11})$`, Replace: "$1"},    // outbound prefix 9 dialled on the PBX
		{Match: `^00`, Replace: "+"},             // international prefix
		{Match: `^(\d{7})$`, Replace: "+7495$1"}, // local Moscow numbers
	}})
	cases := []struct{ in, want string }{
		{"989001234567", "+79001234567"},
		{"00442079460000", "+442079460000"},
		{"1112233", "+74951112233"},
		{"89001234567", "+79001234567"},
		{"12", "12"},
	}
	for _, c := range cases {
		if got := n.Normalize(c.in); got != c.want {
			t.Errorf("Normalize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseReportsInvalid(t *testing.T) {
	t.Parallel()
	n := MustNew(Config{DefaultRegion: "DE"})
	if s, err := n.Parse("030 1234567"); err != nil || s != "+49301234567" {
		t.Fatalf("Parse(030 1234567) = %q, %v", s, err)
	}
	s, err := n.Parse("0000")
	if !errors.Is(err, ErrNotNumber) || s != "0000" {
		t.Fatalf("Parse(0000) = %q, %v; want 0000, ErrNotNumber", s, err)
	}
	long := strings.Repeat("1", MaxLen+1)
	if s, err := n.Parse(long); !errors.Is(err, ErrNotNumber) || s != long {
		t.Fatalf("over-long input: %q, %v", s, err)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{DefaultRegion: "XX"}, `default_region "XX"`},
		{Config{Rewrite: []Rule{{Match: "("}}}, "rewrite[0]"},
		{Config{Rewrite: []Rule{{Match: "^1", Replace: "2"}, {Match: ""}}}, "rewrite[1]: match is empty"},
	}
	for _, c := range cases {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) error = %v, want containing %q", c.cfg, err, c.want)
		}
	}
	if _, err := New(Config{DefaultRegion: "ru"}); err != nil {
		t.Errorf("lower-case region rejected: %v", err)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"+79001234567", "89001234567", "+7 (900) 123-45-67", "101", "", "anonymous",
		"00442079460000", "+", "++7", "8", "\x00", "+999999999999999999999"} {
		f.Add(s)
	}
	n := MustNew(Config{DefaultRegion: "RU", Rewrite: []Rule{{Match: `^00`, Replace: "+"}}})
	f.Fuzz(func(t *testing.T, in string) {
		out, err := n.Parse(in)
		if strings.TrimSpace(in) != "" && out == "" {
			t.Fatalf("Parse(%q) dropped the number", in)
		}
		if err == nil {
			if !strings.HasPrefix(out, "+") {
				t.Fatalf("valid number %q not in E.164: %q", in, out)
			}
			if again, err := n.Parse(out); err != nil || again != out {
				t.Fatalf("E.164 %q does not normalise to itself: %q, %v", out, again, err)
			}
		}
	})
}

// TestCacheKeepsResults: remembered results are the same as fresh ones, for valid and invalid
// input, also once the cache was emptied for being full.
func TestCacheKeepsResults(t *testing.T) {
	t.Parallel()
	n := MustNew(Config{DefaultRegion: "RU"})
	fresh := MustNew(Config{DefaultRegion: "RU"})
	inputs := []string{"89001234567", "+7 (900) 123-45-67", "101", "", "  ", "abc", strings.Repeat("9", 200)}
	for i := range cacheSize + 10 {
		inputs = append(inputs, fmt.Sprintf("8900%07d", i))
	}
	for round := range 2 {
		for _, in := range inputs {
			s1, err1 := n.Parse(in)
			s2, err2 := fresh.parse(in)
			if s1 != s2 || err1 != err2 { //nolint:errorlint // the same sentinel or nil
				t.Fatalf("round %d: Parse(%q) = %q, %v; uncached %q, %v", round, in, s1, err1, s2, err2)
			}
		}
	}
	if len(n.cache) > cacheSize {
		t.Fatalf("cache holds %d results, bound %d", len(n.cache), cacheSize)
	}
}

func BenchmarkNormalizeRepeated(b *testing.B) {
	n := MustNew(Config{DefaultRegion: "RU"})
	for b.Loop() {
		n.Normalize("89001234567")
	}
}
