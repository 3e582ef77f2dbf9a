package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/prometheus/client_golang/prometheus"
)

// maxHeldRecords bounds the finished calls held in memory while the outbox cannot write (disk
// full): beyond it the call model waits, which in turn slows the AMI reader. Telephony is never
// affected: Asterisk does not wait for its AMI clients.
const maxHeldRecords = 50000

// pbxRT is one running PBX: its source, its call model and the enqueuer of finished calls. The
// source can be replaced while the model keeps its calls (a reload that changes only how to
// reach the PBX: address, credentials); source, ready and firstSeen are guarded by
// Daemon.unitsMu, like the pbxs map.
type pbxRT struct {
	name    string
	cfg     config.PBX
	source  asterisk.Source
	builder *callmodel.Builder
	log     *slog.Logger
	d       *Daemon

	ready     <-chan struct{} // closed after the first login, when the source says so
	firstSeen atomic.Bool

	held    *recordQueue
	failing atomic.Int64  // records whose outbox write failed and that are not stored (or spilled) yet
	abandon chan struct{} // closed when stopping takes too long: unstored records are spilled
	spilled sync.Once
	grace   time.Duration // how long stop waits for the outbox (stopGrace when 0)

	// ledger keeps the calls in progress in the outbox; reconciled: the calls the previous run
	// left open were checked (model goroutine only).
	ledger     *ledger
	reconciled bool
	// gap recovers from the CDR the calls the daemon did not see (cdrgap.go).
	gap *cdrGap
	// exec runs functions on the model goroutine (pbxRT.inModel).
	exec chan func()
	// inflight are the records handed to the enqueuers and not stored yet, by key, with their
	// start (the CDR watermark must not pass them).
	infMu    sync.Mutex
	inflight map[string]time.Time

	events  chan asterisk.Event // from the source (and its successors) to the model
	src     *sourceRT
	quit    chan struct{} // closed by stop: the model drains, flushes and ends
	done    chan struct{} // closed when the model, the enqueuers and the ledger have ended
	stopped sync.Once
}

// sourceRT is one running source of a PBX.
type sourceRT struct {
	source asterisk.Source
	reg    *unitRegisterer // its metrics, taken out of the registry when it stops
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *pbxRT) loggedIn() bool {
	if p.firstSeen.Load() {
		return true
	}
	if p.ready != nil {
		select {
		case <-p.ready:
			p.firstSeen.Store(true)
			return true
		default:
			return false
		}
	}
	st := p.source.Status()
	if st.Connected || st.FirstLogin {
		p.firstSeen.Store(true)
		return true
	}
	return false
}

// newSource builds the source of p, registering its metrics on reg; vars are the channel
// variables its call model reads (callmodel.Options.Variables), whose VarSet events the AMI
// source passes whole.
func (d *Daemon) newSource(p config.PBX, vars []string, reg prometheus.Registerer) (asterisk.Source, error) {
	if d.opts.NewSource != nil {
		return d.opts.NewSource(p, d)
	}
	switch p.Type {
	case "ami":
		return ami.NewSource(ami.Options{
			Name:            p.Name,
			Address:         p.AMI.Address(),
			Username:        p.AMI.Username,
			Secret:          p.AMI.Secret.Value(),
			Auth:            p.AMI.Auth,
			Events:          p.AMI.Events,
			VarSetVariables: vars,
			PingInterval:    p.AMI.PingInterval,
			ConnectTimeout:  p.AMI.Timeout,
			Originate: ami.OriginateOptions{
				Channel:      p.Originate.Channel,
				Context:      p.Originate.Context,
				StateContext: p.Originate.StateContext,
				CallerID:     p.Originate.CallerID,
				RingTimeout:  p.Originate.RingTimeout,
				Precheck:     precheck(p.Originate.Precheck),
				AllowInUse:   p.Originate.AllowInUse,
			},
			Logger:     d.log.With("component", "ami"),
			Registerer: reg,
		})
	case "ari":
		return newARISource(p, d, reg)
	}
	return nil, fmt.Errorf("pbx %s: unknown type %q", p.Name, p.Type)
}

