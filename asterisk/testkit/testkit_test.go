package testkit_test

import (
	"errors"
	"flag"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
)

// recorder is a testing.TB whose Fatal* and Skip* record the message and end the calling
// goroutine the way the real ones do (runtime.Goexit), so the kit can be tested failing.
type recorder struct {
	testing.TB
	mu      sync.Mutex
	fatal   string
	skipped string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls f with a recorder on its own goroutine (Goexit ends it) and returns the recorder.
func run(t *testing.T, f func(tb testing.TB)) *recorder {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestWaitForSeesAConditionThatBecomesTrue(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	go func() {
		for range 5 {
			n.Add(1)
			runtime.Gosched()
		}
	}()
	r := run(t, func(tb testing.TB) {
		tb.Helper()
		testkit.WaitFor(tb, 10*time.Second, "five increments", func() bool { return n.Load() == 5 })
	})
	if r.fatal != "" {
		t.Fatalf("WaitFor failed: %s", r.fatal)
	}
}

func TestWaitForFailsWithWhatItWaitedFor(t *testing.T) {
	t.Parallel()
	calls := 0
	start := time.Now()
	r := run(t, func(tb testing.TB) {
		tb.Helper()
		testkit.WaitFor(tb, 30*time.Millisecond, "the moon", func() bool { calls++; return false })
	})
	if want := "timed out after 30ms waiting for the moon"; r.fatal != want {
		t.Fatalf("failure %q, want %q", r.fatal, want)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("gave up after %v, before its timeout", d)
	}
	if calls < 3 {
		t.Fatalf("condition checked %d times in 30 ms, want it re-checked", calls)
	}
}

func TestEventuallyReportsTheLastError(t *testing.T) {
	t.Parallel()
	i := 0
	r := run(t, func(tb testing.TB) {
		tb.Helper()
		testkit.Eventually(tb, 20*time.Millisecond, "the queue to drain", func() error {
			i++
			return fmt.Errorf("%d rows pending", 100-i)
		})
	})
	if !strings.HasPrefix(r.fatal, "timed out after 20ms waiting for the queue to drain: ") ||
		r.fatal != fmt.Sprintf("timed out after 20ms waiting for the queue to drain: %d rows pending", 100-i) {
		t.Fatalf("failure %q does not end with the last error (%d rows pending)", r.fatal, 100-i)
	}
	ok := run(t, func(tb testing.TB) {
		tb.Helper()
		n := 0
		testkit.Eventually(tb, 10*time.Second, "third time", func() error {
			if n++; n < 3 {
				return errors.New("not yet")
			}
			return nil
		})
	})
	if ok.fatal != "" {
		t.Fatalf("Eventually failed: %s", ok.fatal)
	}
}

func TestUntil(t *testing.T) {
	t.Parallel()
	if testkit.Until(10*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a false condition true")
	}
	if !testkit.Until(0, func() bool { return true }) {
		t.Fatal("Until with no time left did not check the condition once")
	}
}

func TestClock(t *testing.T) {
	t.Parallel()
	c := testkit.NewClock(time.Time{})
	if !c.Now().Equal(testkit.Epoch) {
		t.Fatalf("new clock at %v, want %v", c.Now(), testkit.Epoch)
	}
	soon, later, now := c.After(time.Second), c.After(time.Minute), c.After(0)
	select {
	case <-now:
	default:
		t.Fatal("After(0) did not fire at once")
	}
	if got := c.Advance(999 * time.Millisecond); !got.Equal(testkit.Epoch.Add(999 * time.Millisecond)) {
		t.Fatalf("Advance returned %v", got)
	}
	select {
	case <-soon:
		t.Fatal("After(1s) fired 1 ms early")
	default:
	}
	c.Advance(time.Millisecond)
	if at := <-soon; !at.Equal(testkit.Epoch.Add(time.Second)) {
		t.Fatalf("After(1s) fired with %v", at)
	}
	if c.Waiters() != 1 {
		t.Fatalf("%d waiters, want 1 (the minute)", c.Waiters())
	}
	c.Set(testkit.Epoch.Add(time.Hour))
	<-later
	if c.Waiters() != 0 {
		t.Fatalf("%d waiters after every timer fired", c.Waiters())
	}
}

// The clock is used from the code under test's goroutines while the test moves it.
func TestClockConcurrentUse(t *testing.T) {
	t.Parallel()
	c := testkit.NewClock(time.Time{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			prev := c.Now()
			for range 200 {
				now := c.Now()
				if now.Before(prev) {
					t.Errorf("time went back from %v to %v", prev, now)
				}
				prev = now
				<-c.After(0)
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			c.Advance(time.Millisecond)
		}
	})
	wg.Wait()
	if got := c.Now().Sub(testkit.Epoch); got != 200*time.Millisecond {
		t.Fatalf("clock advanced %v, want 200ms", got)
	}
}

// Tier reads PBXBRIDGE_TESTS (t.Setenv: not parallel).
func TestTier(t *testing.T) {
	for _, tc := range []struct {
		env              string
		quick, slow, lng bool
	}{
		{"", true, false, false},
		{"quick", true, false, false},
		{"slow", true, true, false},
		{"long", true, true, true},
		{"quick, Slow", true, true, false},
		{"slow,long", true, true, true},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(testkit.EnvVar, tc.env)
			for _, l := range []struct {
				level testkit.Level
				want  bool
			}{{testkit.Quick, tc.quick}, {testkit.Slow, tc.slow}, {testkit.Long, tc.lng}} {
				r := run(t, func(tb testing.TB) { tb.Helper(); testkit.Tier(tb, l.level) })
				if r.fatal != "" {
					t.Fatalf("Tier(%s): %s", l.level, r.fatal)
				}
				if ran := r.skipped == ""; ran != l.want {
					t.Errorf("%s=%q: %s tier runs %v, want %v", testkit.EnvVar, tc.env, l.level, ran, l.want)
				}
				if got := testkit.Selected(t, l.level); got != l.want {
					t.Errorf("%s=%q: Selected(%s) = %v, want %v", testkit.EnvVar, tc.env, l.level, got, l.want)
				}
				if r.skipped != "" && !strings.Contains(r.skipped, testkit.EnvVar+"="+l.level.String()) {
					t.Errorf("skip message %q does not say how to run the test", r.skipped)
				}
			}
		})
	}
}

