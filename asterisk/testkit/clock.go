package testkit

import (
	"sync"
	"time"
)

// Clock is a manual clock for the injected clocks of the code under test
// (connector.Options.Now, outbox.Options.Clock, dispatch.Options.Clock, crm.Params.Now,
// fakecrm's B24Clock and AmoOptions.Now, licensing's Clock, the Clock interfaces of asterisk/ami
// and asterisk/ari): time stands still until the test moves it. It is safe for concurrent use.
// Pass the method value c.Now where a func() time.Time is wanted.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []clockTimer
}

type clockTimer struct {
	at time.Time
	ch chan time.Time
}

// Epoch is the default start of a Clock: a fixed instant, so tests do not depend on the day
// they run (2026-11-21 12:00 UTC).
var Epoch = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// NewClock returns a clock at start (Epoch when start is the zero time).
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = Epoch
	}
	return &Clock{now: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (a negative d moves it back), fires the After channels
// that are now due, and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fire()
	return c.now
}

// Set moves the clock to t (forward or back) and fires the After channels that are now due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	c.fire()
}

// After returns a channel that receives the clock's time once Advance or Set has moved it d or
// more past now (at once when d <= 0). The channel has room for that one value, so nobody needs
// to be receiving when it fires.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, clockTimer{at: c.now.Add(d), ch: ch})
	c.fire()
	return ch
}

// Waiters returns how many After channels have not fired yet: a test waits (WaitFor) until the
// code under test is waiting on the clock before it advances it.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// fire sends on the due timers; c.mu is held.
func (c *Clock) fire() {
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	clear(c.timers[len(kept):])
	c.timers = kept
}