func precheck(s string) string {
	if s == "none" {
		return ami.PrecheckNone
	}
	return ami.PrecheckExtensionState
}

// startPBX starts reading one PBX.
func (d *Daemon) startPBX(ctx context.Context, pc *config.PBX) error {
	opts, err := pc.Calls.Compile(d.norm.Normalize)
	if err != nil {
		return fmt.Errorf("pbx %s: calls: %w", pc.Name, err)
	}
	p := &pbxRT{
		name:     pc.Name,
		cfg:      *pc,
		log:      d.log.With("pbx", pc.Name),
		d:        d,
		held:     newRecordQueue(maxHeldRecords),
		events:   make(chan asterisk.Event, 1024),
		exec:     make(chan func()),
		inflight: map[string]time.Time{},
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		abandon:  make(chan struct{}),
	}
	p.builder = callmodel.NewBuilder(opts, p)
	p.ledger = newLedger(d.store, pc.Name, p.log, d.now)
	p.ledger.customerOf = d.click.customer
	p.ledger.setLeaveToCDR(pc.CDR != nil)
	if p.gap, err = newCDRGap(ctx, p, pc, opts); err != nil {
		return err
	}
	d.m.initPBX(pc.Name)
	src, err := p.startSource(ctx, *pc, opts.Variables())
	if err != nil {
		p.gap.stop()
		return fmt.Errorf("pbx %s: %w", pc.Name, err)
	}
	p.setSource(src)
	// The ledger outlives the source: it writes the records of the final Flush too.
	ledgerCtx, ledgerStop := context.WithCancel(context.WithoutCancel(ctx))
	ledgerDone := make(chan struct{})
	go func() { defer close(ledgerDone); p.ledger.run(ledgerCtx) }()

	var enq sync.WaitGroup
	for range 4 {
		enq.Add(1)
		go func() { defer enq.Done(); p.enqueueLoop() }()
	}
	go func() {
		defer close(p.done)
		p.modelLoop()
		p.gap.stop()
		// The PBX stops: finish every open call from what is known.
		p.builder.Flush(d.now(), true)
		p.held.close()
		enq.Wait()
		ledgerStop()
		<-ledgerDone
	}()

	d.unitsMu.Lock()
	d.pbxs[pc.Name] = p
	d.unitsMu.Unlock()
	p.log.Info("reading PBX", "type", pc.Type)
	return nil
}

