package loadtest

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// The hostile run (RunHostile): the daemon alone, as a subprocess, under the inputs of the
// handler fuzz targets of connector/security sent over real sockets to its public listener,
// its admin listener and its admin socket at once, mutated, while the simulated PBX replays
// calls. It measures what the in-process fuzzing cannot separate: the daemon's own RSS.

// Defaults of the hostile run.
const (
	DefaultHostileFor = 10 * time.Minute
	// HostileAnswerLimit is the longest the daemon may take to answer a complete request.
	HostileAnswerLimit = time.Second
	// HostileRSSLimit is the most RSS the daemon may reach under the flood (issue 14).
	HostileRSSLimit = 100 << 20
)

// HostileOptions configure PlayHostile.
type HostileOptions struct {
	// Duration of the flood (default DefaultHostileFor).
	Duration time.Duration
	// Workers send complete requests, one connection each at a time (default 12: 4 per
	// listener).
	Workers int
	// SlowConns hold connections that trickle a body or a header, or send nothing, until the
	// daemon gives up on them or SlowCut passes (defaults 48, 15 s).
	SlowConns int
	SlowCut   time.Duration
	// Burst connections send one request each at the same moment, every BurstEvery (defaults
	// 200, 30 s).
	Burst      int
	BurstEvery time.Duration
	// MaxBody is the largest body sent (default 4 MiB).
	MaxBody int
	// CallRate is the calls per second the PBX replays meanwhile (default 2).
	CallRate float64
	// Seed of the mutations (default 1).
	Seed uint64
	// CorpusDirs hold Fuzz*/ corpus directories of connector/security besides its seeds
	// (HostileSeeds): its testdata/fuzz, FuzzCacheDir.
	CorpusDirs []string
}

