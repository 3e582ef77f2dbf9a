package testkit

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Level is a test tier. Every test is in the quick tier unless it calls Tier.
type Level int

// The tiers, each a superset of the one before when selected.
const (
	// Quick: plain `go test ./...`, the edit-compile-test loop. Unmarked tests.
	Quick Level = iota
	// Slow: what CI runs on every change in addition: the short fault suite, the crash tests
	// (subprocesses killed mid-write), the demo end to end, the browser test. Seconds to
	// minutes of real time each.
	Slow
	// Long: the full fault suite, long fuzzing, the load harness, the 10-minute demo. Run by
	// .ci/run-long, before a release, on a quiet machine.
	Long
)

// EnvVar selects the tiers: a comma-separated list of "quick", "slow", "long" ("long" implies
// "slow"); empty means quick only.
const EnvVar = "PBXBRIDGE_TESTS"

// String returns the tier's name as PBXBRIDGE_TESTS spells it.
func (l Level) String() string {
	switch l {
	case Quick:
		return "quick"
	case Slow:
		return "slow"
	case Long:
		return "long"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// Tier skips the test unless PBXBRIDGE_TESTS selects level, with a message telling how to run
// it. Call it first thing in the test (before t.Parallel). A PBXBRIDGE_TESTS the kit cannot read
// fails the test rather than silently running less.
func Tier(tb testing.TB, level Level) {
	tb.Helper()
	on, err := Enabled(level)
	if err != nil {
		tb.Fatal(err)
	}
	if !on {
		tb.Skipf("%s tier: runs with %s=%s (see DEVELOPERS.md, Checks)", level, EnvVar, level)
	}
}

// Selected reports whether PBXBRIDGE_TESTS selects level, for tests that run in a lower tier
// but do more in a higher one (the fault suite's short and full forms); a value the kit cannot
// read fails the test.
func Selected(tb testing.TB, level Level) bool {
	tb.Helper()
	on, err := Enabled(level)
	if err != nil {
		tb.Fatal(err)
	}
	return on
}

// Enabled reports whether PBXBRIDGE_TESTS selects level, and an error for a value it cannot
// read: Selected without a test.
func Enabled(level Level) (bool, error) {
	top, err := parse(os.Getenv(EnvVar))
	return level <= top, err
}

// parse returns the highest tier a PBXBRIDGE_TESTS value selects.
func parse(v string) (Level, error) {
	top := Quick
	for f := range strings.SplitSeq(v, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		var l Level
		switch f {
		case "", "quick":
			l = Quick
		case "slow":
			l = Slow
		case "long", "all":
			l = Long
		default:
			return Quick, fmt.Errorf("testkit: %s=%q: unknown tier %q (want quick, slow or long, comma-separated)", EnvVar, v, f)
		}
		top = max(top, l)
	}
	return top, nil
}
