package loadtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// The steps of the perf run (BenchOptions.PerfSteps), in the order they run.
const (
	PerfIdle  = "idle"  // the daemon idle with AMI connected: CPU per minute, RSS
	PerfB24   = "b24"   // 50 calls/s into an unlimited Bitrix24: CPU per call with CRM I/O, commits per call
	PerfFake  = "fake"  // 50 calls/s into the fake connector: CPU per call without CRM I/O
	PerfBurst = "burst" // the 105-call burst into Bitrix24 at its real limit: RSS
	PerfOpen  = "open"  // 1,800 calls open at once, started at 200 calls/s: RSS
	// PerfB24Filter and PerfFakeFilter are PerfB24 and PerfFake with Asterisk sending only what
	// `pbxbridge config eventfilter` admits (RecommendedEventFilter).
	PerfB24Filter  = "b24-eventfilter"
	PerfFakeFilter = "fake-eventfilter"
)

// PerfSteps lists every step of the perf run.
var PerfSteps = []string{PerfIdle, PerfB24, PerfFake, PerfB24Filter, PerfFakeFilter, PerfBurst, PerfOpen}

// Defaults of the perf run.
const (
	DefaultPerfRepeat  = 3
	DefaultPerfIdleFor = 5 * time.Minute
	perfRate           = 50.0
	perfOpenCalls      = 1800
	perfOpenRate       = 200.0
)

// perfSample is what one step measured of one daemon build.
type perfSample struct {
	calls int
	// cpu is the daemon's CPU time over the step (user + system, /proc/<pid>/stat); wall the
	// step's length.
	cpu, wall time.Duration
	// commits and writes over the step (pbxbridge_outbox_commits_total, _writes_total).
	fsynced, lazy, writes float64
	maxRSS, endRSS        int64
	// switches are the daemon's context switches over the step (every thread; wake-ups).
	switches int64
	// p99 of ring→card and hangup→CRM ack (b24).
	card99, ack99 time.Duration
	noAck         int
}

// perfBuild is one daemon build the perf run measures.
type perfBuild struct {
	label string // "before", "after"
	exe   string // "" = this binary
}

// benchPerf compares the daemon of BenchOptions.Before (the build before a change) with this
// one (or BenchOptions.Executable) step by step, alternating which goes first, BenchOptions.
// PerfRepeat times, and reports the medians. Steps that mostly wait (idle, burst) run both
// builds side by side, each with its own simulated PBX and CRMs; the others one after the other.
func benchPerf(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	builds := []perfBuild{{label: "after", exe: o.Executable}}
	if o.Before != "" {
		builds = []perfBuild{{label: "before", exe: o.Before}, {label: "after", exe: o.Executable}}
	}
	repeat := o.PerfRepeat
	if repeat <= 0 {
		repeat = DefaultPerfRepeat
	}
	if o.Quick {
		repeat = 1
	}
	idleFor := o.PerfIdleFor
	if idleFor <= 0 {
		idleFor = DefaultPerfIdleFor
	}
	if o.Quick {
		idleFor = 20 * time.Second
	}
	steps := o.PerfSteps
	if len(steps) == 0 {
		steps = PerfSteps
	}
	for _, s := range steps {
		if !slices.Contains(PerfSteps, s) {
			return nil, fmt.Errorf("loadtest: unknown perf step %q (have %v)", s, PerfSteps)
		}
	}
	// results[step][label] are the samples of every repetition.
	results := map[string]map[string][]perfSample{}
	add := func(step, label string, s perfSample) {
		if results[step] == nil {
			results[step] = map[string][]perfSample{}
		}
		results[step][label] = append(results[step][label], s)
	}
	for r := range repeat {
		order := slices.Clone(builds)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, step := range steps {
			switch step {
			case PerfIdle, PerfBurst:
				got, err := perfSideBySide(ctx, o, step, order, r, idleFor)
				if err != nil {
					return perfFigures(results, builds, steps), fmt.Errorf("perf %s: %w", step, err)
				}
				for i, b := range order {
					add(step, b.label, got[i])
					fmt.Fprintf(o.Log, "perf %s #%d %s: %s\n", step, r+1, b.label, got[i].describe(step))
				}
			default:
				for _, b := range order {
					got, err := perfStep(ctx, o, step, b, r)
					if err != nil {
						return perfFigures(results, builds, steps), fmt.Errorf("perf %s (%s): %w", step, b.label, err)
					}
					add(step, b.label, got)
					fmt.Fprintf(o.Log, "perf %s #%d %s: %s (load %.1f)\n", step, r+1, b.label, got.describe(step), LoadAverage())
				}
			}
		}
	}
	return perfFigures(results, builds, steps), nil
}