func (o *HostileOptions) defaults() {
	if o.Duration <= 0 {
		o.Duration = DefaultHostileFor
	}
	if o.Workers <= 0 {
		o.Workers = 12
	}
	if o.SlowConns <= 0 {
		o.SlowConns = 48
	}
	if o.SlowCut <= 0 {
		o.SlowCut = 15 * time.Second
	}
	if o.Burst <= 0 {
		o.Burst = 200
	}
	if o.BurstEvery <= 0 {
		o.BurstEvery = 30 * time.Second
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 4 << 20
	}
	if o.CallRate <= 0 {
		o.CallRate = 2
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
}

// HostileReport is what the hostile run measured.
type HostileReport struct {
	Duration time.Duration
	// Inputs are the corpus inputs per target (seeds and corpus files).
	Inputs map[string]int
	// Sent are the complete requests sent per target; Answers their outcomes per target by
	// status class ("2xx" … "5xx") or "no answer" (the daemon closed the connection without
	// one) or "timeout" (none within 10 s).
	Sent    map[string]int
	Answers map[string]map[string]int
	// Slowest are the slowest answers to complete requests (slowest first, at most 5), from
	// the request's first byte to the answer's header; Over is how many took longer than
	// HostileAnswerLimit; P99 the 99th percentile.
	Slowest []SlowAnswer
	Over    int
	// Errors are the first complete requests answered with a 5xx status.
	Errors []SlowAnswer
	P99    time.Duration
	// Slow counts the connections that trickled or idled: how many the daemon answered, closed
	// without an answer, or the harness cut after SlowCut.
	Slow struct{ Opened, Answered, Closed, Cut int }
	// BaseRSS is the daemon's RSS before the flood; PeakRSS its VmHWM at the end (the most it
	// ever held, start-up included), MaxRSS the most sampled during the flood, EndRSS its RSS
	// at the end. HeapInuse and Goroutines come from its /metrics at the end.
	BaseRSS, PeakRSS, MaxRSS, EndRSS int64
	HeapInuse, Goroutines            float64
	// Up: the daemon process still runs and /readyz answers 200 at the end (within 30 s:
	// NotReady is its first answer when that was not 200).
	Up       bool
	NotReady string
	// Calls the PBX replayed during the flood; Records the records they meant for the CRMs;
	// Lost and Dup those a CRM holds zero or several times, per connector.
	Calls, Records int
	Lost, Dup      map[string][]string
	// HeapProfile is the daemon's heap profile at the end (with a BenchOptions.ProfileDir).
	HeapProfile string
}

// SlowAnswer is one slow answer.
type SlowAnswer struct {
	Took    time.Duration
	Status  int
	Request string
}

// hostileStats gathers one worker's outcomes.
type hostileStats struct {
	sent    map[string]int
	answers map[string]map[string]int
	slowest []SlowAnswer
	errs    []SlowAnswer // the first 5xx answers
	over    int
	hist    [10001]int // answers per millisecond (the last bucket: 10 s or more)
	slow    struct{ opened, answered, closed, cut int }
}

func newHostileStats() *hostileStats {
	s := &hostileStats{sent: map[string]int{}, answers: map[string]map[string]int{}}
	for _, t := range HostileTargets {
		s.answers[t] = map[string]int{}
	}
	return s
}

func (s *hostileStats) record(req *hostileReq, status int, took time.Duration, outcome string) {
	s.sent[req.target]++
	s.answers[req.target][outcome]++
	if status == 0 {
		return
	}
	if status >= 500 && len(s.errs) < 5 {
		s.errs = append(s.errs, SlowAnswer{Took: took, Status: status, Request: req.describe()})
	}
	s.hist[min(int(took/time.Millisecond), len(s.hist)-1)]++
	if took > HostileAnswerLimit {
		s.over++
	}
	if len(s.slowest) < 5 || took > s.slowest[len(s.slowest)-1].Took {
		s.slowest = append(s.slowest, SlowAnswer{Took: took, Status: status, Request: req.describe()})
		slices.SortFunc(s.slowest, func(a, b SlowAnswer) int { return int(b.Took - a.Took) })
		s.slowest = s.slowest[:min(5, len(s.slowest))]
	}
}

func (s *hostileStats) merge(o *hostileStats) {
	for t, n := range o.sent {
		s.sent[t] += n
	}
	for t, m := range o.answers {
		for c, n := range m {
			s.answers[t][c] += n
		}
	}
	for i, n := range o.hist {
		s.hist[i] += n
	}
	s.over += o.over
	s.errs = append(s.errs, o.errs...)[:min(5, len(s.errs)+len(o.errs))]
	s.slowest = append(s.slowest, o.slowest...)
	slices.SortFunc(s.slowest, func(a, b SlowAnswer) int { return int(b.Took - a.Took) })
	s.slowest = s.slowest[:min(5, len(s.slowest))]
	s.slow.opened += o.slow.opened
	s.slow.answered += o.slow.answered
	s.slow.closed += o.slow.closed
	s.slow.cut += o.slow.cut
}

func (s *hostileStats) quantile(q float64) time.Duration {
	total := 0
	for _, n := range s.hist {
		total += n
	}
	if total == 0 {
		return 0
	}
	want := int(q*float64(total) + 0.5)
	seen := 0
	for i, n := range s.hist {
		if seen += n; seen >= want {
			return time.Duration(i+1) * time.Millisecond
		}
	}
	return time.Duration(len(s.hist)) * time.Millisecond
}

// flood is the hostile traffic against one daemon.
type flood struct {
	o      HostileOptions
	inputs map[string][]HostileInput
	addrs  map[string]string // target → address; the socket's is a path
	token  string
	keys   func() []string
}

func (f *flood) dial(target string) (net.Conn, error) {
	network := "tcp"
	if target == HostileSocket {
		network = "unix"
	}
	c, err := net.DialTimeout(network, f.addrs[target], 5*time.Second)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // no TIME_WAIT: a long flood would run out of ports
	}
	return c, nil
}

func (f *flood) mutator(seed uint64) *mutator {
	hosts := map[string]string{}
	for t, a := range f.addrs {
		hosts[t] = a
	}
	hosts[HostileSocket] = "localhost"
	//nolint:gosec // reproducible mutations from a seed, not secrets
	return &mutator{r: rand.New(rand.NewPCG(f.o.Seed, seed)), token: f.token, keys: f.keys, maxBody: f.o.MaxBody, hosts: hosts}
}

func (f *flood) pick(m *mutator, target string) HostileInput {
	in := f.inputs[target]
	return in[m.r.IntN(len(in))]
}

