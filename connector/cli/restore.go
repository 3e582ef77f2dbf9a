package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/admin"
)

// RestoreCmd restores a backup.
type RestoreCmd struct {
	File string `arg:"" help:"A backup file (pbxbridge-….tar.gz, see 'pbxbridge backup list')."`
	All  bool   `help:"Also replace the CRM tokens and the licence state that exist now (by default they are kept, and restored only where missing)."`
	JSON bool   `help:"Print JSON."`
}

// Run restores FILE into the state directory; it refuses while the daemon runs.
func (c *RestoreCmd) Run(g *Globals) error {
	var st admin.StatusReport
	switch err := g.client().Do(g.Ctx, "GET", "/v1/status", nil, &st); {
	case err == nil:
		return errors.New("pbxbridge is running: stop it first (systemctl stop pbxbridge), then restore")
	case !errors.Is(err, admin.ErrNotRunning):
		return fmt.Errorf("cannot tell whether pbxbridge is running: %w", err)
	}
	cfg, err := g.loadConfig()
	if err != nil {
		return err
	}
	res, err := connector.RestoreBackup(g.Ctx, cfg, c.File, connector.RestoreOptions{All: c.All})
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSONTo(g.Stdout, res)
	}
	w := g.Stdout
	fmt.Fprintf(w, "restored %s (taken %s by pbxbridge %s) into %s\n", res.From, res.CreatedAt.Local().Format(time.DateTime), res.Version, cfg.StateDir)
	fmt.Fprintf(w, "  restored: %s\n", strings.Join(res.Restored, ", "))
	if len(res.Kept) > 0 {
		fmt.Fprintf(w, "  kept as they are now (--all replaces them): %s\n", strings.Join(res.Kept, ", "))
	}
	if res.Previous != "" {
		fmt.Fprintf(w, "  the replaced files are in %s\n", res.Previous)
	}
	for _, o := range res.Outbox {
		fmt.Fprintf(w, "  outbox %s: %d to deliver, %d delivered, %d dead letters\n", o.Connector, o.Pending+o.Leased, o.Done, o.Dead)
	}
	fmt.Fprintln(w, "Start pbxbridge now. Calls still to deliver in the backup are delivered; those the CRM got since the backup are recognised by it and not logged twice. Calls that ended after the backup and were not delivered when the state was lost are not in it.")
	return nil
}
