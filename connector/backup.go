package connector

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// Backups of the state directory.
//
// One backup is one file, pbxbridge-<UTC time>.tar.gz in backup.dir, holding:
//
//	outbox.db               a consistent copy of the outbox (outbox.Store.Backup: VACUUM INTO,
//	                        taken while the daemon writes)
//	connectors/<name>/…     each connector's private files (OAuth tokens)
//	license-state.json      the licence memory, and install-id (the licence host identity)
//	MANIFEST.json           format, time, version, schema, and the size and SHA-256 of each file
//
// A single file rather than a directory per generation: it is written under a temporary name,
// fsync'd and renamed, so a backup either exists whole or not at all (a directory of several
// files cannot appear atomically), it is copied off the host as one file, and `restore FILE`
// names one thing. It holds CRM tokens and customers' numbers: the file is 0600 in a 0700
// directory.
//
// Restore (RestoreBackup) runs only while the daemon is stopped. It checks the whole file
// (manifest, checksums, the database's integrity) in a staging directory before it touches the
// state, moves the files it replaces to a pre-restore-<time> directory and renames the restored
// ones in; a marker file, restore-in-progress, stays in the state directory until the last
// rename, and the daemon refuses to start while it is there, so an interrupted restore is run
// again, never half-used.

const (
	backupPrefix   = "pbxbridge-"
	backupSuffix   = ".tar.gz"
	backupTimeFmt  = "20060102T150405.000Z"
	manifestName   = "MANIFEST.json"
	backupFormat   = "pbxbridge-backup/1"
	outboxFile     = "outbox.db"
	restoreMarker  = "restore-in-progress"
	restoreStaging = ".restore-staging"
	// maxBackupMember bounds one file read from a backup (a corrupt or hostile archive cannot
	// fill the disk beyond it).
	maxBackupMember = 64 << 30
)

// manifest is MANIFEST.json.
type manifest struct {
	Format        string         `json:"format"`
	CreatedAt     time.Time      `json:"created_at"`
	Version       string         `json:"version"`
	SchemaVersion int            `json:"schema_version"`
	Files         []manifestFile `json:"files"`
}

type manifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// backupFile is one backup found in backup.dir.
type backupFile struct {
	path string
	at   time.Time
}

