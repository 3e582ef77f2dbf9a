package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// CDR gap recovery. AMI does not replay what happened while nobody listened, so a call that
// began and ended while the daemon was down (killed, restarting) or its PBX connection was lost
// leaves no event; the PBX's Call Detail Records have it. For every PBX with a pbx[].cdr block:
//
//   - The model goroutine keeps a watermark: every call that began before it is accounted
//     for (its record is stored, or the model or the open-calls ledger has it). It is the
//     oldest of the last event applied, the start of the oldest call the model still follows
//     and the start of the oldest record not yet committed to the outbox; while a gap waits to
//     be recovered it stays at the gap's start. The watermark is written to the outbox's meta
//     table lazily, once a second when it changed (gapMetaPrefix+pbx), so a restart knows
//     where the last run's knowledge ended. The first run with a cdr block writes its start
//     time at once (durably), so even a run killed in its first second leaves one.
//   - A gap opens at a lost connection (at the watermark then) or at start (at the watermark
//     the last run left) and ends at the next login. After the first complete channel snapshot
//     that follows (the model then knows every call still up, and the ledger has finished the
//     calls it kept), the gap's goroutine waits pbx[].cdr.delay (Asterisk writes a call's rows
//     when it ends, Master.csv a moment later, batch mode later still) and reads the calls that
//     began in [start - cdrSlack, login + cdrSlack) (cdr.ReadCalls, cdrMargin around it); and
//     once more cdrRecheck delays later, for rows written late, before the gap closes. A call
//     that began in the gap and was still up at the login has its record from the model
//     (which learnt it from the snapshot), whenever its rows are written.
//   - Each CDR call is turned into a record (callmodel.FromCDR, flag recovered_from_cdr) and
//     dropped if the call is known: first, in the model goroutine, if the model has any of its
//     rows' uniqueids, linkedids or channel names, or a record of that key is on its way to the
//     outbox; then if the outbox has stored a record of that key (the live model's, the
//     ledger's, or an earlier recovery's). Whichever of them came first wins; a call is never
//     recorded twice. The rest are handed to the enqueuers like any other record.
//   - A failed read (file missing, database down, a timeout) is logged, counted
//     (pbxbridge_cdr_recoveries_total{result="error"}), shown as a failing check
//     (pbx/<name>/cdr) and retried with backoff; the gap stays open, so a restart retries it
//     too. Intake never waits for it: only the in-memory check runs on the model goroutine.
const (
	gapMetaPrefix = "cdr.watermark/"
	// cdrSlack widens the window on both sides: CDR times are whole seconds (truncated) and
	// the PBX's clock may differ from the daemon's by a moment. Calls in the slack that the
	// daemon saw are known and skipped.
	cdrSlack = 2 * time.Second
	// cdrMargin is read around the window so that a call that began before it but was
	// transferred inside it is not taken for a call of its own (cdr.ReadCalls).
	cdrMargin = time.Hour
	// cdrTimeout bounds one recovery (reading, checking, handing over).
	cdrTimeout = 2 * time.Minute
	// cdrRecheck: a gap is read a second time this many delays after the first read, for the
	// rows Asterisk wrote late (a slow disk, batch mode a little longer than the delay); it
	// stays open (and the watermark with it) until then.
	cdrRecheck = 3
	// cdrRetry is the first delay after a failed recovery; it doubles up to cdrRetryMax.
	cdrRetry    = 30 * time.Second
	cdrRetryMax = 5 * time.Minute
)

// gapWindow is a gap to recover: calls that began in [from, to).
type gapWindow struct {
	from, to time.Time
	gen      uint64 // the gap generation it was asked for (cdrGap.gen)
	// final: the second read, cdrRecheck × delay after the first, for rows written late; the
	// gap closes after it.
	final bool
}

// cdrGap is one PBX's gap recovery. It exists for every PBX; without a cdr block it keeps no
// watermark and recovers nothing.
type cdrGap struct {
	p   *pbxRT
	log *slog.Logger

	// Model goroutine only.
	lastEvent   time.Time
	pending     bool
	pendingFrom time.Time
	pendingTo   time.Time
	gen         uint64

	mark  atomic.Int64   // the watermark to persist, unix nanoseconds (0: nothing to write)
	moved chan struct{}  // the watermark moved: the loop persists it within cdrPersist
	req   chan gapWindow // the latest gap to recover, to the loop

	mu       sync.Mutex // guards the fields below
	src      cdr.Source // nil: no cdr block
	closeSrc func() error
	cfg      config.CDR
	opts     callmodel.Options
	lastErr  string
	lastRun  string
	bad      int   // malformed records skipped by the read in progress
	firstBad error // the first of them

	cancel context.CancelFunc
	done   chan struct{}
}

