package demo_test

import (
	"os"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

// TestMain lets the demo tests run side by side: each plays calls in real time on its own
// simulated PBX and fake CRMs and spends its time waiting on them.
func TestMain(m *testing.M) {
	testkit.SetParallel(4)
	os.Exit(m.Run())
}