// describe is a progress line for one sample.
func (s perfSample) describe(step string) string {
	switch step {
	case PerfIdle:
		return fmt.Sprintf("%.1f ms CPU per minute, %.0f context switches per minute, RSS %s", s.idleMSPerMin(), s.perMin(float64(s.switches)), mb(s.endRSS))
	case PerfBurst, PerfOpen:
		return fmt.Sprintf("%d calls, max RSS %s, %.2f CPU-s per 1,000 calls", s.calls, mb(s.maxRSS), s.perKCall())
	}
	return fmt.Sprintf("%d calls, %.2f CPU-s per 1,000 calls, %.2f fsync'd + %.2f lazy commits per call (%.1f writes), max RSS %s, p99 ring→card %s, hangup→ack %s",
		s.calls, s.perKCall(), s.perCall(s.fsynced), s.perCall(s.lazy), s.perCall(s.writes), mb(s.maxRSS), ms(s.card99), ms(s.ack99))
}

func (s perfSample) perKCall() float64 {
	if s.calls == 0 {
		return 0
	}
	return s.cpu.Seconds() * 1000 / float64(s.calls)
}

func (s perfSample) perCall(v float64) float64 {
	if s.calls == 0 {
		return 0
	}
	return v / float64(s.calls)
}

func (s perfSample) perMin(v float64) float64 {
	if s.wall <= 0 {
		return 0
	}
	return v / s.wall.Minutes()
}

func (s perfSample) idleMSPerMin() float64 { return s.perMin(float64(s.cpu.Milliseconds())) }

// perfEnvOptions is the test bed of a step.
func perfEnvOptions(step string) EnvOptions {
	switch step {
	case PerfIdle:
		return EnvOptions{Daemon: DaemonOptions{Connectors: []string{ConnBitrix24}}}
	case PerfB24:
		return EnvOptions{PBX: fakepbx.Config{Speed: 1}, Daemon: DaemonOptions{Connectors: []string{ConnBitrix24}, Unlimited: true, Workers: 8}}
	case PerfFake:
		return EnvOptions{PBX: fakepbx.Config{Speed: 1}, Daemon: DaemonOptions{Connectors: []string{ConnFake}, Workers: 8}}
	case PerfBurst:
		return EnvOptions{PBX: fakepbx.Config{Speed: 1}, CRM: CRMOptions{B24RPS: 2, B24Burst: 50, Latency: 150 * time.Millisecond},
			Daemon: DaemonOptions{Connectors: []string{ConnBitrix24}, Workers: 2}, Recordings: true}
	case PerfOpen:
		return EnvOptions{PBX: fakepbx.Config{Speed: 0.5}, Daemon: DaemonOptions{Connectors: []string{ConnBitrix24}, Unlimited: true, Workers: 8}}
	case PerfB24Filter, PerfFakeFilter:
		eo := perfEnvOptions(strings.TrimSuffix(step, "-eventfilter"))
		lines, err := RecommendedEventFilter()
		if err != nil {
			panic(err) // the lines of the built-in variables are valid (ami tests)
		}
		eo.PBX.EventFilter = lines
		return eo
	}
	return EnvOptions{}
}

// perfEnv starts the test bed of step for build b in a fresh directory; with a profile
// directory, the daemon writes a CPU profile there (perf-<step>-<label>-<n>.pprof).
func perfEnv(ctx context.Context, o *BenchOptions, step string, b perfBuild, rep int) (*Env, func(), error) {
	dir, err := TempDir("perf-" + step + "-" + b.label)
	if err != nil {
		return nil, nil, err
	}
	eo := perfEnvOptions(step)
	eo.Daemon.Dir = dir
	eo.Daemon.Executable = b.exe
	eo.Daemon.LogLevel = "warn"
	eo.Expected = o.Expected
	if o.ProfileDir != "" && step != PerfIdle {
		eo.Daemon.CPUProfile = filepath.Join(o.ProfileDir, fmt.Sprintf("perf-%s-%s-%d.pprof", step, b.label, rep+1))
	}
	e, err := StartEnv(ctx, eo)
	if err != nil {
		_ = removeAll(dir)
		return nil, nil, err
	}
	var once sync.Once
	return e, func() {
		once.Do(func() {
			e.Close()
			_ = removeAll(dir)
		})
	}, nil
}

