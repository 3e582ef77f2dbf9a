package connector

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// verbs counts the fmt verbs of a message.
var verbs = regexp.MustCompile(`%[-+# 0]*[0-9]*(\.[0-9]+)?[a-zA-Z]`)

// Every message exists in both languages with the same fmt verbs; plural messages have the
// forms of each language (English one|other, Russian one|few|many), other messages none.
func TestMessages(t *testing.T) {
	t.Parallel()
	for key, m := range messages {
		if strings.TrimSpace(m.en) == "" || strings.TrimSpace(m.ru) == "" {
			t.Errorf("%s: en %q, ru %q: both languages are needed", key, m.en, m.ru)
			continue
		}
		en := strings.Join(verbs.FindAllString(strings.ReplaceAll(m.en, "%%", ""), -1), " ")
		ru := strings.Join(verbs.FindAllString(strings.ReplaceAll(m.ru, "%%", ""), -1), " ")
		if en != ru {
			t.Errorf("%s: verbs %q in English, %q in Russian", key, en, ru)
		}
		nen, nru := strings.Count(m.en, "|")+1, strings.Count(m.ru, "|")+1
		if strings.HasPrefix(key, "plural.") {
			if nen != 2 || nru != 3 {
				t.Errorf("%s: %d English and %d Russian forms, want 2 and 3", key, nen, nru)
			}
		} else if nen != 1 || nru != 1 {
			t.Errorf("%s: a '|' in a message that is not plural", key)
		}
	}
	for cause, m := range q850 {
		if m.en == "" || m.ru == "" || strings.Contains(m.en+m.ru, "%") {
			t.Errorf("Q.850 cause %d: en %q, ru %q", cause, m.en, m.ru)
		}
	}
}

// Every key the templates and the status page's code name exists.
func TestMessagesUsed(t *testing.T) {
	t.Parallel()
	used := map[string]string{}
	tmpl, err := webFS.ReadFile("web/status.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\{\{-?\s*(?:t|tf|n)\s+"([^"]+)"`).FindAllStringSubmatch(string(tmpl), -1) {
		used[m[1]] = "web/status.html"
	}
	if len(used) < 100 {
		t.Fatalf("found only %d keys in the template", len(used))
	}
	files, err := filepath.Glob("statuspage*.go")
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile(`\bl\.(?:T|F|N|TOr|plural)\("([^"]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range code.FindAllStringSubmatch(string(src), -1) {
			used[m[1]] = f
		}
	}
	// Keys built from a closed set of values.
	add := func(prefix string, values ...string) {
		for _, v := range values {
			used[prefix+v] = "built"
		}
	}
	add("outcome.", outcomeKeys[:]...)
	add("sum.", outcomeKeys[outMissed:]...)
	add("dir.", string(call.Inbound), string(call.Outbound), string(call.Internal))
	add("state.", string(outbox.Pending), string(outbox.Leased), string(outbox.Done), string(outbox.Dead))
	for _, s := range licensing.AllStates {
		add("lic.state.", string(s))
	}
	add("lic.state.", "not_needed")
	add("lic.type.", "paid", "trial", "nfr", "demo")
	add("auth.", "ok", "missing", "reauthorize")
	add("transfer.", "blind", "attended")
	add("flag.", call.FlagIVRAbandoned, call.FlagQueue, call.FlagPickup, call.FlagVoicemail, call.FlagClickToCall, call.FlagFlushed,
		call.FlagResynced, call.FlagEndedUnseen)
	add("kind.", "call", "routing", "request", "response", "decision", "error", "delivered", "retry", "dead", "skipped", "click_to_call")
	add("unit.", "ms", "s", "min", "h", "d")
	prefixes, built := map[string]bool{}, map[string]bool{}
	for key, where := range used {
		if strings.HasSuffix(key, ".") { // a prefix of built keys
			prefixes[key] = true
			continue
		}
		if where == "built" {
			built[key[:strings.LastIndex(key, ".")+1]] = true
		}
		if _, ok := messages[key]; !ok {
			t.Errorf("%s uses %q, which the catalogue lacks", where, key)
		}
	}
	for prefix := range prefixes {
		if !built[prefix] {
			t.Errorf("the code builds keys %s…: list their values in this test", prefix)
		}
	}
}

func TestHangupCause(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		l     lang
		cause int
		want  string
	}{
		{langEN, 34, "34 — no circuit available"},
		{langRU, 34, "34 — нет свободного канала"},
		{langEN, 16, "16 — normal call clearing"},
		{langRU, 17, "17 — абонент занят"},
		{langEN, 250, "250 — cause unknown to Q.850"},
		{langRU, 0, ""},
	} {
		if got := c.l.hangupCause(c.cause); got != c.want {
			t.Errorf("%s %d: %q, want %q", c.l.Code(), c.cause, got, c.want)
		}
	}
}

func TestAcceptLanguage(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]lang{
		"":                                    langEN,
		"ru":                                  langRU,
		"ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7": langRU,
		"en-US,en;q=0.9,ru;q=0.8":             langEN,
		"de-DE,de;q=0.9,ru;q=0.5":             langRU,
		"de-DE,fr":                            langEN,
		"en;q=0.2, RU;q=0.8":                  langRU,
		"ru;q=0, en":                          langEN,
		"*":                                   langEN,
		"ru;q=abc, en;q=0.1":                  langEN,
		"ru;q=2":                              langEN,
		"uk, ru;q=0.9":                        langRU,
		";;;,,,ru-RU":                         langRU,
		strings.Repeat("x,", 600) + "ru":      langEN, // beyond what is read
	} {
		if got := acceptLanguage(header); got != want {
			t.Errorf("acceptLanguage(%.40q) = %s, want %s", header, got.Code(), want.Code())
		}
	}
}

