//go:build race

package testkit

// RaceEnabled reports whether the test binary was built with -race. The race detector slows
// the pure-Go SQLite of the outbox about 20×, so the subprocess crash and fault tests (they
// exercise process kills, not data races) skip under it; .ci/run runs them in a separate step
// without -race.
const RaceEnabled = true