// perfSideBySide runs step for every build at the same time.
func perfSideBySide(ctx context.Context, o *BenchOptions, step string, builds []perfBuild, rep int, idleFor time.Duration) ([]perfSample, error) {
	out := make([]perfSample, len(builds))
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Go(func() {
			e, stop, err := perfEnv(ctx, o, step, b, rep)
			if err != nil {
				errs[i] = err
				return
			}
			defer stop()
			if step == PerfIdle {
				out[i], errs[i] = perfIdle(ctx, e, idleFor)
			} else {
				out[i], errs[i] = perfBurst(ctx, e, o.Quick)
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// perfStep runs a step for one build.
func perfStep(ctx context.Context, o *BenchOptions, step string, b perfBuild, rep int) (perfSample, error) {
	e, stop, err := perfEnv(ctx, o, step, b, rep)
	if err != nil {
		return perfSample{}, err
	}
	defer stop()
	switch step {
	case PerfOpen:
		return perfOpen(ctx, e, o.Quick)
	default:
		return perfLoad(ctx, e, step, o.Quick)
	}
}

// perfIdle measures the idle daemon (logged in to the PBX, the CRM installed, no calls) after a
// settling time, without scraping it.
func perfIdle(ctx context.Context, e *Env, d time.Duration) (perfSample, error) {
	if !sleepCtx(ctx, 20*time.Second) { // start-up requests, the first GC cycles
		return perfSample{}, ctx.Err()
	}
	p0, err := e.Daemon.Proc()
	if err != nil {
		return perfSample{}, err
	}
	sw0 := ctxSwitches(e.Daemon.Pid())
	t0 := time.Now()
	s := sample(e.Daemon, 5*time.Second)
	if !sleepCtx(ctx, d) {
		s.end()
		return perfSample{}, ctx.Err()
	}
	maxRSS := s.end()
	p1, err := e.Daemon.Proc()
	if err != nil {
		return perfSample{}, err
	}
	return perfSample{cpu: p1.CPU - p0.CPU, wall: time.Since(t0), maxRSS: maxRSS, endRSS: p1.RSS,
		switches: ctxSwitches(e.Daemon.Pid()) - sw0}, nil
}

// perfLoad plays perfRate calls/s for 30 s (quick: 8 s) of the default mix in real time and
// waits until every record is delivered.
func perfLoad(ctx context.Context, e *Env, step string, quick bool) (perfSample, error) {
	dur := pickDur(quick, 8*time.Second, 30*time.Second)
	if !sleepCtx(ctx, 3*time.Second) { // start-up requests (users, event.bind, lines)
		return perfSample{}, ctx.Err()
	}
	m0, err := e.Daemon.Metrics(ctx)
	if err != nil {
		return perfSample{}, err
	}
	built0 := int(m0.Sum("pbxbridge_calls_total"))
	p0, _ := e.Daemon.Proc()
	sw0 := ctxSwitches(e.Daemon.Pid())
	s := sample(e.Daemon, 500*time.Millisecond)
	from := time.Now()
	n, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: perfRate, Calls: int(perfRate * dur.Seconds()), Seed: 17})
	if err != nil {
		s.end()
		return perfSample{}, err
	}
	to := time.Now()
	want := built0
	for _, t := range e.PBX.Traces() {
		want += len(e.Expected.Keys(&t))
	}
	err = e.WaitDrained(ctx, 2*time.Minute, want)
	end := time.Now()
	p1, _ := e.Daemon.Proc()
	sw1 := ctxSwitches(e.Daemon.Pid())
	maxRSS := s.end()
	if err != nil {
		return perfSample{}, err
	}
	m1, err := e.Daemon.Metrics(ctx)
	if err != nil {
		return perfSample{}, err
	}
	delta := func(name string, labels ...string) float64 { return m1.Sum(name, labels...) - m0.Sum(name, labels...) }
	ps := perfSample{calls: n, cpu: p1.CPU - p0.CPU, wall: end.Sub(from), maxRSS: maxRSS, endRSS: p1.RSS, switches: sw1 - sw0,
		fsynced: delta("pbxbridge_outbox_commits_total", `sync="full"`), lazy: delta("pbxbridge_outbox_commits_total", `sync="normal"`),
		writes: delta("pbxbridge_outbox_writes_total")}
	if step == PerfB24 || step == PerfB24Filter {
		tm := e.Measure(from, to, end)
		ps.card99, ps.ack99 = tm.RingToCard[ConnBitrix24].Quantile(0.99), tm.HangupToAck[ConnBitrix24].Quantile(0.99)
		ps.noAck = tm.NoAck[ConnBitrix24]
	}
	return ps, nil
}

// perfBurst plays the b24burst burst (105 calls in 114 s; quick: 30 in 33 s) and records the
// daemon's largest RSS.
func perfBurst(ctx context.Context, e *Env, quick bool) (perfSample, error) {
	calls, window := B24BurstCalls, B24BurstWindow
	if quick {
		calls, window = 30, 33*time.Second
	}
	if !sleepCtx(ctx, 3*time.Second) {
		return perfSample{}, ctx.Err()
	}
	p0, _ := e.Daemon.Proc()
	s := sample(e.Daemon, 250*time.Millisecond)
	from := time.Now()
	n, err := e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: float64(calls) / window.Seconds(), Calls: calls})
	if err != nil {
		s.end()
		return perfSample{}, err
	}
	want := 0
	for _, t := range e.PBX.Traces() {
		want += len(e.Expected.Keys(&t))
	}
	err = e.WaitDrained(ctx, 15*time.Minute, want)
	p1, _ := e.Daemon.Proc()
	maxRSS := s.end()
	return perfSample{calls: n, cpu: p1.CPU - p0.CPU, wall: time.Since(from), maxRSS: maxRSS, endRSS: p1.RSS}, err
}