// startSource builds and runs a source for pc that feeds p.events.
func (p *pbxRT) startSource(ctx context.Context, pc config.PBX, vars []string) (*sourceRT, error) {
	reg := newUnitRegisterer(p.d.reg)
	src, err := p.d.newSource(pc, vars, reg)
	if err != nil {
		reg.unregisterAll()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &sourceRT{source: src, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := src.Run(sctx, p.events); err != nil && !errors.Is(err, context.Canceled) {
			p.log.Error("PBX source stopped", "err", err)
		}
	}()
	return s, nil
}

// setSource makes s the PBX's source (under the daemon's units lock).
func (p *pbxRT) setSource(s *sourceRT) {
	p.d.unitsMu.Lock()
	defer p.d.unitsMu.Unlock()
	p.src, p.source, p.ready = s, s.source, nil
	p.firstSeen.Store(false)
	if r, ok := s.source.(interface{ Ready() <-chan struct{} }); ok {
		p.ready = r.Ready()
	}
}

// stopSource stops a source and takes its metrics out of the registry.
func (s *sourceRT) stop() {
	s.cancel()
	<-s.done
	s.reg.unregisterAll()
}

// swapSource replaces the PBX's source with one for pc (same call recognition, other
// connection settings) while the call model keeps every call in progress: the new source's
// first login takes a snapshot, which tells the model what happened meanwhile. If the new
// source cannot be built, the old settings are restored.
func (p *pbxRT) swapSource(ctx context.Context, pc config.PBX) error {
	opts, err := pc.Calls.Compile(p.d.norm.Normalize)
	if err != nil {
		return fmt.Errorf("pbx %s: calls: %w", pc.Name, err)
	}
	old := p.cfg
	// Events are missed between the two connections: a gap for the CDR recovery.
	_ = p.inModel(ctx, func() { p.gap.event(&asterisk.Event{Type: asterisk.TypeDisconnected, Time: p.d.now()}) })
	p.src.stop()
	s, err := p.startSource(ctx, pc, opts.Variables())
	if err != nil {
		back, berr := p.startSource(ctx, old, opts.Variables())
		if berr == nil {
			p.setSource(back)
		}
		return fmt.Errorf("pbx %s: %w", pc.Name, err)
	}
	p.setSource(s)
	p.d.unitsMu.Lock()
	p.cfg = pc
	p.d.unitsMu.Unlock()
	p.ledger.setLeaveToCDR(pc.CDR != nil)
	if err := p.gap.configure(&pc, opts); err != nil {
		p.log.Error("the new cdr block cannot be used; calls are not recovered from the CDR", "err", err)
	}
	p.log.Info("PBX connection settings changed: reconnected, calls in progress kept")
	return nil
}

// stopGrace is how long stopping a PBX waits for the outbox to take its finished calls; then
// the calls it still holds are written to the spill file (Daemon.spill) and the PBX stops.
const stopGrace = 10 * time.Second

// stop stops the source, then the model (which flushes its open calls into the outbox). It
// never waits forever: after stopGrace the records the outbox would not take are spilled.
func (p *pbxRT) stop() {
	p.stopped.Do(func() {
		p.src.stop()
		close(p.quit)
	})
	grace := p.grace
	if grace == 0 {
		grace = stopGrace
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	p.spilled.Do(func() {
		p.log.Error("the outbox still cannot store this PBX's finished calls; writing them to the spill file so that stopping can finish",
			"held", p.held.len(), "spill", p.d.spillPath())
		close(p.abandon)
	})
	<-p.done
}

// modelLoop feeds events to the call model until the PBX stops (its source has stopped and its
// events are consumed). It polls nothing: its one timer runs only while work is due (modelTimer).
func (p *pbxRT) modelLoop() {
	mt := modelTimer{p: p, open: p.d.m.openCalls.WithLabelValues(p.name), lastOpen: -1, gap: p.gap.enabled()}
	mt.t = time.NewTimer(time.Hour)
	mt.t.Stop()
	defer mt.t.Stop()
	for {
		select {
		case ev := <-p.events:
			p.apply(&ev)
			mt.events = true
			mt.arm()
		case fn := <-p.exec:
			fn()
			mt.gap = p.gap.enabled() // a reload may have changed the cdr block
			mt.arm()
		case <-mt.t.C:
			mt.fire()
		case <-p.quit:
			for {
				select {
				case ev := <-p.events:
					p.apply(&ev)
				default:
					return
				}
			}
		}
	}
}

// modelGapTick is how often the CDR watermark is moved while events come (or records wait to
// be stored).
const modelGapTick = time.Second

// modelTimer is the model goroutine's timer: it fires when a call's FinishDelay has passed, when
// the oldest open call reaches MaxCallAge (Flush finishes both), and, with a cdr block, once a
// second while events come or records wait to be stored (the CDR watermark). Without calls and
// events it is stopped: an idle PBX costs no wake-up.
type modelTimer struct {
	p        *pbxRT
	t        *time.Timer
	at       time.Time // when t fires; zero: stopped
	ageAt    time.Time // when the oldest open call reaches MaxCallAge; zero: not computed
	gapAt    time.Time // the next watermark tick; zero: none due
	gap      bool      // the PBX has a cdr block
	events   bool      // events came since the last watermark tick
	open     prometheus.Gauge
	lastOpen int
}

// arm updates the open-calls gauge and (re)arms the timer for the earliest work due.
func (m *modelTimer) arm() {
	b := m.p.builder
	n := b.Open()
	if n != m.lastOpen {
		m.open.Set(float64(n))
		m.lastOpen = n
	}
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	earliest(b.NextFinish())
	if n > 0 {
		if m.ageAt.IsZero() {
			m.ageAt = b.OldestStart().Add(m.maxAge())
		}
		earliest(m.ageAt)
	} else {
		m.ageAt = time.Time{}
	}
	if m.gap && m.gapAt.IsZero() && (m.events || !m.p.inflightOldest().IsZero()) {
		m.gapAt = m.p.d.now().Add(modelGapTick)
	}
	earliest(m.gapAt)
	if next.Equal(m.at) {
		return
	}
	m.at = next
	if next.IsZero() {
		m.t.Stop()
		return
	}
	m.t.Reset(max(next.Sub(m.p.d.now()), 0))
}

// fire does the work due: Flush, the watermark.
func (m *modelTimer) fire() {
	m.at = time.Time{}
	now := m.p.d.now()
	m.p.builder.Flush(now, false)
	m.ageAt = time.Time{} // the oldest call may have gone
	if !m.gapAt.IsZero() && !now.Before(m.gapAt) {
		m.p.gap.tick()
		m.gapAt, m.events = time.Time{}, false
	}
	m.arm()
}

// maxAge is the age at which Flush finishes an open call (the default when unset: Flush then
// only forgets old entries, which can wait as long).
func (m *modelTimer) maxAge() time.Duration {
	if a := m.p.builder.MaxCallAge(); a > 0 {
		return a
	}
	return callmodel.DefaultMaxCallAge
}

func (p *pbxRT) apply(ev *asterisk.Event) {
	boundEvent(ev, p.cut)
	p.builder.Apply(ev)
	if ev.Type == asterisk.TypeSnapshotEnd && !p.reconciled {
		p.reconcile(ev)
	}
	p.gap.event(ev)
}

// cut counts a field cut to its maximum length at intake.
func (p *pbxRT) cut(kind string) { p.d.m.intakeCut.WithLabelValues(kind).Inc() }

// reconcile finishes, at the first complete channel snapshot, the calls the previous run left
// open that are no longer up (see the ledger).
func (p *pbxRT) reconcile(ev *asterisk.Event) {
	if msg := ev.Vars["error"]; msg != "" {
		p.log.Warn("cannot check the calls that were in progress when pbxbridge last stopped: the channel snapshot failed; checking again at the next reconnect", "err", msg)
		return
	}
	p.reconciled = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := p.ledger.recover(ctx, p.builder.Has)
	if err != nil {
		p.log.Error("cannot read the calls that were in progress when pbxbridge last stopped", "err", err)
	}
	for _, r := range recs {
		p.log.Info("a call in progress when pbxbridge stopped ended while it was down; recording what was known",
			"call", r.Key(), "direction", r.Direction, "customer", r.Customer, "disposition", r.Disposition, "ended_by", r.EndedAt)
		p.d.m.endedUnseen.WithLabelValues(p.name).Inc()
		p.Record(r)
	}
}

// Live implements callmodel.Output: fan the event out to the connectors that want it.
func (p *pbxRT) Live(ev *call.Live) {
	if ev.PBX == "" {
		ev.PBX = p.name
	}
	p.ledger.live(ev)
	for _, c := range p.d.routes() {
		if !c.route.wantsLive(ev) || !c.allowed() || !c.route.liveLogged(ev) {
			continue
		}
		if ev.Ext != "" && !c.extAllowed(ev.Ext) {
			continue
		}
		c.pushLive(ev)
	}
}

// Record implements callmodel.Output: hand the finished call to the enqueuers.
func (p *pbxRT) Record(rec *call.Record) {
	if rec.PBX == "" {
		rec.PBX = p.name
	}
	p.d.m.calls.WithLabelValues(p.name, string(rec.Direction), string(rec.Disposition)).Inc()
	p.ledger.finished(rec.Key())
	p.infMu.Lock()
	if p.inflight == nil {
		p.inflight = map[string]time.Time{}
	}
	p.inflight[rec.Key()] = rec.StartedAt
	p.infMu.Unlock()
	p.held.push(rec)
}

// inflightHas reports whether a record of key was handed over and is not stored yet.
func (p *pbxRT) inflightHas(key string) bool {
	p.infMu.Lock()
	defer p.infMu.Unlock()
	_, ok := p.inflight[key]
	return ok
}

// inflightOldest returns the start of the oldest record not stored yet (zero: none).
func (p *pbxRT) inflightOldest() time.Time {
	p.infMu.Lock()
	defer p.infMu.Unlock()
	var t time.Time
	for _, s := range p.inflight {
		if t.IsZero() || s.Before(t) {
			t = s
		}
	}
	return t
}

// enqueueLoop writes finished calls to the outbox, retrying until it succeeds: a call is never
// dropped because the disk is full for a while.
func (p *pbxRT) enqueueLoop() {
	for {
		rec, ok := p.held.pop() // counted by held.len() until released: never in neither place
		if !ok {
			return
		}
		p.store(rec)
		p.held.release()
	}
}

// done1 forgets rec as in flight: it is stored (or spilled, imported at the next start).
func (p *pbxRT) done1(rec *call.Record) {
	p.infMu.Lock()
	delete(p.inflight, rec.Key())
	p.infMu.Unlock()
}

// store writes rec to the outbox, retrying with backoff while the outbox cannot write; once the
// PBX gives up waiting (stop past its grace) rec goes to the spill file instead.
func (p *pbxRT) store(rec *call.Record) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := p.d.enqueue(context.Background(), rec)
		if err == nil {
			if attempt > 1 {
				p.failing.Add(-1)
			}
			p.done1(rec)
			return
		}
		p.d.m.outboxWriteErrors.Inc()
		if attempt == 1 {
			p.failing.Add(1)
			p.log.Error("cannot store a finished call; holding it in memory and retrying", "call", rec.Key(), "err", err)
		} else {
			p.log.Debug("storing a held call failed again", "call", rec.Key(), "attempt", attempt, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.abandon:
			t.Stop()
			p.d.spill(rec, err)
			p.failing.Add(-1)
			p.done1(rec)
			return
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// enqueue routes rec and stores it in the outbox, one row per connector that wants it.
func (d *Daemon) enqueue(ctx context.Context, rec *call.Record) error {
	var names, hookSaidNo []string
	var hookTL []outbox.TimelineEntry // what log_if hooks answered, for the timeline
	for _, c := range d.routes() {
		if !c.route.wants(rec) {
			continue
		}
		if c.route.logIf != nil {
			tctx := crm.WithTrace(ctx, func(kind, summary, detail string) {
				hookTL = append(hookTL, outbox.TimelineEntry{Connector: c.name, Kind: kind, Summary: summary, Detail: detail})
			})
			if !c.route.logged(tctx, rec) {
				hookSaidNo = append(hookSaidNo, c.name)
				continue
			}
		}
		names = append(names, c.name)
	}
	payload, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding call %s: %w", rec.Key(), err)
	}
	// One durable commit per call: the rows and the timeline's "call" and "routing" entries
	// (and who asked for it, for a click-to-call the daemon placed).
	tl := []outbox.TimelineEntry{{At: rec.EndedAt, Kind: "call", Summary: rec.Summary(), Detail: string(payload)}}
	if rec.HasFlag(call.FlagRecoveredFromCDR) {
		tl = append(tl, outbox.TimelineEntry{Kind: "recovered", Summary: "recovered from the CDR: the daemon did not see this call"})
	}
	if e, ok := d.click.timeline(rec); ok {
		tl = append(tl, e)
	}
	tl = append(tl, hookTL...)
	if len(names) == 0 {
		reason := unroutedReason(rec, d.routes())
		if len(hookSaidNo) > 0 {
			reason = "the log_if hook of " + strings.Join(hookSaidNo, ", ") + " said no; the other connectors' pbx, directions or filters exclude it"
		}
		tl = append(tl, outbox.TimelineEntry{Kind: "routing", Summary: "not sent to any CRM: " + reason})
		if err := d.store.AppendTimeline(ctx, rec.Key(), tl...); err != nil {
			return err
		}
		// Counted and listed once it is stored: a write retried after a full disk is one call.
		d.m.unrouted.WithLabelValues(string(rec.Direction)).Inc()
		d.recent.add(rec, names)
		d.click.forget(rec.OriginateID)
		return nil
	}
	tl = append(tl, outbox.TimelineEntry{Kind: "routing", Summary: "queued for " + strings.Join(names, ", ")})
	if err := d.store.Enqueue(ctx, outbox.Entry{Key: rec.Key(), StartedAt: rec.StartedAt, Payload: payload, Connectors: names,
		Timeline: tl}); err != nil {
		return err
	}
	d.recent.add(rec, names)
	d.click.forget(rec.OriginateID)
	d.wake(names)
	d.log.Debug("call stored for delivery", "call", rec.Key(), "direction", rec.Direction, "customer", rec.Customer,
		"line", rec.Line, "disposition", rec.Disposition, "connectors", names)
	return nil
}

// wake tells the named connectors' workers that work is due.
func (d *Daemon) wake(names []string) {
	for _, c := range d.routes() {
		for _, n := range names {
			if c.name == n {
				c.worker.Wake()
			}
		}
	}
}

func unroutedReason(r *call.Record, conns []*connRT) string {
	if len(conns) == 0 {
		return "no connector is configured"
	}
	if r.Direction == call.Internal {
		return "internal calls are not sent (add internal to a connector's directions to send them)"
	}
	return "every connector's pbx, directions or filters exclude it"
}

// stopPBX stops one PBX: the source disconnects, the open calls are finished and stored.
func (d *Daemon) stopPBX(name string) {
	d.unitsMu.Lock()
	p, ok := d.pbxs[name]
	delete(d.pbxs, name)
	d.unitsMu.Unlock()
	if !ok {
		return
	}
	p.stop()
	p.log.Info("PBX reader stopped")
}

func (d *Daemon) stopAllPBX() {
	d.unitsMu.Lock()
	names := make([]string, 0, len(d.pbxs))
	for n := range d.pbxs {
		names = append(names, n)
	}
	d.unitsMu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopPBX(n) }()
	}
	wg.Wait()
}

// recordQueue is an in-memory FIFO of finished calls between the model and the enqueuers.
type recordQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []*call.Record
	taken  int // popped and not released yet: being stored
	max    int
	closed bool
}

func newRecordQueue(max int) *recordQueue {
	q := &recordQueue{max: max}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push adds rec, waiting while the queue is full.
func (q *recordQueue) push(rec *call.Record) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) >= q.max && !q.closed {
		q.cond.Wait()
	}
	q.items = append(q.items, rec)
	q.cond.Broadcast()
}

// pop returns the oldest record, waiting for one; false once closed and empty.
func (q *recordQueue) pop() (*call.Record, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return nil, false
	}
	rec := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	q.taken++
	q.cond.Broadcast()
	return rec, true
}

// release ends what pop began: the popped record is stored (or spilled).
func (q *recordQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.taken--
}

// len is how many records wait in the queue or are being stored (popped, not released).
func (q *recordQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) + q.taken
}

// close makes pop return false once the queue is empty.
func (q *recordQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
