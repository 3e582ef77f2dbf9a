package hooks

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm/runtime"

	"github.com/pbxbridge/pbxbridge/crm"
)

// Env is what an expression sees (its names are the expr tags) and what an exec hook gets on
// stdin (the json tags, the same names). Times are in the hooks' time zone.
type Env struct {
	Connector   string            `expr:"connector" json:"connector"`
	Point       string            `expr:"point" json:"point"`
	Live        bool              `expr:"live" json:"live"` // the call is still ringing
	CallID      string            `expr:"call_id" json:"call_id"`
	PBX         string            `expr:"pbx" json:"pbx"`
	Direction   string            `expr:"direction" json:"direction"` // inbound, outbound
	Customer    string            `expr:"customer" json:"customer"`   // E.164 when it parses
	Line        string            `expr:"line" json:"line"`           // DID (inbound) or outbound line
	Trunk       string            `expr:"trunk" json:"trunk"`
	Disposition string            `expr:"disposition" json:"disposition"` // answered, no_answer, busy, failed; "" while live
	Missed      bool              `expr:"missed" json:"missed"`           // inbound and not answered
	AnsweredBy  string            `expr:"answered_by" json:"answered_by"`
	CallerExt   string            `expr:"caller_ext" json:"caller_ext"`
	Rang        []string          `expr:"rang" json:"rang"`
	Talked      []string          `expr:"talked" json:"talked"` // extensions that talked, in order
	RingSeconds int               `expr:"ring_seconds" json:"ring_seconds"`
	TalkSeconds int               `expr:"talk_seconds" json:"talk_seconds"`
	Flags       []string          `expr:"flags" json:"flags"`
	Vars        map[string]string `expr:"vars" json:"vars"` // channel variables (pbx[].calls.variables)
	Started     time.Time         `expr:"started" json:"started"`
	Ended       time.Time         `expr:"ended" json:"ended"`
	Now         time.Time         `expr:"now" json:"now"`
	Ext         string            `expr:"ext" json:"ext,omitempty"` // employee: the extension to map
	CRM         Found             `expr:"crm" json:"crm"`
	Consts      map[string]any    `expr:"consts" json:"consts,omitempty"`
}

// Found is the CRM's look-up of the customer's number (crm.found is false when the CRM knows
// no object with it, or was not asked).
type Found struct {
	Found       bool   `expr:"found" json:"found"`
	Type        string `expr:"type" json:"type,omitempty"` // contact, company, lead, deal
	ID          int    `expr:"id" json:"id,omitempty"`
	Name        string `expr:"name" json:"name,omitempty"`
	Responsible int    `expr:"responsible" json:"responsible,omitempty"` // its owner's CRM user id
}

var emptyVars = map[string]string{}

// env builds the Env of one hook run.
func (c *Compiled) env(connector string, p crm.HookPoint, in *crm.HookInput, now time.Time) *Env {
	e := &Env{Connector: connector, Point: string(p), Live: in.Live, Ext: in.Ext, Now: now.In(c.loc), Consts: c.consts, Vars: emptyVars}
	if r := in.Record; r != nil {
		e.CallID, e.PBX, e.Direction, e.Customer, e.Line, e.Trunk = r.CallID, r.PBX, string(r.Direction), r.Customer, r.Line, r.Trunk
		e.Disposition, e.AnsweredBy, e.CallerExt = string(r.Disposition), r.AnsweredBy, r.CallerExt
		e.Missed = r.Direction == "inbound" && r.Disposition != "" && r.Disposition != "answered"
		e.Rang, e.Flags = r.Rang, r.Flags
		if e.Rang == nil {
			e.Rang = []string{}
		}
		if e.Flags == nil {
			e.Flags = []string{}
		}
		e.Talked = make([]string, 0, len(r.Legs))
		for _, l := range r.Legs {
			e.Talked = append(e.Talked, l.Ext)
		}
		e.RingSeconds, e.TalkSeconds = r.RingSeconds, r.TalkSeconds
		if r.Vars != nil {
			e.Vars = r.Vars
		}
		if !r.StartedAt.IsZero() {
			e.Started = r.StartedAt.In(c.loc)
		}
		if !r.EndedAt.IsZero() {
			e.Ended = r.EndedAt.In(c.loc)
		}
	}
	if e.Talked == nil {
		e.Talked = []string{}
	}
	if e.Rang == nil {
		e.Rang, e.Flags = []string{}, []string{}
	}
	if f := in.Found; f != nil {
		e.CRM = Found{Found: true, Type: f.Type, ID: int(f.ID), Name: f.Name, Responsible: int(f.Responsible)}
	}
	return e
}