// send sends one complete request on a new connection and reads the answer's header: the
// status (0 without an answer), how long it took from the first byte sent, and the outcome.
func (f *flood) send(req *hostileReq) (int, time.Duration, string) {
	c, err := f.dial(req.target)
	if err != nil {
		return 0, 0, "no connection"
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	wire := req.wire()
	start := time.Now()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = c.Write(wire) // the daemon may answer and close before reading a huge body
	}()
	defer func() { _ = c.Close(); <-wrote }()
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: req.method})
		took := time.Since(start)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, took, "timeout"
			}
			return 0, took, "no answer"
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
		_ = resp.Body.Close()
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // an interim answer; the real one follows
		}
		return resp.StatusCode, took, fmt.Sprintf("%dxx", resp.StatusCode/100)
	}
}

// worker sends complete requests to target until ctx ends.
func (f *flood) worker(ctx context.Context, target string, seed uint64, s *hostileStats) {
	m := f.mutator(seed)
	for ctx.Err() == nil {
		req := m.request(f.pick(m, target))
		status, took, outcome := f.send(&req)
		if outcome == "no connection" {
			sleepCtx(ctx, 50*time.Millisecond)
		}
		s.record(&req, status, took, outcome)
	}
}

// slowKinds are the ways a slow connection never finishes its request.
var slowKinds = []string{"body", "chunked", "header", "idle"}

// slowConn holds connections that never finish a request, one after the other, until ctx ends.
func (f *flood) slowConn(ctx context.Context, seed uint64, s *hostileStats) {
	m := f.mutator(seed)
	for ctx.Err() == nil {
		target := HostileTargets[m.r.IntN(len(HostileTargets))]
		kind := slowKinds[m.r.IntN(len(slowKinds))]
		c, err := f.dial(target)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		s.slow.opened++
		req := m.request(f.pick(m, target))
		var prefix string
		switch kind {
		case "body":
			prefix = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", req.path, req.host, 1<<30)
		case "chunked":
			prefix = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n", req.path, req.host)
		case "header":
			prefix = fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n", req.path, req.host)
		}
		answer := make(chan int, 1)
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				answer <- 0
				return
			}
			_ = resp.Body.Close()
			answer <- resp.StatusCode
		}()
		_, err = io.WriteString(c, prefix)
		cut := time.NewTimer(f.o.SlowCut)
		tick := time.NewTicker(200 * time.Millisecond)
		outcome := ""
		for outcome == "" && err == nil {
			select {
			case <-ctx.Done():
				outcome = "cut"
			case <-cut.C:
				outcome = "cut"
			case code := <-answer:
				outcome = "closed"
				if code != 0 {
					outcome = "answered"
				}
			case <-tick.C:
				switch kind {
				case "body":
					_, err = c.Write([]byte{byte('a' + m.r.IntN(26))})
				case "chunked":
					_, err = io.WriteString(c, "1\r\nx\r\n")
				case "header":
					_, err = io.WriteString(c, "X-Slow-"+strconv.Itoa(m.r.IntN(1e6))+": y\r\n")
				}
			}
		}
		cut.Stop()
		tick.Stop()
		_ = c.Close()
		switch outcome {
		case "": // a write failed: the daemon closed it (maybe with an answer)
			outcome = "closed"
			if code := <-answer; code != 0 {
				outcome = "answered"
			}
		case "cut":
			<-answer
		}
		switch outcome {
		case "answered":
			s.slow.answered++
		case "closed":
			s.slow.closed++
		default:
			s.slow.cut++
		}
	}
}

// burst opens n connections at once, each sending one request to the public or the admin
// listener.
func (f *flood) burst(n int, seed uint64, s *hostileStats) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m := f.mutator(seed<<16 + uint64(i))
			target := HostileTargets[i%2]
			req := m.request(f.pick(m, target))
			status, took, outcome := f.send(&req)
			mu.Lock()
			s.record(&req, status, took, outcome)
			mu.Unlock()
		})
	}
	wg.Wait()
}

