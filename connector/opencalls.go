package connector

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// The open-calls ledger closes the one window the outbox alone leaves: a call that was in
// progress when the daemon died (crash, kill -9, power loss of the daemon's host only) and ended
// before it came back. The call model lives in memory, so such a call would otherwise never
// produce a record. The ledger keeps, per PBX, what the live events told about each open call
// (direction, customer, line, start, extensions rung, who answered) in the outbox database, and
// while calls are open a heartbeat row once a second (no timer runs while none is). The row of a call goes away with its
// record (in the Enqueue commit, or explicitly for records routed nowhere).
//
// After a restart, at the first complete snapshot of the PBX's channels (the source's first
// login), every row left by the previous run whose call the model did not learn from the
// snapshot is finished from what was known: flagged ended_unseen, ended at the last heartbeat
// (the last moment the call was known to be open), answered or missed as the live events said.
// A call still up is followed from the snapshot as usual.
//
// Writes are asynchronous, coalesced for ledgerDelay and then ride along in another commit of
// the outbox for up to ledgerDelay (under load the ledger costs no commit of its own), and never
// block the call model; a failed write is logged and retried with the next one.
const (
	ledgerDelay     = 10 * time.Millisecond
	ledgerHeartbeat = time.Second
	// heartbeatPrefix marks the heartbeat row of a PBX (not a call).
	heartbeatPrefix = "!alive/"
)

// openCall is what the ledger knows of a call in progress (the row's data, JSON).
type openCall struct {
	CallID     string         `json:"call_id"`
	Direction  call.Direction `json:"direction"`
	Customer   string         `json:"customer,omitempty"`
	Line       string         `json:"line,omitempty"`
	StartedAt  time.Time      `json:"started_at"`
	Rang       []string       `json:"rang,omitempty"`
	AnsweredBy string         `json:"answered_by,omitempty"`
	// CallerExt is the extension that placed an outbound call (its card: callmodel's outbound
	// LiveRinging).
	CallerExt   string     `json:"caller_ext,omitempty"`
	AnsweredAt  *time.Time `json:"answered_at,omitempty"`
	OriginateID string     `json:"originate_id,omitempty"`
	LastAt      time.Time  `json:"last_at"`
	// HungUpAt: the call ended (its record waits for the model's finish delay).
	HungUpAt *time.Time `json:"hung_up_at,omitempty"`
}

type ledger struct {
	store *outbox.Store
	pbx   string
	log   *slog.Logger
	now   func() time.Time
	// customerOf returns the customer's number of a click-to-call the daemon placed, by its
	// originate id ("" when unknown): while the agent's phone rings the live events carry no
	// customer, and a record made from the ledger needs one.
	customerOf func(originateID string) string
	// leaveToCDR: the PBX's CDR is read after a restart (cdrgap.go), so a call the ledger
	// cannot make a useful record of (no customer) is left to it.
	leaveToCDR atomic.Bool

	mu    sync.Mutex
	calls map[string]*openCall // by record key
	dirty map[string]bool
	gone  map[string]bool
	wake  chan struct{}
	warn  time.Time // last write failure logged
}

