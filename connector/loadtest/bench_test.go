package loadtest_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/loadtest"
)

// TestBenchQuick runs every run of the load benchmark in its quick form (go run ./cmd/loadtest
// -quick): a smoke test of the harness behind BENCHMARKS.md, in the long tier. The figures of
// the benchmark itself come from make bench, on a quiet machine.
func TestBenchQuick(t *testing.T) {
	testkit.Tier(t, testkit.Long)
	if testkit.RaceEnabled {
		t.Skip("the load harness measures a daemon subprocess: runs without -race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var log bytes.Buffer
	figs, err := loadtest.Bench(ctx, loadtest.BenchOptions{Expected: expected(t), Quick: true, Log: &log})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}
	runs := map[string]bool{}
	for _, f := range figs {
		runs[f.Run] = true
	}
	for _, r := range loadtest.Runs {
		if !runs[r] {
			t.Errorf("run %s produced no figure", r)
		}
	}
	var table bytes.Buffer
	loadtest.FormatTable(&table, figs, "test", time.Now().UTC().Format(time.DateTime))
	t.Logf("quick figures (not the benchmark's):\n%s", table.String())
}