// functions are the helpers expressions may call besides expr's builtins.
func functions() []expr.Option {
	return []expr.Option{
		expr.Function("hour", func(a ...any) (any, error) { return a[0].(time.Time).Hour(), nil }, new(func(time.Time) int)),
		expr.Function("minute", func(a ...any) (any, error) { return a[0].(time.Time).Minute(), nil }, new(func(time.Time) int)),
		expr.Function("weekday", func(a ...any) (any, error) { return dayNames[a[0].(time.Time).Weekday()], nil }, new(func(time.Time) string)),
		expr.Function("workingHours", func(a ...any) (any, error) {
			w, err := schedule(a[1].(string), a[2].(string))
			if err != nil {
				return nil, err
			}
			return w.open(a[0].(time.Time)), nil
		}, new(func(time.Time, string, string) bool)),
		expr.Function("nextWorking", func(a ...any) (any, error) {
			w, err := schedule(a[1].(string), a[2].(string))
			if err != nil {
				return nil, err
			}
			return w.next(a[0].(time.Time)), nil
		}, new(func(time.Time, string, string) time.Time)),
		expr.Function("digits", func(a ...any) (any, error) { return digits(a[0].(string)), nil }, new(func(string) string)),
		// Every + goes through plus, which bounds strings (maxString): values of unknown type
		// (consts, reduce's #acc) included. The typed signatures come first so that typed
		// sums keep their type for the checker.
		expr.Function("_plus", plus,
			new(func(string, string) string), new(func(int, int) int), new(func(float64, float64) float64),
			new(func(int, float64) float64), new(func(float64, int) float64),
			new(func(time.Time, time.Duration) time.Time), new(func(time.Duration, time.Time) time.Time),
			new(func(time.Duration, time.Duration) time.Duration), new(func(any, any) any)),
		expr.Operator("+", "_plus"),
	}
}

// plus is +: strings are concatenated up to maxString bytes, anything else is expr's own +.
func plus(a ...any) (any, error) {
	x, xs := a[0].(string)
	y, ys := a[1].(string)
	if xs && ys {
		if len(x)+len(y) > maxString {
			return nil, fmt.Errorf("a string longer than %d bytes", maxString)
		}
		return x + y, nil
	}
	return runtime.Add(a[0], a[1]), nil // panics on types + does not take: Run recovers it as an error
}

func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// week is a working-hours schedule: the minutes [from, to) of the listed days (to < from: the
// hours run past midnight into the next day).
type week struct {
	from, to int // minutes since midnight
	days     [7]bool
}

func schedule(hours, days string) (week, error) {
	var w week
	h, err := parseHours(hours)
	if err != nil {
		return w, err
	}
	d, err := parseDays(days)
	if err != nil {
		return w, err
	}
	w.from, w.to, w.days = h[0], h[1], d
	return w, nil
}

// parseHours reads "09:00-18:00".
func parseHours(s string) ([2]int, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return [2]int{}, fmt.Errorf("hours %q: want HH:MM-HH:MM, e.g. 09:00-18:00", s)
	}
	from, err := clock(a)
	if err != nil {
		return [2]int{}, fmt.Errorf("hours %q: %w", s, err)
	}
	to, err := clock(b)
	if err != nil {
		return [2]int{}, fmt.Errorf("hours %q: %w", s, err)
	}
	if from == to {
		return [2]int{}, fmt.Errorf("hours %q: the start and the end are the same", s)
	}
	return [2]int{from, to}, nil
}

func clock(s string) (int, error) {
	hh, mm, ok := strings.Cut(strings.TrimSpace(s), ":")
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	if !ok || err1 != nil || err2 != nil || h < 0 || h > 24 || m < 0 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("%q is not a time of day (HH:MM)", s)
	}
	return h*60 + m, nil
}

// parseDays reads "mon-fri", "mon,wed,fri", "sat-sun" or "mon-fri,sun".
func parseDays(s string) ([7]bool, error) {
	var out [7]bool
	for part := range strings.SplitSeq(strings.ToLower(s), ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(part), "-")
		from, ok1 := dayIndex(a)
		to, ok2 := from, true
		if isRange {
			to, ok2 = dayIndex(b)
		}
		if !ok1 || !ok2 {
			return out, fmt.Errorf("days %q: want names like mon-fri or mon,wed,fri", s)
		}
		for d := from; ; d = (d + 1) % 7 {
			out[d] = true
			if d == to {
				break
			}
		}
	}
	return out, nil
}

func dayIndex(s string) (int, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 3 {
		s = s[:3]
	}
	for i, n := range dayNames {
		if n == s {
			return i, true
		}
	}
	return 0, false
}

// open reports whether t is within the working hours.
func (w week) open(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	d := int(t.Weekday())
	if w.from < w.to {
		return w.days[d] && m >= w.from && m < w.to
	}
	// Past midnight: the evening part belongs to day d, the morning part to the day before.
	return (w.days[d] && m >= w.from) || (w.days[(d+6)%7] && m < w.to)
}

// next returns t when it is within the working hours, else the start of the next working
// period (in t's zone).
func (w week) next(t time.Time) time.Time {
	if w.open(t) {
		return t
	}
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	for i := range 8 {
		d := day.AddDate(0, 0, i)
		if !w.days[d.Weekday()] {
			continue
		}
		start := time.Date(d.Year(), d.Month(), d.Day(), w.from/60, w.from%60, 0, 0, t.Location())
		if start.After(t) {
			return start
		}
	}
	return t // no working day at all: cannot happen with a parsed schedule
}
