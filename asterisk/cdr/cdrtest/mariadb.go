// Package cdrtest runs a private MariaDB server for tests that need a real CDR database
// (asterisk/cdr's MySQL reader, the simulated PBX's FreePBX-style table, the daemon's gap
// recovery and the fault suite). It is a test helper: only tests import it.
//
// A test binary keeps one MariaDB value (a package variable of its TestMain file), starts it
// lazily with the first test that asks for a database, and stops it when the tests are done:
//
//	var mariaDB cdrtest.MariaDB
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		mariaDB.Stop()
//		os.Exit(code)
//	}
//
//	dsn := mariaDB.Database(t, cdrtest.FreePBXSchema)
//
// The server is mariadb-install-db into a temporary directory, then mariadbd on a unix socket
// there: no TCP, no grant tables (root without a password), the data thrown away at Stop. When
// MariaDB is not installed the tests that need it are skipped, unless
// PBXBRIDGE_REQUIRE_MARIADB=1 (CI sets it where it installed the server) makes that a failure.
package cdrtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the server's client
)

// RequireEnv makes a missing MariaDB fail the tests instead of skipping them when set to "1".
const RequireEnv = "PBXBRIDGE_REQUIRE_MARIADB"

// MariaDB is one private server; the zero value is ready to use. Safe for concurrent use.
type MariaDB struct {
	once sync.Once
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan struct{} // closed when the server process has exited
	err  error
}

// Socket returns the server's unix socket ("" before the first Database).
func (m *MariaDB) Socket() string { return m.sock }

// Database starts the server if needed, creates a database of its own for the test (named
// after it, dropped at its end), runs the statements in it and returns a DSN for it (user root,
// go-sql-driver/mysql format). It skips the test when MariaDB is not installed, unless
// RequireEnv is set.
func (m *MariaDB) Database(tb testing.TB, statements ...string) string {
	tb.Helper()
	m.once.Do(m.start)
	if m.err != nil {
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("mariadb: %v", m.err)
		}
		tb.Skipf("mariadb: %v; %s=1 makes this a failure", m.err, RequireEnv)
	}
	name := "t_" + strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(tb.Name(), "_"))
	if len(name) > 64 {
		name = name[:64]
	}
	root, err := sql.Open("mysql", "root@unix("+m.sock+")/")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	ctx := context.Background()
	for _, s := range []string{"DROP DATABASE IF EXISTS " + name, "CREATE DATABASE " + name} {
		if _, err := root.ExecContext(ctx, s); err != nil {
			tb.Fatalf("%s: %v", s, err)
		}
	}
	tb.Cleanup(func() {
		if db, err := sql.Open("mysql", "root@unix("+m.sock+")/"); err == nil {
			_, _ = db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name)
			_ = db.Close()
		}
	})
	dsn := "root@unix(" + m.sock + ")/" + name
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	for _, s := range statements {
		if _, err := db.ExecContext(ctx, s); err != nil {
			tb.Fatalf("%s: %v", truncate(s, 200), err)
		}
	}
	return dsn
}

// findProgram looks in PATH, then in the directories Debian installs the server into (a
// non-root PATH often lacks /usr/sbin).
func findProgram(names ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/libexec"} {
			if p := filepath.Join(dir, n); isExecutable(p) {
				return p
			}
		}
	}
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func (m *MariaDB) start() {
	server := findProgram("mariadbd", "mysqld")
	install := findProgram("mariadb-install-db", "mysql_install_db")
	if server == "" || install == "" {
		m.err = errors.New("mariadbd/mysqld or mariadb-install-db is not installed (Debian: apt-get install mariadb-server)")
		return
	}
	dir, err := os.MkdirTemp("", "cdr-mariadb-")
	if err != nil {
		m.err = err
		return
	}
	m.dir = dir
	data := filepath.Join(dir, "data")
	var asRoot []string
	if os.Geteuid() == 0 {
		asRoot = []string{"--user=root"} // mysqld refuses to run as root otherwise
	}
	args := append([]string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal",
		"--skip-test-db"}, asRoot...)
	if out, err := exec.Command(install, args...).CombinedOutput(); err != nil { //nolint:gosec // G204: the installed MariaDB's own program
		m.err = fmt.Errorf("%s: %w\n%s", install, err, tail(out))
		return
	}
	m.sock = filepath.Join(dir, "mysqld.sock")
	args = append([]string{"--no-defaults", "--datadir=" + data, "--socket=" + m.sock, "--skip-networking",
		"--pid-file=" + filepath.Join(dir, "mysqld.pid"), "--log-error=" + filepath.Join(dir, "error.log"),
		"--tmpdir=" + dir, "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
		"--innodb-flush-log-at-trx-commit=0"}, asRoot...)
	m.cmd = exec.Command(server, args...) //nolint:gosec // G204: the installed MariaDB's own program
	if err := m.cmd.Start(); err != nil {
		m.err = err
		return
	}
	m.done = make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(m.done) }()

	db, err := sql.Open("mysql", "root@unix("+m.sock+")/")
	if err != nil {
		m.err = err
		return
	}
	defer func() { _ = db.Close() }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-m.done:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			m.err = fmt.Errorf("%s exited: %s", server, tail(log))
			return
		case <-deadline:
			m.err = fmt.Errorf("%s not ready after 60s: %w", server, err)
			return
		case <-tick.C:
		}
	}
}

// Stop stops the server (if it was started) and removes its files.
func (m *MariaDB) Stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
	if m.dir != "" {
		_ = os.RemoveAll(m.dir)
	}
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
