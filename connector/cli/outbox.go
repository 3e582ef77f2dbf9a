package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/admin"
)

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}

// OutboxCmd groups the outbox commands.
type OutboxCmd struct {
	List      OutboxListCmd      `cmd:"" help:"List queued, delivered or dead calls."`
	Retry     OutboxRetryCmd     `cmd:"" help:"Re-queue dead letters for delivery."`
	Drop      OutboxDropCmd      `cmd:"" help:"Delete rows from the outbox (they will never be delivered)."`
	Redeliver OutboxRedeliverCmd `cmd:"" help:"Deliver again the calls of a period that were already delivered."`
	Import    OutboxImportCmd    `cmd:"" help:"Queue call records (JSON lines from 'pbxbridge replay') for delivery, e.g. to backfill."`
	Check     OutboxCheckCmd     `cmd:"" help:"Run SQLite's full integrity check on the outbox (through the running daemon, or offline)."`
	Salvage   OutboxSalvageCmd   `cmd:"" help:"Copy what can still be read of a damaged outbox into a new one (pbxbridge must be stopped)."`
}

// OutboxListCmd lists rows.
type OutboxListCmd struct {
	Dead      bool   `help:"Only dead letters (same as --state dead)."`
	State     string `help:"Only rows in this state: pending, leased, done, dead." enum:",pending,leased,done,dead" default:""`
	Connector string `help:"Only this connector."`
	Since     string `help:"Calls that started at or after this date (YYYY-MM-DD or RFC 3339)."`
	Until     string `help:"Calls that started before this date."`
	Limit     int    `help:"At most this many rows." default:"100"`
	JSON      bool   `help:"Print JSON."`
}

// Run lists.
func (c *OutboxListCmd) Run(g *Globals) error {
	q := url.Values{}
	state := c.State
	if c.Dead {
		state = "dead"
	}
	for k, v := range map[string]string{"state": state, "connector": c.Connector, "since": c.Since, "until": c.Until, "limit": strconv.Itoa(c.Limit)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var items []admin.OutboxItem
	if err := g.client().Do(g.Ctx, "GET", "/v1/outbox?"+q.Encode(), nil, &items); err != nil {
		return err
	}
	if c.JSON {
		return writeJSONTo(g.Stdout, items)
	}
	if len(items) == 0 {
		fmt.Fprintln(g.Stdout, "no matching rows")
		return nil
	}
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCALL\tCONNECTOR\tSTATE\tATTEMPTS\tSTARTED\tCALL SUMMARY\tLAST ERROR")
	for _, it := range items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s %s %s\t%s\n", it.ID, it.Key, it.Connector, it.State, it.Attempts,
			it.StartedAt.Local().Format(time.DateTime), it.Direction, it.Customer, it.Disposition, oneLine(it.LastError, 70))
	}
	return tw.Flush()
}

// OutboxRetryCmd re-queues dead letters.
type OutboxRetryCmd struct {
	IDs       []int64 `arg:"" optional:"" help:"Row ids (from 'outbox list --dead')."`
	Connector string  `help:"Every dead letter of this connector."`
	All       bool    `help:"Every dead letter."`
}

// Run re-queues.
func (c *OutboxRetryCmd) Run(g *Globals) error {
	if len(c.IDs) == 0 && c.Connector == "" && !c.All {
		return errors.New("name row ids, --connector NAME or --all")
	}
	return outboxOp(g, "/v1/outbox/retry", admin.OutboxRequest{IDs: c.IDs, Connector: c.Connector}, "re-queued %d dead letter(s)\n")
}

// OutboxDropCmd deletes rows.
type OutboxDropCmd struct {
	IDs []int64 `arg:"" help:"Row ids to delete."`
}

// Run deletes.
func (c *OutboxDropCmd) Run(g *Globals) error {
	return outboxOp(g, "/v1/outbox/drop", admin.OutboxRequest{IDs: c.IDs}, "dropped %d row(s)\n")
}

// OutboxRedeliverCmd re-queues delivered rows of a period.
type OutboxRedeliverCmd struct {
	Since     string `required:"" help:"Calls that started at or after this date (YYYY-MM-DD or RFC 3339)."`
	Until     string `required:"" help:"Calls that started before this date."`
	Connector string `required:"" help:"The connector to deliver to again."`
}

