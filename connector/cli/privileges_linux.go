package cli

import (
	"io/fs"
	"os/user"
	"syscall"
)

// becomeUser makes the whole process u: its supplementary groups, its primary group, then its
// uid (in this order: after setuid nothing else may change). Since Go 1.16 these calls apply to
// every thread of the process on Linux. It cannot be undone.
func becomeUser(u *user.User) error {
	uid, gid, err := ids(u)
	if err != nil {
		return err
	}
	groups, err := groupIDs(u)
	if err != nil {
		return err
	}
	if err := syscall.Setgroups(groups); err != nil {
		return err
	}
	if err := syscall.Setgid(gid); err != nil {
		return err
	}
	return syscall.Setuid(uid)
}

// fileUID returns the owner of a file.
func fileUID(st fs.FileInfo) (int, bool) {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(s.Uid), true
}