// listBackups returns the backups in dir, newest first (by the time in their names).
func listBackups(dir string) ([]backupFile, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []backupFile
	for _, e := range ents {
		name := e.Name()
		ts, ok := strings.CutPrefix(name, backupPrefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		ts, ok = strings.CutSuffix(ts, backupSuffix)
		if !ok {
			continue
		}
		at, err := time.Parse(backupTimeFmt, ts)
		if err != nil {
			continue
		}
		out = append(out, backupFile{path: filepath.Join(dir, name), at: at})
	}
	slices.SortFunc(out, func(a, b backupFile) int { return b.at.Compare(a.at) })
	return out, nil
}

// BackupFiles returns the paths of the backups in dir, newest first.
func BackupFiles(dir string) []string {
	list, _ := listBackups(dir)
	out := make([]string, 0, len(list))
	for _, b := range list {
		out = append(out, b.path)
	}
	return out
}

// WriteBackup writes one backup of the state of cfg into cfg.Backup.Dir (created 0700) and
// deletes the oldest backups beyond cfg.Backup.Keep. store is the open outbox (the daemon's, or
// one the CLI opened while the daemon is stopped); the copy of it is consistent while others
// write. The file appears atomically: written as .pbxbridge-….tmp, fsync'd, renamed, the
// directory fsync'd. Leftovers of an interrupted backup are removed first. Two WriteBackup calls
// must not run at once on the same directory (the daemon serialises its own).
func WriteBackup(ctx context.Context, cfg *config.Config, store *outbox.Store, now time.Time, version string) (admin.BackupResult, error) {
	dir := cfg.Backup.Dir
	if dir == "" {
		return admin.BackupResult{}, errors.New("backup: backup.dir is not set")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	removeLeftovers(dir)
	at := now.UTC()
	name := backupPrefix + at.Format(backupTimeFmt) + backupSuffix
	final := filepath.Join(dir, name)
	if _, err := os.Lstat(final); err == nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %s exists already", final)
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	dbCopy := filepath.Join(dir, ".outbox-"+at.Format(backupTimeFmt)+".db.tmp")
	defer func() { _ = os.Remove(tmp); _ = os.Remove(dbCopy) }()

	if _, err := store.Backup(ctx, dbCopy); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	members := []struct{ name, src string }{{outboxFile, dbCopy}}
	for _, f := range []string{licensing.StateFile, licensing.InstallIDFile} {
		if fi, err := os.Lstat(filepath.Join(cfg.StateDir, f)); err == nil && fi.Mode().IsRegular() {
			members = append(members, struct{ name, src string }{f, filepath.Join(cfg.StateDir, f)})
		}
	}
	connDir := filepath.Join(cfg.StateDir, "connectors")
	err := filepath.WalkDir(connDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == connDir {
				return fs.SkipDir
			}
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(cfg.StateDir, p)
		if err != nil {
			return err
		}
		members = append(members, struct{ name, src string }{filepath.ToSlash(rel), p})
		return nil
	})
	if err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: reading the connectors' files: %w", err)
	}

	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = f.Close() }()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	man := manifest{Format: backupFormat, CreatedAt: at, Version: version, SchemaVersion: outbox.SchemaVersion}
	res := admin.BackupResult{CreatedAt: at}
	for _, m := range members {
		if err := ctx.Err(); err != nil {
			return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
		}
		mf, err := addTarFile(tw, m.name, m.src, at)
		if err != nil {
			return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
		}
		man.Files = append(man.Files, mf)
		res.Files = append(res.Files, m.name)
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: manifestName, Mode: 0o600, Size: int64(len(mb)), ModTime: at, Typeflag: tar.TypeReg}); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if _, err := tw.Write(mb); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if err := tw.Close(); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if err := gz.Close(); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: syncing %s: %w", tmp, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return admin.BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	res.Path, res.Size = final, fi.Size()

	list, err := listBackups(dir)
	if err != nil {
		return res, fmt.Errorf("backup: written to %s, but listing older backups: %w", final, err)
	}
	keep := max(cfg.Backup.Keep, 1)
	for _, old := range list[min(keep, len(list)):] {
		if err := os.Remove(old.path); err != nil {
			return res, fmt.Errorf("backup: written to %s, but removing an old one: %w", final, err)
		}
		res.Removed = append(res.Removed, old.path)
	}
	return res, nil
}

