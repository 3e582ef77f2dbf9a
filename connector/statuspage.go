package connector

import (
	"context"
	"crypto/subtle"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// The status page (GET / on the admin listener) and a call's page (GET /calls/<key>): plain
// server-rendered HTML in English or Russian (statuspage_i18n.go), charts as inline SVG, no
// external resource, one small script (reload, the retry button). Every value goes through
// html/template; the pages are served with a CSP, X-Frame-Options DENY and no-store.

//go:embed web/status.html
var webFS embed.FS

// pages are the status page templates per language (the layout with each page's content) and
// the cache of what the page gathers from the outbox.
type pages struct {
	status, call map[lang]*template.Template
	act          activityCache
}

func loadPages() (*pages, error) {
	p := &pages{status: map[lang]*template.Template{}, call: map[lang]*template.Template{}}
	for _, l := range langs {
		funcs := template.FuncMap{
			"t":  l.T,
			"tf": l.F,
			"n":  func(key string, n int) string { return l.N(key, int64(n)) },
			"num": func(n any) string {
				switch v := n.(type) {
				case int:
					return l.Num(int64(v))
				case int64:
					return l.Num(v)
				}
				return fmt.Sprint(n)
			},
			"px": px,
		}
		base, err := template.New("web").Funcs(funcs).ParseFS(webFS, "web/status.html")
		if err != nil {
			return nil, err
		}
		page := func(content string) (*template.Template, error) {
			t, err := base.Clone()
			if err != nil {
				return nil, err
			}
			return t.Parse(`{{define "content"}}{{template "` + content + `" .}}{{end}}`)
		}
		if p.status[l], err = page("status-content"); err != nil {
			return nil, err
		}
		if p.call[l], err = page("call-content"); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// pageView is what every page has.
type pageView struct {
	Lang           string
	Title, Version string
	Ready          bool
	Now            string
	Query          string // the number searched for
}

// statusView is what the status page shows.
type statusView struct {
	pageView
	Problems   []string
	Cards      []cardView
	Calls24    *chartView
	Legend     []legendItem
	Latency    []latencyView
	Activity   string // a problem reading the outbox
	Connectors []connectorView
	Licences   []licenceView
	PBX        []pbxView
	Outbox     []outboxView
	Held       int
	Mapping    mappingView
	Calls      []callView
	Searched   bool
	SearchNote string
	Found      []foundRow
	TZ         string
}

type cardView struct {
	ID, Label, Value, Sub, Class string
}

type legendItem struct {
	Class, Label string
	N            int
}

type connectorView struct {
	Name, Type                 string
	Auth, AuthClass            string
	ConnectURL                 string
	Delivered                  int64
	Pending, Dead              int64
	Oldest                     string
	LastError                  string
	LicenceState, LicenceClass string
}

type licenceView struct {
	Connector, Type   string
	State, StateClass string
	Reason            string
	Kind, Licensee    string
	Ends, Grace       string
	DaysLeft          string
	DaysLabel         string
	DaysClass         string
	Seats             []seatView
	Warning           string
	Next              string
	Needed            bool
}

type seatView struct {
	Label, Used, Limit string
	Limited            bool
	Pct                int
	Class              string
}

type pbxView struct {
	Name, Kind, Address string
	Connected           bool
	LastError           string
	Events, Reconnects  int64
	Since               string
}

type outboxView struct {
	Connector                   string
	Pending, Leased, Done, Dead int64
	Oldest                      string
}

type foundRow struct {
	Key, Connector, State, Class string
	Attempts                     int
	LastError                    string
}

type callView struct {
	Key, Started, StartedFull string
	Direction, DirClass       string
	Customer, Line            string
	Result, ResultClass       string
	Employee, EmployeeExt     string
	Note                      string
	Talk                      string
	Delivery                  []deliveryView
	NotSent                   string
}

type deliveryView struct{ Connector, State, Class string }

// stateClass is the CSS class of a state: ok, warn or bad.
func stateClass(s string) string {
	switch s {
	case "active", "trial", "ok", "done", "delivered", "not_needed":
		return "ok"
	case "grace", "pending", "leased", "missing":
		return "warn"
	}
	return "bad"
}

func (d *Daemon) basePage(l lang, title string) pageView {
	return pageView{Lang: l.Code(), Title: title, Version: d.opts.Version, Ready: d.ready.Load(), Now: l.Stamp(d.now())}
}

// statusPage renders the status page. It is read-only; the only action (retrying dead letters)
// needs the admin token.
func (d *Daemon) statusPage(w http.ResponseWriter, r *http.Request) {
	l := d.pageLang(r)
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st := d.Status(ctx)
	now := d.now()
	v := statusView{pageView: d.basePage(l, l.T("title.status")), Held: st.HeldCalls, TZ: now.Format("MST")}
	v.Ready = st.Ready
	for _, ck := range st.Checks {
		if !ck.OK {
			v.Problems = append(v.Problems, ck.Name+": "+ck.Detail)
		}
	}
	act := d.activity(ctx)
	if act.err != nil {
		v.Activity = l.F("activity.error", oneLine(act.err.Error(), 200))
	}
	dirs := d.directories(ctx)
	who := names(dirs)

	counts := map[string]outbox.ConnectorStats{}
	var pending, dead int64
	for _, o := range st.Outbox {
		counts[o.Connector] = o
		pending += o.Pending + o.Leased
		dead += o.Dead
		v.Outbox = append(v.Outbox, outboxView{Connector: o.Connector, Pending: o.Pending, Leased: o.Leased, Done: o.Done, Dead: o.Dead, Oldest: ageOf(l, o.OldestPendingAge)})
	}
	for _, c := range st.Connectors {
		v.Connectors = append(v.Connectors, connectorViewOf(l, c, counts[c.Name]))
		v.Licences = append(v.Licences, licenceViewOf(l, c))
	}
	for _, p := range st.PBX {
		v.PBX = append(v.PBX, pbxViewOf(l, p, now))
	}
	v.Cards = cards(l, act, pending, dead)
	v.Calls24 = callsChart(l, act.hours)
	for o := range outcomes {
		v.Legend = append(v.Legend, legendItem{Class: outcomeKeys[o], Label: l.T("outcome." + outcomeKeys[o]), N: act.totals[o]})
	}
	v.Latency = latencyCharts(l, act.deliveries)
	v.Mapping = buildMapping(l, dirs, act.exts)

	v.Query = strings.TrimSpace(r.URL.Query().Get("q"))
	var list []admin.RecentCall
	if v.Query != "" {
		v.Searched = true
		if len(v.Query) > maxSearchLen {
			v.Query = v.Query[:maxSearchLen]
		}
		needles := d.searchNeedles(v.Query)
		if needles == nil {
			v.SearchNote = l.F("search.short", minSearchDigits)
		} else {
			sctx, scancel := context.WithTimeout(r.Context(), 10*time.Second)
			found, err := d.search(sctx, needles, d.recent.list())
			scancel()
			list = found
			switch {
			case err != nil:
				v.SearchNote = l.F("search.error", oneLine(err.Error(), 200))
			case len(found) == 0:
				v.SearchNote = l.F("search.none", max(d.Config().Outbox.RetentionDays, 1))
			case len(found) >= searchLimit:
				v.SearchNote = l.F("search.limit", searchLimit)
			}
		}
	} else {
		list = latestCalls(d.recent.list(), act.latest, lastCalls)
	}
	for _, rc := range list {
		cv, rows := d.callView(ctx, l, rc, who, now)
		v.Calls = append(v.Calls, cv)
		if v.Searched {
			for _, row := range rows {
				st := deliveryState(l, row.State)
				v.Found = append(v.Found, foundRow{Key: row.Key, Connector: row.Connector, State: st, Class: stateClass(string(row.State)),
					Attempts: row.Attempts, LastError: oneLine(row.LastError, 160)})
			}
		}
	}
	d.render(w, l, d.pages.status[l], v)
}

// cards are the figures at the top of the page.
func cards(l lang, act *activity, pending, dead int64) []cardView {
	total := int64(0)
	for _, n := range act.totals {
		total += int64(n)
	}
	answered := int64(act.totals[outAnswered])
	missed := int64(act.totals[outMissed])
	out := []cardView{
		{ID: "card-calls", Label: l.T("card.calls"), Value: l.Num(total), Sub: l.F("card.calls.sub", l.Pct(answered, total))},
		{ID: "card-missed", Label: l.T("card.missed"), Value: l.Num(missed),
			Sub: l.F("card.missed.sub", l.Num(int64(act.totals[outBusy])), l.Num(int64(act.totals[outFailed])))},
	}
	var delivered int
	var slowest time.Duration
	slowName := ""
	for _, c := range act.deliveries {
		delivered += c.Total.Delivered
		if c.Total.Delivered > 0 && c.Total.P95 >= slowest {
			slowest, slowName = c.Total.P95, c.Connector
		}
	}
	dc := cardView{ID: "card-delivered", Label: l.T("card.delivered"), Value: l.Num(int64(delivered)), Sub: l.T("card.delivered.none")}
	if slowName != "" {
		dc.Sub = l.F("card.delivered.sub", l.Dur(slowest), slowName)
	}
	out = append(out, dc)
	qc := cardView{ID: "card-queue", Label: l.T("card.queue"), Value: l.Num(pending), Sub: l.T("card.queue.ok"), Class: "ok"}
	if dead > 0 {
		qc.Sub, qc.Class = l.N("plural.dead", dead), "bad"
	}
	return append(out, qc)
}

func ageOf(l lang, d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return l.Dur(d)
}

func connectorViewOf(l lang, c admin.ConnectorReport, o outbox.ConnectorStats) connectorView {
	cv := connectorView{Name: c.Name, Type: c.Type, Delivered: c.Delivery.Delivered, LastError: oneLine(c.Delivery.LastError, 160),
		ConnectURL: c.CRM.ConnectURL, Pending: o.Pending + o.Leased, Dead: o.Dead, Oldest: ageOf(l, o.OldestPendingAge)}
	auth := c.CRM.Auth
	if auth == "" {
		auth = "ok"
	}
	if c.Delivery.AuthBroken {
		auth = "reauthorize"
	}
	cv.Auth, cv.AuthClass = l.TOr("auth."+auth, auth), stateClass(auth)
	state := "not_needed"
	if c.Licence != nil {
		state = string(c.Licence.State)
	}
	cv.LicenceState, cv.LicenceClass = l.TOr("lic.state."+state, state), stateClass(state)
	return cv
}

// licenceViewOf is one connector's licence: state, term, days left and seats.
func licenceViewOf(l lang, c admin.ConnectorReport) licenceView {
	v := licenceView{Connector: c.Name, Type: c.Type, DaysLeft: "—", DaysLabel: l.plural("plural.daysleft", 0)}
	if c.Licence == nil {
		v.State, v.StateClass = l.T("lic.state.not_needed"), "ok"
		return v
	}
	s := c.Licence
	v.Needed = true
	v.State, v.StateClass = l.TOr("lic.state."+string(s.State), string(s.State)), stateClass(string(s.State))
	v.Reason = s.Reason
	if s.DaysLeft != nil {
		days := int64(*s.DaysLeft)
		v.DaysLeft, v.DaysLabel = l.Num(days), l.plural("plural.daysleft", days)
		switch {
		case days <= 7:
			v.DaysClass = "bad"
		case days <= 30:
			v.DaysClass = "warn"
		}
	}
	if li := s.License; li != nil {
		v.Kind = l.TOr("lic.type."+li.Type, li.Type)
		v.Licensee = li.Licensee
		if li.End != "" {
			v.Ends = l.Date(li.End)
		}
		if li.GraceUntil != "" {
			v.Grace = l.Date(li.GraceUntil)
		}
	}
	if n := s.Next; n != nil && n.Start != "" {
		v.Next = l.F("lic.next", l.Date(n.Start))
	}
	v.Seats = []seatView{
		seat(l, l.T("lic.seats.ext"), s.Seats.ExtensionsUsed, s.Seats.ExtensionsLimit),
		seat(l, l.T("lic.seats.users"), s.Seats.CRMUsersUsed, s.Seats.CRMUsersLimit),
	}
	switch {
	case s.Seats.SuspendedExcess:
		v.Warning = l.F("lic.suspended", strings.Join(s.Seats.Suspended, ", "))
	case s.Seats.OverLimit && s.Seats.Deadline != nil:
		v.Warning = l.F("lic.over.until", l.Stamp(*s.Seats.Deadline))
	case s.Seats.OverLimit:
		v.Warning = l.T("lic.over")
	}
	return v
}

func seat(l lang, label string, used int, limit *int) seatView {
	sv := seatView{Label: label, Used: l.Num(int64(used)), Limit: "∞", Class: "ok"}
	if limit != nil {
		sv.Limited, sv.Limit = true, l.Num(int64(*limit))
		if *limit > 0 {
			sv.Pct = min(100*used / *limit, 100)
		} else if used > 0 {
			sv.Pct = 100
		}
		switch {
		case used > *limit:
			sv.Class = "bad"
		case sv.Pct >= 90:
			sv.Class = "warn"
		}
	}
	return sv
}

func pbxViewOf(l lang, p asterisk.SourceStatus, now time.Time) pbxView {
	v := pbxView{Name: p.Name, Kind: strings.ToUpper(p.Kind), Address: p.Address, Connected: p.Connected, LastError: oneLine(p.LastError, 160),
		Events: p.Events, Reconnects: p.Reconnects}
	if !p.Since.IsZero() {
		v.Since = l.Dur(now.Sub(p.Since))
	}
	return v
}

// deliveryState names an outbox row state.
func deliveryState(l lang, s outbox.State) string { return l.TOr("state."+string(s), string(s)) }

// employee is an extension as the page shows it: the employee's name when a CRM knows it.
func employee(who map[string]string, ext string) (name, number string) {
	if n, ok := who[ext]; ok {
		return n, ext
	}
	return ext, ""
}

// callView is one call of the list, with its delivery state per connector (its outbox rows).
func (d *Daemon) callView(ctx context.Context, l lang, rc admin.RecentCall, who map[string]string, now time.Time) (callView, []outbox.Row) {
	r := &rc.Record
	cv := callView{Key: r.Key(), Started: l.When(r.StartedAt.In(now.Location()), now), StartedFull: l.Stamp(r.StartedAt.In(now.Location())),
		Direction: l.TOr("dir."+string(r.Direction), string(r.Direction)), DirClass: string(r.Direction), Customer: r.Customer, Line: r.Line,
		Result: l.T("outcome." + outcomeKeys[outcomeOf(r.Disposition)]), ResultClass: outcomeKeys[outcomeOf(r.Disposition)],
		Talk: l.Clock(r.TalkSeconds)}
	switch {
	case r.AnsweredBy != "":
		cv.Employee, cv.EmployeeExt = employee(who, r.AnsweredBy)
	case r.CallerExt != "":
		cv.Employee, cv.EmployeeExt = employee(who, r.CallerExt)
	case len(r.Rang) > 0:
		var rang []string
		for _, e := range r.Rang {
			name, _ := employee(who, e)
			rang = append(rang, name)
		}
		cv.Note = l.F("call.rang", strings.Join(rang, ", "))
	}
	var rows []outbox.Row
	if d.store != nil {
		rows, _ = d.store.List(ctx, outbox.Filter{Key: r.Key(), Limit: 20})
	}
	for _, row := range rows {
		cv.Delivery = append(cv.Delivery, deliveryView{Connector: row.Connector, State: deliveryState(l, row.State), Class: stateClass(string(row.State))})
	}
	if len(rows) == 0 {
		cv.NotSent = l.T("call.notsent")
		if r.Direction == call.Internal {
			cv.NotSent = l.T("call.notsent.internal")
		}
	}
	return cv, rows
}

// callPageView is what a call's page shows.
type callPageView struct {
	pageView
	Key      string
	Summary  string
	Facts    []fact
	Rows     []callRowView
	Timeline []timelineView
}

type fact struct{ Label, Value, ID string }

type callRowView struct {
	Connector, State, Class string
	Attempts                int
	Requests                string
	LastError               string
}

type timelineView struct {
	At, Connector, Kind, KindLabel, Summary, Detail string
	Live                                            bool
}

// callPage shows one call: what it was, where it went, and its timeline.
func (d *Daemon) callPage(w http.ResponseWriter, r *http.Request) {
	l := d.pageLang(r)
	key := r.PathValue("key")
	rep, err := d.Call(r.Context(), key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	now := d.now()
	v := callPageView{pageView: d.basePage(l, l.F("title.call", rep.Key)), Key: rep.Key}
	var who map[string]string
	if rep.Record != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		who = names(d.directories(ctx))
		cancel()
		v.Summary = summary(l, rep.Record, who)
		v.Facts = facts(l, rep.Record, who, now.Location())
	}
	timeline := sortTimeline(rep.Timeline)
	requests := requestCounts(timeline)
	for _, row := range rep.Rows {
		rv := callRowView{Connector: row.Connector, State: deliveryState(l, outbox.State(row.State)), Class: stateClass(row.State),
			Attempts: row.Attempts, LastError: oneLine(row.LastError, 400)}
		if n := requests[row.Connector]; n.total > 0 {
			rv.Requests = l.Num(int64(n.total))
			if n.live > 0 {
				rv.Requests = l.F("call.requests.split", l.Num(int64(n.total)), l.Num(int64(n.live)), l.Num(int64(n.total-n.live)))
			}
		} else {
			rv.Requests = "0"
		}
		v.Rows = append(v.Rows, rv)
	}
	live := liveEntries(timeline)
	for i, e := range timeline {
		detail := e.Detail
		if e.Kind == "call" {
			detail = "" // the record itself is shown above
		}
		label := l.TOr("kind."+e.Kind, strings.ReplaceAll(e.Kind, "_", " "))
		v.Timeline = append(v.Timeline, timelineView{At: e.At.In(now.Location()).Format("15:04:05.000"), Connector: e.Connector, Kind: e.Kind,
			KindLabel: label, Summary: e.Summary, Detail: oneLine(detail, 2000), Live: live[i]})
	}
	d.render(w, l, d.pages.call[l], v)
}

// isRequest reports whether a timeline entry is a CRM request: a "request" step (of a delivery
// or a live card, "live_request"), or another step that names one ("POST /api/v4/calls": a
// request sent for a batch of calls).
func isRequest(e outbox.TimelineEntry) bool {
	if e.Kind == "request" || strings.HasSuffix(e.Kind, "_request") {
		return true
	}
	if e.Kind == "response" {
		return false
	}
	method, rest, ok := strings.Cut(e.Summary, " ")
	if !ok || rest == "" {
		return false
	}
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// sortTimeline orders a call's timeline by time (entries of one moment in the order they were
// written): live requests written after the hangup then come before it.
func sortTimeline(tl []outbox.TimelineEntry) []outbox.TimelineEntry {
	out := slices.Clone(tl)
	slices.SortStableFunc(out, func(a, b outbox.TimelineEntry) int { return a.At.Compare(b.At) })
	return out
}

// liveEntries marks the timeline entries of a connector made while the call was in progress:
// before the call's own entry (dated at the hangup), or of a kind that says so ("live…").
func liveEntries(tl []outbox.TimelineEntry) []bool {
	out := make([]bool, len(tl))
	var ended time.Time
	for _, e := range tl {
		if e.Kind == "call" {
			ended = e.At
		}
	}
	for i, e := range tl {
		out[i] = e.Connector != "" && (strings.HasPrefix(e.Kind, "live") || (!ended.IsZero() && e.At.Before(ended)))
	}
	return out
}

type reqCount struct{ total, live int }

// requestCounts counts the CRM requests each connector made for the call, from its timeline.
func requestCounts(tl []outbox.TimelineEntry) map[string]reqCount {
	out := map[string]reqCount{}
	live := liveEntries(tl)
	for i, e := range tl {
		if e.Connector == "" || !isRequest(e) {
			continue
		}
		c := out[e.Connector]
		c.total++
		if live[i] {
			c.live++
		}
		out[e.Connector] = c
	}
	return out
}

// summary is the call in one sentence of the page's language.
func summary(l lang, r *call.Record, who map[string]string) string {
	named := func(ext string) string {
		if n, ok := who[ext]; ok {
			return n + " (" + ext + ")"
		}
		return ext
	}
	var s string
	switch r.Direction {
	case call.Inbound:
		s = l.F("sum.inbound", orDash(r.Customer), orDash(r.Line))
	case call.Outbound:
		s = l.F("sum.outbound", orDash(r.Customer), orDash(r.Line))
		if r.CallerExt != "" {
			s += " " + l.F("sum.by", named(r.CallerExt))
		}
	default:
		s = l.T("sum.internal")
	}
	switch r.Disposition {
	case call.Answered:
		s += ": " + l.F("sum.answered", named(r.AnsweredBy))
	default:
		s += ": " + l.T("sum."+outcomeKeys[outcomeOf(r.Disposition)])
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// facts are the call's details as label/value pairs.
func facts(l lang, r *call.Record, who map[string]string, loc *time.Location) []fact {
	named := func(exts ...string) string {
		var out []string
		for _, e := range exts {
			if n, ok := who[e]; ok {
				out = append(out, n+" ("+e+")")
			} else {
				out = append(out, e)
			}
		}
		return strings.Join(out, ", ")
	}
	fs := []fact{
		{Label: l.T("fact.direction"), Value: l.TOr("dir."+string(r.Direction), string(r.Direction))},
		{Label: l.T("fact.customer"), Value: orDash(r.Customer)},
		{Label: l.T("fact.line"), Value: orDash(r.Line)},
		{Label: l.T("fact.started"), Value: l.Stamp(r.StartedAt.In(loc))},
		{Label: l.T("fact.result"), Value: l.T("outcome." + outcomeKeys[outcomeOf(r.Disposition)])},
	}
	if r.AnsweredBy != "" {
		fs = append(fs, fact{Label: l.T("fact.answeredby"), Value: named(r.AnsweredBy)})
	}
	if r.CallerExt != "" {
		fs = append(fs, fact{Label: l.T("fact.caller"), Value: named(r.CallerExt)})
	}
	if len(r.Rang) > 0 {
		fs = append(fs, fact{Label: l.T("fact.rang"), Value: named(r.Rang...)})
	}
	fs = append(fs, fact{Label: l.T("fact.ring"), Value: l.Clock(r.RingSeconds)}, fact{Label: l.T("fact.talk"), Value: l.Clock(r.TalkSeconds)})
	for _, t := range r.Transfers {
		fs = append(fs, fact{Label: l.T("fact.transfer"), Value: l.F("fact.transfer.value", l.TOr("transfer."+t.Kind, t.Kind), named(t.From), named(t.To))})
	}
	if c := l.hangupCause(r.HangupCause); c != "" {
		fs = append(fs, fact{Label: l.T("fact.cause"), Value: c, ID: "hangup-cause"})
	}
	if len(r.Flags) > 0 {
		var flags []string
		for _, f := range r.Flags {
			flags = append(flags, l.TOr("flag."+f, f))
		}
		fs = append(fs, fact{Label: l.T("fact.flags"), Value: strings.Join(flags, ", ")})
	}
	if r.Recording != "" {
		fs = append(fs, fact{Label: l.T("fact.recording"), Value: r.Recording})
	}
	if r.PBX != "" {
		fs = append(fs, fact{Label: l.T("fact.pbx"), Value: r.PBX})
	}
	return fs
}

// contentSecurityPolicy allows the page's own inline style and script and nothing from
// elsewhere.
const contentSecurityPolicy = "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func (d *Daemon) render(w http.ResponseWriter, l lang, t *template.Template, v any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", l.Code())
	w.Header().Set("Vary", "Accept-Language")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
	if err := t.ExecuteTemplate(w, "layout", v); err != nil {
		d.log.Error("rendering the status page", "err", err)
	}
}

// retryDead re-queues dead letters from the status page. It needs http.admin.token as a Bearer
// token (set by the page's script, never by a browser on its own, so another site cannot make an
// operator's browser do it).
func (d *Daemon) retryDead(w http.ResponseWriter, r *http.Request) {
	token := d.Config().HTTP.Admin.Token
	got, _ := bearer(r)
	if !token.IsSet() || subtle.ConstantTimeCompare([]byte(got), []byte(token.Value())) != 1 {
		http.Error(w, "actions need Authorization: Bearer <http.admin.token>", http.StatusUnauthorized)
		return
	}
	n, err := d.store.Requeue(r.Context(), outbox.Filter{Connector: r.URL.Query().Get("connector")})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d.wakeAll()
	writeJSON(w, map[string]int64{"count": n})
}

// oneLine folds s onto one line of at most n bytes (cut at a character boundary).
func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		cut := n - 1
		for cut > 0 && !utf8RuneStart(s[cut]) {
			cut--
		}
		return s[:cut] + "…"
	}
	return s
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
