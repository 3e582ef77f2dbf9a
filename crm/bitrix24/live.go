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

// liveCall is the in-memory view of a ringing call; the CallStore holds the durable part.
type liveCall struct {
	callID   string
	user     int   // registered for
	shown    []int // users the card is shown to
	answered int
	external bool // registered by Bitrix24 (click-to-call): no register, no show/hide
	touched  time.Time
}

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
	if (ev.Direction != call.Inbound && ev.Direction != call.Outbound) || digits(ev.Customer) == "" {
		return nil // internal, or an anonymous caller Bitrix24 cannot show
	}
	if ev.Kind == call.LiveHangup {
		return nil // finish closes the card; the delivery may hold the call's lock for a while
	}
	key := ev.Key()
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
	lc.callID, lc.user = reg.callID, reg.user
	if show {
		lc.shown = []int{reg.user}
		return a.set(ctx, ev.Key(), fShown, formatIDs(lc.shown))
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
	return a.set(wctx, key, fShown, formatIDs(lc.shown))
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
		if err := a.set(hctx, key, fShown, formatIDs(lc.shown)); err != nil {
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
	return a.set(ctx, key, fShown, formatIDs(lc.shown))
}

// liveState returns the call's live state: from memory, else from the CallStore (after a
// restart), binding click-to-call calls to the CALL_ID Bitrix24 gave with the event.
func (a *Adapter) liveState(ctx context.Context, ev *call.Live) (*liveCall, error) {
	key := ev.Key()
	a.liveMu.Lock()
	lc := a.live[key]
	a.liveMu.Unlock()
	if lc != nil {
		return lc, nil
	}
	st, err := a.loadState(ctx, key)
	if err != nil {
		return nil, err
	}
	lc = &liveCall{callID: st.callID, user: st.callUser, shown: st.shown, touched: a.now()}
	lc.external = st.source == "click2call"
	if lc.callID == "" && ev.OriginateID != "" {
		callID, user, _, err := a.bindOriginate(ctx, key, ev.OriginateID)
		if err != nil {
			return nil, err
		}
		if callID != "" {
			lc.callID, lc.user, lc.external = callID, user, true
		}
	}
	a.liveMu.Lock()
	if len(a.live) >= liveMax && a.now().Sub(a.liveSwept) > time.Minute { // a flood sweeps once a minute, not per event
		a.sweepLiveLocked()
	}
	if len(a.live) < liveMax {
		a.live[key] = lc
	} else {
		a.m.cacheFull.WithLabelValues("live").Inc()
	}
	a.liveMu.Unlock()
	return lc, nil
}

// bindOriginate binds a call started by click-to-call or a callback to the CALL_ID remembered
// for its originate id. It returns "" when the id is unknown, and done when the CALL_ID was
// already finished (the originate failed and the CRM user was told so).
func (a *Adapter) bindOriginate(ctx context.Context, key, origID string) (callID string, user int, done bool, err error) {
	ik := originateIndex + origID
	if callID, err = a.get(ctx, ik, fOrigCallID); err != nil || callID == "" {
		return "", 0, false, err
	}
	var us, kind, fin string
	for _, f := range []struct {
		name string
		dst  *string
	}{{fOrigUser, &us}, {fOrigKind, &kind}, {fOrigDone, &fin}} {
		if *f.dst, err = a.get(ctx, ik, f.name); err != nil {
			return "", 0, false, err
		}
	}
	user, _ = strconv.Atoi(us)
	source := "click2call"
	if kind == "callback" {
		source = "callback"
	}
	if err := a.saveCall(ctx, key, callID, user, source, ""); err != nil {
		return "", 0, false, err
	}
	if a.cfg.CallIDReuseGuard {
		if _, _, err := a.claim(ctx, callID, key); err != nil {
			return "", 0, false, err
		}
	}
	crm.Trace(ctx, "decision", fmt.Sprintf("call started from Bitrix24 (%s): using its CALL_ID %s, no second register", source, callID), "")
	return callID, user, fin != "", nil
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
