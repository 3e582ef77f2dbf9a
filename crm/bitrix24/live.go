package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// liveMaxAge bounds how long live state of a call is kept in memory without a delivery.
const liveMaxAge = 6 * time.Hour

// liveMax bounds the calls with live state in memory. The state is a cache of the CallStore:
// when it is full, a new call's state is not kept (each event reads it from the store again,
// pbxbridge_bitrix24_cache_full_total{cache="live"}), so a flood of calls cannot grow it.
const liveMax = 10000

// liveCall is the in-memory view of a call in progress: its callState (the CALL_ID, the user it
// is registered for, the users the card is shown to...), which Deliver uses too, and what only
// the card needs. The CallStore holds the durable part.
type liveCall struct {
	*callState
	answered int
	external bool // registered by Bitrix24 (click-to-call): no register, no show/hide
	touched  time.Time
}

// liveFreshMargin: a call that began this long after the first live event the adapter handled
// from its PBX is fresh (see fresh); Asterisk may send events of different threads a little out
// of timestamp order.
const liveFreshMargin = time.Second

// liveHideTimeout bounds a hide (and the wait for the call's lock before it): a card that was
// shown must be hidden even when the action that shows another one became stale.
const liveHideTimeout = 30 * time.Second

// Live drives the call card: register on the first ringing extension (for an outbound call,
// the extension that dials, when the customer's leg rings), show to every other ringing agent,
// hide from those who stop ringing or did not answer, move on transfer. It is best-effort: a
// failure leaves the registration to Deliver.
//
// Shows run on ctx, which the daemon cancels once they are stale (crm.LiveHandler): a show or a
// ringing register still waiting for its rate-limit slot then gives up and Live returns an error
// wrapping crm.ErrLiveStale. Hides run on a context the staleness does not reach, so a card that
// was shown is always hidden. Show and hide go through the batcher (they can wait a few hundred
// milliseconds for a backlog to take them along); register never does.
func (a *Adapter) Live(ctx context.Context, ev *call.Live) error {
	a.noteLive(ev)
	if (ev.Direction != call.Inbound && ev.Direction != call.Outbound) || digits(ev.Customer) == "" {
		return nil // internal, or an anonymous caller Bitrix24 cannot show
	}
	if ev.Kind == call.LiveHangup {
		return nil // finish closes the card; the delivery may hold the call's lock for a while
	}
	key := ev.Key()
	if ev.Kind == call.LiveStopRinging && !a.hasLive(key) && a.fresh(ev) {
		return nil // no card of this call was shown by this process, nor by an earlier one
	}
	ctx = api.WithPriority(ctx)
	ctx, n := withCounter(ctx)
	ctx = a.withHookLive(ctx, ev)
	defer func() { a.addRequests(key, n.Load()) }()
	hctx, hcancel := context.WithTimeout(context.WithoutCancel(ctx), liveHideTimeout)
	defer hcancel()
	lockCtx := hctx
	if ev.Kind == call.LiveRinging {
		lockCtx = ctx // a pure show: no reason to wait once it is stale
	}
	unlock, err := a.callLocks.lock(lockCtx, key)
	if err != nil {
		return a.liveErr(ctx, ev, err)
	}
	defer unlock()
	lc, err := a.liveState(hctx, ev)
	if err != nil {
		return a.liveErr(ctx, ev, err)
	}
	if lc.external || (!a.cfg.Card.Enabled && lc.callID == "") {
		return nil
	}
	show := a.cfg.Card.ShowInbound
	if ev.Direction == call.Outbound {
		show = a.cfg.Card.ShowOutbound
	}
	err = a.liveStep(ctx, hctx, ev, lc, show)
	lc.touched = a.now()
	return a.liveErr(ctx, ev, err)
}

// liveErr classifies a live action's error; one given up because the daemon found it stale
// wraps crm.ErrLiveStale.
func (a *Adapter) liveErr(ctx context.Context, ev *call.Live, err error) error {
	if err == nil {
		return nil
	}
	if stale := crm.LiveStale(ctx); stale != nil {
		crm.Trace(ctx, "decision", fmt.Sprintf("call card %s %s not shown: %v", ev.Kind, ev.Ext, stale), "")
		return fmt.Errorf("bitrix24: call card %s: %w", ev.Kind, stale)
	}
	return a.classify("call card "+string(ev.Kind), err)
}

