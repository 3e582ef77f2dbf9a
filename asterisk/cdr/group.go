package cdr

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Call is the CDR rows of one call.
type Call struct {
	// ID is the call's linkedid: the uniqueid of its first channel, which is also the Linkedid
	// of every AMI event of the call. Rows without a linkedid column get the smallest uniqueid
	// of the group (the first channel is the oldest one, and Asterisk's uniqueids are
	// "<creation time>.<counter>"); without uniqueids either, "<channel>@<start unix>" of the
	// earliest row, stable across reads of the same rows.
	ID string
	// Rows in order of Start, then uniqueid.
	Rows []Row
}

// Start returns the earliest Start of the call's rows.
func (c *Call) Start() time.Time { return c.Rows[0].Start }

// End returns the latest End of the call's rows.
func (c *Call) End() time.Time {
	var end time.Time
	for i := range c.Rows {
		if c.Rows[i].End.After(end) {
			end = c.Rows[i].End
		}
	}
	return end
}

// channelSlack is how far apart (in time) two rows naming the same channel may be and still be
// the same channel: rows are stamped to the second, and one channel's consecutive Dial records
// end and start in the same second.
const channelSlack = time.Second

// Group ties rows into calls, ordered by start.
//
// Rows that carry a linkedid (SQL tables, Master.csv with newcdrcolumns) are grouped by it.
// Rows without one are tied together when they share a channel: one row's channel or
// dstchannel is another's, or the two are the halves ";1" and ";2" of one Local channel, or
// they have the same uniqueid. Channel names repeat after an Asterisk restart (their counter
// restarts), so a shared name ties rows only when their times overlap. On the recordings this
// gives exactly the linkedids of the AMI stream, transfers and queues included (see the golden
// test). It can join what linkedid keeps apart: a transfer a phone makes by placing a new call
// has a linkedid of its own, but once it completes its target is bridged with the caller, so the
// chains join the two; for a CRM that is one customer call.
//
// Group sees only the rows it is given: a call straddling the edge of a read window comes out
// cut. Read a margin around the window and keep the calls whose Start is inside it.
func Group(rows []Row) []Call {
	byLinked := map[string][]int{}
	var chained []int
	for i := range rows {
		if rows[i].LinkedID != "" {
			byLinked[rows[i].LinkedID] = append(byLinked[rows[i].LinkedID], i)
		} else {
			chained = append(chained, i)
		}
	}
	calls := make([]Call, 0, len(byLinked)+len(chained)/2)
	for id, idx := range byLinked {
		calls = append(calls, newCall(id, rows, idx))
	}
	for _, idx := range chainGroups(rows, chained) {
		calls = append(calls, newCall("", rows, idx))
	}
	slices.SortFunc(calls, func(a, b Call) int {
		if c := a.Rows[0].Start.Compare(b.Rows[0].Start); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return calls
}

func newCall(id string, rows []Row, idx []int) Call {
	c := Call{ID: id, Rows: make([]Row, len(idx))}
	for i, j := range idx {
		c.Rows[i] = rows[j]
	}
	slices.SortStableFunc(c.Rows, func(a, b Row) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return compareUniqueID(a.UniqueID, b.UniqueID)
	})
	if c.ID == "" {
		first := c.Rows[0].UniqueID
		for i := range c.Rows {
			if u := c.Rows[i].UniqueID; u != "" && (first == "" || compareUniqueID(u, first) < 0) {
				first = u
			}
		}
		c.ID = first
		if c.ID == "" {
			c.ID = c.Rows[0].Channel + "@" + strconv.FormatInt(c.Rows[0].Start.Unix(), 10)
		}
	}
	return c
}

// chainGroups partitions the rows idx by shared channels (see Group).
func chainGroups(rows []Row, idx []int) [][]int {
	parent := make([]int, len(idx))
	for i := range parent {
		parent[i] = i
	}
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	union := func(a, b int) {
		if ra, rb := find(a), find(b); ra != rb {
			parent[rb] = ra
		}
	}

	type use struct {
		start, end time.Time
		at         int // index into idx
	}
	uses := map[string][]use{}
	sameUID := map[string]int{}
	for k, i := range idx {
		r := &rows[i]
		if r.UniqueID != "" {
			if first, ok := sameUID[r.UniqueID]; ok {
				union(first, k)
			} else {
				sameUID[r.UniqueID] = k
			}
		}
		for _, ch := range [2]string{r.Channel, r.DstChannel} {
			if ch != "" {
				key := channelKey(ch)
				uses[key] = append(uses[key], use{r.Start, r.End, k})
			}
		}
	}
	for _, us := range uses {
		slices.SortFunc(us, func(a, b use) int { return a.start.Compare(b.start) })
		head, reach := us[0].at, us[0].end
		for _, u := range us[1:] {
			if u.start.After(reach.Add(channelSlack)) { // no overlap: a later channel of that name
				head, reach = u.at, u.end
				continue
			}
			union(head, u.at)
			if u.end.After(reach) {
				reach = u.end
			}
		}
	}

	groups := map[int][]int{}
	var order []int
	for k, i := range idx {
		root := find(k)
		if _, ok := groups[root]; !ok {
			order = append(order, root)
		}
		groups[root] = append(groups[root], i)
	}
	out := make([][]int, 0, len(order))
	for _, root := range order {
		out = append(out, groups[root])
	}
	return out
}

// channelKey is the name that ties rows: a Local channel's two halves ("Local/101@phones-
// 0000000a;1" and ";2") are one call path, so the ";n" suffix is dropped for Local channels.
func channelKey(name string) string {
	if len(name) > 8 && strings.EqualFold(name[:6], "Local/") {
		if i := strings.LastIndexByte(name, ';'); i > 0 {
			return name[:i]
		}
	}
	return name
}

// compareUniqueID orders Asterisk uniqueids ("[system-]<seconds>.<counter>") by creation:
// seconds, then counter, numerically; others (and ties) by string.
func compareUniqueID(a, b string) int {
	as, ac, aok := splitUniqueID(a)
	bs, bc, bok := splitUniqueID(b)
	if aok && bok {
		if c := cmp.Compare(as, bs); c != 0 {
			return c
		}
		if c := cmp.Compare(ac, bc); c != 0 {
			return c
		}
	}
	return strings.Compare(a, b)
}

func splitUniqueID(u string) (sec, counter int64, ok bool) {
	if i := strings.LastIndexByte(u, '-'); i >= 0 { // systemname prefix
		u = u[i+1:]
	}
	s, c, found := strings.Cut(u, ".")
	if !found {
		return 0, 0, false
	}
	sec, err1 := strconv.ParseInt(s, 10, 64)
	counter, err2 := strconv.ParseInt(c, 10, 64)
	return sec, counter, err1 == nil && err2 == nil
}

// ReadCalls reads the calls that began in [from, to): it reads the rows of [from-margin,
// to+margin), groups them and keeps the calls whose first row starts in the window. The margin
// makes the calls whole: rows of a call that began before from (a transfer inside the window,
// say) are read too and keep that call out, and rows of a call that began in the window but
// started later (a transfer after to) are read and kept with it. Choose a margin longer than
// the calls whose edges matter; an hour covers ordinary office calls.
func ReadCalls(ctx context.Context, src Source, from, to time.Time, margin time.Duration) ([]Call, error) {
	rowFrom := from
	if !from.IsZero() {
		rowFrom = from.Add(-margin)
	}
	rows, err := src.Read(ctx, rowFrom, to.Add(margin))
	if err != nil {
		return nil, err
	}
	calls := Group(rows)
	out := calls[:0]
	for _, c := range calls {
		if s := c.Start(); !s.Before(from) && s.Before(to) {
			out = append(out, c)
		}
	}
	return out, nil
}
