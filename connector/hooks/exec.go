package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Bounds of what a program may write: its answer on stdout (a run writing more is killed and
// fails) and what of its stderr is kept for the log and the timeline.
const (
	maxStdout = 64 << 10
	maxStderr = 4 << 10
)

// execEnv is the whole environment of a program: never the daemon's (it holds secrets such as
// PBXBRIDGE_HTTP_ADMIN_TOKEN).
var execEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}

// runner runs one connector's exec hook.
type runner struct {
	cmd     []string
	timeout time.Duration
	fast    bool
	slots   chan struct{}
}

func newRunner(e *Exec) *runner {
	return &runner{cmd: e.Command, timeout: e.Timeout, fast: e.Fast, slots: make(chan struct{}, e.Concurrency)}
}

// execOutcome is one run of the program.
type execOutcome struct {
	stdout   []byte
	stderr   string
	duration time.Duration
}

// run starts the program with input on stdin and returns what it wrote. A run that cannot get
// a slot within the timeout, that outlives the timeout (its process group is killed), exits
// non-zero, or writes more than maxStdout fails with the matching kind.
func (r *runner) run(ctx context.Context, point string, input []byte) (execOutcome, *hookError) {
	var out execOutcome
	wait := time.NewTimer(r.timeout)
	defer wait.Stop()
	select {
	case r.slots <- struct{}{}:
	case <-wait.C:
		return out, fail(FailBusy, "all %d runs of the program are in use; waited %v", cap(r.slots), r.timeout)
	case <-ctx.Done():
		return out, fail(FailBusy, "waiting for a free run of the program: %v", ctx.Err())
	}
	defer func() { <-r.slots }()

	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	// The command is the admin's config (exec.command, an absolute path), never call data.
	cmd := exec.CommandContext(rctx, r.cmd[0], r.cmd[1:]...) //nolint:gosec // G204: see above

	cmd.Env = append(append([]string{}, execEnv...), "PBXBRIDGE_HOOK_POINT="+point)
	cmd.Stdin = bytes.NewReader(input)
	stdout := &capped{max: maxStdout, overflow: cancel}
	stderr := &capped{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	setProcessGroup(cmd)
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = 100 * time.Millisecond // a grandchild holding the pipes does not hold us
	start := time.Now()
	err := cmd.Run()
	out.duration = time.Since(start)
	out.stdout, out.stderr = stdout.buf.Bytes(), strings.TrimSpace(stderr.buf.String())
	if stderr.cut {
		out.stderr += " …(cut)"
	}
	switch {
	case stdout.cut:
		return out, fail(FailOutput, "the program wrote more than %d bytes to stdout; killed", maxStdout)
	case rctx.Err() != nil && ctx.Err() == nil:
		return out, fail(FailTimeout, "the program ran past its %v limit; killed", r.timeout)
	case err == nil:
		return out, nil
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out, fail(FailExit, "the program %s", exitText(ee))
	case ctx.Err() != nil:
		return out, fail(FailTimeout, "the call's delivery gave up waiting for the program: %v", ctx.Err())
	case errors.Is(err, exec.ErrWaitDelay):
		return out, nil // it answered and exited; a child it left behind kept stdout open
	}
	return out, fail(FailStart, "starting the program: %v", err)
}

func exitText(ee *exec.ExitError) string {
	if code := ee.ExitCode(); code >= 0 {
		return fmt.Sprintf("exited with status %d", code)
	}
	return "was killed: " + ee.String()
}

// capped is a writer keeping the first max bytes; past them it fails (the program then gets
// EPIPE or is killed) and calls overflow.
type capped struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	max      int
	cut      bool
	overflow func()
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); len(p) > room {
		c.buf.Write(p[:max(room, 0)])
		if !c.cut {
			c.cut = true
			if c.overflow != nil {
				c.overflow()
			}
		}
		if c.overflow == nil {
			return len(p), nil // stderr: keep reading so that the program is not blocked
		}
		return 0, errors.New("output limit reached")
	}
	return c.buf.Write(p)
}
