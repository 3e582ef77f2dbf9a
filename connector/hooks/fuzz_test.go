package hooks

import (
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
)

// FuzzDecodeProgram: whatever a program writes, its answer is read or refused with an error,
// never a panic.
func FuzzDecodeProgram(f *testing.F) {
	for _, s := range []string{`{"responsible": 17}`, `{"responsible": "101"}`, `{"task": {"text": "x", "deadline": "2h"}}`,
		`{"entity": "deal:5"}`, `{"log_if": false}`, `{"responsible": true}`, `{"task": 1}`, `{not json`, ``, `null`} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 21, 19, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, out []byte) {
		for _, p := range crm.HookPoints {
			var res crm.HookResult
			_, _ = decodeProgram(p, out, now, &res)
		}
	})
}

// FuzzSchedule: working-hours specs are parsed or refused, never a panic, and a parsed one
// answers next within a week.
func FuzzSchedule(f *testing.F) {
	for _, s := range [][2]string{{"09:00-18:00", "mon-fri"}, {"22:00-06:00", "fri-sat"}, {"9-18", "x"}, {"00:00-24:00", "sun,mon"}} {
		f.Add(s[0], s[1])
	}
	now := time.Date(2026, 11, 21, 19, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, hours, days string) {
		w, err := schedule(hours, days)
		if err != nil {
			return
		}
		if n := w.next(now); n.Before(now) || n.Sub(now) > 8*24*time.Hour {
			t.Fatalf("next(%v) = %v", now, n)
		}
	})
}