// removeLeftovers deletes the temporary files of an interrupted backup.
func removeLeftovers(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasSuffix(n, ".tmp") && (strings.HasPrefix(n, "."+backupPrefix) || strings.HasPrefix(n, ".outbox-")) {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
}

// addTarFile appends the file src as name and returns its manifest entry.
func addTarFile(tw *tar.Writer, name, src string, at time.Time) (manifestFile, error) {
	f, err := os.Open(src)
	if err != nil {
		return manifestFile{}, err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return manifestFile{}, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: fi.Size(), ModTime: at, Typeflag: tar.TypeReg}); err != nil {
		return manifestFile{}, err
	}
	h := sha256.New()
	// A file that grows while it is read (a token refreshed meanwhile) is cut at its size.
	n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(f, fi.Size()))
	if err != nil {
		return manifestFile{}, fmt.Errorf("reading %s: %w", src, err)
	}
	if n != fi.Size() {
		return manifestFile{}, fmt.Errorf("reading %s: it shrank while it was copied; try again", src)
	}
	return manifestFile{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// syncDir fsyncs a directory, so that renames in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}

// RestoreOptions tune RestoreBackup.
type RestoreOptions struct {
	// All also replaces the CRM tokens and the licence state that exist now. By default they
	// are kept where present: OAuth refresh tokens rotate, so the CRM may have revoked the
	// backup's older ones, and the licence memory in the state file is merged at start with the
	// restored database's copy anyway. Missing ones are always restored (a new host).
	All bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// RestoreResult says what RestoreBackup did.
type RestoreResult struct {
	From      string    `json:"from"`
	CreatedAt time.Time `json:"created_at"`
	Version   string    `json:"version"`
	// Restored and Kept list state files (relative to the state directory).
	Restored []string `json:"restored"`
	Kept     []string `json:"kept,omitempty"`
	// Previous is the directory holding the files the restore replaced.
	Previous string `json:"previous,omitempty"`
	// Outbox counts the restored outbox's rows by connector and state.
	Outbox []outbox.ConnectorStats `json:"outbox"`
}

// RestoreBackup restores the backup file into cfg.StateDir. The daemon must be stopped: the
// caller checks the admin socket first, and RestoreBackup takes the outbox's lock (ErrLocked
// while a daemon has it open). See the comment at the top of this file for how it stays safe
// when interrupted.
func RestoreBackup(ctx context.Context, cfg *config.Config, file string, opts RestoreOptions) (RestoreResult, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	state := cfg.StateDir
	if err := os.MkdirAll(state, 0o700); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: state directory: %w", err)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	res := RestoreResult{From: abs}

	// 1. Unpack and check everything in a staging directory of the state directory (the same
	// file system, so the final moves are renames).
	staging := filepath.Join(state, restoreStaging)
	if err := os.RemoveAll(staging); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	if err := os.Mkdir(staging, 0o700); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	defer func() { _ = os.RemoveAll(staging) }()
	man, err := unpackBackup(abs, staging)
	if err != nil {
		return res, fmt.Errorf("restore: %s: %w", abs, err)
	}
	res.CreatedAt, res.Version = man.CreatedAt, man.Version
	if man.SchemaVersion > outbox.SchemaVersion {
		return res, fmt.Errorf("restore: %s was written by pbxbridge %s with outbox schema %d; this pbxbridge knows up to %d: restore it with that version or newer", abs, man.Version, man.SchemaVersion, outbox.SchemaVersion)
	}
	st, err := checkStagedOutbox(ctx, filepath.Join(staging, outboxFile), restoreNote{Since: man.CreatedAt, From: abs})
	if err != nil {
		return res, fmt.Errorf("restore: %s: %w", abs, err)
	}
	res.Outbox = st

	// 2. Decide what replaces what: the outbox always; other files only where missing now,
	// unless opts.All.
	var moves []string // relative names to move in from staging
	for _, f := range man.Files {
		if !opts.All && f.Name != outboxFile {
			if _, err := os.Lstat(filepath.Join(state, filepath.FromSlash(f.Name))); err == nil {
				res.Kept = append(res.Kept, f.Name)
				continue
			}
		}
		moves = append(moves, f.Name)
	}
	// A WAL the check left in staging (it should have been folded in) goes with the database.
	if _, err := os.Lstat(filepath.Join(staging, outboxFile+"-wal")); err == nil {
		moves = append(moves, outboxFile+"-wal")
	}

	// 3. The marker first: from now on the daemon refuses to start. Then the daemon must not
	// run: take the outbox's lock for the rest of the restore.
	markerPath := filepath.Join(state, restoreMarker)
	if err := os.WriteFile(markerPath, []byte(abs+"\n"), 0o600); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(state); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	unlock, err := outbox.LockFile(filepath.Join(state, outboxFile))
	if err != nil {
		_ = os.Remove(markerPath)
		return res, fmt.Errorf("restore: %w", err)
	}
	defer func() { _ = unlock() }()

	// 4. The current files aside (a directory of their own, never reused), then the restored
	// ones in.
	prev, err := os.MkdirTemp(state, "pre-restore-"+now().UTC().Format("20060102T150405Z")+"-")
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	res.Previous = prev
	aside := []string{outboxFile + "-wal", outboxFile + "-shm", outboxFile}
	for _, name := range moves {
		if !strings.HasPrefix(name, outboxFile) {
			aside = append(aside, name)
		}
	}
	for _, name := range aside {
		src := filepath.Join(state, filepath.FromSlash(name))
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		dst := filepath.Join(prev, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return res, fmt.Errorf("restore: %w", err)
		}
		if err := os.Rename(src, dst); err != nil {
			return res, fmt.Errorf("restore: moving %s aside: %w", src, err)
		}
	}
	// The outbox last (its WAL just before it).
	rank := func(n string) int {
		switch n {
		case outboxFile:
			return 2
		case outboxFile + "-wal":
			return 1
		}
		return 0
	}
	slices.SortStableFunc(moves, func(a, b string) int { return rank(a) - rank(b) })
	dirs := map[string]bool{state: true}
	for _, name := range moves {
		dst := filepath.Join(state, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return res, fmt.Errorf("restore: %w", err)
		}
		if err := os.Rename(filepath.Join(staging, filepath.FromSlash(name)), dst); err != nil {
			return res, fmt.Errorf("restore: %w", err)
		}
		dirs[filepath.Dir(dst)] = true
		if name != outboxFile+"-wal" {
			res.Restored = append(res.Restored, name)
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return res, fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.Remove(markerPath); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(state); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	return res, nil
}

// unpackBackup extracts a backup into dir, checking every name, size and checksum against the
// manifest; every file is fsync'd.
func unpackBackup(file, dir string) (manifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return manifest{}, err
	}
	defer func() { _ = f.Close() }()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return manifest{}, fmt.Errorf("not a pbxbridge backup (gzip: %w)", err)
	}
	tr := tar.NewReader(gz)
	got := map[string]manifestFile{}
	var man *manifest
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return manifest{}, fmt.Errorf("damaged backup (tar: %w)", err)
		}
		if h.Typeflag != tar.TypeReg {
			return manifest{}, fmt.Errorf("damaged backup: %q is not a regular file", h.Name)
		}
		if h.Name == manifestName {
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return manifest{}, fmt.Errorf("damaged backup: %w", err)
			}
			man = new(manifest)
			if err := json.Unmarshal(b, man); err != nil || man.Format != backupFormat {
				return manifest{}, fmt.Errorf("not a pbxbridge backup: bad %s (format %q)", manifestName, man.Format)
			}
			continue
		}
		if !validMember(h.Name) {
			return manifest{}, fmt.Errorf("not a pbxbridge backup: unexpected file %q", h.Name)
		}
		if _, dup := got[h.Name]; dup {
			return manifest{}, fmt.Errorf("damaged backup: %q twice", h.Name)
		}
		if h.Size < 0 || h.Size > maxBackupMember {
			return manifest{}, fmt.Errorf("damaged backup: %q has size %d", h.Name, h.Size)
		}
		dst := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return manifest{}, err
		}
		mf, err := writeMember(dst, tr, h.Size)
		if err != nil {
			return manifest{}, err
		}
		mf.Name = h.Name
		got[h.Name] = mf
	}
	if man == nil {
		return manifest{}, fmt.Errorf("not a pbxbridge backup: no %s", manifestName)
	}
	if len(man.Files) != len(got) {
		return manifest{}, fmt.Errorf("damaged backup: the manifest lists %d files, the archive holds %d", len(man.Files), len(got))
	}
	hasOutbox := false
	for _, want := range man.Files {
		if got[want.Name] != want {
			return manifest{}, fmt.Errorf("damaged backup: %s does not match its checksum or size in the manifest", want.Name)
		}
		hasOutbox = hasOutbox || want.Name == outboxFile
	}
	if !hasOutbox {
		return manifest{}, fmt.Errorf("damaged backup: no %s", outboxFile)
	}
	return *man, nil
}

