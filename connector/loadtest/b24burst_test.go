package loadtest_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/loadtest"
)

// TestB24Burst is the acceptance run of the Bitrix24 load work (BENCHMARKS.md, b24burst): 105
// calls of the real transcripts in 114 s into the fake Bitrix24 at 2 requests/s (burst 50, 150
// ms latency), recordings attached: no card after its call ended, median hangup→finish ≤ 20 s
// and max ≤ 45 s, at most 2.6 requests per call, no QUERY_LIMIT_EXCEEDED. It takes about 2.5
// minutes, so that full form is in the long tier (PBXBRIDGE_TESTS=long; `go run ./cmd/loadtest
// -run b24burst` prints the same figures); the short form (30 calls, about 50 s) is in the slow
// tier with the fault suite.
func TestB24Burst(t *testing.T) {
	skipSubprocess(t)
	full := testkit.Selected(t, testkit.Long)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	exp, err := loadtest.LoadExpected(filepath.Join("..", "callmodel", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := loadtest.PlayB24Burst(ctx, &loadtest.BenchOptions{Expected: exp}, !full)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range r.LateCards {
		t.Logf("late card: %s", l)
	}
	t.Logf("%d calls: %d of %d cards after the call ended, %d after another extension answered; hangup→finish median %v, max %v; %.2f requests per call (%d batches of %d commands), %d QUERY_LIMIT_EXCEEDED; live actions dropped %v",
		r.Calls, r.CardsAfterEnd, r.CardsTotal, r.CardsAfterAnswerElsewhere, r.FinishMedian, r.FinishMax, r.RequestsPerCall,
		r.Batches, r.BatchedCommands, r.RateLimited, r.Dropped)
	if r.CardsAfterEnd > 0 || r.NoAck > 0 || r.RateLimited > 0 {
		t.Errorf("%d cards after their call ended, %d calls not logged, %d refused", r.CardsAfterEnd, r.NoAck, r.RateLimited)
	}
	if r.TimelinesChecked == 0 || r.TimelinesWithRegister != r.TimelinesChecked {
		t.Errorf("%d of %d calls list the register sent while they rang in their timeline", r.TimelinesWithRegister, r.TimelinesChecked)
	}
	if r.FinishMedian > 20*time.Second || r.FinishMax > 45*time.Second {
		t.Errorf("hangup→finish median %v, max %v; want ≤ 20 s and ≤ 45 s", r.FinishMedian, r.FinishMax)
	}
	// The quick form's 30 calls fit in the portal's burst: no backlog, nothing to batch.
	if full && r.RequestsPerCall > 2.6 {
		t.Errorf("%.2f requests per call, want ≤ 2.6", r.RequestsPerCall)
	}
}
