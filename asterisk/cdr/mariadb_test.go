package cdr_test

import (
	"os"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/cdr/cdrtest"
)

// testMariaDB is one private MariaDB server for this test binary (asterisk/cdr/cdrtest): started
// by the first test that needs it, stopped by TestMain.
var testMariaDB cdrtest.MariaDB

func TestMain(m *testing.M) {
	code := m.Run()
	testMariaDB.Stop()
	os.Exit(code)
}

// newCDRDatabase creates a database of its own for the test on the shared server, runs the
// statements in it and returns a DSN for it (the root user: the server runs without grants).
// The test is skipped when MariaDB is not installed, unless PBXBRIDGE_REQUIRE_MARIADB=1.
func newCDRDatabase(t *testing.T, statements ...string) string {
	t.Helper()
	return testMariaDB.Database(t, statements...)
}