// FuzzAcceptLanguage: any header gives English or Russian, without a panic.
func FuzzAcceptLanguage(f *testing.F) {
	for _, s := range []string{"ru-RU,ru;q=0.9,en-US;q=0.8", "en;q=0.5, ru;q=0.50", "*;q=0.1", "ru;q=NaN", "ru;Q=1.0;x=y", "\x00ru"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		if l := acceptLanguage(header); l != langEN && l != langRU {
			t.Fatalf("acceptLanguage(%q) = %d", header, l)
		}
	})
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	check("en num", langEN.Num(1234567), "1,234,567")
	check("ru num", langRU.Num(1234567), "1\u00a0234\u00a0567")
	check("ru num small", langRU.Num(999), "999")
	check("en negative", langEN.Num(-1200), "−1,200")
	check("ru decimal", langRU.Dec(1.25, 1), "1,2")
	check("en pct", langEN.Pct(2, 3), "67\u00a0%")
	check("pct of nothing", langRU.Pct(0, 0), "—")
	for d, want := range map[time.Duration][2]string{
		850 * time.Millisecond:          {"850\u00a0ms", "850\u00a0мс"},
		1250 * time.Millisecond:         {"1.2\u00a0s", "1,2\u00a0с"},
		42 * time.Second:                {"42\u00a0s", "42\u00a0с"},
		3*time.Minute + 5*time.Second:   {"3\u00a0min 5\u00a0s", "3\u00a0мин 5\u00a0с"},
		2 * time.Hour:                   {"2\u00a0h", "2\u00a0ч"},
		2*time.Hour + 5*time.Minute:     {"2\u00a0h 5\u00a0min", "2\u00a0ч 5\u00a0мин"},
		3*24*time.Hour + 4*time.Hour:    {"3\u00a0d 4\u00a0h", "3\u00a0д 4\u00a0ч"},
		-time.Second:                    {"0\u00a0ms", "0\u00a0мс"},
		59*time.Minute + 59*time.Second: {"59\u00a0min 59\u00a0s", "59\u00a0мин 59\u00a0с"},
	} {
		check("en "+d.String(), langEN.Dur(d), want[0])
		check("ru "+d.String(), langRU.Dur(d), want[1])
	}
	check("en date", langEN.Date("2027-01-31"), "31 January 2027")
	check("ru date", langRU.Date("2027-01-31"), "31 января 2027")
	check("not a date", langRU.Date("someday"), "someday")
	now := time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC)
	check("today", langRU.When(now.Add(-time.Hour), now), "14:00:00")
	check("en this year", langEN.When(time.Date(2026, 3, 8, 9, 5, 0, 0, time.UTC), now), "Mar 8 09:05")
	check("ru this year", langRU.When(time.Date(2026, 3, 8, 9, 5, 0, 0, time.UTC), now), "8 мар 09:05")
	check("ru last year", langRU.When(time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC), now), "31 дек 2025 23:00")
	check("clock", langEN.Clock(3725), "1:02:05")
	check("clock short", langEN.Clock(65), "1:05")
	for n, want := range map[int64]string{1: "1\u00a0день остался", 2: "2\u00a0дня осталось", 5: "5\u00a0дней осталось", 11: "11\u00a0дней осталось",
		21: "21\u00a0день остался", 22: "22\u00a0дня осталось", 112: "112\u00a0дней осталось", 0: "0\u00a0дней осталось"} {
		check("ru plural", langRU.N("plural.daysleft", n), want)
	}
	check("en plural one", langEN.N("plural.daysleft", 1), "1\u00a0day left")
	check("en plural", langEN.N("plural.daysleft", 2), "2\u00a0days left")
}

func TestNiceCeil(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ x, minimum, want float64 }{{0, 4, 4}, {3, 4, 4}, {5, 4, 5}, {7, 4, 10}, {11, 4, 20}, {21, 4, 50}, {180, 4, 200}, {0.3, 1, 1}, {1.2, 1, 2}} {
		x, want := c.x, c.want
		if got := niceCeil(x, c.minimum); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", x, got, want)
		}
	}
}