// liveStep runs one event: shows on ctx, hides on hctx.
func (a *Adapter) liveStep(ctx, hctx context.Context, ev *call.Live, lc *liveCall, show bool) error {
	switch ev.Kind {
	case call.LiveRinging:
		user, err := a.liveUser(ctx, ev.Ext)
		if err != nil || user == 0 {
			return err
		}
		if lc.callID == "" {
			return a.liveRegister(ctx, ev, lc, user, show)
		}
		if lc.answered != 0 && lc.answered != user {
			return nil // somebody else took the call meanwhile
		}
		if show && !slices.Contains(lc.shown, user) {
			return a.cardShow(ctx, ev.Key(), lc, user)
		}
	case call.LiveAnswered:
		user, err := a.liveUser(hctx, ev.Ext)
		if err != nil || user == 0 {
			return err
		}
		if lc.callID == "" {
			if err := a.liveRegister(ctx, ev, lc, user, show); err != nil {
				return err
			}
		}
		lc.answered = user
		var others, to []int
		for _, u := range lc.shown {
			if u != user {
				others = append(others, u)
			}
		}
		if show && !slices.Contains(lc.shown, user) {
			to = []int{user}
		}
		return a.cardHideShow(ctx, hctx, ev.Key(), lc, others, to)
	case call.LiveStopRinging:
		user, err := a.liveUser(hctx, ev.Ext)
		if err != nil || user == 0 || user == lc.answered || lc.callID == "" {
			return err
		}
		if slices.Contains(lc.shown, user) {
			return a.cardHide(hctx, ev.Key(), lc, user)
		}
	case call.LiveTransferred:
		to, err := a.liveUser(hctx, ev.Ext)
		if err != nil {
			return err
		}
		from := 0
		if ev.From != "" {
			if from, err = a.liveUser(hctx, ev.From); err != nil {
				return err
			}
		}
		if lc.callID == "" {
			if to == 0 {
				return nil
			}
			return a.liveRegister(ctx, ev, lc, to, show)
		}
		var hide, shown []int
		if from != 0 && from != to && slices.Contains(lc.shown, from) {
			hide = []int{from}
		}
		if to != 0 {
			lc.answered = to
			if show && !slices.Contains(lc.shown, to) {
				shown = []int{to}
			}
		}
		return a.cardHideShow(ctx, hctx, ev.Key(), lc, hide, shown)
	}
	return nil
}

// liveUser resolves an extension for the card: its user, or the default user, or 0.
func (a *Adapter) liveUser(ctx context.Context, ext string) (int, error) {
	if ext == "" {
		return 0, nil
	}
	u, ok, err := a.users.lookup(ctx, ext)
	if err != nil {
		return 0, err
	}
	if ok {
		return u.ID, nil
	}
	if a.cfg.Users.DefaultUserID > 0 {
		crm.Trace(ctx, "decision", fmt.Sprintf("warning: extension %s has no Bitrix24 user; the card goes to the default user %d", ext, a.cfg.Users.DefaultUserID), "")
	}
	return a.cfg.Users.DefaultUserID, nil
}

func (a *Adapter) liveRegister(ctx context.Context, ev *call.Live, lc *liveCall, user int, show bool) error {
	started := ev.StartedAt
	if started.IsZero() {
		started = ev.At
	}
	reg, err := a.register(ctx, regRequest{
		key: ev.Key(), dir: ev.Direction, customer: ev.Customer, line: ev.Line,
		started: started, user: user, show: show, source: "live",
	})
	if err != nil {
		a.m.live.WithLabelValues("register", "error").Inc()
		return fmt.Errorf("registering call: %w", err)
	}
	a.m.live.WithLabelValues("register", "ok").Inc()
	lc.callID, lc.callUser, lc.source, lc.entity = reg.callID, reg.user, "live", reg.entity
	if show {
		lc.shown = []int{reg.user} // stored with the CALL_ID (saveCall)
	}
	return nil
}

func (a *Adapter) cardShow(ctx context.Context, key string, lc *liveCall, users ...int) error {
	if len(users) == 0 {
		return nil
	}
	if _, err := a.batch.showHide(ctx, api.MethodShow, lc.callID, users); err != nil {
		a.m.live.WithLabelValues("show", "error").Inc()
		if !maybeSent(err) {
			return fmt.Errorf("showing the card: %w", err)
		}
		// The request went out and its answer was lost: the card may be up, so the hide that
		// follows must be sent.
		crm.Trace(ctx, "decision", fmt.Sprintf("the answer to show was lost: counting the card as shown to %v", users), "")
		if serr := a.addShown(ctx, key, lc, users); serr != nil {
			return errors.Join(fmt.Errorf("showing the card: %w", err), serr)
		}
		return fmt.Errorf("showing the card: %w", err)
	}
	a.m.live.WithLabelValues("show", "ok").Inc()
	return a.addShown(ctx, key, lc, users)
}

