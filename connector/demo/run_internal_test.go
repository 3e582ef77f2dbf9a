package demo

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

func parseFlags(t *testing.T, args ...string) (*Command, string) {
	t.Helper()
	var cmd Command
	var help bytes.Buffer
	p, err := kong.New(&cmd, kong.Name("pbxbridge-demo"), kong.Writers(&help, &help), kong.Exit(func(int) {}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &cmd, help.String()
}

// The default rate is the one the demo's CRMs keep up with, with room to spare; --dir still
// works but only --state is shown.
func TestDefaultFlags(t *testing.T) {
	t.Parallel()
	cmd, _ := parseFlags(t)
	if cmd.Rate != DefaultRate || cmd.Seed != 1 || cmd.State != "" {
		t.Errorf("defaults: rate %v seed %v state %q; want rate %v (DefaultRate), seed 1, no state", cmd.Rate, cmd.Seed, cmd.State, DefaultRate)
	}
	if load := DefaultRate * B24RequestsPerCall / b24RPS; load > 0.8 {
		t.Errorf("the default rate uses %.0f%% of what Bitrix24 takes; leave a fifth at least", 100*load)
	}
	if DefaultRate > 0.8*maxRate() {
		t.Errorf("the default rate %v is above 80%% of what the demo CRMs keep up with (%.2f calls/s)", DefaultRate, maxRate())
	}
	old, _ := parseFlags(t, "--dir", "/tmp/x")
	if got := old.stateDir(); got != "/tmp/x" {
		t.Errorf("--dir /tmp/x: state %q", got)
	}
	_, help := parseFlags(t, "--help")
	if !strings.Contains(help, "--state=DIR") || strings.Contains(help, "--dir") {
		t.Errorf("help shows --dir or not --state:\n%s", help)
	}
}

func TestRateLine(t *testing.T) {
	t.Parallel()
	if got := rateLine(DefaultRate); got != "a new call every 2.0 s (--rate 0.5/s): a call costs Bitrix24 about 3.0 requests and Bitrix24 takes 2 a second, so this uses 75% of it and nothing queues" {
		t.Errorf("default: %s", got)
	}
	if got := rateLine(2); !strings.Contains(got, "more than the 2 it takes (0.7 calls/s at most), so deliveries to Bitrix24 queue in the outbox and catch up when you stop") {
		t.Errorf("--rate 2: %s", got)
	}
}

func TestWaitingSaysWhat(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		w    waiting
		want string
	}{
		{waiting{calls: 2, deliveries: map[string]int64{"b24-demo": 10, "amo-demo": 1, "kommo-demo": 0}}, "2 calls to end and 11 deliveries (amo 1, b24 10)"},
		{waiting{deliveries: map[string]int64{"b24-demo": 1}}, "1 delivery (b24 1)"},
		{waiting{calls: 1, deliveries: map[string]int64{}}, "1 call to end"},
	} {
		if got := c.w.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.w, got, c.want)
		}
		if c.w.idle() {
			t.Errorf("%+v is idle", c.w)
		}
	}
	if !(waiting{deliveries: map[string]int64{"b24-demo": 0}}).idle() {
		t.Error("nothing to wait for is not idle")
	}
}

func TestETA(t *testing.T) {
	t.Parallel()
	var e etaEstimate
	now := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		pending int64
		after   time.Duration
		want    string
	}{
		{91, 0, ""}, // no pace yet
		{85, 3 * time.Second, ", about 45 s to go"}, // 2/s: 85 in 42.5 s
		{85, 3 * time.Second, ""},                   // no progress: unknown
		{40, 30 * time.Second, ", about 25 s to go"},
		{39, 3 * time.Second, ", about 115 s to go"},
		{38, 6 * time.Second, ", about 4 min to go"},
		{2, 18 * time.Second, ""}, // under 10 s
	} {
		now = now.Add(c.after)
		if got := e.next(c.pending, now); got != c.want {
			t.Errorf("%d pending after %v: %q, want %q", c.pending, c.after, got, c.want)
		}
	}
}

// The demo's customers: the same seed draws the same numbers, a call's customers differ while
// the pool lasts, every number of the pool comes up, and the first ones are contacts the demo
// CRMs know.
func TestCustomers(t *testing.T) {
	t.Parallel()
	draw := func(seed uint64) [][]string {
		f := Customers(seed)
		var out [][]string
		for range 50 {
			out = append(out, f("inbound_answered", []string{"+79001234567"}))
		}
		out = append(out, f("concurrent", make([]string, 20)))
		return out
	}
	a, b := draw(7), draw(7)
	if !slices.EqualFunc(a, b, slices.Equal) {
		t.Error("the same seed drew different customers")
	}
	if c := draw(8); slices.EqualFunc(a, c, slices.Equal) {
		t.Error("another seed drew the same customers")
	}
	seen := map[string]bool{}
	for _, call := range a[:50] {
		seen[call[0]] = true
	}
	if len(seen) != len(customerPool()) {
		t.Errorf("50 calls came from %d of the %d customers", len(seen), len(customerPool()))
	}
	conc := a[50]
	if len(conc) != 20 || len(uniq(conc[:len(customerPool())])) != len(customerPool()) {
		t.Errorf("a call with 20 customers got %v", conc)
	}
	known := map[string]bool{}
	for _, e := range demoB24Entities() {
		known["b24"+digits(e.Phone)] = true
	}
	for _, c := range fakecrm.AmoDemoAccount().Contacts {
		for _, p := range c.Phones {
			d := digits(p)
			if d[0] == '8' {
				d = "7" + d[1:]
			}
			known["amo"+d] = true
		}
	}
	for i, n := range customerPool()[:3] {
		if !known["b24"+digits(n)] || !known["amo"+digits(n)] {
			t.Errorf("customer %d (%s) is not a contact in both demo CRMs", i, n)
		}
	}
}

func uniq(s []string) []string { return slices.Compact(slices.Sorted(slices.Values(s))) }

func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
