package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The manual page names every visible command and global flag, and man renders it.
func TestManPage(t *testing.T) {
	t.Parallel()
	page := runCLI(t, 0, "man")
	for _, want := range []string{".TH PBXBRIDGE 1", `.SS "pbxbridge crm test <connector>"`, `.SS "pbxbridge license request`,
		`.SS "pbxbridge doctor"`, `\fB\-c, \-\-config=FILE\fR`, "/etc/default/pbxbridge"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(page, `"pbxbridge man"`) || strings.Contains(page, `"pbxbridge completion`) {
		t.Error("hidden commands are in the man page")
	}
	man, err := exec.LookPath("man")
	if err != nil {
		t.Log("man not installed: rendering not checked")
		return
	}
	f := filepath.Join(t.TempDir(), "pbxbridge.1")
	if err := os.WriteFile(f, []byte(page), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(man, "--warnings", "-l", f)
	cmd.Env = append(os.Environ(), "MANPAGER=cat", "MANWIDTH=100")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "warning") {
		t.Fatalf("man -l: %v\n%s", err, out)
	}
}

// The bash completion completes commands, sub-commands and the flags of the command typed.
func TestBashCompletion(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script := filepath.Join(t.TempDir(), "pbxbridge")
	if err := os.WriteFile(script, []byte(runCLI(t, 0, "completion", "bash")), 0o600); err != nil {
		t.Fatal(err)
	}
	for line, want := range map[string]string{
		"pbxbridge cr":               "crm",
		"pbxbridge crm t":            "test",
		"pbxbridge license ins":      "install inspect",
		"pbxbridge outbox list --de": "--dead",
		"pbxbridge doctor --tim":     "--timeout",
	} {
		words := strings.Fields(line)
		sh := `source "$1"; COMP_WORDS=(` + line + `); COMP_CWORD=` + itoa(len(words)-1) + `; _pbxbridge; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "-c", sh, "bash", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("%q completes to %q, want %q", line, got, want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
