package issuer

import (
	"fmt"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
)

// MonthTermEnd returns the inclusive last day of a term of n calendar months starting on start,
// under the legal rule for terms counted in months (ГК РФ art. 192, docs/licensing-design.md §3.6): the term
// runs out on the corresponding date of its last month, so its last full day is the day before;
// if the last month has no such date, the term ends on that month's last day. So Jan 15 + 1 month
// ends Feb 14, and Jan 31 + 1 month ends on the last day of February. A renewal starting the day
// after continues without gap or drift. Go's AddDate (which normalises Feb 31 to Mar 3) is never
// used. The second result explains the computation in words.
func MonthTermEnd(start licensing.Date, n int) (licensing.Date, string) {
	total := start.Year*12 + int(start.Month-1) + n
	y, m := total/12, time.Month(total%12+1)
	last := licensing.DaysIn(y, m)
	if start.Day <= last {
		corr := licensing.Date{Year: y, Month: m, Day: start.Day}
		end := corr.AddDays(-1)
		return end, fmt.Sprintf("%s + %d month(s): the corresponding date is %s, so the last day of the term is %s", start, n, corr, end)
	}
	end := licensing.Date{Year: y, Month: m, Day: last}
	return end, fmt.Sprintf("%s + %d month(s): %04d-%02d has no day %d, so the term ends on that month's last day, %s",
		start, n, y, int(m), start.Day, end)
}

// Plan is a computed term.
type Plan struct {
	Start, End, GraceUntil licensing.Date
	Explain                []string
}

// PlanTerm computes the term for months calendar months (or days days, for trials) from start and
// the grace period: grace_until = end + graceDays ("payment fewer than 7 days late keeps the licence
// running" is graceDays = 6, docs/licensing-design.md §3.17 question 2).
func PlanTerm(start licensing.Date, months, days, graceDays int) (Plan, error) {
	if start.IsZero() {
		return Plan{}, fmt.Errorf("a start date is required")
	}
	if graceDays < 0 || graceDays > licensing.MaxGraceDays {
		return Plan{}, fmt.Errorf("grace days must be 0..%d", licensing.MaxGraceDays)
	}
	p := Plan{Start: start}
	switch {
	case months > 0 && days > 0:
		return Plan{}, fmt.Errorf("give either months or days, not both")
	case months > 0:
		var why string
		p.End, why = MonthTermEnd(start, months)
		p.Explain = append(p.Explain, why)
	case days > 0:
		p.End = start.AddDays(days - 1)
		p.Explain = append(p.Explain, fmt.Sprintf("%s + %d day(s), both ends included: the last day is %s", start, days, p.End))
	default:
		return Plan{}, ErrNoTerm
	}
	p.GraceUntil = p.End.AddDays(graceDays)
	if graceDays == 0 {
		p.Explain = append(p.Explain, "no grace: the connector stops after "+p.End.String())
	} else {
		p.Explain = append(p.Explain, fmt.Sprintf("grace %d day(s) after the end: grace_until %s; expired from %s",
			graceDays, p.GraceUntil, p.GraceUntil.AddDays(1)))
	}
	return p, nil
}
