package licensing

import (
	"encoding/json"
	"fmt"
	"time"
)

// Date is a calendar date without a time zone, as signed in a licence (`YYYY-MM-DD`). Terms are
// inclusive calendar dates interpreted in the token's own `tz`.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// ParseDate parses a strict YYYY-MM-DD date.
func ParseDate(s string) (Date, error) {
	if len(s) != len("2006-01-02") {
		return Date{}, fmt.Errorf("date %q: want YYYY-MM-DD", s)
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, fmt.Errorf("date %q: want YYYY-MM-DD", s)
	}
	d := DateOf(t)
	if d.String() != s {
		return Date{}, fmt.Errorf("date %q: want YYYY-MM-DD", s)
	}
	return d, nil
}

// MustDate is ParseDate for constants in tests and tables; it panics on a bad literal.
func MustDate(s string) Date {
	d, err := ParseDate(s)
	if err != nil {
		panic(err)
	}
	return d
}

// DateOf returns the calendar date of t in t's own location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// IsZero reports whether d is the zero Date.
func (d Date) IsZero() bool { return d == Date{} }

// String formats d as YYYY-MM-DD.
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day) }

// noonUTC is a stable instant on d for day arithmetic (no DST involved).
func (d Date) noonUTC() time.Time { return time.Date(d.Year, d.Month, d.Day, 12, 0, 0, 0, time.UTC) }

// AddDays returns d shifted by n days.
func (d Date) AddDays(n int) Date { return DateOf(d.noonUTC().AddDate(0, 0, n)) }

// DaysUntil returns the number of days from d to o (negative when o is before d).
func (d Date) DaysUntil(o Date) int {
	return int(o.noonUTC().Sub(d.noonUTC()).Round(time.Hour) / (24 * time.Hour))
}

// Compare returns -1, 0 or +1.
func (d Date) Compare(o Date) int {
	switch {
	case d.Year != o.Year:
		return cmpInt(d.Year, o.Year)
	case d.Month != o.Month:
		return cmpInt(int(d.Month), int(o.Month))
	default:
		return cmpInt(d.Day, o.Day)
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Before reports whether d is before o.
func (d Date) Before(o Date) bool { return d.Compare(o) < 0 }

// After reports whether d is after o.
func (d Date) After(o Date) bool { return d.Compare(o) > 0 }

// Start returns the first instant of d in loc. Where a DST change skips local midnight, that is
// the first instant that exists on d.
func (d Date) Start(loc *time.Location) time.Time {
	const step = 15 * time.Minute // every real UTC offset is a multiple of 15 minutes
	t := time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, loc)
	for i := 0; i < 16 && DateOf(t.In(loc)).Before(d); i++ {
		t = t.Add(step)
	}
	for i := 0; i < 16 && DateOf(t.Add(-step).In(loc)) == d; i++ {
		t = t.Add(-step)
	}
	return t
}

// DaysIn returns the number of days in month m of year y.
func DaysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 12, 0, 0, 0, time.UTC).Day()
}

// MarshalText implements encoding.TextMarshaler.
func (d Date) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (strict YYYY-MM-DD).
func (d *Date) UnmarshalText(b []byte) error {
	p, err := ParseDate(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// MarshalJSON encodes d as a JSON string.
func (d Date) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON decodes a JSON string YYYY-MM-DD.
func (d *Date) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("date: want a string: %w", err)
	}
	return d.UnmarshalText([]byte(s))
}