// newCDRGap builds the recovery of p from its config and starts its goroutine. The watermark
// the last run left (read now) opens the first gap.
func newCDRGap(ctx context.Context, p *pbxRT, pc *config.PBX, opts callmodel.Options) (*cdrGap, error) {
	g := &cdrGap{p: p, log: p.log.With("component", "cdr"), req: make(chan gapWindow, 1), moved: make(chan struct{}, 1), done: make(chan struct{})}
	if err := g.configure(pc, opts); err != nil {
		return nil, err
	}
	if g.enabled() {
		b, err := p.d.store.GetMeta(ctx, gapMetaPrefix+p.name)
		if err != nil {
			g.log.Warn("cannot read where the last run's knowledge of calls ended; calls of the outage before this start are not recovered", "err", err)
		}
		if len(b) > 0 {
			t, err := time.Parse(time.RFC3339Nano, string(b))
			if err != nil {
				g.log.Warn("ignoring an unreadable CDR watermark", "value", string(b), "err", err)
			} else {
				g.pending, g.pendingFrom = true, t
				g.mark.Store(t.UnixNano())
				p.d.m.cdrPending.WithLabelValues(p.name).Set(1)
				g.log.Info("the calls since the last run's last event will be recovered from the CDR after the first login", "since", t)
			}
		} else {
			// The first run with a cdr block: nothing before it is recovered, but everything
			// from now on is, should this run die before its first watermark is written.
			now := p.d.now()
			if err := p.d.store.SetMeta(ctx, gapMetaPrefix+p.name, []byte(now.UTC().Format(time.RFC3339Nano))); err != nil {
				g.log.Warn("cannot store the first CDR watermark", "err", err)
			}
			g.mark.Store(now.UnixNano())
			g.log.Info("no CDR watermark yet (the first run with a cdr block): calls from now on can be recovered from the CDR")
		}
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	go func() { defer close(g.done); g.loop(lctx) }()
	return g, nil
}

// configure sets the CDR source (nil block: none), closing the previous one. Safe from any
// goroutine (a reload changes it while the model runs).
func (g *cdrGap) configure(pc *config.PBX, opts callmodel.Options) error {
	if g == nil {
		return nil
	}
	var cfg config.CDR
	if pc.CDR != nil {
		cfg = *pc.CDR
	}
	src, closeSrc, err := OpenCDR(pc, g.badRecord)
	if err != nil {
		return err
	}
	g.mu.Lock()
	old := g.closeSrc
	g.src, g.closeSrc, g.cfg, g.opts = src, closeSrc, cfg, opts
	g.lastErr = ""
	g.mu.Unlock()
	if old != nil {
		_ = old()
	}
	if src != nil {
		g.p.d.m.cdrPending.WithLabelValues(g.p.name).Add(0)
		g.p.d.m.recoveredCDR.WithLabelValues(g.p.name).Add(0)
	}
	return nil
}

// OpenCDR opens the CDR source of a PBX (nil when it has no cdr block) and returns it with its
// close function. It does not touch the file or the database: the first Read does. onBad, when
// set, is told of malformed records, which are then skipped.
func OpenCDR(pc *config.PBX, onBad func(*cdr.RecordError)) (cdr.Source, func() error, error) {
	none := func() error { return nil }
	if pc.CDR == nil {
		return nil, none, nil
	}
	switch c := pc.CDR; {
	case c.CSV != nil:
		v := c.CSV
		r, err := cdr.NewCSVReader(cdr.CSVConfig{Path: v.Path, LogUniqueID: v.LogUniqueID, LogUserField: v.LogUserField,
			NewCDRColumns: v.NewCDRColumns, UseGMTime: v.UseGMTime, Location: config.Location(v.Timezone),
			MaxCallAge: v.MaxCallAge, OnBadRecord: onBad})
		if err != nil {
			return nil, none, fmt.Errorf("pbx %s: cdr: %w", pc.Name, err)
		}
		return r, none, nil
	case c.MySQL != nil:
		v := c.MySQL
		r, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: v.DSN.Value(), Table: v.Table, Location: config.Location(v.Timezone),
			QueryTimeout: v.QueryTimeout, OnBadRecord: onBad})
		if err != nil {
			return nil, none, fmt.Errorf("pbx %s: cdr: %w", pc.Name, err)
		}
		return r, r.Close, nil
	}
	return nil, none, nil
}

