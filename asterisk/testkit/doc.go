// Package testkit is the test support every package of the module shares: waiting on a
// condition (WaitFor, Eventually), the race detector's flag (RaceEnabled), a manual clock
// (Clock) and the test tiers (Tier).
//
// It lives under asterisk/ because asterisk is the bottom layer of the module: every package
// may import asterisk/..., and asterisk imports nothing above it (crm, connector, licensing), so
// the kit can serve all of them without bending the layering. It imports only the standard
// library. Only tests (and test tools) import it; it never reaches a shipped binary.
//
// # Waiting
//
// Tests never sleep to let something happen: they wait on a condition they re-check, with a
// deadline, and fail with a message naming what they waited for.
//
//	testkit.WaitFor(t, 10*time.Second, "3 deliveries", func() bool { return len(a.Delivered()) >= 3 })
//
// A notification (a channel receive, a callback) may tell a test that something changed, but the
// test still re-checks the state it needs; one missed or early notification must never make a
// test pass or hang.
//
// # Tiers
//
// Plain `go test ./...` runs the quick tier: every test that is not marked. A test that needs
// more (seconds of real time, subprocesses, a browser) marks itself first thing:
//
//	testkit.Tier(t, testkit.Slow) // or testkit.Long
//
// and is skipped unless the environment variable PBXBRIDGE_TESTS names its tier:
// PBXBRIDGE_TESTS=slow runs the quick and slow tiers (what CI runs), PBXBRIDGE_TESTS=long runs
// all three (long implies slow). DEVELOPERS.md ("Checks") lists what belongs to each tier.
package testkit
