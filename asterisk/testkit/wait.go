package testkit

import (
	"testing"
	"time"
)

// Polling intervals of WaitFor and Eventually: the first re-check comes after minPoll, then the
// interval doubles up to maxPoll, so a condition that holds soon is seen soon and a long wait
// costs little.
const (
	minPoll = time.Millisecond
	maxPoll = 20 * time.Millisecond
)

// WaitFor calls cond until it returns true and fails the test (Fatalf, so from the test's own
// goroutine only) if it has not after timeout: "timed out after <timeout> waiting for <what>".
// cond is called first at once, then at short, growing intervals (1 ms to 20 ms); it must be
// safe to call repeatedly and concurrently with the code under test (take the locks it needs).
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !poll(timeout, cond) {
		tb.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Eventually calls check until it returns nil and fails the test (Fatalf) with the last error
// if it has not after timeout: "timed out after <timeout> waiting for <what>: <last error>". It
// is WaitFor for conditions that can say what is still missing.
func Eventually(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	var last error
	if !poll(timeout, func() bool { last = check(); return last == nil }) {
		tb.Fatalf("timed out after %v waiting for %s: %v", timeout, what, last)
	}
}

// Until calls cond like WaitFor and reports whether it became true within timeout, without
// failing the test: for callers that add their own diagnostics, or that run outside the test's
// goroutine.
func Until(timeout time.Duration, cond func() bool) bool {
	return poll(timeout, cond)
}

func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := minPoll
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			// One last look: the condition may have become true while we slept past the
			// deadline (a loaded machine).
			return cond()
		}
		timer.Reset(min(wait, left))
		<-timer.C
		wait = min(2*wait, maxPoll)
	}
}
