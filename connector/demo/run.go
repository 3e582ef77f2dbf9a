package demo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector/cli"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// What the demo's calls cost the CRMs and what the CRMs take, for its default rate. The costs
// were measured with the fake CRMs' request counters over the default mix of scenarios with the
// demo's customers, at the default rate (TestDemoTenMinutes, in the long tier, checks them):
// Bitrix24 about 2.8 requests a call (register, finish, card show/hide, a task for a missed
// call, the user list now and then), amoCRM and Kommo about 2.5 (pop-up events, the call, a
// contact and an unsorted lead for a new number; at this rate calls seldom share a batch).
const (
	// B24RequestsPerCall and AmoRequestsPerCall are the measured costs, rounded up.
	B24RequestsPerCall = 3.0
	AmoRequestsPerCall = 2.5
	// b24RPS is what the Bitrix24 connector sends at most (rate_limit.rps, the cloud's 2
	// requests/s); amoDeliverRPS what the amoCRM and Kommo connectors deliver at most (7
	// requests/s less the fifth kept for pop-ups).
	b24RPS        = 2.0
	amoDeliverRPS = 7.0 - 7.0/5
	// DefaultRate is the default --rate: 0.5 calls/s costs Bitrix24 at most 1.5 requests/s,
	// 75% of what it takes, so deliveries do not queue and the rest absorbs retries.
	DefaultRate = 0.5
)

// maxRate is the call rate the demo CRMs keep up with: Bitrix24's.
func maxRate() float64 { return min(b24RPS/B24RequestsPerCall, amoDeliverRPS/AmoRequestsPerCall) }

// defaultProgressEvery is how often the wait after Ctrl-C says what it waits for.
const defaultProgressEvery = 3 * time.Second

// Command runs the whole pipeline on this machine with nothing installed: a simulated PBX
// replaying the real Asterisk transcripts over AMI, fake Bitrix24, amoCRM and Kommo servers, demo
// licences (bound to reserved .invalid accounts, so they can never unlock a real CRM), and the
// daemon with its status page. `pbxbridge demo` hands over to the pbxbridge-demo program, which
// runs it.
type Command struct {
	cli.DemoFlags

	io IO // set by RunIO
}

// IO is what the demo program talks to.
type IO struct {
	Stdout, Stderr io.Writer
	// Signals delivers the interrupts (Ctrl-C, SIGTERM). The first stops starting calls and
	// waits until the calls in progress have ended and every call is delivered; the second
	// stops at once. Nil: only --duration ends the demo.
	Signals <-chan os.Signal
	// ProgressEvery is how often the wait after the first interrupt says what it waits for
	// (default 3 s).
	ProgressEvery time.Duration
	// Started, when set, is called once the demo environment runs, before the first call
	// (tests: faults of the fake CRMs).
	Started func(*Env)
}

// Main runs the pbxbridge-demo program (what `pbxbridge demo` hands over to) and returns the
// process exit status. SIGINT and SIGTERM end the demo: the first in order, the second at once.
func Main(version string, args []string) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	return RunIO(version, args, IO{Stdout: os.Stdout, Stderr: os.Stderr, Signals: sigs})
}

// MainIO is Main with explicit streams for tests; the end of ctx is the first interrupt.
func MainIO(ctx context.Context, version string, args []string, stdout, stderr io.Writer) int {
	sigs := make(chan os.Signal, 1)
	stop := context.AfterFunc(ctx, func() { sigs <- os.Interrupt })
	defer stop()
	return RunIO(version, args, IO{Stdout: stdout, Stderr: stderr, Signals: sigs})
}

// RunIO runs the demo program with args and returns its exit status.
func RunIO(version string, args []string, o IO) int {
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = defaultProgressEvery
	}
	cmd := Command{io: o}
	parser, err := kong.New(&cmd,
		kong.Name("pbxbridge-demo"),
		kong.Description("The pbxbridge demo: a simulated PBX, fake Bitrix24, amoCRM and Kommo, demo licences and the daemon with its status page."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Writers(o.Stdout, o.Stderr),
	)
	if err != nil {
		fmt.Fprintln(o.Stderr, err)
		return 2
	}
	if _, err := parser.Parse(args); err != nil {
		fmt.Fprintf(o.Stderr, "pbxbridge-demo: %v\n", err)
		return 2
	}
	g := &cli.Globals{Version: version, Stdout: o.Stdout, Stderr: o.Stderr, Ctx: context.Background()}
	return cli.Report(o.Stderr, "pbxbridge demo", cmd.Run(g))
}

