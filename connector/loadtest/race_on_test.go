//go:build race

package loadtest_test

const raceEnabled = true