// perfOpen starts perfOpenCalls calls at perfOpenRate calls/s (replayed at half speed, only
// calls that last) and freezes them: the daemon's largest RSS while it holds them open.
func perfOpen(ctx context.Context, e *Env, quick bool) (perfSample, error) {
	total := perfOpenCalls
	if quick {
		total = 300
	}
	if !sleepCtx(ctx, 3*time.Second) {
		return perfSample{}, ctx.Err()
	}
	p0, _ := e.Daemon.Proc()
	s := sample(e.Daemon, 250*time.Millisecond)
	from := time.Now()
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		_, _ = e.PBX.Load(loadCtx, fakepbx.LoadOptions{Rate: perfOpenRate, Calls: total, Scenarios: lasting(e.PBX)})
	}()
	for deadline := time.Now().Add(time.Minute); e.PBX.Stats().CallsStarted < uint64(total) && time.Now().Before(deadline); {
		if !sleepCtx(ctx, 10*time.Millisecond) {
			break
		}
	}
	e.PBX.Pause()
	// Wait until the daemon has applied what was sent (the open-call gauge is updated each
	// second) and delivered the calls that finished meanwhile.
	inProgress := func() int { st := e.PBX.Stats(); return int(st.CallsStarted - st.CallsFinished) }
	for range 40 {
		if !sleepCtx(ctx, 500*time.Millisecond) {
			break
		}
		if m, err := e.Daemon.Metrics(ctx); err == nil &&
			m.Sum("pbxbridge_calls_open") >= float64(inProgress())*0.98 && m.Sum("pbxbridge_outbox_pending") == 0 {
			break
		}
	}
	sleepCtx(ctx, 3*time.Second)
	p1, _ := e.Daemon.Proc()
	maxRSS := s.end()
	n := inProgress()
	e.PBX.Resume()
	cancelLoad()
	<-loadDone
	if n < total*9/10 {
		return perfSample{}, fmt.Errorf("only %d of %d calls in progress at the PBX", n, total)
	}
	return perfSample{calls: n, cpu: p1.CPU - p0.CPU, wall: time.Since(from), maxRSS: maxRSS, endRSS: p1.RSS}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ctxSwitches sums the voluntary and involuntary context switches of every thread of pid (how
// often it was woken up, roughly).
func ctxSwitches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(data)) {
			for _, p := range []string{"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"} {
				if v, ok := strings.CutPrefix(line, p); ok {
					k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					n += k
				}
			}
		}
	}
	return n
}

// perfMetric is one reported figure of a step.
type perfMetric struct {
	name   string
	unit   string
	value  func(perfSample) float64
	target float64 // ≤ target; 0: none
	// targetText is the target as the issue states it.
	targetText string
}

