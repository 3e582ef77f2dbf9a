package connector

import (
	"context"
	"os"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/admin"
)

// The daemon's side of the backups: the schedule (housekeeping), `pbxbridge backup now` and the
// metrics. What a backup holds is in backup.go.

// initBackups reads the newest existing backup at start, so the schedule and the metrics go on
// from it across restarts.
func (d *Daemon) initBackups() {
	cfg := d.Config()
	d.m.backupInterval.Set(cfg.Backup.Interval.Seconds())
	list, _ := listBackups(cfg.Backup.Dir)
	if len(list) == 0 {
		return
	}
	d.backupMu.Lock()
	d.lastBackup = list[0].at
	d.backupMu.Unlock()
	d.m.backupLast.Set(float64(list[0].at.UnixNano()) / 1e9)
	if fi, err := os.Stat(list[0].path); err == nil {
		d.m.backupSize.Set(float64(fi.Size()))
	}
}

// backupDue reports whether the newest backup is at least backup.interval old.
func (d *Daemon) backupDue() bool {
	return d.nextBackupIn() == 0
}

// nextBackupIn is how long until the next automatic backup is due: backup.interval after the
// newest one, at once when there is none; an hour (to look again after a reload) when automatic
// backups are off.
func (d *Daemon) nextBackupIn() time.Duration {
	iv := d.Config().Backup.Interval
	d.m.backupInterval.Set(iv.Seconds())
	if iv <= 0 {
		return time.Hour
	}
	d.backupMu.Lock()
	last := d.lastBackup
	d.backupMu.Unlock()
	if last.IsZero() {
		return 0
	}
	return max(last.Add(iv).Sub(d.now()), 0)
}

// BackupNow writes one backup of the state now (WriteBackup), logs it and updates the metrics.
// Backups are serialised: a call made while one runs waits for it.
func (d *Daemon) BackupNow(ctx context.Context) (admin.BackupResult, error) {
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	cfg := d.Config()
	start := time.Now()
	res, err := WriteBackup(ctx, cfg, d.store, d.now(), d.opts.Version)
	if res.Path == "" {
		d.m.backupFailures.Inc()
		d.log.Error("backup of the state failed; the previous backups are kept", "dir", cfg.Backup.Dir, "err", err)
		return res, err
	}
	d.lastBackup = res.CreatedAt
	d.m.backupLast.Set(float64(res.CreatedAt.UnixNano()) / 1e9)
	d.m.backupSize.Set(float64(res.Size))
	if err != nil {
		// Written, but an old one could not be removed.
		d.m.backupFailures.Inc()
		d.log.Error("backup written, rotation failed", "path", res.Path, "err", err)
		return res, err
	}
	d.log.Info("backup of the state written", "path", res.Path, "bytes", res.Size, "files", len(res.Files),
		"removed", len(res.Removed), "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}
