package main_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

// build compiles this command into dir, with the given build tags ("" for none).
func build(t *testing.T, dir, tags string) string {
	t.Helper()
	out := filepath.Join(dir, "pbxbridge-issuer")
	if tags != "" {
		out += "-" + tags
	}
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, ".")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, b)
	}
	return out
}

// run executes bin and returns its combined output and exit status.
func run(t *testing.T, bin string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(b), 0
	case errors.As(err, &ee):
		return string(b), ee.ExitCode()
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return "", -1
}

// TestDevKeyringOnlyInDevkeysBuilds builds the real binary twice. The acceptance scenario of
// the licensing scenario passes in the devkeys build with PBXBRIDGE_DEV_KEYRING set; the build without the tag
// ignores the variable and rejects the same licence as signed by an unknown key (exit 2).
func TestDevKeyringOnlyInDevkeysBuilds(t *testing.T) {
	testkit.Tier(t, testkit.Slow) // builds the binary twice
	bins := t.TempDir()
	release := build(t, bins, "")
	dev := build(t, bins, "devkeys")

	kr := filepath.Join(t.TempDir(), "kr")
	if out, code := run(t, release, nil, "key", "gen", "--scope", "paid", "--out", kr); code != 0 {
		t.Fatalf("key gen: %d %s", code, out)
	}
	keys, err := filepath.Glob(filepath.Join(kr, "*.key"))
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	lic := filepath.Join(t.TempDir(), "l.lic")
	out, code := run(t, release, nil, "issue", "--key", keys[0], "--connector", "bitrix24", "--licensee", "Test", "--sub", "c1",
		"--start", "2026-01-15", "--months", "1", "--grace-days", "6", "--tz", "Europe/Moscow", "--no-host", "--out", lic)
	if code != 0 {
		t.Fatalf("issue: %d %s", code, out)
	}
	devEnv := []string{"PBXBRIDGE_DEV_KEYRING=" + kr}
	verify := func(bin string, env []string, file string, at string) int {
		out, code := run(t, bin, env, "verify", file, "--at", at, "--no-host")
		t.Logf("%s verify --at %s: exit %d: %s", filepath.Base(bin), at, code, strings.TrimSpace(out))
		return code
	}
	for _, c := range []struct {
		at   string
		want int
	}{{"2026-02-14", 0}, {"2026-02-16", 7}, {"2026-02-21", 4}} {
		if got := verify(dev, devEnv, lic, c.at); got != c.want {
			t.Errorf("devkeys build, --at %s: exit %d, want %d", c.at, got, c.want)
		}
	}
	data, err := os.ReadFile(lic)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, "v4.public.") + 50
	repl := "A"
	if s[i] == 'A' {
		repl = "B"
	}
	bad := filepath.Join(t.TempDir(), "bad.lic")
	if err := os.WriteFile(bad, []byte(s[:i]+repl+s[i+1:]), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := verify(dev, devEnv, bad, "2026-02-14"); got != 2 {
		t.Errorf("one changed character: exit %d, want 2", got)
	}
	if got := verify(dev, nil, lic, "2026-02-14"); got != 2 {
		t.Errorf("devkeys build without PBXBRIDGE_DEV_KEYRING: exit %d, want 2", got)
	}
	if got := verify(release, devEnv, lic, "2026-02-14"); got != 2 {
		t.Errorf("build without the devkeys tag trusted PBXBRIDGE_DEV_KEYRING: exit %d, want 2", got)
	}
}
