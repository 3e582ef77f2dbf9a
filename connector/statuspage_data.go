package connector

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// What the status page gathers besides the daemon's status: the last 24 hours from the outbox
// (calls per hour by outcome, the extensions that took part, the newest calls, delivery latency
// per connector), the CRM users of the connectors that know them, and number searches.

const (
	// activityHours is the status page's look back: the current hour and the 23 before it.
	activityHours = 24
	// activityTTL is how long the gathered 24 hours are reused: the outbox scan costs tens of
	// milliseconds per thousand calls, and the page reloads itself every few seconds.
	activityTTL = 15 * time.Second
	// directoryTimeout bounds each connector's UserDirectory.Users.
	directoryTimeout = 1500 * time.Millisecond
	// lastCalls is how many calls the page lists; searchLimit how many a search finds.
	lastCalls   = 25
	searchLimit = 50
	// minSearchDigits: shorter searches match too much to be useful.
	minSearchDigits = 3
	maxSearchLen    = 64
)

// activity is the last 24 hours as the outbox knows them.
type activity struct {
	at         time.Time
	since      time.Time
	hours      []hourCalls
	totals     [outcomes]int
	exts       map[string]int // extension → calls it took part in
	latest     []call.Record  // the newest calls, newest first
	deliveries []outbox.ConnectorDeliveries
	err        error
}

// activityCache keeps the last activity for activityTTL; one caller at a time gathers it.
type activityCache struct {
	mu  sync.Mutex
	act *activity
}

// activity returns the last 24 hours, gathered at most every activityTTL.
func (d *Daemon) activity(ctx context.Context) *activity {
	c := &d.pages.act
	c.mu.Lock()
	defer c.mu.Unlock()
	now := d.now()
	if c.act != nil && now.Sub(c.act.at) < activityTTL && now.Sub(c.act.at) >= 0 {
		return c.act
	}
	a := d.gatherActivity(ctx, now)
	if d.store != nil && ctx.Err() == nil {
		c.act = a // kept unless it was gathered before the outbox opened or cut short
	}
	return a
}

// activityStart is the start of the first of the activityHours hours ending with now's hour, in
// now's location.
func activityStart(now time.Time) time.Time {
	hour := time.Date(now.Year(), now.Month(), now.Day(), now.Hour(), 0, 0, 0, now.Location())
	return hour.Add(-(activityHours - 1) * time.Hour)
}

// outcomeOf groups a call's disposition for the chart.
func outcomeOf(d call.Disposition) outcome {
	switch d {
	case call.Answered:
		return outAnswered
	case call.Busy:
		return outBusy
	case call.Failed:
		return outFailed
	}
	return outMissed
}