func perfMetrics(step string) []perfMetric {
	perK := func(s perfSample) float64 { return s.perKCall() }
	rss := func(s perfSample) float64 { return float64(s.maxRSS) / (1 << 20) }
	commits := []perfMetric{
		{name: "fsync'd outbox commits per call", value: func(s perfSample) float64 { return s.perCall(s.fsynced) }},
		{name: "lazy outbox commits per call (not fsync'd)", value: func(s perfSample) float64 { return s.perCall(s.lazy) }},
		{name: "outbox writes per call (several share a commit)", value: func(s perfSample) float64 { return s.perCall(s.writes) }},
	}
	switch step {
	case PerfIdle:
		return []perfMetric{
			{name: "CPU per minute, idle", unit: " ms", value: func(s perfSample) float64 { return s.idleMSPerMin() }, target: 5, targetText: "≤ 5 ms"},
			{name: "context switches per minute, idle", value: func(s perfSample) float64 { return s.perMin(float64(s.switches)) }},
			{name: "RSS idle", unit: " MB", value: func(s perfSample) float64 { return float64(s.endRSS) / (1 << 20) }, target: 15, targetText: "≤ 15 MB"},
		}
	case PerfB24, PerfB24Filter:
		return []perfMetric{
			{name: "CPU per 1,000 calls incl. CRM I/O", unit: " CPU-s", value: perK, target: 3, targetText: "≤ 3 CPU-s"},
			commits[0], commits[1], commits[2],
			{name: "RSS, max", unit: " MB", value: rss},
			{name: "ring→card p99", unit: " ms", value: func(s perfSample) float64 { return float64(s.card99.Microseconds()) / 1000 }, target: 50, targetText: "< 50 ms"},
			{name: "hangup→CRM ack p99", unit: " ms", value: func(s perfSample) float64 { return float64(s.ack99.Microseconds()) / 1000 }, target: 500, targetText: "< 500 ms"},
			{name: "context switches per call", value: func(s perfSample) float64 { return s.perCall(float64(s.switches)) }},
		}
	case PerfFake, PerfFakeFilter:
		return []perfMetric{
			{name: "CPU per 1,000 calls excl. CRM I/O", unit: " CPU-s", value: perK, target: 1, targetText: "≤ 1 CPU-s"},
			commits[0], commits[1], commits[2],
			{name: "RSS, max", unit: " MB", value: rss},
			{name: "context switches per call", value: func(s perfSample) float64 { return s.perCall(float64(s.switches)) }},
		}
	case PerfBurst:
		return []perfMetric{{name: "RSS, max", unit: " MB", value: rss, target: 25, targetText: "≤ 25 MB"}}
	case PerfOpen:
		return []perfMetric{{name: "RSS, max", unit: " MB", value: rss, target: 40, targetText: "≤ 40 MB"}}
	}
	return nil
}

// perfWhat describes a step in its figures.
var perfWhat = map[string]string{
	PerfIdle:       "idle, AMI logged in, Bitrix24 connector",
	PerfB24:        "Bitrix24, 50 calls/s for 30 s, unlimited CRM",
	PerfFake:       "fake connector, 50 calls/s for 30 s",
	PerfBurst:      "105 calls in 114 s into Bitrix24 at 2 req/s",
	PerfOpen:       "1,800 calls open, started at 200 calls/s, Bitrix24",
	PerfB24Filter:  "Bitrix24, 50 calls/s for 30 s, unlimited CRM, manager.conf eventfilter",
	PerfFakeFilter: "fake connector, 50 calls/s for 30 s, manager.conf eventfilter",
}

// perfFigures turns the samples into figures: the median of each build, every sample in order.
func perfFigures(results map[string]map[string][]perfSample, builds []perfBuild, steps []string) []Figure {
	var figs []Figure
	for _, step := range steps {
		if results[step] == nil {
			continue
		}
		for _, m := range perfMetrics(step) {
			var parts []string
			var after float64
			haveAfter := false
			for _, b := range builds {
				samples := results[step][b.label]
				if len(samples) == 0 {
					continue
				}
				vals := make([]float64, len(samples))
				for i, s := range samples {
					vals[i] = m.value(s)
				}
				med := median(vals)
				if b.label == "after" {
					after, haveAfter = med, true
				}
				all := make([]string, len(vals))
				for i, v := range vals {
					all[i] = fmtNum(v)
				}
				parts = append(parts, fmt.Sprintf("%s **%s%s** (%s)", b.label, fmtNum(med), m.unit, strings.Join(all, ", ")))
			}
			f := Figure{Name: fmt.Sprintf("%s (%s)", m.name, perfWhat[step]), Value: strings.Join(parts, "; ")}
			if m.target > 0 {
				f.Target = m.targetText
				if haveAfter {
					f.Met = met(after <= m.target)
				}
			}
			figs = append(figs, f)
		}
	}
	return figs
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtNum(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
