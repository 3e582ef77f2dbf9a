package loadtest_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/loadtest"
)

// TestFaultHostileHTTP (slow tier) is the short form of the hostile run (`go run ./cmd/loadtest -run
// hostile`, 10 minutes): 20 s of the handler fuzz targets' seeds, mutated, sent over real
// sockets to the daemon's public and admin listeners and its admin socket while the PBX
// replays calls. The daemon (a subprocess: its RSS is its own) must stay up and ready, answer
// every complete request within a second, stay under 100 MiB and still deliver every call to
// each CRM exactly once.
func TestFaultHostileHTTP(t *testing.T) {
	skipSubprocess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log strings.Builder
	r, err := loadtest.PlayHostile(ctx, &loadtest.BenchOptions{Expected: expected(t), Log: &log}, loadtest.HostileOptions{
		Duration:   20 * time.Second,
		CorpusDirs: []string{filepath.Join("..", "security", "testdata", "fuzz")},
	})
	t.Log(strings.TrimSpace(log.String()))
	if r == nil {
		t.Fatal(err)
	}
	t.Logf("%d complete requests: %s; slow connections %+v", r.Total(), r.AnswersText(), r.Slow)
	for _, s := range r.Errors {
		t.Logf("%d answer: %s", s.Status, s.Request)
	}
	for _, s := range r.Slowest {
		t.Logf("slow answer %v (%d): %s", s.Took, s.Status, s.Request)
	}
	t.Logf("daemon RSS before %d MiB, peak %d MiB, at the end %d MiB; %d calls, %d records", r.BaseRSS>>20, r.PeakRSS>>20, r.EndRSS>>20, r.Calls, r.Records)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Up {
		t.Error("the daemon is not up and ready after the flood")
	}
	if r.Total() < 1000 {
		t.Errorf("only %d complete requests sent", r.Total())
	}
	if r.Over > 0 {
		t.Errorf("%d answers took longer than %v; slowest %v: %s", r.Over, loadtest.HostileAnswerLimit, r.SlowestAnswer().Took, r.SlowestAnswer().Request)
	}
	if r.PeakRSS == 0 || r.PeakRSS > loadtest.HostileRSSLimit {
		t.Errorf("daemon peak RSS %d MiB, want ≤ %d MiB", r.PeakRSS>>20, loadtest.HostileRSSLimit>>20)
	}
	if !r.Delivered() {
		t.Errorf("calls not delivered exactly once: %d records, lost %v, duplicated %v", r.Records, r.Lost, r.Dup)
	}
}

func TestParseFuzzInput(t *testing.T) {
	t.Parallel()
	in, err := loadtest.ParseFuzzInput([]byte("go test fuzz v1\nbyte('\\x02')\nstring(\"rec/0?\\xe2\\x86\")\nstring(\"A: b\\nC: d\")\n[]byte(\"0\\x00\")\n"))
	if err != nil {
		t.Fatal(err)
	}
	if in.Method != 2 || in.Path != "rec/0?\xe2\x86" || in.Header != "A: b\nC: d" || string(in.Body) != "0\x00" {
		t.Fatalf("got %+v", in)
	}
	if in, err := loadtest.ParseFuzzInput([]byte("go test fuzz v1\nbyte(';')\nstring(\"\")\nstring(``)\n[]byte(\"\")")); err != nil || in.Method != ';' {
		t.Fatalf("got %+v, %v", in, err)
	}
	if in, err := loadtest.ParseFuzzInput([]byte("go test fuzz v1\nbyte(0x10)\nstring(\"/\")\nstring(\"\")\n[]byte(\"\")\n")); err != nil || in.Method != 16 {
		t.Fatalf("got %+v, %v", in, err)
	}
	for _, bad := range []string{
		"", "go test fuzz v1\n", "go test fuzz v2\nbyte('a')\nstring(\"\")\nstring(\"\")\n[]byte(\"\")",
		"go test fuzz v1\nbyte('ab')\nstring(\"\")\nstring(\"\")\n[]byte(\"\")",
		"go test fuzz v1\nbyte('\\u0100')\nstring(\"\")\nstring(\"\")\n[]byte(\"\")",
		"go test fuzz v1\nbyte(256)\nstring(\"\")\nstring(\"\")\n[]byte(\"\")",
		"go test fuzz v1\nbyte('a')\nint(1)\nstring(\"\")\n[]byte(\"\")",
		"go test fuzz v1\nbyte('a')\nstring(\"x)\nstring(\"\")\n[]byte(\"\")",
	} {
		if _, err := loadtest.ParseFuzzInput([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseFuzzInput(f *testing.F) {
	f.Add([]byte("go test fuzz v1\nbyte('\\x02')\nstring(\"0\")\nstring(\"\\xd0:\")\n[]byte(\"0\")\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = loadtest.ParseFuzzInput(data)
	})
}
