package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/connector/cli"
)

// runCLI runs the command line in-process and returns its standard output; an exit status other
// than wantCode fails the test.
func runCLI(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.MainIO(context.Background(), "test", args, &out, &errOut)
	if code != wantCode {
		t.Fatalf("pbxbridge %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out.String(), errOut.String())
	}
	return out.String()
}