// addShown records users as seeing the card (the CallStore write is not cancelled with a stale
// show: it must not be lost).
func (a *Adapter) addShown(ctx context.Context, key string, lc *liveCall, users []int) error {
	for _, u := range users {
		if !slices.Contains(lc.shown, u) {
			lc.shown = append(lc.shown, u)
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), liveHideTimeout)
	defer cancel()
	return a.saveShown(wctx, key, lc)
}

// saveShown stores the users the card is shown to with the store's next commit: after a crash
// that lost it, a card may stay up until Bitrix24's finish closes it.
func (a *Adapter) saveShown(ctx context.Context, key string, lc *liveCall) error {
	return a.setLater(ctx, key, map[string]string{fShown: formatIDs(lc.shown)})
}

// maybeSent reports whether a failed request may have reached the portal: not refused by it
// (an answer), not given up before it was sent (context, client-side limit).
func maybeSent(err error) bool {
	var e *api.Error
	switch {
	case errors.As(err, &e), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, crm.ErrLiveStale), errors.Is(err, api.ErrLocalRateLimit):
		return false
	}
	return true
}

// cardHideShow hides the card from some users (on hctx) and shows it to others (on ctx) at the
// same time: while a backlog lasts both go in the same batch request.
func (a *Adapter) cardHideShow(ctx, hctx context.Context, key string, lc *liveCall, hide, show []int) error {
	if len(hide) == 0 {
		return a.cardShow(ctx, key, lc, show...)
	}
	if len(show) == 0 {
		return a.cardHide(hctx, key, lc, hide...)
	}
	var herr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, herr = a.batch.showHide(hctx, api.MethodHide, lc.callID, hide)
	}()
	_, serr := a.batch.showHide(ctx, api.MethodShow, lc.callID, show)
	<-done
	var errs []error
	if herr != nil {
		a.m.live.WithLabelValues("hide", "error").Inc()
		errs = append(errs, fmt.Errorf("hiding the card: %w", herr))
	} else {
		a.m.live.WithLabelValues("hide", "ok").Inc()
		lc.shown = slices.DeleteFunc(lc.shown, func(u int) bool { return slices.Contains(hide, u) })
	}
	if serr == nil {
		a.m.live.WithLabelValues("show", "ok").Inc()
	} else {
		a.m.live.WithLabelValues("show", "error").Inc()
		errs = append(errs, fmt.Errorf("showing the card: %w", serr))
	}
	if serr == nil || maybeSent(serr) {
		if err := a.addShown(ctx, key, lc, show); err != nil {
			errs = append(errs, err)
		}
	} else if herr == nil {
		if err := a.saveShown(hctx, key, lc); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Adapter) cardHide(ctx context.Context, key string, lc *liveCall, users ...int) error {
	if len(users) == 0 {
		return nil
	}
	if _, err := a.batch.showHide(ctx, api.MethodHide, lc.callID, users); err != nil {
		a.m.live.WithLabelValues("hide", "error").Inc()
		return fmt.Errorf("hiding the card: %w", err)
	}
	a.m.live.WithLabelValues("hide", "ok").Inc()
	lc.shown = slices.DeleteFunc(lc.shown, func(u int) bool { return slices.Contains(users, u) })
	return a.saveShown(ctx, key, lc)
}

// liveState returns the call's live state: from memory, else (a call that began before this
// adapter handled its PBX's first live event: after a restart or a reload) from the CallStore,
// binding click-to-call calls to the CALL_ID Bitrix24 gave with the event. A fresh call's state
// starts empty without a read.
func (a *Adapter) liveState(ctx context.Context, ev *call.Live) (*liveCall, error) {
	key := ev.Key()
	a.liveMu.Lock()
	lc := a.live[key]
	if lc == nil && len(a.live) >= liveMax && a.now().Sub(a.liveSwept) > time.Minute { // a flood sweeps once a minute, not per event
		a.sweepLiveLocked()
	}
	keep := lc == nil && len(a.live) < liveMax
	a.liveMu.Unlock()
	if lc != nil {
		return lc, nil
	}
	// A call whose state is not kept in memory (the cache is full) is read back every time.
	st := &callState{key: key}
	if !keep || !a.fresh(ev) {
		var err error
		if st, err = a.loadState(ctx, key); err != nil {
			return nil, err
		}
	}
	lc = &liveCall{callState: st, touched: a.now()}
	lc.external = st.source == "click2call"
	if lc.callID == "" && ev.OriginateID != "" {
		callID, user, source, _, err := a.bindOriginate(ctx, key, ev.OriginateID)
		if err != nil {
			return nil, err
		}
		if callID != "" {
			lc.callID, lc.callUser, lc.source, lc.external = callID, user, source, true
		}
	}
	a.liveMu.Lock()
	if cur := a.live[key]; cur != nil { // another event of the call came meanwhile (never under the call's lock)
		lc = cur
	} else if len(a.live) < liveMax {
		a.live[key] = lc
	} else {
		a.m.cacheFull.WithLabelValues("live").Inc()
	}
	a.liveMu.Unlock()
	return lc, nil
}