// extsOf lists, once each, the extensions that took part in a call: rang, answered, talked,
// placed it, transferred it.
func extsOf(r *call.Record) []string {
	seen := map[string]bool{}
	var out []string
	add := func(e string) {
		if e = strings.TrimSpace(e); e != "" && !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	add(r.AnsweredBy)
	add(r.CallerExt)
	for _, e := range r.Rang {
		add(e)
	}
	for _, l := range r.Legs {
		add(l.Ext)
	}
	for _, t := range r.Transfers {
		add(t.From)
		add(t.To)
	}
	return out
}

func (d *Daemon) gatherActivity(ctx context.Context, now time.Time) *activity {
	a := &activity{at: now, since: activityStart(now), exts: map[string]int{}}
	a.hours = make([]hourCalls, activityHours)
	for i := range a.hours {
		a.hours[i].Start = a.since.Add(time.Duration(i) * time.Hour)
	}
	if d.store == nil {
		return a
	}
	err := d.store.EachCall(ctx, outbox.CallQuery{Since: a.since}, func(c outbox.CallRef) error {
		var rec call.Record
		if json.Unmarshal(c.Payload, &rec) != nil || rec.CallID == "" {
			return nil //nolint:nilerr // not a call record: nothing to count, and the others still count
		}
		i := int(c.StartedAt.Sub(a.since) / time.Hour)
		if i < 0 || i >= activityHours {
			return nil
		}
		o := outcomeOf(rec.Disposition)
		a.hours[i].N[o]++
		a.totals[o]++
		for _, e := range extsOf(&rec) {
			a.exts[e]++
		}
		a.latest = newestCalls(a.latest, rec, lastCalls)
		return nil
	})
	if err != nil {
		a.err = err
		return a
	}
	a.deliveries, a.err = d.store.Deliveries(ctx, outbox.ActivityQuery{Since: a.since, Bucket: time.Hour, Buckets: activityHours})
	return a
}

// newestCalls adds rec to list (newest first) and keeps the n newest.
func newestCalls(list []call.Record, rec call.Record, n int) []call.Record {
	i, _ := slices.BinarySearchFunc(list, rec.StartedAt, func(r call.Record, t time.Time) int { return t.Compare(r.StartedAt) })
	if i >= n {
		return list
	}
	list = slices.Insert(list, i, rec)
	if len(list) > n {
		list = list[:n]
	}
	return list
}

// directory is the CRM users of one connector that implements crm.UserDirectory.
type directory struct {
	Connector string
	Users     []crm.User
	Err       error
}

// directories asks every connector that knows its CRM users, all at once, each bounded by
// directoryTimeout.
func (d *Daemon) directories(ctx context.Context) []directory {
	var dirs []directory
	var ads []crm.UserDirectory
	for _, c := range d.routes() {
		if ud, ok := c.adapter.(crm.UserDirectory); ok {
			dirs = append(dirs, directory{Connector: c.name})
			ads = append(ads, ud)
		}
	}
	var wg sync.WaitGroup
	for i := range dirs {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, directoryTimeout)
			defer cancel()
			dirs[i].Users, dirs[i].Err = ads[i].Users(cctx)
		})
	}
	wg.Wait()
	return dirs
}

// names maps extensions to the employee's name: the first connector (config order) that names
// the user the extension reaches.
func names(dirs []directory) map[string]string {
	out := map[string]string{}
	for _, dir := range dirs {
		for _, u := range dir.Users {
			if u.Ext != "" && u.Name != "" {
				if _, ok := out[u.Ext]; !ok {
					out[u.Ext] = u.Name
				}
			}
		}
	}
	return out
}

// mappingView is the extension → CRM user table.
type mappingView struct {
	Connectors []string
	Rows       []extRow
	Unmapped   []unmappedUsers
	Notes      []string
	// Missing counts the extensions that took calls but reach no user in some CRM.
	Missing int
}

type extRow struct {
	Ext     string
	Calls   int
	Cells   []mapCell
	Problem bool // took calls, reaches no user in some CRM
}

type mapCell struct {
	Users   []mapUser
	Missing bool // no user in this CRM
}

type mapUser struct {
	Name, ID, Note string
	Inactive       bool
	Shadowed       bool // shares the extension with a user listed before: gets no calls
}

type unmappedUsers struct {
	Connector string
	Users     []string
}

// buildMapping lays out which extension reaches which user in each CRM, with the extensions that
// took calls in the last 24 hours.
func buildMapping(l lang, dirs []directory, exts map[string]int) mappingView {
	v := mappingView{}
	all := maps.Clone(exts)
	if all == nil {
		all = map[string]int{}
	}
	byConn := make([]map[string][]crm.User, len(dirs))
	for i, dir := range dirs {
		v.Connectors = append(v.Connectors, dir.Connector)
		byConn[i] = map[string][]crm.User{}
		var free []string
		for _, u := range dir.Users {
			if u.Ext == "" {
				if u.Active {
					free = append(free, userLabel(u))
				}
				continue
			}
			byConn[i][u.Ext] = append(byConn[i][u.Ext], u)
			if _, ok := all[u.Ext]; !ok {
				all[u.Ext] = 0
			}
		}
		if len(free) > 0 {
			v.Unmapped = append(v.Unmapped, unmappedUsers{Connector: dir.Connector, Users: free})
		}
		if dir.Err != nil {
			v.Notes = append(v.Notes, l.F("map.note.error", dir.Connector, oneLine(dir.Err.Error(), 200)))
		}
	}
	for _, ext := range slices.SortedFunc(maps.Keys(all), compareExt) {
		row := extRow{Ext: ext, Calls: all[ext]}
		for i := range dirs {
			var cell mapCell
			for j, u := range byConn[i][ext] {
				mu := mapUser{Name: u.Name, ID: u.ID, Inactive: !u.Active, Shadowed: j > 0}
				if u.Source == crm.UserFromConfig {
					mu.Note = l.T("map.source.config")
				}
				cell.Users = append(cell.Users, mu)
			}
			cell.Missing = len(cell.Users) == 0
			if cell.Missing && row.Calls > 0 {
				row.Problem = true
			}
			row.Cells = append(row.Cells, cell)
		}
		if row.Problem {
			v.Missing++
		}
		v.Rows = append(v.Rows, row)
	}
	return v
}