func newLedger(store *outbox.Store, pbx string, log *slog.Logger, now func() time.Time) *ledger {
	return &ledger{store: store, pbx: pbx, log: log, now: now, calls: map[string]*openCall{},
		dirty: map[string]bool{}, gone: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// live records what a live event says about its call.
func (l *ledger) live(ev *call.Live) {
	key := ev.Key()
	l.mu.Lock()
	c := l.calls[key]
	if c == nil {
		c = &openCall{CallID: ev.CallID, StartedAt: ev.StartedAt}
		l.calls[key] = c
	}
	c.Direction, c.LastAt = ev.Direction, ev.At
	if ev.Customer != "" {
		c.Customer = ev.Customer
	}
	if ev.Line != "" {
		c.Line = ev.Line
	}
	if ev.OriginateID != "" {
		c.OriginateID = ev.OriginateID
	}
	if c.Customer == "" && c.OriginateID != "" && l.customerOf != nil {
		c.Customer = l.customerOf(c.OriginateID)
	}
	if c.StartedAt.IsZero() || (!ev.StartedAt.IsZero() && ev.StartedAt.Before(c.StartedAt)) {
		c.StartedAt = ev.StartedAt
	}
	switch ev.Kind {
	case call.LiveRinging:
		switch {
		case ev.Direction == call.Outbound && c.CallerExt == "" && c.AnsweredAt == nil && ev.Customer != "":
			// The outbound call's card goes to the extension that dials: it placed the call,
			// it was not rung.
			c.CallerExt = ev.Ext
		case ev.Ext != "" && !slices.Contains(c.Rang, ev.Ext):
			c.Rang = append(c.Rang, ev.Ext)
		}
	case call.LiveAnswered:
		if c.AnsweredAt == nil {
			at := ev.At
			c.AnsweredAt, c.AnsweredBy = &at, ev.Ext
		}
	case call.LiveHangup:
		at := ev.At
		c.HungUpAt = &at
	}
	l.dirty[key] = true
	delete(l.gone, key)
	l.mu.Unlock()
	l.signal()
}

// setLeaveToCDR says whether a CDR source follows the ledger's recovery (see leaveToCDR).
func (l *ledger) setLeaveToCDR(v bool) { l.leaveToCDR.Store(v) }

// finished forgets the call of a record.
func (l *ledger) finished(key string) {
	l.mu.Lock()
	_, known := l.calls[key]
	delete(l.calls, key)
	delete(l.dirty, key)
	if known {
		l.gone[key] = true
	}
	l.mu.Unlock()
	if known {
		l.signal()
	}
}

func (l *ledger) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run writes the ledger until ctx ends, then once more. The heartbeat ticks only while calls
// are open: an idle PBX costs no wake-up.
func (l *ledger) run(ctx context.Context) {
	beat := time.NewTimer(time.Hour)
	beat.Stop()
	defer beat.Stop()
	beating := false
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	defer delay.Stop()
	for {
		if open := l.open(); open != beating {
			beating = open
			if open {
				beat.Reset(ledgerHeartbeat)
			} else {
				beat.Stop()
			}
		}
		select {
		case <-ctx.Done():
			l.flush(context.WithoutCancel(ctx), false)
			return
		case <-l.wake:
			delay.Reset(ledgerDelay)
			select {
			case <-delay.C:
			case <-ctx.Done():
				delay.Stop()
			}
			l.flush(ctx, false)
		case <-beat.C:
			beating = false // re-armed above while calls are open
			l.flush(ctx, true)
		}
	}
}

// open reports whether calls are open.
func (l *ledger) open() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls) > 0
}

// flush writes the changed calls, the finished ones' deletions and, when asked and calls are
// open, the heartbeat.
func (l *ledger) flush(ctx context.Context, heartbeat bool) {
	l.mu.Lock()
	var puts []outbox.OpenCall
	for key := range l.dirty {
		data, err := json.Marshal(l.calls[key])
		if err != nil {
			continue // cannot happen: plain fields
		}
		puts = append(puts, outbox.OpenCall{Key: key, PBX: l.pbx, Data: data})
	}
	gone := make([]string, 0, len(l.gone))
	for key := range l.gone {
		gone = append(gone, key)
	}
	if heartbeat && len(l.calls) > 0 {
		puts = append(puts, outbox.OpenCall{Key: heartbeatPrefix + l.pbx, PBX: l.pbx, Data: []byte("{}"), UpdatedAt: l.now()})
	}
	clear(l.dirty)
	clear(l.gone)
	l.mu.Unlock()
	if len(puts) == 0 && len(gone) == 0 {
		return
	}
	if err := l.store.PutOpenCallsWithin(ctx, ledgerDelay, puts, gone); err != nil {
		// Put them back for the next attempt (newer changes win).
		l.mu.Lock()
		for _, p := range puts {
			if _, open := l.calls[p.Key]; open {
				l.dirty[p.Key] = true
			}
		}
		for _, k := range gone {
			if _, open := l.calls[k]; !open {
				l.gone[k] = true
			}
		}
		logIt := l.now().Sub(l.warn) > time.Minute
		if logIt {
			l.warn = l.now()
		}
		l.mu.Unlock()
		if logIt && ctx.Err() == nil {
			l.log.Warn("cannot store the calls in progress; a crash now could lose calls that end while the daemon is down", "err", err)
		}
	}
}

