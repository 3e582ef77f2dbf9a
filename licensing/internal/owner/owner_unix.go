//go:build unix

package owner

import (
	"io/fs"
	"os"
	"syscall"
)

func isRoot() bool { return os.Geteuid() == 0 }

func ids(st fs.FileInfo) (uid, gid int, ok bool) {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(s.Uid), int(s.Gid), true
}