// Run runs the demo: it prints what runs and how to stop it, one line per delivered call, and
// a summary at the end. See IO.Signals for how it stops.
func (c *Command) Run(g *cli.Globals) error {
	if c.Rate <= 0 || c.Speed <= 0 {
		return errors.New("--rate and --speed must be positive")
	}
	c.State = c.stateDir()
	if c.io.Stdout == nil {
		c.io = IO{Stdout: g.Stdout, Stderr: g.Stderr}
	}
	if c.io.ProgressEvery <= 0 {
		c.io.ProgressEvery = defaultProgressEvery
	}
	logOut := io.Discard
	if c.Verbose {
		logOut = g.Stderr
	}
	tally := newDemoTally(g.Stdout)
	env, err := Start(g.Ctx, Options{
		Speed: c.Speed, Listen: c.Listen, Dir: c.State, Version: g.Version,
		Logger: slog.New(slog.NewTextHandler(logOut, nil)), OnDelivered: tally.delivered,
		PBX: func(pc *fakepbx.Config) { pc.Customers = Customers(c.Seed) },
	})
	if err != nil {
		return err
	}
	defer func() { _ = env.Close() }()
	tally.setEmployees(env, map[string]employees{
		"b24-demo":   b24Employees(env.B24),
		"amo-demo":   amoEmployees(env.Amo, demoAmoUsers()),
		"kommo-demo": amoEmployees(env.Kommo, demoAmoUsers()),
	})
	c.intro(tally, env)
	if c.io.Started != nil {
		c.io.Started(env)
	}

	reason, inProgress, played := c.play(env)
	tally.printf("\n%s: no new calls; the calls in progress end and everything is delivered before the demo stops (Ctrl-C again to stop now)\n", reason)
	hard := c.drain(env, tally, inProgress)

	stopErr := env.stop()
	built := builtCalls(env.Daemon) // after the stop, which records the calls still open
	left, err := leftover(env)
	if err != nil {
		return fmt.Errorf("reading what is left in the outbox: %w", err)
	}
	if stopErr != nil {
		return stopErr
	}
	return c.summary(tally, env, hard, played, built, left)
}

// stateDir is --state, or --dir (its old name).
func (c *Command) stateDir() string { return cmp.Or(c.State, c.Dir) }

// intro prints the first screen: what runs, where the status page is, the rate and why, and how
// to stop.
func (c *Command) intro(t *demoTally, env *Env) {
	t.printf("pbxbridge demo: the whole chain on this machine, nothing installed\n")
	t.printf("  pbx     a simulated Asterisk (AMI at %s) replays real recorded calls from %d customers\n", env.PBX.Addr(), len(customerPool()))
	t.printf("  crm     fake Bitrix24, amoCRM and Kommo with demo licences; employees %s\n", t.employeeList("b24-demo"))
	t.printf("  status  %s/   (metrics: %s/metrics)\n", env.BaseURL, env.BaseURL)
	t.printf("  rate    %s\n", rateLine(c.Rate))
	if c.State != "" {
		t.printf("  state   %s (kept: calls not delivered when the demo stops wait there for the next run)\n", env.Dir)
	} else {
		t.printf("  state   a temporary folder, removed at the end (--state DIR keeps it)\n")
	}
	stop := "Ctrl-C"
	if c.Duration > 0 {
		stop = fmt.Sprintf("after %v or on Ctrl-C", c.Duration)
	}
	t.printf("  stop    %s: no new calls, the calls in progress end and are delivered, then a summary; Ctrl-C twice stops at once\n", stop)
	t.printf("one line per call delivered to a CRM:\n")
}