// validMember reports whether name is a file a backup may hold.
func validMember(name string) bool {
	switch name {
	case outboxFile, licensing.StateFile, licensing.InstallIDFile:
		return true
	}
	rest, ok := strings.CutPrefix(name, "connectors/")
	if !ok || path.Clean(name) != name || strings.Contains(name, "\\") {
		return false
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 2 {
		return false
	}
	return !slices.ContainsFunc(parts, func(p string) bool { return p == "" || p == "." || p == ".." })
}

// writeMember writes size bytes of r to a new file dst (0600), fsync'd, and returns its checksum.
func writeMember(dst string, r io.Reader, size int64) (manifestFile, error) {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return manifestFile{}, err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size))
	if err != nil {
		return manifestFile{}, fmt.Errorf("damaged backup: %w", err)
	}
	if n != size {
		return manifestFile{}, fmt.Errorf("damaged backup: %s is cut short", filepath.Base(dst))
	}
	if err := f.Sync(); err != nil {
		return manifestFile{}, err
	}
	return manifestFile{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, f.Close()
}

// restoreNote is the outbox meta value restoreMeta: the daemon's first start after a restore
// tells the adapters that reconcile (crm.Reconciler) which queued calls the CRM may have got
// since the backup.
type restoreNote struct {
	Since time.Time `json:"since"`
	From  string    `json:"from"`
}