// run floods until ctx ends.
func (f *flood) run(ctx context.Context) *hostileStats {
	var wg sync.WaitGroup
	var stats []*hostileStats
	add := func() *hostileStats {
		s := newHostileStats()
		stats = append(stats, s)
		return s
	}
	for i := range f.o.Workers {
		s := add()
		wg.Go(func() { f.worker(ctx, HostileTargets[i%len(HostileTargets)], uint64(i), s) })
	}
	for i := range f.o.SlowConns {
		s := add()
		wg.Go(func() { f.slowConn(ctx, 1000+uint64(i), s) })
	}
	bs := add()
	wg.Go(func() {
		for i := uint64(1); ; i++ {
			if !sleepCtx(ctx, min(f.o.BurstEvery, f.o.Duration/2)) {
				return
			}
			f.burst(f.o.Burst, 2000+i, bs)
		}
	})
	wg.Wait()
	total := newHostileStats()
	for _, s := range stats {
		total.merge(s)
	}
	return total
}

// hostileInputs gathers the seeds and the corpus files by target.
func hostileInputs(dirs []string) (map[string][]HostileInput, error) {
	all := HostileSeeds()
	more, err := LoadFuzzCorpora(dirs...)
	if err != nil {
		return nil, err
	}
	all = append(all, more...)
	by := map[string][]HostileInput{}
	for _, in := range all {
		by[in.Target] = append(by[in.Target], in)
	}
	return by, nil
}

