package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/call"
)

// The spill file keeps the finished calls the outbox could not take when pbxbridge had to stop
// (a full or failing disk): JSON lines in the replay schema, appended and fsync'd one by one.
// The next start imports it into the outbox (records are idempotent by key) and renames it
// *.imported-<time>. If even the spill file cannot be written, the record is logged whole, so
// `pbxbridge outbox import` can take it from the journal: nothing is lost silently.

const spillFile = "unstored-calls.jsonl"

func (d *Daemon) spillPath() string { return filepath.Join(d.Config().StateDir, spillFile) }

// spill writes rec to the spill file; cause is why the outbox did not take it.
func (d *Daemon) spill(rec *call.Record, cause error) {
	d.m.spilled.Inc()
	line, err := json.Marshal(rec)
	if err != nil {
		d.log.Error("a finished call could not be encoded for the spill file", "call", rec.Key(), "err", err)
		return
	}
	if err := appendLine(d.spillPath(), line); err != nil {
		d.log.Error("a finished call could not be stored anywhere; import the record below with `pbxbridge outbox import`",
			"call", rec.Key(), "outbox_error", cause, "spill_error", err, "record", string(line))
		return
	}
	d.log.Warn("a finished call was written to the spill file; it is imported at the next start", "call", rec.Key(), "spill", d.spillPath())
}

func appendLine(path string, line []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// importSpill imports the spill file left by the previous run, if any, and renames it.
func (d *Daemon) importSpill(ctx context.Context) error {
	path := d.spillPath()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	n, err := d.Import(ctx, f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("spill file %s: imported %d records, then: %w", path, n, err)
	}
	done := fmt.Sprintf("%s.imported-%s", path, d.now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, done); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	d.log.Info("imported the finished calls the previous run could not store", "records", n, "file", done)
	return nil
}

// pruneSpills deletes imported spill files older than the outbox retention: their calls are in
// the outbox (and pruned with it), so nothing is kept longer than the calls themselves.
func (d *Daemon) pruneSpills() {
	cutoff := d.now().Add(-time.Duration(d.Config().Outbox.RetentionDays) * 24 * time.Hour)
	files, _ := filepath.Glob(d.spillPath() + ".imported-*")
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.ModTime().Before(cutoff) {
			if err := os.Remove(f); err != nil {
				d.log.Warn("removing an old imported spill file", "file", f, "err", err)
			}
		}
	}
}
