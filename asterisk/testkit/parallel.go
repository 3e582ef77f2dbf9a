package testkit

import (
	"flag"
	"fmt"
)

// SetParallel lets up to n tests of the package run in parallel (t.Parallel) unless the command
// line chose a -test.parallel of its own. The default is GOMAXPROCS, 2 on a small CI machine;
// tests that spend their time waiting on real time (a replayed call, a reconnect, an HTTP round
// trip) use little CPU, so more of them fit. Call it from TestMain, before m.Run:
//
//	func TestMain(m *testing.M) {
//		testkit.SetParallel(8)
//		os.Exit(m.Run())
//	}
func SetParallel(n int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if set {
		return
	}
	if err := flag.Set("test.parallel", fmt.Sprint(n)); err != nil {
		panic(fmt.Sprintf("testkit: SetParallel outside a test binary: %v", err))
	}
}
