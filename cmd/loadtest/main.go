// Command loadtest runs pbxbridge's load benchmark (connector/loadtest) and prints the table of
// BENCHMARKS.md: a simulated PBX drives the daemon (a subprocess: this binary re-executed) into
// fake Bitrix24 and amoCRM servers, and the figures are measured from outside the daemon.
//
//	go run ./cmd/loadtest                      # every run (about 8 minutes)
//	go run ./cmd/loadtest -run latency,limits  # some runs
//	go run ./cmd/loadtest -quick               # a short smoke run of the harness
//	go run ./cmd/loadtest -profile /tmp/prof   # plus a CPU profile of the daemon per run
//	go run ./cmd/loadtest -daemon ./old-pbxbridge -run latency  # measure another build
//	go run ./cmd/loadtest -run perf -before ./old-loadtest      # before/after, side by side (~40 min)
//	go run ./cmd/loadtest -run hostile                          # hostile HTTP against the daemon (10 min)
//
// Run it from the repository root (it reads the scenarios' expected records from
// connector/callmodel/testdata) on an otherwise quiet machine; it prints the load average of
// each run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/loadtest"
)

func main() {
	loadtest.RunChildIfRequested()
	os.Exit(run())
}

func run() int {
	runs := flag.String("run", strings.Join(loadtest.Runs, ","), "comma-separated runs: "+strings.Join(loadtest.Runs, ", ")+
		", or "+loadtest.RunPerf+" (before/after), "+loadtest.RunHostile+" (hostile HTTP); those two are not run by default")
	quick := flag.Bool("quick", false, "short runs (a smoke test of the harness, not the benchmark's figures)")
	profile := flag.String("profile", "", "write a CPU profile of the daemon per run into this directory")
	rate := flag.Float64("latency-rate", 0, "call rate of the latency run (default 50/s)")
	daemon := flag.String("daemon", "", "run this pbxbridge binary as the daemon instead of this one (compare builds)")
	before := flag.String("before", "", "perf run: the daemon binary before the change (a cmd/loadtest build), measured side by side with -daemon or this one")
	repeat := flag.Int("repeat", loadtest.DefaultPerfRepeat, "perf run: repetitions (medians are reported)")
	idleFor := flag.Duration("idle-for", loadtest.DefaultPerfIdleFor, "perf run: how long the idle step measures")
	steps := flag.String("steps", strings.Join(loadtest.PerfSteps, ","), "perf run: comma-separated steps: "+strings.Join(loadtest.PerfSteps, ", "))
	hostileFor := flag.Duration("hostile-for", loadtest.DefaultHostileFor, "hostile run: how long the flood lasts (-quick: 20s)")
	corpus := flag.String("corpus", "", "hostile run: comma-separated directories with Fuzz*/ corpora of connector/security besides "+
		"connector/security/testdata/fuzz and $(go env GOCACHE)/fuzz/.../connector/security (\"none\": seeds only)")
	testdata := flag.String("testdata", "connector/callmodel/testdata", "the call model's testdata directory (expected records)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exp, err := loadtest.LoadExpected(*testdata)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o750); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	corpusDirs := []string{"connector/security/testdata/fuzz", loadtest.FuzzCacheDir()}
	switch *corpus {
	case "":
	case "none":
		corpusDirs = nil
	default:
		corpusDirs = append(corpusDirs, strings.Split(*corpus, ",")...)
	}
	figs, err := loadtest.Bench(ctx, loadtest.BenchOptions{
		Expected: exp, Runs: strings.Split(*runs, ","), Quick: *quick, ProfileDir: *profile, Log: os.Stderr, LatencyRate: *rate, Executable: *daemon,
		Before: *before, PerfRepeat: *repeat, PerfIdleFor: *idleFor, PerfSteps: strings.Split(*steps, ","),
		HostileFor: *hostileFor, HostileCorpus: corpusDirs,
	})
	loadtest.FormatTable(os.Stdout, figs, machine(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		return 1
	}
	return 0
}

// machine describes this machine: CPUs, model, Go version.
func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s %s/%s", runtime.NumCPU(), model, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
