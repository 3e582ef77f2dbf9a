package cli

import (
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	_ "github.com/pbxbridge/pbxbridge/crm/all" // the connector types of the test configs
)

// childEnv makes the test binary run the command line instead of the tests (a root command that
// drops its privileges cannot be undone, so it runs in a child process).
const childEnv = "PBXBRIDGE_TEST_CLI_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(Main("test", os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestParseEnvFile(t *testing.T) {
	t.Parallel()
	in := "# comment\n; other comment\n\nA=1\nexport B = two words \nC=\"quoted \\\"x\\\" \\\\ y\"\nD='single $x'\nE=con\\\ntinued\nF=\n"
	got, err := parseEnvFile([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"A", "1"}, {"B", "two words"}, {"C", `quoted "x" \ y`}, {"D", "single $x"}, {"E", "continued"}, {"F", ""}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for _, bad := range []string{"no equals sign\n", "1X=a\n", "A=\"open\n", "A-B=1\n"} {
		if _, err := parseEnvFile([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: error %v, want one naming line 1", bad, err)
		}
	}
}

func TestLoadEnvFileKeepsTheCallersVariables(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "default")
	if err := os.WriteFile(p, []byte("A=file\nB=file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"A": "caller"}
	set := func(k, v string) error { env[k] = v; return nil }
	if err := loadEnvFile(p, func(k string) string { return env[k] }, set); err != nil {
		t.Fatal(err)
	}
	if env["A"] != "caller" || env["B"] != "file" {
		t.Fatalf("env %v", env)
	}
	if err := loadEnvFile(p+"-missing", func(string) string { return "" }, set); err != nil {
		t.Fatalf("missing file: %v", err)
	}
}

// nobody is the unprivileged user the tests give state directories to (present on every Debian).
func nobody(t *testing.T) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the rule applies to a root process")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no nobody user:", err)
	}
	return u
}

func ownerOf(t *testing.T, p string) (uid, gid int) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Sys().(*syscall.Stat_t)
	return int(s.Uid), int(s.Gid)
}

func TestEnsureStateDir(t *testing.T) {
	t.Parallel()
	u := nobody(t)
	uid, gid, _ := ids(u)
	dir := filepath.Join(t.TempDir(), "var", "lib", "pbxbridge")
	created, err := ensureStateDir(dir, u.Username)
	if err != nil || !created {
		t.Fatalf("created %v, err %v", created, err)
	}
	if gu, gg := ownerOf(t, dir); gu != uid || gg != gid {
		t.Fatalf("owner %d:%d, want %d:%d", gu, gg, uid, gid)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v", st.Mode())
	}
	if created, err := ensureStateDir(dir, u.Username); err != nil || created {
		t.Fatalf("second call: created %v, err %v", created, err)
	}
	// Without the service user, root keeps the directory (a machine without the package).
	other := filepath.Join(t.TempDir(), "state")
	if _, err := ensureStateDir(other, "no-such-user-pbxbridge-test"); err != nil {
		t.Fatal(err)
	}
	if gu, _ := ownerOf(t, other); gu != 0 {
		t.Fatalf("owner %d, want root", gu)
	}
}

// serviceLayout builds a state directory owned by nobody and a config nobody can read, as the
// package lays them out, and returns the config path and the state directory.
func serviceLayout(t *testing.T, u *user.User) (cfgPath, stateDir string) {
	t.Helper()
	uid, gid, _ := ids(u)
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil { // t.TempDir's folders are 0700
			t.Fatal(err)
		}
	}
	stateDir = filepath.Join(base, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(stateDir, uid, gid); err != nil {
		t.Fatal(err)
	}
	lic := filepath.Join(base, "licenses.d")
	if err := os.Mkdir(lic, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `state_dir: ` + stateDir + `
licensing: {dir: ` + lic + `}
http: {admin: {listen: "127.0.0.1:0"}}
recordings: {dir: ` + base + `}
pbx:
  - name: main
    ami: {host: 127.0.0.1, port: 1, username: u, secret: s}
connectors:
  - name: b24
    type: bitrix24
    bitrix24:
      portal_url: http://127.0.0.1:1
      auth: {mode: webhook, webhook_url: "http://127.0.0.1:1/rest/1/abc/"}
`
	cfgPath = filepath.Join(base, "pbxbridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, stateDir
}

func runChild(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// TestRootCommandsRunAsTheStateOwner: doctor and crm test, run as root, create the connector's
// state folder as the owner of the state directory (before, root-owned 0700 folders stopped the
// daemon), say so on stderr, and doctor's checks run as that user.
func TestRootCommandsRunAsTheStateOwner(t *testing.T) {
	t.Parallel()
	u := nobody(t)
	uid, _, _ := ids(u)
	for _, args := range [][]string{{"doctor", "--timeout", "2s"}, {"crm", "test", "b24"}} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			cfgPath, stateDir := serviceLayout(t, u)
			stdout, stderr, code := runChild(t, append(args, "--config", cfgPath)...)
			if code == 0 {
				t.Fatalf("exit 0 against closed ports?\n%s\n%s", stdout, stderr)
			}
			if want := "pbxbridge: running as " + u.Username + " (owner of " + stateDir + ")"; !strings.Contains(stderr, want) {
				t.Fatalf("stderr lacks %q:\n%s", want, stderr)
			}
			conn := filepath.Join(stateDir, "connectors", "b24")
			if got, _ := ownerOf(t, conn); got != uid {
				t.Fatalf("%s belongs to uid %d, want %d (%s)", conn, got, uid, u.Username)
			}
			if args[0] == "doctor" && !strings.Contains(stdout, "checks run as "+u.Username) {
				t.Fatalf("doctor does not say who it checks as:\n%s", stdout)
			}
		})
	}
}

// TestDoctorReportsForeignState: a root-owned folder in the state directory (left by an older
// version) is a doctor failure with the chown that fixes it.
func TestDoctorReportsForeignState(t *testing.T) {
	t.Parallel()
	u := nobody(t)
	cfgPath, stateDir := serviceLayout(t, u)
	bad := filepath.Join(stateDir, "connectors", "amo")
	if err := os.MkdirAll(bad, 0o700); err != nil { // as root
		t.Fatal(err)
	}
	stdout, _, _ := runChild(t, "doctor", "--timeout", "2s", "--config", cfgPath)
	for _, want := range []string{"FAIL  state ownership", filepath.Join(stateDir, "connectors"), "chown -R " + u.Username + ": " + stateDir} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
}

// TestRootOwnedStateStaysRoot: a state directory root owns (a development machine) or none at
// all means no change of user.
func TestRootOwnedStateStaysRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	if u, err := stateOwner(dir); err != nil || u != nil {
		t.Fatalf("root-owned: %v %v", u, err)
	}
	if u, err := stateOwner(filepath.Join(dir, "missing")); err != nil || u != nil {
		t.Fatalf("missing: %v %v", u, err)
	}
}