// userLabel is a user as the unmapped list shows them: name (id).
func userLabel(u crm.User) string {
	if u.Name == "" {
		return "#" + u.ID
	}
	return u.Name + " (#" + u.ID + ")"
}

// compareExt orders extensions numerically when both are numbers, else as text.
func compareExt(a, b string) int {
	if isDigits(a) && isDigits(b) && len(a) != len(b) {
		return cmp.Compare(len(a), len(b))
	}
	return strings.Compare(a, b)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// digitsOf keeps the digits of s.
func digitsOf(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// searchNeedles are the digit strings a search for q looks for: q's digits, and the digits of
// q normalised to E.164 (8 900 … → +7900…) when that differs.
func (d *Daemon) searchNeedles(q string) []string {
	digits := digitsOf(q)
	if len(digits) < minSearchDigits {
		return nil
	}
	needles := []string{digits}
	if n := digitsOf(d.norm.Normalize(q)); n != "" && !strings.Contains(n, digits) && !strings.Contains(digits, n) {
		needles = append(needles, n)
	}
	return needles
}

// matches reports whether the call's customer or line holds one of the needles.
func matches(r *call.Record, needles []string) bool {
	for _, s := range []string{r.Customer, r.Line} {
		ds := digitsOf(s)
		for _, n := range needles {
			if ds != "" && strings.Contains(ds, n) {
				return true
			}
		}
	}
	return false
}

// search finds the calls whose customer or line holds the needles: in the outbox (the whole
// retention, newest first) and among the recent calls kept in memory (calls sent to no CRM).
func (d *Daemon) search(ctx context.Context, needles []string, recent []admin.RecentCall) ([]admin.RecentCall, error) {
	found := map[string]admin.RecentCall{}
	for _, rc := range recent {
		if matches(&rc.Record, needles) {
			found[rc.Record.Key()] = rc
		}
	}
	var err error
	if d.store != nil {
		days := max(d.Config().Outbox.RetentionDays, 1)
		since := d.now().Add(-time.Duration(days) * 24 * time.Hour)
		err = d.store.EachCall(ctx, outbox.CallQuery{Since: since, Contains: needles, Limit: searchLimit}, func(c outbox.CallRef) error {
			var rec call.Record
			if json.Unmarshal(c.Payload, &rec) == nil && matches(&rec, needles) {
				if _, ok := found[c.Key]; !ok {
					found[c.Key] = admin.RecentCall{Record: rec}
				}
			}
			return nil
		})
	}
	out := slices.Collect(maps.Values(found))
	sortCalls(out)
	if len(out) > searchLimit {
		out = out[:searchLimit]
	}
	return out, err
}

// sortCalls orders calls newest first (by start time, then key).
func sortCalls(calls []admin.RecentCall) {
	slices.SortFunc(calls, func(a, b admin.RecentCall) int {
		if c := b.Record.StartedAt.Compare(a.Record.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(b.Record.Key(), a.Record.Key())
	})
}

// latestCalls merges the calls kept in memory with the newest of the outbox (which survive a
// restart), newest first, n at most.
func latestCalls(recent []admin.RecentCall, fromOutbox []call.Record, n int) []admin.RecentCall {
	byKey := map[string]admin.RecentCall{}
	for _, r := range fromOutbox {
		byKey[r.Key()] = admin.RecentCall{Record: r}
	}
	for _, rc := range recent {
		byKey[rc.Record.Key()] = rc
	}
	out := slices.Collect(maps.Values(byKey))
	sortCalls(out)
	if len(out) > n {
		out = out[:n]
	}
	return out
}
