// Package owner gives the files and directories that a root process (an administrator running
// `pbxbridge license request` or `license install` with sudo) creates inside a service's
// directory to the owner of that directory, so the service user can still read and rewrite them.
//
// The rule: when this process runs as root (effective uid 0) and the directory is owned by
// another user, what is created in it gets the directory's uid and gid. In every other case
// nothing changes. The package depends on nothing in pbxbridge; it can move to a shared internal
// package as it is.
package owner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Of returns the uid and gid that an entry created in dir should get, and whether a change of
// owner is needed at all (this process is root and dir belongs to another user).
func Of(dir string) (uid, gid int, needed bool, err error) {
	if !isRoot() {
		return 0, 0, false, nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return 0, 0, false, fmt.Errorf("owner of %s: %w", dir, err)
	}
	uid, gid, ok := ids(st)
	if !ok || uid == 0 {
		return 0, 0, false, nil
	}
	return uid, gid, true, nil
}

// File gives the open file f, created in dir, to dir's owner when Of says so. Call it before the
// file is renamed into place, so that it never appears with the wrong owner.
func File(f *os.File, dir string) error {
	uid, gid, needed, err := Of(dir)
	if err != nil || !needed {
		return err
	}
	if err := f.Chown(uid, gid); err != nil {
		return fmt.Errorf("giving %s to the owner of %s: %w", f.Name(), dir, err)
	}
	return nil
}

// Path gives path (not following a final symlink) to the owner of its parent directory when Of
// says so.
func Path(path string) error {
	dir := filepath.Dir(path)
	uid, gid, needed, err := Of(dir)
	if err != nil || !needed {
		return err
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		return fmt.Errorf("giving %s to the owner of %s: %w", path, dir, err)
	}
	return nil
}

// MkdirAll is os.MkdirAll, except that each directory it creates is given to the owner of its
// parent when Path says so: a state directory's new subdirectory belongs to the service user, a
// directory created under a root-owned parent stays root's.
func MkdirAll(dir string, perm fs.FileMode) error {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		_, err := os.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- { // parents first, so each inherits the right owner
		if err := Path(missing[i]); err != nil {
			return err
		}
	}
	return nil
}