// The chart has one bar per outcome and hour with calls, stacked, inside the plot.
func TestCallsChart(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	hours := make([]hourCalls, activityHours)
	for i := range hours {
		hours[i].Start = start.Add(time.Duration(i) * time.Hour)
	}
	hours[3].N = [outcomes]int{5, 2, 1, 1}
	hours[20].N[outAnswered] = 1
	c := callsChart(langRU, hours)
	if len(c.Bars) != 5 || c.Empty != "" {
		t.Fatalf("bars %+v, empty %q", c.Bars, c.Empty)
	}
	top := c.Bars[3]
	if top.Class != "bar failed" || top.Y < chartPadTop-0.01 || top.Title != "03:00–04:00 · Не удался: 1" {
		t.Errorf("top bar %+v", top)
	}
	if c := callsChart(langEN, make([]hourCalls, activityHours)); len(c.Bars) != 0 || c.Empty == "" {
		t.Errorf("empty chart %+v", c)
	}
}

// newestCalls keeps the n newest, newest first, whatever the order they come in.
func TestNewestCalls(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var list []call.Record
	for _, m := range []int{5, 1, 9, 3, 7, 2, 8} {
		list = newestCalls(list, call.Record{CallID: string(rune('a' + m)), StartedAt: base.Add(time.Duration(m) * time.Minute)}, 3)
	}
	var got []string
	for _, r := range list {
		got = append(got, r.CallID)
	}
	if strings.Join(got, "") != "jih" {
		t.Errorf("newest: %v", got)
	}
}

// The mapping lists the extensions of the users and of the calls, flags an extension that took
// calls and reaches nobody in a CRM, and lists the users no extension reaches.
func TestBuildMapping(t *testing.T) {
	t.Parallel()
	dirs := []directory{
		{Connector: "b24", Users: []crm.User{{ID: "1", Name: "Admin", Active: true}, {ID: "7", Name: "Anna", Ext: "101", Active: true},
			{ID: "8", Name: "Boris", Ext: "101", Active: true}, {ID: "9", Name: "Olga", Active: false}}},
		{Connector: "amo", Users: []crm.User{{ID: "5", Name: "Anna A.", Ext: "101", Active: true, Source: "config"}, {ID: "6", Ext: "103"}}},
	}
	v := buildMapping(langEN, dirs, map[string]int{"101": 4, "1000": 1, "102": 2})
	var rows []string
	for _, r := range v.Rows {
		var cells []string
		for _, c := range r.Cells {
			var users []string
			for _, u := range c.Users {
				users = append(users, u.Name+"#"+u.ID)
			}
			if c.Missing {
				users = []string{"-"}
			}
			cells = append(cells, strings.Join(users, "+"))
		}
		rows = append(rows, r.Ext+" "+strings.Join(cells, " ")+map[bool]string{true: " !", false: ""}[r.Problem])
	}
	want := "101 Anna#7+Boris#8 Anna A.#5|102 - - !|103 - #6|1000 - - !"
	if got := strings.Join(rows, "|"); got != want {
		t.Errorf("rows %q, want %q", got, want)
	}
	if v.Missing != 2 || len(v.Unmapped) != 1 || strings.Join(v.Unmapped[0].Users, ",") != "Admin (#1)" {
		t.Errorf("missing %d, unmapped %+v", v.Missing, v.Unmapped)
	}
	if !v.Rows[0].Cells[0].Users[1].Shadowed || v.Rows[0].Cells[1].Users[0].Note != "from config" {
		t.Errorf("row 101: %+v", v.Rows[0])
	}
}

// Requests are counted per connector from the timeline, the ones made while the call rang apart.
func TestRequestCounts(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	tl := sortTimeline([]outbox.TimelineEntry{
		{At: t0.Add(10 * time.Second), Kind: "call"},
		{At: t0.Add(11 * time.Second), Connector: "b24", Kind: "request", Summary: "POST telephony.externalCall.finish"},
		{At: t0.Add(11 * time.Second), Connector: "b24", Kind: "response", Summary: "POST answered 200"},
		{At: t0.Add(2 * time.Second), Connector: "b24", Kind: "request", Summary: "POST telephony.externalCall.register"},
		{At: t0.Add(12 * time.Second), Connector: "amo", Kind: "decision", Summary: "POST /api/v4/calls"},
		{At: t0.Add(12 * time.Second), Connector: "amo", Kind: "decision", Summary: "not sent"},
		{At: t0.Add(3 * time.Second), Connector: "amo", Kind: "live_request", Summary: "events.add"},
	})
	if tl[0].Summary != "POST telephony.externalCall.register" || tl[2].Kind != "call" {
		t.Errorf("timeline not in time order: %+v", tl)
	}
	got := requestCounts(tl)
	if got["b24"] != (reqCount{total: 2, live: 1}) || got["amo"] != (reqCount{total: 2, live: 1}) {
		t.Errorf("requests %+v", got)
	}
}
