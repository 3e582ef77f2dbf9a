package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
)

// ForgetCmd erases a phone number from the state.
type ForgetCmd struct {
	Number string `arg:"" help:"The phone number, in any form the PBX or the CRM writes it (+79161234567, 89161234567)."`
	JSON   bool   `help:"Print JSON."`
}

// Run asks the running daemon to forget the number; when it is not running, the CLI erases the
// outbox itself.
func (c *ForgetCmd) Run(g *Globals) error {
	body, err := json.Marshal(admin.ForgetRequest{Number: c.Number})
	if err != nil {
		return err
	}
	var rep admin.ForgetReport
	err = g.client().Do(g.Ctx, "POST", "/v1/forget", bytes.NewReader(body), &rep)
	if errors.Is(err, admin.ErrNotRunning) {
		rep, err = c.offline(g)
	}
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSONTo(g.Stdout, rep)
	}
	printForget(g.Stdout, rep)
	return nil
}

// offline erases the number from the outbox file while the daemon is stopped.
func (c *ForgetCmd) offline(g *Globals) (admin.ForgetReport, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return admin.ForgetReport{}, err
	}
	norm, err := numbers.New(cfg.Numbers)
	if err != nil {
		return admin.ForgetReport{}, fmt.Errorf("config: numbers: %w", err)
	}
	e, e164, err := connector.NumberErasure(norm, c.Number)
	if err != nil {
		return admin.ForgetReport{}, err
	}
	rep := admin.ForgetReport{Number: c.Number, E164: e164, Offline: true, Backups: connector.BackupFiles(cfg.Backup.Dir)}
	path := filepath.Join(cfg.StateDir, "outbox.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return rep, nil // nothing stored yet
	}
	store, err := outbox.Open(g.Ctx, path, outbox.Options{})
	if err != nil {
		return rep, err
	}
	rep.Outbox, err = store.Forget(g.Ctx, e)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	return rep, err
}

func printForget(w io.Writer, rep admin.ForgetReport) {
	o := rep.Outbox
	who := rep.Number
	if rep.E164 != "" && rep.E164 != rep.Number {
		who = rep.E164 + " (given as " + rep.Number + ")"
	}
	fmt.Fprintf(w, "erased %s from pbxbridge's state", who)
	if rep.Offline {
		fmt.Fprint(w, " (daemon stopped: the outbox file was edited directly)")
	}
	fmt.Fprintln(w, ":")
	calls := ""
	if len(o.Calls) > 0 {
		calls = "  (" + strings.Join(o.Calls, ", ") + ")"
	}
	fmt.Fprintf(w, "  calls             %d%s\n", len(o.Calls), calls)
	fmt.Fprintf(w, "  outbox rows       %d  (pending %d, being delivered %d, delivered %d, dead letters %d)\n", o.Rows(), o.Pending, o.Leased, o.Done, o.Dead)
	fmt.Fprintf(w, "  call state        %d\n", o.CallState)
	fmt.Fprintf(w, "  timeline entries  %d\n", o.Timeline)
	fmt.Fprintf(w, "  open calls        %d\n", o.OpenCalls)
	fmt.Fprintf(w, "  errors cleared    %d\n", o.LastErrors)
	if !rep.Offline {
		fmt.Fprintf(w, "  recent calls      %d  (status page)\n", rep.Recent)
		caches := "none keeps numbers"
		if len(rep.Caches) > 0 {
			caches = strings.Join(rep.Caches, ", ")
		}
		fmt.Fprintf(w, "  look-up caches    %s\n", caches)
	}
	if o.WALTruncated {
		fmt.Fprintln(w, "The database file and its WAL keep no copy of what was erased (overwritten with zeros, WAL truncated).")
	} else {
		fmt.Fprintln(w, "! The WAL could not be truncated now (the database was busy); SQLite overwrites it in the course of normal work. Run forget again for an immediate truncation.")
	}
	if rep.InProgress > 0 {
		fmt.Fprintf(w, "! %d call(s) of this number are in progress: they are stored when they end; run pbxbridge forget again then.\n", rep.InProgress)
	}
	if len(rep.Backups) > 0 {
		fmt.Fprintf(w, "! %d backup(s) still hold the earlier state (newest %s): they are deleted as newer ones replace them (backup.keep), or delete them now.\n", len(rep.Backups), rep.Backups[0])
	}
	fmt.Fprintln(w, "! Logs: with log.redact_numbers off, journald may hold the number in earlier log lines.")
	fmt.Fprintln(w, "! "+strings.ToUpper(connector.CRMCopyNotice[:1])+connector.CRMCopyNotice[1:]+".")
}