// rateLine says how often calls start and why that rate.
func rateLine(rate float64) string {
	every := fmt.Sprintf("a new call every %.1f s (--rate %g/s)", 1/rate, rate)
	need := rate * B24RequestsPerCall
	if rate <= maxRate() {
		return fmt.Sprintf("%s: a call costs Bitrix24 about %.1f requests and Bitrix24 takes %g a second, so this uses %.0f%% of it and nothing queues",
			every, B24RequestsPerCall, b24RPS, 100*need/b24RPS)
	}
	return fmt.Sprintf("%s: that needs %.1f Bitrix24 requests a second, more than the %g it takes (%.1f calls/s at most), so deliveries to Bitrix24 queue in the outbox and catch up when you stop",
		every, need, b24RPS, maxRate())
}

// play starts calls at the rate until the first interrupt or --duration, and returns why it
// stopped, the calls still playing and how many it started.
func (c *Command) play(env *Env) (reason string, inProgress []*fakepbx.Call, played int) {
	// The first call is a short, plain one (the first line appears soon), then every recorded
	// scenario in turn, then a random mix.
	mix := env.PBX.DefaultMix()
	if i := slices.Index(mix, "inbound_answered"); i > 0 {
		mix = append(append([]string{mix[i]}, mix[:i]...), mix[i+1:]...)
	}
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x5ce0)) //nolint:gosec // a reproducible scenario mix
	var timeUp <-chan time.Time
	if c.Duration > 0 {
		t := time.NewTimer(c.Duration)
		defer t.Stop()
		timeUp = t.C
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.Rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		name := mix[i%len(mix)]
		if i >= len(mix) {
			name = mix[rng.IntN(len(mix))]
		}
		if pc, err := env.PBX.Play(context.Background(), name); err == nil {
			played++
			inProgress = append(slices.DeleteFunc(inProgress, func(pc *fakepbx.Call) bool { return isDone(pc.Done()) }), pc)
		}
		select {
		case <-tick.C:
		case <-timeUp:
			return fmt.Sprintf("%v passed", c.Duration), inProgress, played
		case <-c.io.Signals:
			return "Ctrl-C", inProgress, played
		}
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// settleFor is how long the daemon must look idle before the drain is over: the call model
// reports its open calls once a second.
const settleFor = 1100 * time.Millisecond

// drain waits until the calls in progress have ended and the outbox has delivered everything,
// saying what it waits for every ProgressEvery. It returns true when a second interrupt cut it
// short.
func (c *Command) drain(env *Env, t *demoTally, inProgress []*fakepbx.Call) (hard bool) {
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	progress := time.NewTicker(c.io.ProgressEvery)
	defer progress.Stop()
	var idleSince time.Time
	var eta etaEstimate
	for {
		w := waitingFor(env, inProgress)
		switch {
		case !w.idle():
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) >= settleFor:
			return false
		}
		select {
		case <-poll.C:
		case <-progress.C:
			if !w.idle() {
				t.printf("waiting for %s%s…  Ctrl-C again to stop now\n", w, eta.next(w.total(), time.Now()))
			}
		case <-c.io.Signals:
			return true
		}
	}
}

// waiting is what the drain waits for.
type waiting struct {
	calls      int64            // calls playing or not yet recorded
	deliveries map[string]int64 // connector -> deliveries pending
}

// total is how many deliveries are pending.
func (w waiting) total() int64 {
	var n int64
	for _, d := range w.deliveries {
		n += d
	}
	return n
}

// etaEstimate tells from the pace of the deliveries between two progress lines how long the
// rest will take.
type etaEstimate struct {
	pending int64
	at      time.Time
}

// next returns ", about 2 min to go" (or "" while the pace is unknown) for pending deliveries
// at now.
func (e *etaEstimate) next(pending int64, now time.Time) string {
	prev, prevAt := e.pending, e.at
	e.pending, e.at = pending, now
	if prevAt.IsZero() || pending >= prev || pending == 0 {
		return ""
	}
	left := time.Duration(float64(now.Sub(prevAt)) * float64(pending) / float64(prev-pending))
	if left < 10*time.Second {
		return ""
	}
	if left < 2*time.Minute {
		return fmt.Sprintf(", about %d s to go", int(left.Round(5*time.Second)/time.Second))
	}
	return fmt.Sprintf(", about %d min to go", int(left.Round(time.Minute)/time.Minute))
}