// fresh reports whether ev's call began after the first live event this adapter handled from the
// call's PBX (by the PBX's clock, liveFreshMargin later) and less than liveMaxAge ago: no earlier
// adapter of this connector (a previous run, a reload) handled it, so the CallStore holds nothing
// of it that this adapter did not write, and its state need not be read back.
func (a *Adapter) fresh(ev *call.Live) bool {
	if ev.StartedAt.IsZero() || a.now().Sub(ev.StartedAt) > liveMaxAge {
		return false
	}
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	first, ok := a.firstLive[ev.PBX]
	return ok && ev.StartedAt.After(first.Add(liveFreshMargin))
}

// noteLive records the first live event the adapter handles from each PBX (see fresh).
func (a *Adapter) noteLive(ev *call.Live) {
	a.liveMu.Lock()
	if _, ok := a.firstLive[ev.PBX]; !ok && !ev.At.IsZero() {
		a.firstLive[ev.PBX] = ev.At
	}
	a.liveMu.Unlock()
}

// hasLive reports whether the adapter holds the live state of key.
func (a *Adapter) hasLive(key string) bool {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	return a.live[key] != nil
}

// deliverState returns what is known of the call key for its delivery: the live state when the
// adapter holds it (the same copy: what the delivery learns stays there until it succeeds), else
// a read of the CallStore.
func (a *Adapter) deliverState(ctx context.Context, key string) (*callState, error) {
	a.liveMu.Lock()
	lc := a.live[key]
	a.liveMu.Unlock()
	if lc != nil {
		return lc.callState, nil
	}
	return a.loadState(ctx, key)
}

// bindOriginate binds a call started by click-to-call or a callback to the CALL_ID remembered
// for its originate id. It returns "" when the id is unknown, and done when the CALL_ID was
// already finished (the originate failed and the CRM user was told so).
func (a *Adapter) bindOriginate(ctx context.Context, key, origID string) (callID string, user int, source string, done bool, err error) {
	ik := originateIndex + origID
	all, err := a.getAll(ctx, ik, fOrigCallID, fOrigUser, fOrigKind, fOrigDone)
	if err != nil || all[fOrigCallID] == "" {
		return "", 0, "", false, err
	}
	callID = all[fOrigCallID]
	user, _ = strconv.Atoi(all[fOrigUser])
	source = "click2call"
	if all[fOrigKind] == "callback" {
		source = "callback"
	}
	if err := a.saveCall(ctx, key, callID, user, source, "", nil); err != nil {
		return "", 0, "", false, err
	}
	if a.cfg.CallIDReuseGuard {
		if _, _, err := a.claim(ctx, callID, key); err != nil {
			return "", 0, "", false, err
		}
	}
	crm.Trace(ctx, "decision", fmt.Sprintf("call started from Bitrix24 (%s): using its CALL_ID %s, no second register", source, callID), "")
	return callID, user, source, all[fOrigDone] != "", nil
}

// addRequests adds n thousandths of a request to the live requests of key.
func (a *Adapter) addRequests(key string, n int64) {
	if n == 0 {
		return
	}
	a.liveMu.Lock()
	if _, ok := a.live[key]; ok { // counted only for calls with live state (bounded)
		a.reqs[key] += n
	}
	a.liveMu.Unlock()
}

// takeLive removes a delivered call's live state and returns the requests Live made for it (in
// thousandths).
func (a *Adapter) takeLive(key string) int64 {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	n := a.reqs[key]
	delete(a.reqs, key)
	delete(a.live, key)
	return n
}

// sweepLive forgets live state of calls never delivered (flushed elsewhere) after liveMaxAge.
func (a *Adapter) sweepLive() {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	a.sweepLiveLocked()
}

func (a *Adapter) sweepLiveLocked() {
	now := a.now()
	a.liveSwept = now
	for k, lc := range a.live {
		if now.Sub(lc.touched) > liveMaxAge {
			delete(a.live, k)
			delete(a.reqs, k)
		}
	}
}
