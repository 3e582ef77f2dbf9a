package demo_test

import (
	"os"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

// TestMain lets the demo tests run side by side: each plays calls in real time on its own
// simulated PBX and fake CRMs and spends its time waiting on them. Under -race, two at a time:
// the race detector multiplies the CPU each demo takes, and the stop tests time how soon a demo
// stops (TestSecondCtrlCStopsAtOnce took 11-20 s instead of under 10 with four at once in
// .ci/run's race lane).
func TestMain(m *testing.M) {
	n := 4
	if testkit.RaceEnabled {
		n = 2
	}
	testkit.SetParallel(n)
	os.Exit(m.Run())
}
