package owner_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pbxbridge/pbxbridge/licensing/internal/owner"
)

const nobody = 65534

// serviceDir returns a directory owned by uid 65534, as a service's state directory is owned by
// the service user; the test is skipped unless it runs as root.
func serviceDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the rule applies only to a root process")
	}
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ownerOf(t *testing.T, p string) (uid, gid uint32) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Sys().(*syscall.Stat_t)
	return s.Uid, s.Gid
}

func TestFileAndPathAndMkdirAll(t *testing.T) {
	t.Parallel()
	dir := serviceDir(t)
	f, err := os.CreateTemp(dir, "x-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.File(f, dir); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if u, g := ownerOf(t, f.Name()); u != nobody || g != nobody {
		t.Fatalf("File: owner %d:%d", u, g)
	}
	p := filepath.Join(dir, "y")
	if err := os.WriteFile(p, []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := owner.Path(p); err != nil {
		t.Fatal(err)
	}
	if u, _ := ownerOf(t, p); u != nobody {
		t.Fatalf("Path: owner %d", u)
	}
	nested := filepath.Join(dir, "a", "b")
	if err := owner.MkdirAll(nested, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(dir, "a"), nested} {
		if u, _ := ownerOf(t, d); u != nobody {
			t.Fatalf("MkdirAll: %s owner %d", d, u)
		}
	}
}

// TestRootOwnedDirUnchanged: in a directory root owns, what root creates stays root's.
func TestRootOwnedDirUnchanged(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	if err := owner.MkdirAll(filepath.Join(dir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sub", "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := owner.Path(p); err != nil {
		t.Fatal(err)
	}
	if u, _ := ownerOf(t, p); u != 0 {
		t.Fatalf("owner %d", u)
	}
	if _, _, needed, err := owner.Of(dir); needed || err != nil {
		t.Fatalf("Of: %v %v", needed, err)
	}
}

func TestNotRootDoesNothing(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		t.Skip("runs as root")
	}
	if _, _, needed, err := owner.Of(t.TempDir()); needed || err != nil {
		t.Fatalf("Of: %v %v", needed, err)
	}
}
