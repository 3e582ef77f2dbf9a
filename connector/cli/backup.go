package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
)

// BackupCmd groups the backup commands.
type BackupCmd struct {
	Now  BackupNowCmd  `cmd:"" help:"Back up the state now (through the running daemon, or directly while it is stopped)."`
	List BackupListCmd `cmd:"" help:"List the backups in backup.dir, newest first."`
}

// BackupNowCmd writes one backup.
type BackupNowCmd struct {
	JSON bool `help:"Print JSON."`
}

// Run asks the daemon for a backup; when it is not running, the CLI opens the outbox itself.
func (c *BackupNowCmd) Run(g *Globals) error {
	var res admin.BackupResult
	err := g.client().Do(g.Ctx, "POST", "/v1/backup", nil, &res)
	if errors.Is(err, admin.ErrNotRunning) {
		res, err = backupOffline(g)
	}
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSONTo(g.Stdout, res)
	}
	how := "by the daemon"
	if res.Offline {
		how = "directly (daemon stopped)"
	}
	fmt.Fprintf(g.Stdout, "backup written %s: %s (%d bytes, %d files)\n", how, res.Path, res.Size, len(res.Files))
	for _, r := range res.Removed {
		fmt.Fprintf(g.Stdout, "removed the older %s (backup.keep)\n", r)
	}
	return nil
}

func backupOffline(g *Globals) (admin.BackupResult, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return admin.BackupResult{}, err
	}
	path := filepath.Join(cfg.StateDir, "outbox.db")
	if _, err := os.Stat(path); err != nil {
		return admin.BackupResult{}, fmt.Errorf("nothing to back up: %w", err)
	}
	store, err := outbox.Open(g.Ctx, path, outbox.Options{})
	if err != nil {
		return admin.BackupResult{}, err
	}
	res, err := connector.WriteBackup(g.Ctx, cfg, store, time.Now(), g.Version)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	res.Offline = true
	return res, err
}

// BackupListCmd lists the backups.
type BackupListCmd struct{}

// Run lists backup.dir.
func (c *BackupListCmd) Run(g *Globals) error {
	cfg, err := g.optionalConfig()
	if err != nil {
		return err
	}
	files := connector.BackupFiles(cfg.Backup.Dir)
	if len(files) == 0 {
		fmt.Fprintf(g.Stdout, "no backups in %s\n", cfg.Backup.Dir)
		return nil
	}
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tSIZE")
	for _, f := range files {
		size := int64(-1)
		if fi, err := os.Stat(f); err == nil {
			size = fi.Size()
		}
		fmt.Fprintf(tw, "%s\t%d\n", f, size)
	}
	return tw.Flush()
}
