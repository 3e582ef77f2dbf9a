//go:build race

package connector_test

// raceEnabled: the race detector slows the pure-Go SQLite ~20×, so the subprocess crash test
// runs in its own CI step without -race (it exercises process kills, not data races).
const raceEnabled = true