func TestTierRejectsAnUnknownValue(t *testing.T) {
	t.Setenv(testkit.EnvVar, "slwo")
	r := run(t, func(tb testing.TB) { tb.Helper(); testkit.Tier(tb, testkit.Slow) })
	if !strings.Contains(r.fatal, `unknown tier "slwo"`) {
		t.Fatalf("PBXBRIDGE_TESTS=slwo: failure %q, skip %q; want a failure naming the value", r.fatal, r.skipped)
	}
	r = run(t, func(tb testing.TB) { tb.Helper(); testkit.Selected(tb, testkit.Long) })
	if !strings.Contains(r.fatal, `unknown tier "slwo"`) {
		t.Fatalf("PBXBRIDGE_TESTS=slwo: Selected did not fail naming the value (%q)", r.fatal)
	}
}

// SetParallel keeps a -test.parallel given on the command line (go test -parallel 3 passes
// -test.parallel=3 to the binary, parsed before TestMain could call SetParallel).
func TestSetParallelKeepsTheCommandLine(t *testing.T) {
	f := flag.Lookup("test.parallel")
	if f == nil {
		t.Fatal("no test.parallel flag in a test binary")
	}
	before := f.Value.String()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	testkit.SetParallel(97)
	switch got := f.Value.String(); {
	case set && got != before:
		t.Fatalf("-test.parallel=%s from the command line became %s", before, got)
	case !set && got != "97":
		t.Fatalf("-test.parallel is %s after SetParallel(97)", got)
	}
	t.Cleanup(func() { _ = f.Value.Set(before) })
}