func (g *cdrGap) enabled() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.src != nil
}

// badRecord is told of a malformed CDR record, which is skipped; recover reports them once per
// read (a csv block that does not match cdr.conf makes every record malformed).
func (g *cdrGap) badRecord(e *cdr.RecordError) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bad == 0 {
		g.firstBad = e
	}
	g.bad++
}

// stop ends the goroutine, writes the watermark a last time and closes the source.
func (g *cdrGap) stop() {
	if g == nil {
		return
	}
	g.cancel()
	<-g.done
	g.mu.Lock()
	closeSrc := g.closeSrc
	g.closeSrc = nil
	g.mu.Unlock()
	if closeSrc != nil {
		_ = closeSrc()
	}
}

// event follows the PBX's events (model goroutine): the last event applied, gaps opening at a
// lost connection and closing at a login, and the snapshot after which a gap can be read.
func (g *cdrGap) event(ev *asterisk.Event) {
	if g == nil {
		return
	}
	switch ev.Type {
	case asterisk.TypeConnected:
		if g.pending && g.pendingTo.IsZero() {
			g.pendingTo = ev.Time
		}
	case asterisk.TypeDisconnected:
		if !g.enabled() {
			return
		}
		if !g.pending {
			g.pending, g.pendingFrom = true, g.floor()
			if g.pendingFrom.IsZero() {
				g.pendingFrom = ev.Time
			}
			g.p.d.m.cdrPending.WithLabelValues(g.p.name).Set(1)
		}
		g.gen++
		g.pendingTo = time.Time{}
		g.mark.Store(g.pendingFrom.UnixNano())
		g.log.Debug("a gap opened: its calls will be read from the CDR after the next login", "since", g.pendingFrom)
	case asterisk.TypeSnapshotEnd:
		if ev.Vars["error"] != "" || !g.pending || g.pendingTo.IsZero() {
			return
		}
		w := gapWindow{from: g.pendingFrom, to: g.pendingTo, gen: g.gen}
		g.log.Debug("reading the CDR of the gap after pbx.cdr.delay", "from", w.from, "to", w.to)
		select {
		case <-g.req: // a newer window supersedes the one not started yet
		default:
		}
		g.req <- w
	case asterisk.TypeSnapshot:
	default:
		if ev.Time.After(g.lastEvent) {
			g.lastEvent = ev.Time
		}
	}
}

// tick publishes the watermark (model goroutine: once a second while events come or records
// wait to be stored, see pbxRT.modelLoop).
func (g *cdrGap) tick() {
	if g == nil || !g.enabled() {
		return
	}
	t := g.pendingFrom
	if !g.pending {
		t = g.floor()
	}
	if !t.IsZero() && g.mark.Swap(t.UnixNano()) != t.UnixNano() {
		select {
		case g.moved <- struct{}{}:
		default:
		}
	}
}

// floor is the watermark when no gap is open: the oldest of the last event, the oldest call in
// progress and the oldest record not yet stored (zero when none of them is known).
func (g *cdrGap) floor() time.Time {
	t := g.lastEvent
	for _, u := range []time.Time{g.p.builder.OldestStart(), g.p.inflightOldest()} {
		if !u.IsZero() && (t.IsZero() || u.Before(t)) {
			t = u
		}
	}
	return t
}

// recovered closes the gap w was asked for, unless another opened since (model goroutine).
func (g *cdrGap) recovered(w gapWindow) {
	if !g.pending || g.gen != w.gen {
		return
	}
	g.pending, g.pendingFrom, g.pendingTo = false, time.Time{}, time.Time{}
	g.p.d.m.cdrPending.WithLabelValues(g.p.name).Set(0)
	g.tick()
}

// cdrPersist bounds how often the watermark is written while it moves.
const cdrPersist = time.Second

