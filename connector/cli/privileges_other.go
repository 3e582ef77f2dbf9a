//go:build !linux

package cli

import (
	"errors"
	"io/fs"
	"os/user"
)

// becomeUser is not supported outside Linux (the daemon is packaged for Linux only).
func becomeUser(*user.User) error { return errors.New("changing user is supported on Linux only") }

// fileUID: no owner outside Linux, so no command changes user.
func fileUID(fs.FileInfo) (int, bool) { return 0, false }