func (w waiting) idle() bool {
	if w.calls > 0 {
		return false
	}
	for _, n := range w.deliveries {
		if n > 0 {
			return false
		}
	}
	return true
}

// String says it in words: "2 calls to end and 12 deliveries (b24 10, amo 1, kommo 1)".
func (w waiting) String() string {
	var parts []string
	if w.calls > 0 {
		parts = append(parts, plural(w.calls, "call")+" to end")
	}
	var total int64
	for _, n := range w.deliveries {
		total += n
	}
	if total > 0 {
		parts = append(parts, fmt.Sprintf("%s (%s)", plural(total, "delivery"), perConnector(w.deliveries)))
	}
	return strings.Join(parts, " and ")
}

// perConnector is "b24 10, amo 1" for the connectors with deliveries pending.
func perConnector(deliveries map[string]int64) string {
	var per []string
	for _, name := range sortedKeys(deliveries) {
		if n := deliveries[name]; n > 0 {
			per = append(per, fmt.Sprintf("%s %d", shortName(name), n))
		}
	}
	return strings.Join(per, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(word, "y"))
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// shortName is a demo connector's name without "-demo".
func shortName(connector string) string { return strings.TrimSuffix(connector, "-demo") }

// waitingFor reads what the drain still waits for.
func waitingFor(env *Env, inProgress []*fakepbx.Call) waiting {
	w := waiting{deliveries: map[string]int64{}}
	var playing int64
	for _, pc := range inProgress {
		if !isDone(pc.Done()) {
			playing++
		}
	}
	w.calls = max(playing, openCalls(env.Daemon)) + int64(env.Daemon.HeldCalls())
	stats, err := env.Daemon.Outbox().Stats(context.Background())
	if err != nil {
		w.deliveries["outbox"] = 1 // unreadable: not idle
	}
	for _, s := range stats {
		w.deliveries[s.Connector] = s.Pending + s.Leased
	}
	return w
}

// left is what a stopped demo leaves undelivered in its outbox.
type left struct {
	calls      int              // distinct calls with a delivery pending or still open
	open       int              // calls open when the daemon stopped (no record yet)
	deliveries map[string]int64 // connector -> deliveries pending
	dead       int64
}

// leftover reads the outbox of a stopped demo environment.
func leftover(env *Env) (left, error) {
	ctx := context.Background()
	st, err := outbox.Open(ctx, filepath.Join(env.cfg.StateDir, "outbox.db"), outbox.Options{})
	if err != nil {
		return left{}, err
	}
	defer func() { _ = st.Close() }()
	l := left{deliveries: map[string]int64{}}
	stats, err := st.Stats(ctx)
	if err != nil {
		return left{}, err
	}
	for _, s := range stats {
		l.deliveries[s.Connector] = s.Pending + s.Leased
		l.dead += s.Dead
	}
	keys := map[string]bool{}
	f := outbox.Filter{State: outbox.Pending, Limit: outbox.MaxListLimit}
	for {
		rows, err := st.List(ctx, f)
		if err != nil {
			return left{}, err
		}
		for _, r := range rows {
			keys[r.Key] = true
		}
		if len(rows) < f.Limit {
			break
		}
		f.AfterID = rows[len(rows)-1].ID
	}
	for _, p := range env.cfg.PBX {
		open, err := st.OpenCalls(ctx, p.Name)
		if err != nil {
			return left{}, err
		}
		for _, oc := range open {
			// "!alive/<pbx>" is the daemon's heartbeat, not a call.
			if !strings.HasPrefix(oc.Key, "!") && !keys[oc.Key] {
				keys[oc.Key] = true
				l.open++
			}
		}
	}
	l.calls = len(keys)
	return l, nil
}

// summary prints how the demo ended and returns its exit status: 1 when calls were lost or
// dead-lettered.
func (c *Command) summary(t *demoTally, env *Env, hard bool, played int, built int64, l left) error {
	pending := int64(l.calls)
	kept := c.State != "" && pending > 0
	if hard && pending > 0 {
		detail := perConnector(l.deliveries)
		if l.open > 0 {
			detail = strings.TrimPrefix(detail+fmt.Sprintf(", %d still in progress", l.open), ", ")
		}
		what := fmt.Sprintf("%s not delivered yet (%s)", plural(pending, "call"), detail)
		if kept {
			t.printf("stopped at once: %s; they are kept in %s and leave with the next `pbxbridge demo --state %s`\n", what, env.Dir, env.Dir)
		} else {
			t.printf("stopped at once: %s; they are lost with the demo's temporary folder (--state DIR keeps them for the next run)\n", what)
		}
	}
	lost := pending
	if kept {
		lost = 0
	}
	line := fmt.Sprintf("summary: %d calls played, %d built; delivered %s; lost %d; dead letters %d", played, built, t.summary(), lost, l.dead)
	if kept {
		line += fmt.Sprintf("; kept %d in %s", pending, env.Dir)
	}
	t.printf("%s\n", line)
	if lost > 0 || l.dead > 0 {
		return cli.ExitCode(1)
	}
	return nil
}

// demoTally prints delivered calls and counts them per CRM.
type demoTally struct {
	mu    sync.Mutex
	out   io.Writer
	n     map[string]int
	env   *Env
	names map[string]employees // connector -> extension -> name, from the fake CRMs' users
}

func newDemoTally(out io.Writer) *demoTally { return &demoTally{out: out, n: map[string]int{}} }

// setEmployees gives the tally the demo CRMs' employees: it names them as each connector's
// adapter does (crm.UserDirectory), or as the fake CRM lists them while the adapter does not know
// yet.
func (t *demoTally) setEmployees(env *Env, e map[string]employees) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.env, t.names = env, e
	for name := range e {
		if a, ok := env.Daemon.Adapter(name).(crm.UserDirectory); ok {
			_, _ = a.Users(context.Background()) // adapters that read their user list only when names are wanted start now
		}
	}
}