// loop persists the watermark (at most every cdrPersist, only when it moved) and runs the
// recoveries asked for, one at a time.
func (g *cdrGap) loop(ctx context.Context) {
	persistT := time.NewTimer(time.Hour)
	persistT.Stop()
	defer persistT.Stop()
	armed := false
	var written int64
	// persist writes the watermark if it moved; false when the write failed.
	persist := func(ctx context.Context) bool {
		m := g.mark.Load()
		if m == 0 || m == written || !g.enabled() {
			return true
		}
		v := time.Unix(0, m).UTC().Format(time.RFC3339Nano)
		if err := g.p.d.store.SetMetaLazy(ctx, gapMetaPrefix+g.p.name, []byte(v)); err != nil {
			if ctx.Err() == nil {
				g.log.Warn("cannot store the CDR watermark; retrying", "err", err)
			}
			return false
		}
		written = m
		return true
	}
	defer func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		persist(pctx)
		cancel()
	}()

	var next *gapWindow
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	retry := cdrRetry
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.moved:
			if !armed {
				armed = true
				persistT.Reset(cdrPersist)
			}
		case <-persistT.C:
			armed = !persist(ctx)
			if armed {
				persistT.Reset(cdrPersist)
			}
		case w := <-g.req:
			next = &w
			retry = cdrRetry
			timer.Reset(g.delay())
		case <-timer.C:
			if next == nil {
				continue
			}
			w := *next
			if err := g.recover(ctx, w); err != nil {
				if ctx.Err() != nil {
					return
				}
				g.log.Error("cannot recover from the CDR the calls of a gap; retrying", "from", w.from, "to", w.to,
					"retry_in", retry, "err", err)
				timer.Reset(retry)
				retry = min(2*retry, cdrRetryMax)
				continue
			}
			if !w.final {
				w.final = true
				next = &w
				timer.Reset(cdrRecheck * g.delay())
				continue
			}
			next = nil
		}
	}
}

func (g *cdrGap) delay() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg.Delay
}

// recover reads the calls of w from the CDR and hands over those nobody knows.
func (g *cdrGap) recover(ctx context.Context, w gapWindow) (err error) {
	g.mu.Lock()
	src, cfg, opts := g.src, g.cfg, g.opts
	g.mu.Unlock()
	p := g.p
	m := p.d.m
	if src == nil {
		// No cdr block (any more): nothing can be recovered.
		return p.inModel(ctx, func() { g.recovered(w) })
	}
	var badNote string // malformed records: the read succeeds, the check still fails
	defer func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		switch {
		case err != nil:
			m.cdrRecoveries.WithLabelValues(p.name, "error").Inc()
			g.lastErr = fmt.Sprintf("%s: %v", time.Now().Format(time.RFC3339), err)
		case badNote != "":
			m.cdrRecoveries.WithLabelValues(p.name, "ok").Inc()
			g.lastErr = fmt.Sprintf("%s: %s", time.Now().Format(time.RFC3339), badNote)
		default:
			m.cdrRecoveries.WithLabelValues(p.name, "ok").Inc()
			g.lastErr = ""
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, cdrTimeout)
	defer cancel()

	from, to := w.from.Add(-cdrSlack), w.to.Add(cdrSlack)
	if cfg.MaxGap > 0 && to.Sub(from) > cfg.MaxGap {
		g.log.Warn("the gap is longer than pbx.cdr.max_gap: its older calls are not recovered",
			"gap_from", w.from, "gap_to", w.to, "max_gap", cfg.MaxGap)
		from = to.Add(-cfg.MaxGap)
	}
	g.mu.Lock()
	g.bad, g.firstBad = 0, nil
	g.mu.Unlock()
	calls, err := readCalls(ctx, src, from, to)
	if err != nil {
		return err
	}
	g.mu.Lock()
	bad, firstBad := g.bad, g.firstBad
	g.mu.Unlock()
	if bad > 0 {
		badNote = fmt.Sprintf("%d malformed CDR records skipped (first: %v): check that pbx.cdr matches cdr.conf", bad, firstBad)
		g.log.Warn("malformed CDR records skipped: their calls cannot be recovered", "count", bad, "first", firstBad)
	}
	co := callmodel.CDROptions{PBX: p.name, RecordingDir: p.d.Config().Recordings.Dir}
	type candidate struct {
		rec *call.Record
		c   *cdr.Call
	}
	var cands []candidate
	for i := range calls {
		if rec := callmodel.FromCDR(&opts, &calls[i], co); rec != nil {
			cands = append(cands, candidate{rec, &calls[i]})
		}
	}
	// What the model follows, or is about to store, is known.
	var unknown []candidate
	if err := p.inModel(ctx, func() {
		names := map[string]bool{}
		for _, n := range p.builder.ChannelNames() {
			names[n] = true
		}
		for _, cd := range cands {
			if !p.known(cd.c, cd.rec.Key(), names) {
				unknown = append(unknown, cd)
			}
		}
	}); err != nil {
		return err
	}
	// What the outbox has stored is known.
	keys := make([]string, len(unknown))
	for i, cd := range unknown {
		keys[i] = cd.rec.Key()
	}
	stored, err := p.d.store.Stored(ctx, keys)
	if err != nil {
		return fmt.Errorf("checking the outbox: %w", err)
	}
	n := 0
	for _, cd := range unknown {
		if stored[cd.rec.Key()] {
			continue
		}
		n++
		r := cd.rec
		p.log.Info("call recovered from the CDR: the daemon did not see it", "call", r.Key(), "direction", r.Direction,
			"customer", p.d.redactNumber(r.Customer), "disposition", r.Disposition, "started", r.StartedAt)
		m.recoveredCDR.WithLabelValues(p.name).Inc()
		p.Record(r)
	}
	if w.final {
		if err := p.inModel(ctx, func() { g.recovered(w) }); err != nil {
			return err
		}
		if n > 0 {
			g.log.Info("calls of a gap recovered from rows the CDR wrote late", "gap_from", w.from, "gap_to", w.to, "recovered", n)
		}
		return nil
	}
	summary := fmt.Sprintf("gap %s – %s: %d calls in the CDR, %d known, %d recovered",
		w.from.Format(time.RFC3339), w.to.Format(time.RFC3339), len(cands), len(cands)-n, n)
	g.mu.Lock()
	g.lastRun = summary
	g.mu.Unlock()
	g.log.Info("CDR gap recovered", "gap_from", w.from, "gap_to", w.to, "read_from", from, "read_to", to,
		"calls_in_cdr", len(cands), "known", len(cands)-n, "recovered", n)
	return nil
}