// PlayHostile starts the daemon (Bitrix24 and amoCRM connectors against the fakes, both
// listeners, the admin listener guarded by a token) and floods its listeners and admin
// socket with hostile requests for HostileOptions.Duration while the PBX replays calls; then
// it waits until every call is delivered and reports.
func PlayHostile(ctx context.Context, o *BenchOptions, ho HostileOptions) (*HostileReport, error) {
	ho.defaults()
	if o.Log == nil {
		o.Log = io.Discard
	}
	inputs, err := hostileInputs(ho.CorpusDirs)
	if err != nil {
		return nil, err
	}
	token := "hostile-" + crand.Text()
	eo := EnvOptions{
		PBX:    fakepbx.Config{Speed: 1},
		Daemon: DaemonOptions{Connectors: []string{ConnBitrix24, ConnAmo}, Unlimited: true, AdminToken: token},
	}
	pprofAddr := ""
	if o.ProfileDir != "" {
		if pprofAddr, err = freePort(); err != nil {
			return nil, err
		}
		eo.Daemon.PprofAddr = pprofAddr
	}
	e, stop, err := o.env(ctx, RunHostile, eo)
	if err != nil {
		return nil, err
	}
	defer stop()
	r := &HostileReport{Inputs: map[string]int{}}
	for t, in := range inputs {
		r.Inputs[t] = len(in)
	}
	fmt.Fprintf(o.Log, "hostile: %d inputs (public %d, admin %d, socket %d); %v of flood, %d workers, %d slow connections, bursts of %d\n",
		r.Inputs[HostilePublic]+r.Inputs[HostileAdmin]+r.Inputs[HostileSocket], r.Inputs[HostilePublic], r.Inputs[HostileAdmin],
		r.Inputs[HostileSocket], ho.Duration, ho.Workers, ho.SlowConns, ho.Burst)
	if !sleepCtx(ctx, 3*time.Second) { // start-up requests (users, event.bind, lines)
		return nil, ctx.Err()
	}
	p0, err := e.Daemon.Proc()
	if err != nil {
		return nil, err
	}
	r.BaseRSS = p0.RSS
	var keysMu sync.Mutex
	var keys []string
	f := &flood{o: ho, inputs: inputs, token: token,
		addrs: map[string]string{HostilePublic: strings.TrimPrefix(e.Daemon.PublicURL, "http://"),
			HostileAdmin: strings.TrimPrefix(e.Daemon.BaseURL, "http://"), HostileSocket: e.Daemon.Socket},
		keys: func() []string { keysMu.Lock(); defer keysMu.Unlock(); return keys }}
	s := sample(e.Daemon, 250*time.Millisecond)
	floodCtx, endFlood := context.WithTimeout(ctx, ho.Duration)
	defer endFlood()
	loadDone := make(chan struct{})
	var calls int
	var loadErr error
	go func() {
		defer close(loadDone)
		// Not cut with the flood: a replay stopped halfway never ends its call.
		calls, loadErr = e.PBX.Load(ctx, fakepbx.LoadOptions{Rate: ho.CallRate, Calls: int(ho.CallRate * ho.Duration.Seconds()), Seed: ho.Seed})
	}()
	go func() { // the keys of the calls seen so far, for requests naming real calls
		for sleepCtx(floodCtx, 5*time.Second) {
			var k []string
			for _, t := range e.PBX.Traces() {
				for key := range e.Expected.Keys(&t) {
					k = append(k, key)
				}
			}
			keysMu.Lock()
			keys = k
			keysMu.Unlock()
		}
	}()
	go func() { // progress
		for start := time.Now(); sleepCtx(floodCtx, time.Minute); {
			p, _ := e.Daemon.Proc()
			fmt.Fprintf(o.Log, "hostile: %v in, daemon RSS %s, load %.1f\n", time.Since(start).Round(time.Second), mb(p.RSS), LoadAverage())
		}
	}()
	from := time.Now()
	st := f.run(floodCtx)
	r.Duration = time.Since(from)
	<-loadDone
	r.MaxRSS = s.end()
	r.Calls = calls
	r.Sent, r.Answers, r.Slowest, r.Over, r.P99, r.Errors = st.sent, st.answers, st.slowest, st.over, st.quantile(0.99), st.errs
	r.Slow.Opened, r.Slow.Answered, r.Slow.Closed, r.Slow.Cut = st.slow.opened, st.slow.answered, st.slow.closed, st.slow.cut
	if loadErr != nil && !errors.Is(loadErr, context.DeadlineExceeded) && !errors.Is(loadErr, context.Canceled) {
		return r, fmt.Errorf("loadtest: hostile: load: %w", loadErr)
	}
	// Stayed up: the process runs and /readyz answers 200 (its checks are logged when not).
	if e.Daemon.Exited() {
		return r, fmt.Errorf("loadtest: hostile: the daemon exited; log:\n%s", e.Daemon.LogTail(3000))
	}
	if code, body := e.Daemon.readyz(ctx); code != http.StatusOK {
		r.NotReady = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
		fmt.Fprintf(o.Log, "hostile: /readyz after the flood: %s\n", r.NotReady)
		if err := e.Daemon.WaitReady(ctx, 30*time.Second); err != nil {
			return r, fmt.Errorf("loadtest: hostile: the daemon is not ready after the flood: %s; log:\n%s", r.NotReady, e.Daemon.LogTail(3000))
		}
	}
	r.Up = true
	// Every call the PBX finished must reach each CRM once.
	want := 0
	for _, t := range e.PBX.Traces() {
		want += len(e.Expected.Keys(&t))
	}
	drainErr := e.WaitDrained(ctx, 2*time.Minute, want)
	vs := e.Check(nil)
	r.Records = len(vs)
	r.Lost, r.Dup = Tally(vs)
	if ps, err := e.Daemon.Proc(); err == nil {
		r.EndRSS = ps.RSS
	}
	r.PeakRSS = vmHWM(e.Daemon.Pid())
	if m, err := e.Daemon.Metrics(ctx); err == nil {
		r.HeapInuse, r.Goroutines = m.Sum("go_memstats_heap_inuse_bytes"), m.Sum("go_goroutines")
	}
	if pprofAddr != "" {
		r.HeapProfile = filepath.Join(o.ProfileDir, "hostile-heap.pprof")
		if err := fetch(ctx, "http://"+pprofAddr+"/debug/pprof/heap", r.HeapProfile); err != nil {
			fmt.Fprintf(o.Log, "hostile: heap profile: %v\n", err)
			r.HeapProfile = ""
		}
		if err := fetch(ctx, "http://"+pprofAddr+"/debug/pprof/goroutine?debug=1", filepath.Join(o.ProfileDir, "hostile-goroutines.txt")); err != nil {
			fmt.Fprintf(o.Log, "hostile: goroutines: %v\n", err)
		}
	}
	return r, drainErr
}

// readyz is the status and body of /readyz.
func (d *Daemon) readyz(ctx context.Context) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.BaseURL+"/readyz", nil)
	if err != nil {
		return 0, err.Error()
	}
	d.authorize(req)
	resp, err := d.hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body)
}

// vmHWM is the peak RSS of a process (VmHWM of /proc/<pid>/status), 0 when unknown.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// fetch saves what url answers in path.
func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, resp.Body)
	return errors.Join(err, out.Close())
}

