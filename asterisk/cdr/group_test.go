package cdr_test

import (
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
)

func TestGroupChains(t *testing.T) {
	t.Parallel()
	at := func(sec int) time.Time { return time.Date(2026, 1, 1, 10, 0, sec, 0, time.UTC) }
	rows := []cdr.Row{
		// Before an Asterisk restart: trunk -> 101.
		{Channel: "PJSIP/trunk-00000001", DstChannel: "PJSIP/101-00000002", Start: at(0), End: at(10), UniqueID: "1767261600.1"},
		// After it, the same channel names again (the counter restarted): another call.
		{Channel: "PJSIP/trunk-00000001", DstChannel: "PJSIP/102-00000002", Start: at(40), End: at(50), UniqueID: "1767261640.1"},
		// 102 transfers it: a row of 102's channel to 103 joins the second call.
		{Channel: "PJSIP/102-00000002", DstChannel: "PJSIP/103-00000003", Start: at(45), End: at(50), UniqueID: "1767261641.2"},
		// A Local channel pair: ";2" dials, ";1" belongs to the queue caller's row.
		{Channel: "PJSIP/trunk-00000009", DstChannel: "Local/201@from-queue-0000000a;1", Start: at(20), End: at(30), UniqueID: "1767261620.9"},
		{Channel: "Local/201@from-queue-0000000a;2", DstChannel: "PJSIP/201-0000000b", Start: at(20), End: at(30), UniqueID: "1767261620.11"},
		// No uniqueid column at all.
		{Channel: "DAHDI/1-1", Start: at(5), End: at(6)},
	}
	calls := cdr.Group(rows)
	want := []struct {
		id   string
		rows int
	}{{"1767261600.1", 1}, {"DAHDI/1-1@1767261605", 1}, {"1767261620.9", 2}, {"1767261640.1", 2}}
	if len(calls) != len(want) {
		t.Fatalf("%d calls: %+v", len(calls), calls)
	}
	for i, w := range want {
		if calls[i].ID != w.id || len(calls[i].Rows) != w.rows {
			t.Errorf("call %d: %s with %d rows, want %s with %d", i, calls[i].ID, len(calls[i].Rows), w.id, w.rows)
		}
	}
	if c := calls[3]; !c.Start().Equal(at(40)) || !c.End().Equal(at(50)) {
		t.Errorf("call 3 runs %s - %s", c.Start(), c.End())
	}
	if got := cdr.Group(nil); len(got) != 0 {
		t.Errorf("no rows: %+v", got)
	}
}

func TestParseCallerID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]string{
		`"Ivan Petrov" <101>`: {"Ivan Petrov", "101"},
		`"" <+79001234567>`:   {"", "+79001234567"},
		`Bob <102>`:           {"Bob", "102"},
		`101`:                 {"", "101"},
		``:                    {"", ""},
		`"a <b>" <c>`:         {"a <b>", "c"},
	} {
		if name, num := cdr.ParseCallerID(in); name != want[0] || num != want[1] {
			t.Errorf("ParseCallerID(%q) = %q, %q; want %q", in, name, num, want)
		}
	}
}