// Run re-queues.
func (c *OutboxRedeliverCmd) Run(g *Globals) error {
	since, err := admin.ParseTime(c.Since)
	if err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	until, err := admin.ParseTime(c.Until)
	if err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	if !until.After(since) {
		return errors.New("--until must be after --since")
	}
	return outboxOp(g, "/v1/outbox/redeliver", admin.OutboxRequest{Connector: c.Connector, Since: since, Until: until}, "queued %d delivered call(s) for delivery again\n")
}

func outboxOp(g *Globals, path string, req admin.OutboxRequest, format string) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var res struct {
		Count int64 `json:"count"`
	}
	if err := g.client().Do(g.Ctx, "POST", path, bytes.NewReader(body), &res); err != nil {
		return err
	}
	fmt.Fprintf(g.Stdout, format, res.Count)
	return nil
}

// OutboxImportCmd queues records.
type OutboxImportCmd struct {
	File string `arg:"" help:"JSON lines of call records, or - for standard input."`
}

// Run imports.
func (c *OutboxImportCmd) Run(g *Globals) error {
	var r io.Reader = os.Stdin
	if c.File != "-" {
		f, err := os.Open(c.File)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var res struct {
		Count int `json:"count"`
	}
	if err := g.client().Do(g.Ctx, "POST", "/v1/outbox/import", r, &res); err != nil {
		return err
	}
	fmt.Fprintf(g.Stdout, "queued %d call(s)\n", res.Count)
	return nil
}

// CallsCmd groups the calls commands.
type CallsCmd struct {
	List CallsListCmd `cmd:"" help:"The last calls the daemon built."`
	Show CallsShowCmd `cmd:"" help:"One call: the record, the model's decisions, each CRM request and answer."`
}

// CallsListCmd lists recent calls.
type CallsListCmd struct {
	JSON bool `help:"Print JSON."`
}

// Run lists.
func (c *CallsListCmd) Run(g *Globals) error {
	var calls []admin.RecentCall
	if err := g.client().Do(g.Ctx, "GET", "/v1/calls", nil, &calls); err != nil {
		return err
	}
	if c.JSON {
		return writeJSONTo(g.Stdout, calls)
	}
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALL\tSTARTED\tDIRECTION\tCUSTOMER\tRESULT\tANSWERED BY\tCONNECTORS")
	for _, rc := range calls {
		r := rc.Record
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Key(), r.StartedAt.Local().Format(time.DateTime), r.Direction,
			r.Customer, r.Disposition, r.AnsweredBy, strings.Join(rc.Connectors, ","))
	}
	return tw.Flush()
}

// CallsShowCmd shows one call.
type CallsShowCmd struct {
	ID   string `arg:"" help:"Call key (pbx/linkedid) or linkedid."`
	JSON bool   `help:"Print JSON."`
}

// Run shows the call.
func (c *CallsShowCmd) Run(g *Globals) error {
	var rep admin.CallReport
	if err := g.client().Do(g.Ctx, "GET", "/v1/calls/"+url.PathEscape(c.ID), nil, &rep); err != nil {
		return err
	}
	if c.JSON {
		return writeJSONTo(g.Stdout, rep)
	}
	PrintCall(g.Stdout, rep)
	return nil
}

// PrintCall prints a call report for people.
func PrintCall(w io.Writer, rep admin.CallReport) {
	fmt.Fprintf(w, "call %s\n", rep.Key)
	if r := rep.Record; r != nil {
		fmt.Fprintf(w, "  %s\n", r.Summary())
		fmt.Fprintf(w, "  started %s, ended %s", r.StartedAt.Local().Format(time.DateTime), r.EndedAt.Local().Format(time.TimeOnly))
		if r.Recording != "" {
			fmt.Fprintf(w, ", recording %s", r.Recording)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\ndeliveries:")
	for _, it := range rep.Rows {
		fmt.Fprintf(w, "  %-16s %-8s attempts %d", it.Connector, it.State, it.Attempts)
		if it.LastError != "" {
			fmt.Fprintf(w, "  last error: %s", oneLine(it.LastError, 100))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\ntimeline:")
	for _, e := range rep.Timeline {
		who := e.Connector
		if who == "" {
			who = "-"
		}
		fmt.Fprintf(w, "  %s  %-14s %-9s %s\n", e.At.Local().Format("15:04:05.000"), who, e.Kind, e.Summary)
		if e.Detail != "" && e.Kind != "call" {
			fmt.Fprintf(w, "      %s\n", oneLine(e.Detail, 200))
		}
	}
}