// Total is every complete request sent.
func (r *HostileReport) Total() int {
	n := 0
	for _, v := range r.Sent {
		n += v
	}
	return n
}

// AnswersText is the outcomes per target: "public 123 (2xx 4, 4xx 100, …); …".
func (r *HostileReport) AnswersText() string {
	var parts []string
	for _, t := range HostileTargets {
		var cls []string
		keys := make([]string, 0, len(r.Answers[t]))
		for k := range r.Answers[t] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			cls = append(cls, fmt.Sprintf("%s %d", k, r.Answers[t][k]))
		}
		parts = append(parts, fmt.Sprintf("%s %d (%s)", t, r.Sent[t], strings.Join(cls, ", ")))
	}
	return strings.Join(parts, "; ")
}

// Delivered reports whether every record reached each CRM exactly once.
func (r *HostileReport) Delivered() bool { return len(r.Lost) == 0 && len(r.Dup) == 0 && r.Records > 0 }

// SlowestAnswer is the slowest answer (zero without any).
func (r *HostileReport) SlowestAnswer() SlowAnswer {
	if len(r.Slowest) == 0 {
		return SlowAnswer{}
	}
	return r.Slowest[0]
}

// benchHostile reports PlayHostile against issue 14's targets.
func benchHostile(ctx context.Context, o *BenchOptions) ([]Figure, error) {
	ho := HostileOptions{Duration: o.HostileFor, CorpusDirs: o.HostileCorpus}
	if o.Quick {
		ho.Duration = 20 * time.Second
	}
	ho.defaults()
	r, err := PlayHostile(ctx, o, ho)
	if r == nil {
		return nil, err
	}
	for _, sa := range r.Errors {
		fmt.Fprintf(o.Log, "hostile: %d answer: %s\n", sa.Status, sa.Request)
	}
	for _, sa := range r.Slowest {
		fmt.Fprintf(o.Log, "hostile: slow answer %v (%d): %s\n", sa.Took.Round(time.Millisecond), sa.Status, sa.Request)
	}
	what := fmt.Sprintf("%.0f s of flood", r.Duration.Seconds())
	sl := r.SlowestAnswer()
	lost, dup := 0, 0
	for _, k := range r.Lost {
		lost += len(k)
	}
	for _, k := range r.Dup {
		dup += len(k)
	}
	figs := []Figure{
		{Name: "hostile requests answered, by listener and status class (" + what + ")",
			Value: fmt.Sprintf("%d complete requests (%.0f/s): %s; %d slow connections (%d answered, %d closed by the daemon, %d cut at %v)",
				r.Total(), float64(r.Total())/r.Duration.Seconds(), r.AnswersText(), r.Slow.Opened, r.Slow.Answered, r.Slow.Closed, r.Slow.Cut, ho.SlowCut)},
		{Name: "slowest answer to a complete hostile request (" + what + ")",
			Value:  fmt.Sprintf("%s (HTTP %d: %s); p99 %s; %d over 1 s", ms(sl.Took), sl.Status, sl.Request, ms(r.P99), r.Over),
			Target: "≤ 1 s", Met: met(r.Over == 0 && r.Total() > 0)},
		{Name: "daemon RSS under hostile requests (" + what + ")",
			Value: fmt.Sprintf("peak (VmHWM) %s, max sampled during the flood %s, at the end %s, before %s; heap in use at the end %s, %.0f goroutines",
				mb(r.PeakRSS), mb(r.MaxRSS), mb(r.EndRSS), mb(r.BaseRSS), mb(int64(r.HeapInuse)), r.Goroutines),
			Target: "< 100 MiB", Met: met(r.PeakRSS > 0 && r.PeakRSS < HostileRSSLimit)},
		{Name: "daemon up and delivering after hostile requests (" + what + ")",
			Value:  fmt.Sprintf("%s; %d calls during the flood, %d records: %d lost, %d duplicated", readyText(r), r.Calls, r.Records, lost, dup),
			Target: "up, every record once", Met: met(r.Up && r.Delivered() && err == nil)},
	}
	return figs, err
}

func readyText(r *HostileReport) string {
	switch {
	case !r.Up:
		return "down or not ready"
	case r.NotReady != "":
		return "readyz 200 after a first " + r.NotReady
	}
	return "readyz 200"
}