// restoreMeta names the restoreNote in the outbox's meta values.
const restoreMeta = "restore.pending_reconcile"

// checkStagedOutbox opens the restored database (migrating an older schema), runs the full
// integrity check, counts its rows and leaves the restore note in it; the store is closed again
// (its WAL folded in).
func checkStagedOutbox(ctx context.Context, path string, note restoreNote) ([]outbox.ConnectorStats, error) {
	s, err := outbox.Open(ctx, path, outbox.Options{})
	if err != nil {
		return nil, err
	}
	st, err := s.Stats(ctx)
	if err == nil {
		err = s.Check(ctx)
	}
	if err == nil {
		var b []byte
		if b, err = json.Marshal(note); err == nil {
			err = s.SetMeta(ctx, restoreMeta, b)
		}
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// restoreInterrupted returns an error when a restore was interrupted in stateDir.
func restoreInterrupted(stateDir string) error {
	b, err := os.ReadFile(filepath.Join(stateDir, restoreMarker))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("state directory %s: %w", stateDir, err)
	}
	return fmt.Errorf("state directory %s: a restore from %s was interrupted: run `pbxbridge restore %s` again before starting (the state it replaced is in %s/pre-restore-*)",
		stateDir, strings.TrimSpace(string(b)), strings.TrimSpace(string(b)), stateDir)
}

// reconcileRestored tells an adapter that reconciles (crm.Reconciler) which of its queued calls
// the CRM may have got since the backup the state was restored from, before its first delivery.
// It returns false when it could not (logged; the note stays for the next start).
func (d *Daemon) reconcileRestored(ctx context.Context, connector string, r crm.Reconciler) bool {
	b, err := d.store.GetMeta(ctx, restoreMeta)
	if err != nil || b == nil {
		return err == nil
	}
	var note restoreNote
	if err := json.Unmarshal(b, &note); err != nil {
		d.log.Error("restore note unreadable; calls delivered since the backup may be logged twice", "connector", connector, "err", err)
		return true
	}
	n := 0
	for _, st := range []outbox.State{outbox.Pending, outbox.Leased, outbox.Dead} {
		var after int64
		for {
			rows, err := d.store.List(ctx, outbox.Filter{Connector: connector, State: st, AfterID: after, Limit: outbox.MaxListLimit})
			if err != nil {
				d.log.Error("after the restore: listing queued calls", "connector", connector, "err", err)
				return false
			}
			for _, row := range rows {
				if err := r.Uncertain(ctx, row.Key, note.Since); err != nil {
					d.log.Error("after the restore: marking a queued call for a look-up", "connector", connector, "call", row.Key, "err", err)
					return false
				}
				n++
				after = row.ID
			}
			if len(rows) < outbox.MaxListLimit {
				break
			}
		}
	}
	d.log.Info("state restored from a backup: queued calls are looked up in the CRM before they are sent", "connector", connector,
		"calls", n, "backup", note.From, "since", note.Since)
	return true
}
