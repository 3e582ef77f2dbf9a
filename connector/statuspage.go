package connector

import (
	"context"
	"crypto/subtle"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

//go:embed web/status.html
var webFS embed.FS

// pages are the status page templates: the layout with each page's content.
type pages struct {
	status, call *template.Template
}

func loadPages() (*pages, error) {
	funcs := template.FuncMap{"age": func(d time.Duration) string {
		if d <= 0 {
			return "—"
		}
		return d.Round(time.Second).String()
	}}
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
	p := &pages{}
	if p.status, err = page("status-content"); err != nil {
		return nil, err
	}
	if p.call, err = page("call-content"); err != nil {
		return nil, err
	}
	return p, nil
}

// statusView is what the status page shows.
type statusView struct {
	Title, Version string
	Ready          bool
	Problems       []string
	Connectors     []connectorView
	PBX            any
	Outbox         []outbox.ConnectorStats
	Held           int
	Calls          []callView
}

type connectorView struct {
	Name, Type                  string
	LicenceState, LicenceClass  string
	LicenceReason, DaysLeft     string
	Auth, AuthClass, ConnectURL string
	Delivered                   int64
	Pending, Dead               int64
	LastError                   string
}

type callView struct {
	Key, Started, Direction, Customer, Line, Disposition, AnsweredBy, Talk string
	Delivery                                                               []deliveryView
	NotSent                                                                string
}

type deliveryView struct{ Connector, State, Class string }

func stateClass(s string) string {
	switch s {
	case "active", "trial", "ok", "done", "delivered":
		return "ok"
	case "grace", "pending", "leased", "missing":
		return "warn"
	}
	return "bad"
}

// statusPage renders the status page. It is read-only; the only action (retrying dead letters)
// needs the status token.
func (d *Daemon) statusPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	st := d.Status(ctx)
	v := statusView{Title: "Status", Version: st.Version, Ready: st.Ready, PBX: st.PBX, Outbox: st.Outbox, Held: st.HeldCalls}
	for _, ck := range st.Checks {
		if !ck.OK {
			v.Problems = append(v.Problems, ck.Name+": "+ck.Detail)
		}
	}
	counts := map[string]outbox.ConnectorStats{}
	for _, o := range st.Outbox {
		counts[o.Connector] = o
	}
	for _, c := range st.Connectors {
		cv := connectorView{Name: c.Name, Type: c.Type, Delivered: c.Delivery.Delivered, LastError: oneLine(c.Delivery.LastError, 120),
			LicenceState: "not needed", LicenceClass: "ok", Auth: c.CRM.Auth, ConnectURL: c.CRM.ConnectURL, DaysLeft: "—"}
		if c.Licence != nil {
			cv.LicenceState = string(c.Licence.State)
			cv.LicenceClass = stateClass(cv.LicenceState)
			cv.LicenceReason = c.Licence.Reason
			if c.Licence.DaysLeft != nil {
				cv.DaysLeft = fmt.Sprintf("%.0f", *c.Licence.DaysLeft)
			}
		}
		if cv.Auth == "" {
			cv.Auth = "ok"
		}
		if c.Delivery.AuthBroken {
			cv.Auth = "reauthorize"
		}
		cv.AuthClass = stateClass(cv.Auth)
		o := counts[c.Name]
		cv.Pending, cv.Dead = o.Pending+o.Leased, o.Dead
		v.Connectors = append(v.Connectors, cv)
	}
	recent := d.recent.list()
	if len(recent) > 25 {
		recent = recent[:25]
	}
	for _, rc := range recent {
		v.Calls = append(v.Calls, d.callView(ctx, rc))
	}
	d.render(w, d.pages.status, v)
}

func (d *Daemon) callView(ctx context.Context, rc admin.RecentCall) callView {
	r := &rc.Record
	cv := callView{Key: r.Key(), Started: r.StartedAt.Local().Format("2006-01-02 15:04:05"), Direction: string(r.Direction),
		Customer: r.Customer, Line: r.Line, Disposition: strings.ReplaceAll(string(r.Disposition), "_", " "),
		AnsweredBy: r.AnsweredBy, Talk: fmt.Sprintf("%ds", r.TalkSeconds)}
	if len(rc.Connectors) == 0 {
		cv.NotSent = "not sent"
		if r.Direction == call.Internal {
			cv.NotSent = "internal: not sent"
		}
		return cv
	}
	rows, err := d.store.List(ctx, outbox.Filter{Key: r.Key(), Limit: 20})
	if err != nil {
		return cv
	}
	for _, row := range rows {
		state := string(row.State)
		if row.State == outbox.Done {
			state = "delivered"
		}
		cv.Delivery = append(cv.Delivery, deliveryView{Connector: row.Connector, State: state, Class: stateClass(state)})
	}
	return cv
}

type callPageView struct {
	Title, Version string
	Ready          bool
	Key, Summary   string
	Rows           []admin.OutboxItem
	Timeline       []timelineView
}

type timelineView struct{ At, Connector, Kind, Summary, Detail string }

// callPage shows one call's timeline.
func (d *Daemon) callPage(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	rep, err := d.Call(r.Context(), key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	v := callPageView{Title: "Call " + rep.Key, Version: d.opts.Version, Ready: d.ready.Load(), Key: rep.Key, Rows: rep.Rows}
	if rep.Record != nil {
		v.Summary = rep.Record.Summary()
	}
	for _, e := range rep.Timeline {
		detail := e.Detail
		if e.Kind == "call" {
			detail = "" // the record itself is summarised above
		}
		v.Timeline = append(v.Timeline, timelineView{At: e.At.Local().Format("15:04:05.000"), Connector: e.Connector, Kind: e.Kind, Summary: e.Summary, Detail: oneLine(detail, 400)})
	}
	d.render(w, d.pages.call, v)
}

func (d *Daemon) render(w http.ResponseWriter, t *template.Template, v any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
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

// oneLine folds s onto one line of at most n characters.
func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
