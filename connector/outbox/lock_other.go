//go:build !unix

package outbox

import (
	"errors"
	"os"
)

// errWouldBlock is never returned where file locking is not implemented.
var errWouldBlock = errors.New("file is locked")

// lockFile does nothing where flock(2) does not exist: the daemon targets
// Linux; other builds are for development only.
func lockFile(*os.File) error { return nil }
