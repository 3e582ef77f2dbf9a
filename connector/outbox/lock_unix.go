//go:build unix

package outbox

import (
	"errors"
	"os"
	"syscall"
)

// errWouldBlock is what lockFile returns when another process holds the lock.
var errWouldBlock = syscall.EWOULDBLOCK

// lockFile takes a non-blocking exclusive flock(2) on f. The kernel releases it
// when the process dies, so a crashed daemon never leaves a stale lock. flock
// locks are independent of the POSIX record locks SQLite uses.
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