// readCalls is cdr.ReadCalls that halves a window holding more rows than the reader's limit.
func readCalls(ctx context.Context, src cdr.Source, from, to time.Time) ([]cdr.Call, error) {
	calls, err := cdr.ReadCalls(ctx, src, from, to, cdrMargin)
	if errors.Is(err, cdr.ErrTooManyRows) && to.Sub(from) > 2*time.Minute {
		mid := from.Add(to.Sub(from) / 2).Truncate(time.Second)
		a, err := readCalls(ctx, src, from, mid)
		if err != nil {
			return nil, err
		}
		b, err := readCalls(ctx, src, mid, to)
		if err != nil {
			return nil, err
		}
		return append(a, b...), nil
	}
	return calls, err
}

// check is the status check of the recovery ("" name: no cdr block).
func (g *cdrGap) check() (name string, ok bool, detail string) {
	if g == nil {
		return "", false, ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.src == nil {
		return "", false, ""
	}
	if g.lastErr != "" {
		return "pbx/" + g.p.name + "/cdr", false, "the last recovery of calls from the CDR failed: " + g.lastErr
	}
	return "pbx/" + g.p.name + "/cdr", true, g.lastRun
}

// known reports whether the call of a CDR record is known to the model goroutine: the model
// follows one of its rows' channels (by uniqueid, linkedid or name), or a record with its key
// was handed over and is not stored yet. Model goroutine only.
func (p *pbxRT) known(c *cdr.Call, key string, names map[string]bool) bool {
	if p.builder.Knows(c.ID) || p.inflightHas(key) {
		return true
	}
	for i := range c.Rows {
		r := &c.Rows[i]
		if p.builder.Knows(r.UniqueID) || p.builder.Knows(r.LinkedID) || names[r.Channel] || names[r.DstChannel] && r.DstChannel != "" {
			return true
		}
	}
	return false
}

// inModel runs fn on the model goroutine and waits for it.
func (p *pbxRT) inModel(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case p.exec <- func() { fn(); close(done) }:
	case <-p.quit:
		return errors.New("the PBX reader is stopping")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
