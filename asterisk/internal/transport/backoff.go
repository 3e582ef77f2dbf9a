// Package transport holds what the AMI and ARI sources share beyond their wire protocols: the
// reconnect loop (Run) with its capped, jittered Backoff and injectable Clock, the source's
// status, readiness and backpressured event delivery (Loop), and the metrics every transport
// exports (Metrics). Packages asterisk/ami and asterisk/ari plug their own connection, login
// and event pump into Run through Hooks.
package transport

import (
	"math/rand/v2"
	"time"
)

// Clock is the time source of a Source. Tests inject a fake one to run backoff instantly.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has elapsed.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Backoff is the reconnect policy: capped exponential delays with equal jitter. Attempt n
// (0-based, counting consecutive failures) waits d/2 + rand·d/2 where d = min(Max,
// Initial·Multiplier^n). A connection that stayed up for StableAfter resets n to 0; a rejected
// login (AMI: Authentication failed, ARI: HTTP 401) jumps straight to Max, so a wrong password
// does not trip fail2ban on the PBX.
type Backoff struct {
	Initial     time.Duration // default 500 ms
	Max         time.Duration // default 30 s
	Multiplier  float64       // default 2
	StableAfter time.Duration // default 5 s: a session that worked that long is not flapping
	// Rand returns the jitter in [0,1) (default math/rand/v2.Float64).
	Rand func() float64
}

// WithDefaults returns b with zero (or out of range) fields replaced by their defaults.
func (b Backoff) WithDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 500 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Multiplier < 1 {
		b.Multiplier = 2
	}
	if b.StableAfter <= 0 {
		b.StableAfter = 5 * time.Second
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	return b
}

// Delay returns the wait before reconnect attempt n (0-based). Zero fields take their defaults.
func (b Backoff) Delay(n int) time.Duration {
	b = b.WithDefaults()
	d := float64(b.Initial)
	for i := 0; i < n && d < float64(b.Max); i++ {
		d *= b.Multiplier
	}
	if d > float64(b.Max) {
		d = float64(b.Max)
	}
	j := b.Rand()
	if j < 0 || j >= 1 {
		j = 0
	}
	return time.Duration(d/2 + j*d/2)
}
