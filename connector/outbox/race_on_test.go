//go:build race

package outbox

// raceEnabled reports whether the race detector is on (it slows SQLite down
// a lot, so the crash test does less).
const raceEnabled = true