// labelLocked is "Ivan Petrov (101)" as connector names the employee; t.mu is held.
func (t *demoTally) labelLocked(connector, ext string) string {
	if t.env == nil { // a call kept by an earlier run (--state), delivered during Start
		return ext
	}
	if a, ok := t.env.Daemon.Adapter(connector).(crm.UserDirectory); ok {
		users, _ := a.Users(context.Background())
		if n := crm.NameOf(users, ext); n != "" {
			return n + " (" + ext + ")"
		}
	}
	return t.names[connector].label(ext)
}

// employeeList is "101 Ivan Petrov, 102 Maria Sidorova, ..." as connector knows them.
func (t *demoTally) employeeList(connector string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.names[connector]
	exts := sortedKeys(e)
	parts := make([]string, 0, len(exts))
	for _, x := range exts {
		parts = append(parts, x+" "+e[x])
	}
	return strings.Join(parts, ", ")
}

func (t *demoTally) delivered(connector string, rec *call.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n[connector]++
	who := "nobody"
	if rec.AnsweredBy != "" {
		who = t.labelLocked(connector, rec.AnsweredBy)
	}
	fmt.Fprintf(t.out, "%s  %-5s %-8s %-13s %-12s answered by %-24s talk %3ds   [%s]\n",
		time.Now().Format("15:04:05"), shortName(connector), rec.Direction, rec.Customer,
		strings.ReplaceAll(string(rec.Disposition), "_", " "), who, rec.TalkSeconds, t.summaryLocked())
}

// printf writes a line of the demo's output; every write goes through the tally's lock because
// deliveries print from the daemon's goroutines.
func (t *demoTally) printf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.out, format, args...)
}

func (t *demoTally) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.summaryLocked()
}

func (t *demoTally) summaryLocked() string {
	names := []string{"b24-demo", "amo-demo", "kommo-demo"}
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", shortName(n), t.n[n]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