// recover finishes the calls the previous run left open that the model does not have (has
// reports the model's open calls by CallID). It returns the records made, in start order.
func (l *ledger) recover(ctx context.Context, has func(callID string) bool) ([]*call.Record, error) {
	rows, err := l.store.OpenCalls(ctx, l.pbx)
	if err != nil {
		return nil, err
	}
	var alive time.Time
	for _, r := range rows {
		if strings.HasPrefix(r.Key, heartbeatPrefix) {
			alive = r.UpdatedAt
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var recs []*call.Record
	var stale []string
	for _, r := range rows {
		if strings.HasPrefix(r.Key, heartbeatPrefix) {
			continue
		}
		if _, ours := l.calls[r.Key]; ours {
			continue // this run has seen it live
		}
		var c openCall
		if err := json.Unmarshal(r.Data, &c); err != nil || c.CallID == "" || c.StartedAt.IsZero() {
			l.log.Warn("dropping an unreadable open call left by the previous run", "call", r.Key, "err", err)
			stale = append(stale, r.Key)
			continue
		}
		if has(c.CallID) {
			continue // still up: the model follows it from the snapshot
		}
		if c.Customer == "" && l.leaveToCDR.Load() {
			// No number to log it with (a click-to-call still ringing the agent looks internal
			// until its originate id arrives): the CDR recovery that follows has the whole call.
			l.log.Info("a call in progress when pbxbridge stopped ended while it was down; leaving it to the CDR (the ledger has no customer number)",
				"call", r.Key, "direction", c.Direction)
			l.gone[r.Key] = true
			continue
		}
		recs = append(recs, c.record(l.pbx, alive, r.UpdatedAt))
		l.gone[r.Key] = true // in case its record is routed nowhere (no Enqueue to delete it)
	}
	if len(recs) > 0 {
		l.signal()
	}
	slices.SortFunc(recs, func(a, b *call.Record) int { return a.StartedAt.Compare(b.StartedAt) })
	if len(stale) > 0 {
		if err := l.store.DeleteOpenCalls(ctx, stale...); err != nil {
			return recs, err
		}
	}
	return recs, nil
}

// record makes the record of a call that ended while the daemon was down. The end is the last
// moment the daemon knew the call open: its last heartbeat, or the call's own last update.
func (c *openCall) record(pbx string, alive, updated time.Time) *call.Record {
	end := updated
	if alive.After(end) {
		end = alive
	}
	if c.LastAt.After(end) {
		end = c.LastAt
	}
	if c.HungUpAt != nil {
		end = *c.HungUpAt
	}
	if end.Before(c.StartedAt) {
		end = c.StartedAt
	}
	r := &call.Record{CallID: c.CallID, PBX: pbx, Direction: c.Direction, Customer: c.Customer, Line: c.Line,
		StartedAt: c.StartedAt, EndedAt: end, Rang: slices.Clone(c.Rang), OriginateID: c.OriginateID,
		CallerExt: c.CallerExt, Disposition: call.NoAnswer, Flags: []string{call.FlagEndedUnseen}}
	if c.OriginateID != "" {
		r.Flags = append(r.Flags, call.FlagClickToCall)
	}
	if c.AnsweredAt != nil {
		at := *c.AnsweredAt
		talk := int(end.Sub(at).Round(time.Second) / time.Second)
		r.Disposition, r.AnsweredBy, r.AnsweredAt = call.Answered, c.AnsweredBy, &at
		r.RingSeconds = int(at.Sub(c.StartedAt).Round(time.Second) / time.Second)
		r.TalkSeconds = talk
		r.Legs = []call.Leg{{Ext: c.AnsweredBy, AnsweredAt: &at, EndedAt: &end, TalkSeconds: talk}}
	} else {
		r.RingSeconds = int(end.Sub(c.StartedAt).Round(time.Second) / time.Second)
	}
	return r
}
