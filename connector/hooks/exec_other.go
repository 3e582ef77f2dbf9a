//go:build !unix

package hooks

import "os/exec"

func setProcessGroup(*exec.Cmd) {}

// killGroup kills the program (no process groups here).
func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return cmd.Process.Kill()
}
