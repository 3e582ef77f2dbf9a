package loadtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// The runs of Bench, in the order they run.
const (
	RunIdle        = "idle"        // RSS of an idle daemon
	RunLatency     = "latency"     // 50 calls/s, unlimited CRMs: card and delivery latency
	RunThroughput  = "throughput"  // rising rates into the fake connector: sustained calls/s, CPU
	RunConcurrency = "concurrency" // 1,000 calls in progress at once: RSS
	RunLimits      = "limits"      // CRMs at their real limits: outbox growth and drain
	RunB24Burst    = "b24burst"    // 105 calls in 114 s into Bitrix24 at 2 req/s: late cards, finish latency
	// RunPerf compares two daemon builds (BenchOptions.Before and this one) step by step:
	// CPU per call and per idle minute, outbox commits per call, RSS (perf.go). It takes about
	// 40 minutes, so it is not among the default Runs.
	RunPerf = "perf"
	// RunHostile floods the daemon's listeners and admin socket with the handler fuzz targets'
	// inputs, mutated, for BenchOptions.HostileFor (10 minutes by default; hostile.go): its
	// RSS, its slowest answer, whether it stays up and delivers. Not among the default Runs.
	RunHostile = "hostile"
)

// Runs lists the runs of Bench that run by default (every run but RunPerf).
var Runs = []string{RunIdle, RunLatency, RunThroughput, RunConcurrency, RunLimits, RunB24Burst}

// BenchOptions configure Bench.
type BenchOptions struct {
	Expected Expected
	// Runs selects runs (default all).
	Runs []string
	// Quick shortens every run (a smoke test of the harness; the figures are not the
	// benchmark's).
	Quick bool
	// ProfileDir, when set, receives a CPU profile of the daemon per run (<run>.pprof).
	ProfileDir string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
	// Executable is the daemon binary (default: this one; see RunChildIfRequested).
	Executable string
	// LatencyRate overrides the call rate of the latency run (default 50/s).
	LatencyRate float64
	// Before is the daemon binary of the build before a change, which the perf run measures
	// side by side with Executable ("": the perf run measures Executable alone).
	Before string
	// PerfRepeat is how many times the perf run repeats its steps (default DefaultPerfRepeat);
	// PerfIdleFor how long its idle step measures (default DefaultPerfIdleFor); PerfSteps
	// selects its steps (default PerfSteps).
	PerfRepeat  int
	PerfIdleFor time.Duration
	PerfSteps   []string
	// HostileFor is how long the hostile run floods (default DefaultHostileFor); HostileCorpus
	// are directories with the Fuzz*/ corpora of connector/security (testdata/fuzz,
	// FuzzCacheDir) added to its seeds.
	HostileFor    time.Duration
	HostileCorpus []string
}

// Figure is one result line of the benchmark.
type Figure struct {
	Run    string
	Name   string
	Value  string
	Target string // "" when the issue sets none
	Met    string // "yes", "no", or "" without a target
	// Load is the machine's 1-minute load average when the run ended; CPUs how many it has.
	Load float64
}

// Bench runs the benchmark and returns its figures. Each run starts a fresh test bed.
func Bench(ctx context.Context, o BenchOptions) ([]Figure, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	runs := o.Runs
	if len(runs) == 0 {
		runs = Runs
	}
	var figs []Figure
	for _, r := range runs {
		fn := map[string]func(context.Context, *BenchOptions) ([]Figure, error){
			RunIdle: benchIdle, RunLatency: benchLatency, RunThroughput: benchThroughput,
			RunConcurrency: benchConcurrency, RunLimits: benchLimits, RunB24Burst: benchB24Burst, RunPerf: benchPerf, RunHostile: benchHostile,
		}[r]
		if fn == nil {
			return figs, fmt.Errorf("loadtest: unknown run %q (have %v, %s and %s)", r, Runs, RunPerf, RunHostile)
		}
		fmt.Fprintf(o.Log, "== run %s (load average %.1f)\n", r, LoadAverage())
		f, err := fn(ctx, &o)
		load := LoadAverage()
		for i := range f {
			f[i].Run, f[i].Load = r, load
		}
		figs = append(figs, f...)
		if err != nil {
			return figs, fmt.Errorf("run %s: %w", r, err)
		}
	}
	return figs, nil
}

// env starts a test bed for a run in a fresh directory.
func (o *BenchOptions) env(ctx context.Context, run string, eo EnvOptions) (*Env, func(), error) {
	dir, err := TempDir(run)
	if err != nil {
		return nil, nil, err
	}
	eo.Daemon.Dir = dir
	eo.Daemon.Executable = o.Executable
	eo.Daemon.LogLevel = "warn"
	if o.ProfileDir != "" {
		eo.Daemon.CPUProfile = filepath.Join(o.ProfileDir, run+".pprof")
	}
	eo.Expected = o.Expected
	e, err := StartEnv(ctx, eo)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	return e, func() { // safe to call again
		once.Do(func() {
			e.Close()
			_ = removeAll(dir)
		})
	}, nil
}

// sampler samples the daemon process every interval until stopped.
type sampler struct {
	mu     sync.Mutex
	maxRSS int64
	last   ProcStat
	stop   chan struct{}
	done   chan struct{}
}

func sample(d *Daemon, every time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if ps, err := d.Proc(); err == nil {
				s.mu.Lock()
				s.maxRSS = max(s.maxRSS, ps.RSS)
				s.last = ps
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) end() (maxRSS int64) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxRSS
}

func pickDur(quick bool, short, long time.Duration) time.Duration {
	if quick {
		return short
	}
	return long
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// benchIdle: the daemon with both CRM connectors, logged in, no calls.
func benchIdle(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	e, stop, err := o.env(ctx, RunIdle, EnvOptions{
		PBX:    fakepbx.Config{},
		Daemon: DaemonOptions{Connectors: []string{ConnBitrix24, ConnAmo}},
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	settle := 10 * time.Second
	if o.Quick {
		settle = 3 * time.Second
	}
	time.Sleep(settle)
	p0, _ := e.Daemon.Proc()
	t0 := time.Now()
	s := sample(e.Daemon, 500*time.Millisecond)
	time.Sleep(pickDur(o.Quick, 3*time.Second, 20*time.Second))
	rss := s.end()
	p1, _ := e.Daemon.Proc()
	idleCPU := (p1.CPU - p0.CPU).Seconds() / time.Since(t0).Seconds()
	fmt.Fprintf(o.Log, "idle RSS %s, CPU %.2f%% of a core\n", mb(rss), 100*idleCPU)
	return []Figure{
		{Name: "RSS idle (AMI logged in, Bitrix24 + amoCRM connectors, empty outbox)", Value: mb(rss),
			Target: "< 40 MB", Met: met(rss < 40<<20)},
		{Name: "CPU idle (same daemon, no calls)", Value: fmt.Sprintf("%.2f%% of one core (%.0f ms CPU per minute)", 100*idleCPU, idleCPU*60000)},
	}, nil
}

// benchLatency: 50 calls/s for 30 s, real-time calls, unlimited fake CRMs and client limits.
func benchLatency(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	rate := 50.0
	if o.LatencyRate > 0 {
		rate = o.LatencyRate
	}
	dur := 30 * time.Second
	if o.Quick {
		dur = 8 * time.Second
	}
	e, stop, err := o.env(ctx, RunLatency, EnvOptions{
		PBX:    fakepbx.Config{Speed: 1},
		Daemon: DaemonOptions{Connectors: []string{ConnBitrix24, ConnAmo}, Unlimited: true, Workers: 8},
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	time.Sleep(2 * time.Second) // let start-up requests (users, account) finish
	from := time.Now()
	cpu0, _ := e.Daemon.Proc()
	s := sample(e.Daemon, time.Second)
	n, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: rate, Calls: int(rate * dur.Seconds())})
	if err != nil {
		s.end()
		return nil, err
	}
	to := time.Now()
	if err := e.WaitDrained(ctx, 2*time.Minute, -1); err != nil {
		s.end()
		return nil, err
	}
	end := time.Now()
	cpu1, _ := e.Daemon.Proc()
	rss := s.end()
	tm := e.Measure(from, to, end)
	cpu := cpu1.CPU - cpu0.CPU
	fmt.Fprintf(o.Log, "%d calls in %v, daemon CPU %v, max RSS %s\n", n, to.Sub(from).Round(time.Millisecond), cpu, mb(rss))
	figs := latencyFigures(tm, fmt.Sprintf("%.0f calls/s, unlimited CRM", rate), rate == 50)
	figs = append(figs,
		Figure{Name: fmt.Sprintf("daemon CPU per 1,000 calls incl. CRM I/O (Bitrix24 + amoCRM, %.0f calls/s)", rate),
			Value: fmt.Sprintf("%.2f CPU-s (%d calls, %.1f s CPU over %.0f s)", cpu.Seconds()*1000/float64(n), n, cpu.Seconds(), end.Sub(from).Seconds())},
		Figure{Name: fmt.Sprintf("daemon RSS, max during %.0f calls/s (~%.0f calls in progress)", rate, rate*8), Value: mb(rss)},
	)
	return figs, nil
}

// latencyFigures turns Timings into figures; targets apply to the unlimited run.
func latencyFigures(tm Timings, what string, targets bool) []Figure {
	var figs []Figure
	for _, c := range []string{ConnBitrix24, ConnAmo} {
		name := map[string]string{ConnBitrix24: "Bitrix24", ConnAmo: "amoCRM"}[c]
		card, ack := tm.RingToCard[c], tm.HangupToAck[c]
		f1 := Figure{Name: fmt.Sprintf("ring→card, %s (%s)", name, what), Value: card.String()}
		f2 := Figure{Name: fmt.Sprintf("hangup→CRM ack, %s (%s)", name, what), Value: ack.String()}
		if tm.NoCard[c] > 0 {
			f1.Value += fmt.Sprintf("; %d rings without a card", tm.NoCard[c])
		}
		if tm.NoAck[c] > 0 {
			f2.Value += fmt.Sprintf("; %d calls not logged", tm.NoAck[c])
		}
		if targets {
			f1.Target, f1.Met = "p99 < 50 ms", met(len(card) > 0 && card.Quantile(0.99) < 50*time.Millisecond && tm.NoCard[c] == 0)
			f2.Target, f2.Met = "p99 < 500 ms", met(len(ack) > 0 && ack.Quantile(0.99) < 500*time.Millisecond && tm.NoAck[c] == 0)
		}
		figs = append(figs, f1, f2)
		if tm.Records[c] > 0 {
			figs = append(figs, Figure{Name: fmt.Sprintf("CRM requests per call, %s (%s)", name, what),
				Value: fmt.Sprintf("%.2f (%d requests, %d calls)", float64(tm.Requests[c])/float64(tm.Records[c]), tm.Requests[c], tm.Records[c])})
		}
	}
	return figs
}

// step is one rate of the throughput run.
type step struct {
	rate     float64
	calls    int
	wall     time.Duration // from the first call to drained
	catchUp  time.Duration // from the PBX's last hangup to everything built and stored
	cpu      time.Duration
	genCPU   time.Duration // the load generator's (this process's) CPU
	drained  bool
	loadAvg  float64
	maxRSS   int64
	sustains bool
	// Outbox commits in the step: fsync'd ones and lazy ones (leases, open-call changes).
	commitsFull, commitsLazy float64
	commitTime               time.Duration
}

// benchThroughput: rising call rates through AMI, the call model and the outbox into the fake
// connector (no CRM I/O). A rate is sustained when the daemon has built and stored every call
// within 2 s of the PBX ending the last one.
func benchThroughput(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	rates := []float64{50, 100, 200, 300, 400, 600}
	dur := 15 * time.Second
	if o.Quick {
		rates, dur = []float64{50, 200}, 5*time.Second
	}
	e, stop, err := o.env(ctx, RunThroughput, EnvOptions{
		PBX:    fakepbx.Config{Speed: 4},
		Daemon: DaemonOptions{Connectors: []string{ConnFake}, Workers: 8},
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	var steps []step
	fails := 0
	for _, rate := range rates {
		st, err := throughputStep(ctx, e, rate, dur)
		if err != nil {
			return nil, err
		}
		steps = append(steps, st)
		fmt.Fprintf(o.Log, "%4.0f calls/s: %d calls, catch-up %v, daemon CPU %.2f s (%.0f%% of a core), generator CPU %.2f s, load %.1f, sustained %v\n",
			rate, st.calls, st.catchUp.Round(time.Millisecond), st.cpu.Seconds(), 100*st.cpu.Seconds()/st.wall.Seconds(),
			st.genCPU.Seconds(), st.loadAvg, st.sustains)
		if !st.sustains {
			if fails++; fails == 2 {
				break
			}
		}
		e.PBX.Forget()
	}
	var figs []Figure
	best := -1
	for i, st := range steps {
		if st.sustains {
			best = i
		}
		figs = append(figs, Figure{Name: fmt.Sprintf("throughput step %.0f calls/s (fake connector, replay speed 4)", st.rate),
			Value: fmt.Sprintf("%d calls; caught up %s after the last hangup; daemon %.2f CPU-s per 1,000 calls, %.0f%% of one core; generator %.0f%% of one core; outbox commits per call %.2f fsync'd + %.2f lazy, %.2f ms each; load avg %.1f",
				st.calls, ms(st.catchUp), st.cpu.Seconds()*1000/float64(st.calls), 100*st.cpu.Seconds()/st.wall.Seconds(),
				100*st.genCPU.Seconds()/st.wall.Seconds(), st.commitsFull/float64(st.calls), st.commitsLazy/float64(st.calls),
				st.commitTime.Seconds()*1000/max(1, st.commitsFull+st.commitsLazy), st.loadAvg)})
	}
	f := Figure{Name: "highest sustained rate through AMI, call model and outbox (fake connector)", Target: "≥ 200 calls/s"}
	if best < 0 {
		f.Value, f.Met = "none of the rates tried", "no"
	} else {
		st := steps[best]
		f.Value = fmt.Sprintf("%.0f calls/s (daemon %.0f%% of one core)", st.rate, 100*st.cpu.Seconds()/st.wall.Seconds())
		f.Met = met(st.rate >= 200)
	}
	figs = append(figs, f)
	// CPU per call at the lowest rate that has a meaningful sample and at the best rate.
	for _, i := range uniq(0, best) {
		if i < 0 {
			continue
		}
		st := steps[i]
		per := st.cpu.Seconds() * 1000 / float64(st.calls)
		figs = append(figs, Figure{Name: fmt.Sprintf("daemon CPU per 1,000 calls, excluding CRM I/O (fake connector, %.0f calls/s)", st.rate),
			Value: fmt.Sprintf("%.2f CPU-s", per), Target: "≤ 1 CPU-s", Met: met(per <= 1)})
	}
	stop()
	// The same at 50 calls/s and at the best rate with the eventfilter lines docs/asterisk.md
	// recommends for manager.conf (`pbxbridge config eventfilter`): Asterisk sends only the events
	// the call model reads, VarSet only for its variables.
	if best < 0 {
		return figs, nil
	}
	lines, err := RecommendedEventFilter()
	if err != nil {
		return figs, err
	}
	fe, fstop, err := o.env(ctx, RunThroughput+"-eventfilter", EnvOptions{
		PBX:    fakepbx.Config{Speed: 4, EventFilter: lines},
		Daemon: DaemonOptions{Connectors: []string{ConnFake}, Workers: 8},
	})
	if err != nil {
		return figs, err
	}
	defer fstop()
	for _, i := range uniq(0, best) {
		base := steps[i]
		st, err := throughputStep(ctx, fe, base.rate, dur)
		if err != nil {
			return figs, err
		}
		fe.PBX.Forget()
		per, basePer := st.cpu.Seconds()*1000/float64(st.calls), base.cpu.Seconds()*1000/float64(base.calls)
		fmt.Fprintf(o.Log, "%4.0f calls/s with eventfilter: %d calls, daemon CPU %.2f s, %.2f CPU-s per 1,000 calls (without: %.2f)\n",
			st.rate, st.calls, st.cpu.Seconds(), per, basePer)
		figs = append(figs, Figure{Name: fmt.Sprintf("daemon CPU per 1,000 calls, excluding CRM I/O, with the manager.conf eventfilter lines (fake connector, %.0f calls/s)", st.rate),
			Value:  fmt.Sprintf("%.2f CPU-s (%.0f%% less than without the filter in this run; sustained %v)", per, 100*(1-per/basePer), st.sustains),
			Target: "≤ 1 CPU-s", Met: met(per <= 1)})
	}
	return figs, nil
}

// RecommendedEventFilter returns the manager.conf eventfilter lines docs/asterisk.md recommends
// for the default variables (advanced syntax); the throughput run measures the daemon with and
// without them.
func RecommendedEventFilter() ([]string, error) {
	vars := (&callmodel.Options{OriginateIDVariables: callmodel.DefaultOriginateIDVariables, DIDVariables: callmodel.DefaultDIDVariables}).Variables()
	return ami.EventFilterLines(ami.AdvancedFilter, vars)
}

func uniq(a, b int) []int {
	if a == b {
		return []int{a}
	}
	return []int{a, b}
}

func throughputStep(ctx context.Context, e *Env, rate float64, dur time.Duration) (step, error) {
	st := step{rate: rate}
	m0, err := e.Daemon.Metrics(ctx)
	if err != nil {
		return st, err
	}
	built0 := int(m0.Sum("pbxbridge_calls_total"))
	p0, _ := e.Daemon.Proc()
	g0 := selfCPU()
	s := sample(e.Daemon, time.Second)
	start := time.Now()
	n, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: rate, Calls: int(rate * dur.Seconds()), Seed: uint64(rate)})
	if err != nil {
		s.end()
		return st, err
	}
	last := time.Now()
	st.calls = n
	// Every replay of the mix but the concurrent one produces exactly one record.
	want := built0 + n
	err = e.WaitDrained(ctx, 2*time.Minute, want)
	done := time.Now()
	st.maxRSS = s.end()
	p1, _ := e.Daemon.Proc()
	if m1, err := e.Daemon.Metrics(ctx); err == nil {
		delta := func(name string, labels ...string) float64 { return m1.Sum(name, labels...) - m0.Sum(name, labels...) }
		st.commitsFull = delta("pbxbridge_outbox_commits_total", `sync="full"`)
		st.commitsLazy = delta("pbxbridge_outbox_commits_total", `sync="normal"`)
		st.commitTime = time.Duration(delta("pbxbridge_outbox_commit_seconds_total") * float64(time.Second))
	}
	st.cpu = p1.CPU - p0.CPU
	st.genCPU = selfCPU() - g0
	st.wall = done.Sub(start)
	st.catchUp = done.Sub(last)
	st.drained = err == nil
	st.loadAvg = LoadAverage()
	st.sustains = st.drained && st.catchUp <= 2*time.Second
	return st, nil
}

// selfCPU is this process's CPU time (the simulated PBX and the fake CRMs).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchConcurrency: 1,000 calls in progress at once (started at 500/s, replayed at half speed,
// then frozen), both CRM connectors unlimited.
func benchConcurrency(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	total := 1000
	if o.Quick {
		total = 200
	}
	e, stop, err := o.env(ctx, RunConcurrency, EnvOptions{
		PBX:    fakepbx.Config{Speed: 0.5},
		Daemon: DaemonOptions{Connectors: []string{ConnBitrix24, ConnAmo}, Unlimited: true, Workers: 8},
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	idle, _ := e.Daemon.Proc()
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		_, _ = e.PBX.Load(loadCtx, fakepbx.LoadOptions{Rate: 500, Calls: total, Scenarios: lasting(e.PBX)})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for e.PBX.Stats().CallsStarted < uint64(total) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	e.PBX.Pause()
	st := e.PBX.Stats()
	inProgress := int(st.CallsStarted - st.CallsFinished)
	// Wait until the daemon has applied what was sent (its open-call gauge is updated each
	// second) and its deliveries of finished calls are done.
	var open float64
	var goroutines float64
	for range 20 {
		time.Sleep(500 * time.Millisecond)
		m, err := e.Daemon.Metrics(ctx)
		if err == nil {
			open = m.Sum("pbxbridge_calls_open")
			goroutines = m.Sum("go_goroutines")
			if open >= float64(inProgress)*0.98 && m.Sum("pbxbridge_outbox_pending") == 0 {
				break
			}
		}
	}
	runtime.GC() // our own heap, not the daemon's: keeps this process's noise down
	s := sample(e.Daemon, 250*time.Millisecond)
	time.Sleep(3 * time.Second)
	rss := s.end()
	e.PBX.Resume()
	fmt.Fprintf(o.Log, "%d calls in progress at the PBX, %.0f open in the daemon, RSS %s (idle %s), %.0f goroutines\n",
		inProgress, open, mb(rss), mb(idle.RSS), goroutines)
	cancelLoad() // stops the replays; the daemon sees no more events for them
	<-loadDone
	return []Figure{{
		Name:   fmt.Sprintf("RSS with %d calls in progress (Bitrix24 + amoCRM connectors)", total),
		Value:  fmt.Sprintf("%s (%d in progress at the PBX, %.0f open in the call model, %.0f goroutines)", mb(rss), inProgress, open, goroutines),
		Target: "< 150 MB", Met: met(rss < 150<<20 && open >= float64(total)*0.95),
	}}, nil
}

// lasting is the default mix without the calls the far end refuses at once (busy, congestion:
// a few milliseconds in the lab's transcripts), so that every call started stays in progress.
func lasting(p *PBX) []string {
	var out []string
	for _, s := range p.DefaultMix() {
		if !strings.Contains(s, "busy") && !strings.Contains(s, "congestion") {
			out = append(out, s)
		}
	}
	return out
}

// benchLimits: the CRMs at their real limits (Bitrix24 2 req/s burst 50, amoCRM 7 req/s, 150 ms
// latency, the connectors' default client-side limits), 2 calls/s for a minute (Bitrix24 needs
// about 3 requests per call: 6 req/s against its 2): how the outbox grows and how long it takes
// to drain after the calls stop.
func benchLimits(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	const rate = 2.0
	dur := 60 * time.Second
	if o.Quick {
		dur = 15 * time.Second
	}
	e, stop, err := o.env(ctx, RunLimits, EnvOptions{
		PBX:    fakepbx.Config{Speed: 1},
		CRM:    CRMOptions{B24RPS: 2, B24Burst: 50, AmoRPS: 7, Latency: 150 * time.Millisecond},
		Daemon: DaemonOptions{Connectors: []string{ConnBitrix24, ConnAmo}, Workers: 2},
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	time.Sleep(3 * time.Second) // start-up requests
	from := time.Now()
	type point struct {
		at      time.Time
		pending map[string]float64
	}
	var mu sync.Mutex
	var series []point
	pollDone := make(chan struct{})
	pollCtx, stopPoll := context.WithCancel(ctx)
	go func() {
		defer close(pollDone)
		for pollCtx.Err() == nil {
			if st, err := e.Daemon.Status(pollCtx); err == nil {
				p := point{at: time.Now(), pending: map[string]float64{}}
				for _, o := range st.Outbox {
					p.pending[o.Connector] = float64(o.Pending + o.Leased)
				}
				mu.Lock()
				series = append(series, p)
				mu.Unlock()
			}
			select {
			case <-pollCtx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	n, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: rate, Calls: int(rate * dur.Seconds())})
	if err != nil {
		stopPoll()
		<-pollDone
		return nil, err
	}
	to := time.Now()
	err = e.WaitDrained(ctx, 15*time.Minute, -1)
	end := time.Now()
	stopPoll()
	<-pollDone
	if err != nil {
		return nil, err
	}
	tm := e.Measure(from, to, end)
	final, err := e.Daemon.Status(ctx)
	if err != nil {
		return nil, err
	}
	outboxOf := map[string]string{}
	for _, o := range final.Outbox {
		outboxOf[o.Connector] = fmt.Sprintf("%d done, %d dead, %d pending", o.Done, o.Dead, o.Pending+o.Leased)
	}
	var figs []Figure
	b24s := e.CRMs.B24.State()
	amos := e.CRMs.Amo.State()
	for _, c := range []struct{ inst, name string }{{"b24", "Bitrix24"}, {"amo", "amoCRM"}} {
		var peak float64
		var peakAt, drainedAt time.Time
		for _, p := range series {
			if p.pending[c.inst] > peak {
				peak, peakAt = p.pending[c.inst], p.at
			}
			if p.at.After(to) && p.pending[c.inst] > 0 {
				drainedAt = p.at
			}
		}
		drain := time.Duration(0)
		if !drainedAt.IsZero() {
			drain = drainedAt.Sub(to) + time.Second // the first zero sample follows within a second
		}
		growth := 0.0
		if !peakAt.IsZero() && peakAt.After(from) {
			growth = peak / peakAt.Sub(from).Minutes()
		}
		figs = append(figs, Figure{
			Name: fmt.Sprintf("outbox under the CRM limit, %s (%.0f calls/s for %.0f s)", c.name, rate, dur.Seconds()),
			Value: fmt.Sprintf("peak %.0f pending (+%.0f/min while calls came in); drained %s after the last call ended; outbox at the end: %s",
				peak, growth, ms(drain), outboxOf[c.inst]),
		})
	}
	refused := fmt.Sprintf("Bitrix24 refused %d requests (QUERY_LIMIT_EXCEEDED), amoCRM %d (429)", b24s.RateLimited, amos.RateLimited)
	figs = append(figs, Figure{Name: "CRM refusals under their limits (client-side limiters)", Value: refused})
	figs = append(figs, latencyFigures(tm, fmt.Sprintf("real limits, 150 ms latency, %.0f calls/s", rate), false)...)
	fmt.Fprintf(o.Log, "%d calls; %s\n", n, refused)
	return figs, nil
}

// B24BurstCalls and B24BurstWindow are the burst of the b24burst run: what a real Asterisk 22
// (FreePBX-style dialplan) sent a fake Bitrix24 in the measurement behind it.
const (
	B24BurstCalls  = 105
	B24BurstWindow = 114 * time.Second
)

// B24Burst is the outcome of the b24burst run.
type B24Burst struct {
	Calls                     int // calls started
	Timings                   Timings
	RateLimited               int // QUERY_LIMIT_EXCEEDED answers
	Batches, BatchedCommands  int
	Dropped                   map[string]float64 // pbxbridge_live_actions_dropped_total by reason
	AttachRecords, FinishCmds int
	Outbox                    string
	Drained                   time.Duration // from the last call's end to an empty outbox
	RequestsPerCall           float64
	FinishMedian, FinishMax   time.Duration
	CardsAfterEnd, CardsTotal int
	CardsAfterAnswerElsewhere int
	LateCards                 []string
	NoAck                     int
	// TimelinesChecked calls' timelines (`pbxbridge calls show`) were read; TimelinesWithRegister
	// of them list the register sent while the call rang.
	TimelinesChecked, TimelinesWithRegister int
}

// PlayB24Burst plays B24BurstCalls calls of the default mix (real transcripts, real time) within
// B24BurstWindow into the daemon with only the Bitrix24 connector, the fake portal enforcing
// Bitrix24's 2 requests/s (burst 50) with 150 ms latency, recordings attached; it waits until
// the outbox is empty. quick plays 30 calls in about 33 s.
func PlayB24Burst(ctx context.Context, o *BenchOptions, quick bool) (*B24Burst, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	calls, window := B24BurstCalls, B24BurstWindow
	if quick {
		calls, window = 30, 33*time.Second
	}
	e, stop, err := o.env(ctx, RunB24Burst, EnvOptions{
		PBX:        fakepbx.Config{Speed: 1},
		CRM:        CRMOptions{B24RPS: 2, B24Burst: 50, Latency: 150 * time.Millisecond},
		Daemon:     DaemonOptions{Connectors: []string{ConnBitrix24}, Workers: 2},
		Recordings: true,
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	time.Sleep(3 * time.Second) // start-up requests (users, event.bind, lines)
	before := e.CRMs.B24.State()
	from := time.Now()
	n, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: float64(calls) / window.Seconds(), Calls: calls})
	if err != nil {
		return nil, err
	}
	to := time.Now()
	want := 0
	for _, t := range e.PBX.Traces() {
		want += len(e.Expected.Keys(&t))
	}
	if err := e.WaitDrained(ctx, 15*time.Minute, want); err != nil {
		return nil, err
	}
	// The outbox may look empty for a moment before the last record is stored: wait until
	// Bitrix24 holds every call (or the limit).
	for deadline := time.Now().Add(15 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		missing := 0
		for _, v := range e.Check(nil) {
			if v.Logged[ConnBitrix24] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
	}
	if err := e.WaitDrained(ctx, 15*time.Minute, want); err != nil {
		return nil, err
	}
	end := time.Now()
	tm := e.Measure(from, to, end)
	after := e.CRMs.B24.State()
	var methods []string
	for m, c := range after.Requests {
		if d := c - before.Requests[m]; d > 0 {
			methods = append(methods, fmt.Sprintf("%s %d", m, d))
		}
	}
	sort.Strings(methods)
	fmt.Fprintf(o.Log, "b24burst requests: %s\n", strings.Join(methods, ", "))
	r := &B24Burst{Calls: n, Timings: tm, RateLimited: after.RateLimited - before.RateLimited, Drained: end.Sub(to),
		Batches: after.Requests["batch"] - before.Requests["batch"], Dropped: map[string]float64{},
		AttachRecords: after.Requests["telephony.externalcall.attachrecord"] - before.Requests["telephony.externalcall.attachrecord"],
		CardsAfterEnd: tm.B24CardsAfterEnd, CardsTotal: tm.B24Cards, CardsAfterAnswerElsewhere: tm.B24CardsAfterAnswer,
		LateCards: tm.B24Late, NoAck: tm.NoAck[ConnBitrix24]}
	for m, c := range after.BatchCommands {
		r.BatchedCommands += c - before.BatchCommands[m]
	}
	r.FinishCmds = after.Requests["telephony.externalcall.finish"] - before.Requests["telephony.externalcall.finish"] +
		after.BatchCommands["telephony.externalcall.finish"] - before.BatchCommands["telephony.externalcall.finish"]
	if recs := tm.Records[ConnBitrix24]; recs > 0 {
		r.RequestsPerCall = float64(tm.Requests[ConnBitrix24]) / float64(recs)
	}
	ack := tm.HangupToAck[ConnBitrix24]
	r.FinishMedian, r.FinishMax = ack.Quantile(0.5), ack.Quantile(1)
	if m, err := e.Daemon.Metrics(ctx); err == nil {
		for _, reason := range []string{"call_ended", "answered_elsewhere", "stopped_ringing", "queue_full", "other"} {
			r.Dropped[reason] = m.Sum("pbxbridge_live_actions_dropped_total", `reason="`+reason+`"`)
		}
	}
	if st, err := e.Daemon.Status(ctx); err == nil {
		for _, ob := range st.Outbox {
			r.Outbox = fmt.Sprintf("%d done, %d dead, %d pending", ob.Done, ob.Dead, ob.Pending+ob.Leased)
		}
	}
	// The registers sent while calls rang are in the calls' timelines.
	for _, t := range e.PBX.Traces() {
		if r.TimelinesChecked >= 20 {
			break
		}
		for key, rec := range e.Expected.Keys(&t) {
			if rec.Direction != call.Inbound || len(t.Rings) == 0 || tm.B24LiveRegister[key].IsZero() {
				continue
			}
			var rep admin.CallReport
			if err := admin.NewClient(e.Daemon.Socket).Do(ctx, http.MethodGet, "/v1/calls/"+url.PathEscape(key), nil, &rep); err != nil {
				return nil, fmt.Errorf("loadtest: calls show %s: %w", key, err)
			}
			r.TimelinesChecked++
			for _, en := range rep.Timeline {
				if en.Kind == "request" && strings.Contains(en.Summary, "telephony.externalCall.register") && en.At.Before(t.Hangup) {
					r.TimelinesWithRegister++
					break
				}
			}
		}
	}
	return r, nil
}

// benchB24Burst reports PlayB24Burst against the acceptance targets of the Bitrix24 load issue.
func benchB24Burst(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	r, err := PlayB24Burst(ctx, o, o.Quick)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("%d calls in %.0f s, Bitrix24 at 2 req/s burst 50, 150 ms latency", r.Calls, B24BurstWindow.Seconds())
	if o.Quick {
		what = fmt.Sprintf("%d calls, quick", r.Calls)
	}
	for _, l := range r.LateCards {
		fmt.Fprintf(o.Log, "late card: %s\n", l)
	}
	for _, l := range r.Timings.B24NoAck {
		fmt.Fprintf(o.Log, "no finish: %s\n", l)
	}
	fmt.Fprintf(o.Log, "b24burst: %d calls, %d batches of %d commands, live actions dropped %v, outbox %s\n",
		r.Calls, r.Batches, r.BatchedCommands, r.Dropped, r.Outbox)
	return []Figure{
		{Name: "cards shown after their call ended, Bitrix24 (" + what + ")",
			Value: fmt.Sprintf("%d of %d cards (%d after another extension answered); live actions given up: %.0f call ended, %.0f answered elsewhere, %.0f stopped ringing",
				r.CardsAfterEnd, r.CardsTotal, r.CardsAfterAnswerElsewhere, r.Dropped["call_ended"], r.Dropped["answered_elsewhere"], r.Dropped["stopped_ringing"]),
			Target: "0", Met: met(r.CardsAfterEnd == 0)},
		{Name: "hangup→finish, Bitrix24 (" + what + ")",
			Value: fmt.Sprintf("median %s, max %s (n=%d%s); outbox drained %s after the last call ended",
				ms(r.FinishMedian), ms(r.FinishMax), len(r.Timings.HangupToAck[ConnBitrix24]), noAck(r.NoAck), ms(r.Drained)),
			Target: "median ≤ 20 s, max ≤ 45 s", Met: met(r.NoAck == 0 && r.FinishMedian <= 20*time.Second && r.FinishMax <= 45*time.Second)},
		{Name: "live requests in the calls' timelines (`pbxbridge calls show`), Bitrix24 (" + what + ")",
			Value:  fmt.Sprintf("%d of %d inbound calls show the register sent while they rang", r.TimelinesWithRegister, r.TimelinesChecked),
			Target: "all", Met: met(r.TimelinesChecked > 0 && r.TimelinesWithRegister == r.TimelinesChecked)},
		{Name: "CRM requests per call, Bitrix24 (" + what + ")",
			Value: fmt.Sprintf("%.2f (%d requests, %d calls; %d finishes, %d in %d batches; %d attachRecord); %d QUERY_LIMIT_EXCEEDED",
				r.RequestsPerCall, r.Timings.Requests[ConnBitrix24], r.Timings.Records[ConnBitrix24], r.FinishCmds, r.BatchedCommands,
				r.Batches, r.AttachRecords, r.RateLimited),
			Target: "≤ 2.6, 0 refused", Met: met(r.RequestsPerCall <= 2.6 && r.RateLimited == 0)},
	}, nil
}

func noAck(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", %d calls not logged", n)
}

// FormatTable renders figures as the Markdown table of BENCHMARKS.md.
func FormatTable(w io.Writer, figs []Figure, machine, date string) {
	fmt.Fprintf(w, "| Figure | Result | Target | Met | Command | Load avg |\n|---|---|---|---|---|---|\n")
	for _, f := range figs {
		fmt.Fprintf(w, "| %s | %s | %s | %s | `go run ./cmd/loadtest -run %s` | %.1f |\n", f.Name, f.Value, f.Target, f.Met, f.Run, f.Load)
	}
	fmt.Fprintf(w, "\nMachine: %s. Date: %s.\n", machine, date)
}

// removeAll removes a run directory (tolerating a daemon that left files behind).
func removeAll(dir string) error {
	var err error
	for range 3 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
