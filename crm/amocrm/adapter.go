// Package amocrm is the amoCRM and Kommo connector (types "amocrm" and "kommo": one API v4,
// docs/crm-apis.md Parts B and C, different hosts and defaults).
//
// What it does with a finished call (Deliver):
//
//   - logs it with POST /api/v4/calls (direction, duration, source, phone, uniq = Record.Key(),
//     link = signed recording URL, call_status per docs/crm-apis.md Part D, call_responsible /
//     responsible_user_id / created_by from the extension → user mapping, created_at). Concurrent
//     Deliver calls are coalesced into batches of up to batch.max (50) calls per request; each
//     Deliver gets its own item's outcome. The daemon should run at least batch.max Deliver calls
//     at once for this connector (DeliverConcurrency) so that a backlog leaves in full batches;
//   - when amoCRM refuses the call because no contact has the number (error 263), follows
//     unknown_number: create an incoming lead (POST /api/v4/leads/unsorted/sip), or create the
//     contact and log the call again, or skip it; never silently (crm.Trace and
//     pbxbridge_amocrm_unknown_numbers_total). A number whose incoming lead still waits in
//     Incoming (its contact hidden) is logged on that lead as a call note (unsorted.go);
//   - for a missed inbound call creates a "call" task (type 1) for the first responsible of
//     missed_call_task.responsible (the contact's owner, the last agent who rang, default_user).
//
// Idempotency: amoCRM's de-duplication on uniq is unconfirmed (Part E.7), so what was done for a
// record is kept in the CallStore (fields "amo.call", "amo.contact", "amo.task") and a
// redelivery only does what is missing. A call is marked sent before its calls request; a
// redelivery that finds the mark (the daemon was killed, or the answer was lost) looks the call
// up in the call notes amoCRM made of it (params.uniq) before sending it again (recover.go). A
// task is marked pending before it is created and looked up by its text marker when a
// redelivery finds it pending.
//
// While a call rings (Live), the ringing extension's user (inbound) or the dialling one
// (outbound) gets amoCRM's pop-up (POST /api/v2/events), only while the phone rings.
// Router answers /v1/responsible and /v1/lookup from the contact search.
// HTTP routes (mounted under /crm/<name>/): GET /oauth/callback (OAuth redirect URI) and
// POST /click2call (the widget's click-to-call, authenticated only by amoCRM's one-time token
// of the clicking user: X-Auth-Token, HS256 with the integration's secret key, single use).
//
// Authorisation is OAuth 2.0 with refresh-token rotation (tokens in the state directory, written
// atomically, one refresh at a time, proactive rotation of an idle refresh token) or a long-lived
// token. A rejected grant makes every call return crm.AuthBroken (records stay queued) and the
// status "reauthorize" with the consent link.
//
// All requests of one instance share the account's api.Limiter: at most rate_limit (7) requests
// in any rolling second as amoCRM counts them, pop-ups and routing look-ups first with a fifth of
// the slots reserved for them. After a 429 the whole account pauses for amoCRM's advice (at most
// 60 s) and the refused request goes first when it ends; a request that cannot wait that long
// returns crm.RateLimited with the pause left. A 403 after 429s is read as a block: the client
// stops sending for 10 minutes and the status says so.
package amocrm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

func init() {
	for _, typ := range []string{TypeAmoCRM, TypeKommo} {
		crm.Register(crm.Factory{
			Type:      typ,
			Licence:   crm.LicenceAccount,
			NewConfig: func() any { return NewConfig(typ) },
			New:       func(p crm.Params) (crm.Adapter, error) { return New(p) },
		})
	}
}

// CallStore fields used per record.
const (
	fieldCall    = "amo.call"    // logged:<entity type>:<id> | unsorted:<uid>:<lead id> | skipped:<reason> | sent:<unix> | unsure:<unix>
	fieldContact = "amo.contact" // id of a contact created for an unknown number
	fieldTask    = "amo.task"    // pending | done:<id> | none
)

// Adapter is one amoCRM/Kommo connector instance.
type Adapter struct {
	name, typ string
	cfg       *Config
	log       *slog.Logger
	now       func() time.Time
	calls     crm.CallStore
	rec       crm.Recordings
	orig      originator
	m         *metrics

	client   *api.Client
	tokens   *tokens
	limiter  *api.Limiter // shared by every request of the account
	batch    *batcher
	popups   *popups
	users    *userMap
	hooks    crm.Hooks    // nil: none configured (hooks.go)
	replay   *replayCache // one-time token ids already used
	audience string       // scheme://host of the daemon's public URL: a widget token's aud; "" = unknown

	ctx    context.Context // adapter lifetime: background work and batch requests
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	account *api.Account

	started time.Time    // sent markers older than this come from a previous process
	notes   noteIndex    // the last scan of call notes (recover.go)
	numbers numberLocks  // one unknown-number handling per number at a time (unsorted.go)
	scan    unsortedScan // the last listing of waiting incoming leads (unsorted.go)
}

// New builds an adapter from crm.Params (no network I/O).
func New(p crm.Params) (*Adapter, error) {
	cfg, ok := p.Config.(*Config)
	if !ok || cfg == nil {
		return nil, fmt.Errorf("%s: config of type %T", p.Type, p.Config)
	}
	if p.Type == TypeKommo || p.Type == TypeAmoCRM {
		cfg.flavor = p.Type
	}
	prefix := cfg.Flavor()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", prefix, errors.Join(errs...))
	}
	if p.StateDir == "" {
		return nil, fmt.Errorf("%s: no state directory", prefix)
	}
	a := &Adapter{name: p.Name, typ: prefix, cfg: cfg, log: p.Logger, now: p.Now, calls: p.Calls, rec: p.Recordings, hooks: p.Hooks}
	if p.Originator != nil {
		a.orig = p.Originator
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.calls == nil {
		a.calls = newMemStore()
	}
	m, err := newMetrics(p.Metrics)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	a.m = m
	a.started = a.now()
	// The limiter measures real intervals (its timers are real): it never takes the injected
	// clock, which tests freeze.
	a.limiter = api.NewLimiter(api.LimiterFor(cfg.RateLimit))
	hc := newHTTP(p.HTTPClient, a.log, p.MaxResponseBody)
	redirect := cfg.Auth.RedirectURI
	if redirect == "" && p.RouteURL != "" {
		redirect = strings.TrimRight(p.RouteURL, "/") + "/oauth/callback"
	}
	oauth := api.New(api.Options{BaseURL: cfg.APIBase(), HTTP: hc, Limiter: a.limiter, ObserveDate: p.ObserveServerDate, Now: a.now})
	tk, err := newTokens(cfg, p.StateDir, redirect, oauth, a.now)
	if err != nil {
		return nil, fmt.Errorf("%s: reading OAuth state: %w", prefix, err)
	}
	tk.onChange = func(ev string) {
		a.m.tokens.WithLabelValues(ev).Inc()
		if (ev == "authorised" || ev == "reloaded") && p.AuthRenewed != nil {
			p.AuthRenewed() // calls waiting on the broken authorisation leave now
		}
	}
	a.tokens = tk
	a.client = api.New(api.Options{BaseURL: cfg.APIBase(), HTTP: hc, Limiter: a.limiter, Auth: tk, ObserveDate: p.ObserveServerDate, Now: a.now,
		OnThrottle: func(_ int, blocked bool) {
			if blocked {
				a.m.throttled.WithLabelValues("blocked").Inc()
			} else {
				a.m.throttled.WithLabelValues("429").Inc()
			}
		}})
	a.users = newUserMap(cfg.Users)
	a.replay = newReplayCache(a.now, defaultReplayCapacity)
	a.audience = origin(p.RouteURL)
	if a.audience == "" {
		a.audience = origin(redirect)
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.batch = newBatcher(a.ctx, cfg.Batch.Max, cfg.Batch.Window, a.sendCalls, a.finishCall)
	a.batch.onSize = func(n int) { a.m.batchSize.Observe(float64(n)) }
	a.popups = newPopups(a.ctx, a.limiter, a.client.AddEvents)
	a.popups.now = a.now
	return a, nil
}

// newHTTP builds the resty client. In-process retries are off: amoCRM blocks clients that keep
// sending after 429s, and the outbox owns retries.
func newHTTP(base *http.Client, log *slog.Logger, maxBody int64) *resty.Client {
	return httpclient.New(httpclient.Options{Base: base, Logger: log, RetryMax: -1, UserAgent: "pbxbridge (amoCRM connector)", MaxResponseBody: maxBody})
}

// DeliverConcurrency is how many Deliver calls the dispatcher should run at once for this
// connector so that backlogs leave in full batches (batch.max).
func (a *Adapter) DeliverConcurrency() int { return a.cfg.Batch.Max }

// Start starts the background upkeep: every 15 minutes the users' names (once UserName was
// called) and their re-mapping (auto_map_users), and the proactive rotation of an idle refresh
// token.
func (a *Adapter) Start(ctx context.Context) error {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(15 * time.Minute)
		defer t.Stop()
		for {
			a.maintain(a.ctx)
			select {
			case <-a.ctx.Done():
				return
			case <-ctx.Done():
				return
			case <-t.C:
			case <-a.users.namesKick:
			}
		}
	}()
	return nil
}

// maintain is one round of background upkeep.
func (a *Adapter) maintain(ctx context.Context) {
	if a.tokens.needsProactiveRefresh() {
		if _, err := a.tokens.refresh(ctx, "", true); err != nil {
			a.log.Warn("proactive token refresh failed", "err", err)
		}
	}
	if a.cfg.AutoMapUsers || a.users.namesWanted.Load() {
		if err := a.loadUsers(ctx); err != nil {
			a.log.Debug("loading users for their names and the extension mapping", "err", err)
		}
	}
}

// Close stops background work and waits for calls requests in flight.
func (a *Adapter) Close(ctx context.Context) error {
	a.batch.close()
	a.cancel()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Deliver implements crm.Adapter.
func (a *Adapter) Deliver(ctx context.Context, rec *call.Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", a.typ, err)
	}
	if rec.Direction != call.Inbound && rec.Direction != call.Outbound {
		crm.Trace(ctx, "decision", "not sent", "amoCRM logs only inbound and outbound calls; this one is "+string(rec.Direction))
		return nil
	}
	ctx = crm.WithHookCall(ctx, a.hooks, rec, false)
	key := rec.Key()
	state, err := a.get(ctx, key, fieldCall)
	if err != nil {
		return err
	}
	if _, _, pending := marker(state); pending {
		if state, err = a.recoverCall(ctx, rec, state); err != nil {
			return a.wrap(err)
		}
	}
	if state == "" {
		if state, err = a.logCall(ctx, rec); err != nil {
			return a.wrap(err)
		}
	} else {
		crm.Trace(ctx, "decision", "already logged", "the call store says: "+state)
	}
	if a.wantsTask(rec) {
		if err := a.ensureTask(ctx, rec, state); err != nil {
			return a.wrap(err)
		}
	}
	return nil
}

// wrap prefixes err with the type and classifies it.
func (a *Adapter) wrap(err error) error {
	if api.IsStatus(err, http.StatusUnauthorized) && !a.cfg.LongLived() {
		// A freshly refreshed token was rejected too: access was revoked.
		a.tokens.markBroken("amoCRM rejects new tokens (401): the integration was disabled or its access revoked; authorise it again")
	}
	return classify(fmt.Errorf("%s: %w", a.typ, err))
}

// classify maps errors to crm classes (already classified errors pass through).
func classify(err error) error {
	var ce *crm.Error
	if errors.As(err, &ce) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var e *api.Error
	if !errors.As(err, &e) {
		return crm.Transient(err)
	}
	switch {
	case e.Blocked, e.Paused:
		return crm.RateLimited(err, e.RetryAfter)
	case e.HTTPStatus == http.StatusTooManyRequests:
		return crm.RateLimited(err, e.RetryAfter)
	case e.HTTPStatus == http.StatusUnauthorized:
		return crm.AuthBroken(err)
	case e.HTTPStatus == http.StatusPaymentRequired:
		return crm.RateLimited(fmt.Errorf("%w (the account's subscription has expired)", err), 30*time.Minute)
	case e.HTTPStatus == http.StatusForbidden:
		return crm.RateLimited(fmt.Errorf("%w (check the rights of the integration's user)", err), 10*time.Minute)
	case e.HTTPStatus == http.StatusBadRequest || e.HTTPStatus == http.StatusUnprocessableEntity:
		return crm.Permanent(err)
	}
	return crm.Transient(err)
}

func (a *Adapter) get(ctx context.Context, key, field string) (string, error) {
	v, _, err := a.calls.Get(ctx, key, field)
	if err != nil {
		return "", crm.Transient(fmt.Errorf("%s: reading the call store: %w", a.typ, err))
	}
	return v, nil
}

// set writes durably (an fsync'd commit of its own): for the rare writes outside a delivery.
func (a *Adapter) set(ctx context.Context, key, field, value string) error {
	if err := a.calls.Set(context.WithoutCancel(ctx), key, field, value); err != nil {
		return crm.Transient(fmt.Errorf("%s: writing the call store: %w", a.typ, err))
	}
	return nil
}

// setLazy writes a write-ahead marker ("a request that creates something is about to go out"):
// committed when it returns, without an fsync of its own when the store can (crm.CallStoreLazy:
// it survives a crash of the daemon, and the delivery's acknowledgement makes it durable).
func (a *Adapter) setLazy(ctx context.Context, key, field, value string) error {
	l, ok := a.calls.(crm.CallStoreLazy)
	if !ok {
		return a.set(ctx, key, field, value)
	}
	if err := l.SetLazy(context.WithoutCancel(ctx), key, map[string]string{field: value}); err != nil {
		return crm.Transient(fmt.Errorf("%s: writing the call store: %w", a.typ, err))
	}
	return nil
}

// setLater writes what a delivery learned (the call is logged, a task created): with the store's
// next commit when it can (crm.CallStoreLazy; reads see it at once, and the acknowledgement that
// follows the delivery carries it), else durably now. A crash that loses it finds the write-ahead
// marker, and the next attempt looks the call up instead of logging it twice.
func (a *Adapter) setLater(ctx context.Context, key, field, value string) error {
	l, ok := a.calls.(crm.CallStoreLazy)
	if !ok {
		return a.set(ctx, key, field, value)
	}
	if err := l.SetLater(key, map[string]string{field: value}); err != nil {
		return crm.Transient(fmt.Errorf("%s: writing the call store: %w", a.typ, err))
	}
	return nil
}

// sendCalls is the batcher's request; the Deliver path waits on its share of the limiter.
func (a *Adapter) sendCalls(ctx context.Context, calls []api.Call) (*api.CallsResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return a.client.AddCalls(ctx, calls)
}

// finishCall records a placed call in the CallStore before its Deliver is released (written with
// the store's next commit, its acknowledgement at the latest; the sent marker guards a crash
// before it), so that a redelivery after a cancelled Deliver does not log it twice; an item
// amoCRM did not place has its sent marker cleared, and one whose outcome is unknown gets an
// unsure marker (recover.go).
func (a *Adapter) finishCall(it *batchItem) {
	switch {
	case it.placed == nil && ambiguous(it.err):
		if err := a.setLater(a.ctx, it.call.Uniq, fieldCall, markerState(stateUnsure, a.now())); err != nil {
			a.log.Warn("the outcome of a calls request is unknown and the call store failed", "key", it.call.Uniq, "err", err)
		}
	case it.placed == nil:
		if err := a.setLater(a.ctx, it.call.Uniq, fieldCall, ""); err != nil {
			a.log.Warn("clearing a sent marker failed: the next attempt looks the call up first", "key", it.call.Uniq, "err", err)
		}
	}
	switch {
	case it.placed != nil:
		a.m.calls.WithLabelValues("logged").Inc()
		state := "logged:" + api.EntityPlural(it.placed.EntityType.String()) + ":" + strconv.FormatInt(it.placed.EntityID, 10)
		crm.Trace(it.ctx, "response", "call placed", fmt.Sprintf("amoCRM call %d in %s %d", it.placed.ID, it.placed.EntityType, it.placed.EntityID))
		if err := a.setLater(a.ctx, it.call.Uniq, fieldCall, state); err != nil {
			a.log.Warn("the call is logged in amoCRM but the call store failed: a retry may log it again", "key", it.call.Uniq, "err", err)
		}
	case it.itemErr != nil && it.itemErr.Code() == api.ErrEntityNotFound:
		a.m.calls.WithLabelValues("unknown").Inc()
	default:
		a.m.calls.WithLabelValues("failed").Inc()
	}
}

// logCall logs rec and returns the call store state.
func (a *Adapter) logCall(ctx context.Context, rec *call.Record) (string, error) {
	if rec.Customer == "" {
		return a.skip(ctx, rec, "anonymous", "the caller's number is unknown (anonymous call): amoCRM cannot match it")
	}
	if state, err := a.logOnHookEntity(ctx, rec); err != nil || state != "" {
		return state, err
	}
	// A number whose earlier call became an incoming lead: its contact is hidden, log the call
	// on that lead while it waits (unsorted.go).
	ref, ok, err := a.unsortedOf(ctx, rec.Customer)
	if err != nil {
		return "", err
	}
	if ok {
		if state, err := a.logRepeat(ctx, rec, ref); err != nil || state != "" {
			return state, err
		}
	}
	it, err := a.placeCall(ctx, rec)
	if err != nil {
		return "", err
	}
	switch {
	case it.err != nil:
		return "", it.err
	case it.placed != nil:
		return "logged:" + api.EntityPlural(it.placed.EntityType.String()) + ":" + strconv.FormatInt(it.placed.EntityID, 10), nil
	case it.itemErr.Code() == api.ErrEntityNotFound:
		crm.Trace(ctx, "decision", "unknown number", rec.Customer+" matches no contact or company (263)")
		return a.handleUnknown(ctx, rec)
	}
	return "", crm.Permanent(fmt.Errorf("logging the call: amoCRM refused it: %s %s", it.itemErr.Status, it.itemErr.Title))
}

// placeCall marks the record sent (committed: it survives a crash), then logs its call in the next batch and waits
// for the item's outcome (finishCall has stored it by then).
func (a *Adapter) placeCall(ctx context.Context, rec *call.Record) (*batchItem, error) {
	if err := a.setLazy(ctx, rec.Key(), fieldCall, markerState(stateSent, a.now())); err != nil {
		return nil, err
	}
	it := &batchItem{call: a.callItem(ctx, rec), ctx: ctx}
	if err := a.batch.submit(ctx, it); err != nil {
		return nil, fmt.Errorf("logging the call: %w", err)
	}
	return it, nil
}

// callItem maps a record onto a calls item.
func (a *Adapter) callItem(ctx context.Context, rec *call.Record) api.Call {
	c := api.Call{Direction: string(rec.Direction), Source: a.cfg.Source, Phone: rec.Customer, Uniq: rec.Key(),
		CallStatus: callStatus(rec), CreatedAt: rec.StartedAt.Unix()}
	if rec.Disposition == call.Answered {
		c.Duration = rec.TalkSeconds
		if a.cfg.RecordingLinks && a.rec != nil && rec.Recording != "" {
			c.Link = a.rec.URL(rec.Recording)
		}
	}
	if u := a.callUser(ctx, rec); u != 0 {
		c.CallResponsible, c.ResponsibleUserID, c.CreatedBy = u, u, u
	}
	return c
}

// callUser is the user a call is logged under: the agent's (agentUser), else default_user (a
// call no mapped extension took part in, such as one abandoned in the IVR), else none.
func (a *Adapter) callUser(ctx context.Context, rec *call.Record) int64 {
	if u := a.hookResponsible(ctx); u != 0 {
		return u
	}
	if u := a.agentUser(ctx, rec); u != 0 {
		return u
	}
	return a.cfg.DefaultUser
}

// callStatus maps the outcome to call_status (docs/crm-apis.md Part D): voicemail 1, answered 4,
// busy 7, no answer 6; a failed call by the Q.850 cause of its customer channel the way
// Asterisk's Dial sets DIALSTATUS from it (statusByCause).
func callStatus(rec *call.Record) int {
	if rec.HasFlag(call.FlagVoicemail) {
		return api.StatusVoicemail
	}
	switch rec.Disposition {
	case call.Answered:
		return api.StatusTalked
	case call.Busy:
		return api.StatusBusy
	case call.Failed:
		return statusByCause(rec.HangupCause)
	}
	return api.StatusNoAnswer
}

// statusByCause is the call_status of a failed call (no dial rang out: congestion, unavailable,
// invalid number, no route) by its Q.850 hangup cause, docs/crm-apis.md Part D.1. Asterisk's Dial
// counts cause 17 as BUSY, 34 as CONGESTION, 16 and 19 as no answer and every other cause as
// CHANUNAVAIL (app_dial.c handle_cause); Part D maps CHANUNAVAIL to 3, CONGESTION to 6 and an
// invalid number (1, 28) to 5.
func statusByCause(cause int) int {
	switch cause {
	case 1, 28: // unallocated number, invalid number format
		return api.StatusWrongNumber
	case 17: // user busy
		return api.StatusBusy
	case 0, 16, 19, 34: // unknown, normal clearing, no answer; congestion
		return api.StatusNoAnswer
	}
	return api.StatusNotAvailable // CHANUNAVAIL: no route (3), subscriber absent (20), ...
}

// agentExt is the extension a call belongs to: who talked last (after transfers the employee who
// ended up with the customer, as Bitrix24's finish user), else who answered, else who rang last
// (missed inbound), else the caller (outbound: the placing extension, what rang first, or the
// caller id when it is a mapped extension).
func (a *Adapter) agentExt(ctx context.Context, rec *call.Record) string {
	for i := len(rec.Legs) - 1; i >= 0; i-- {
		if rec.Legs[i].Ext != "" {
			return rec.Legs[i].Ext
		}
	}
	if rec.AnsweredBy != "" {
		return rec.AnsweredBy
	}
	if rec.Direction == call.Inbound {
		for i := len(rec.Rang) - 1; i >= 0; i-- {
			if a.user(ctx, rec.Rang[i]) != 0 {
				return rec.Rang[i]
			}
		}
		return ""
	}
	if rec.CallerExt != "" {
		return rec.CallerExt
	}
	if len(rec.Rang) > 0 {
		return rec.Rang[0]
	}
	if a.user(ctx, rec.Line) != 0 {
		return rec.Line
	}
	return ""
}

func (a *Adapter) agentUser(ctx context.Context, rec *call.Record) int64 {
	return a.user(ctx, a.agentExt(ctx, rec))
}

func (a *Adapter) skip(ctx context.Context, rec *call.Record, reason, why string) (string, error) {
	crm.Trace(ctx, "decision", "call not logged", why)
	a.m.unknown.WithLabelValues("skipped").Inc()
	state := "skipped:" + reason
	return state, a.setLater(ctx, rec.Key(), fieldCall, state)
}

// handleUnknown applies unknown_number to a call amoCRM could not place.
func (a *Adapter) handleUnknown(ctx context.Context, rec *call.Record) (string, error) {
	action, path := a.cfg.UnknownNumber.Inbound, "unknown_number.inbound"
	if rec.Direction == call.Outbound {
		action, path = a.cfg.UnknownNumber.Outbound, "unknown_number.outbound"
	}
	if action == UnknownSkip {
		return a.skip(ctx, rec, "unknown", rec.Customer+" matches no contact and "+path+" is skip")
	}
	unlock, err := a.numbers.lock(ctx, rec.Customer)
	if err != nil {
		return "", fmt.Errorf("waiting for another call of %s: %w", rec.Customer, err)
	}
	defer unlock()
	// Another call of the number may have made its incoming lead meanwhile, or one waits that
	// this adapter did not make (unsorted.go).
	ref, ok, err := a.unsortedOf(ctx, rec.Customer)
	if err == nil && !ok {
		if ref, ok, err = a.findUnsorted(ctx, rec.Customer); ok && err == nil {
			crm.Trace(ctx, "decision", "incoming lead found", rec.Customer+" already has incoming lead "+ref.UID)
			err = a.rememberUnsorted(ctx, rec.Customer, ref)
		}
	}
	if err != nil {
		return "", err
	}
	if ok {
		state, err := a.logRepeat(ctx, rec, ref)
		if err != nil || state != "" {
			return state, err
		}
		// It left Incoming: accepted, its contact is visible now; declined, it is not.
		it, err := a.placeCall(ctx, rec)
		switch {
		case err != nil:
			return "", err
		case it.err != nil:
			return "", it.err
		case it.placed != nil:
			return "logged:" + api.EntityPlural(it.placed.EntityType.String()) + ":" + strconv.FormatInt(it.placed.EntityID, 10), nil
		case it.itemErr.Code() != api.ErrEntityNotFound:
			return "", crm.Permanent(fmt.Errorf("logging the call: amoCRM refused it: %s %s", it.itemErr.Status, it.itemErr.Title))
		}
	}
	if action == UnknownUnsorted {
		return a.addUnsorted(ctx, rec)
	}
	return a.createContactAndLog(ctx, rec)
}

func expand(tmpl, number string) string { return strings.ReplaceAll(tmpl, "{number}", number) }

func (a *Adapter) addUnsorted(ctx context.Context, rec *call.Record) (string, error) {
	u := a.callUser(ctx, rec)
	line := a.hookLine(ctx, rec.Line)
	from, phone := rec.Customer, line
	if rec.Direction == call.Outbound {
		from, phone = line, rec.Customer
		if from == "" {
			from = a.agentExt(ctx, rec)
		}
	}
	if phone == "" {
		phone = rec.Customer
	}
	item := api.UnsortedSIP{SourceUID: rec.Key(), SourceName: a.cfg.Source, PipelineID: a.cfg.UnknownNumber.PipelineID,
		CreatedAt: rec.StartedAt.Unix(), RequestID: "u1",
		Metadata: api.SIPMetadata{Uniq: rec.Key(), From: from, Phone: phone, CalledAt: rec.StartedAt.Unix(), ServiceCode: "pbxbridge",
			CallResponsible: u, IsCallEventNeeded: true}}
	if rec.Disposition == call.Answered {
		item.Metadata.Duration = rec.TalkSeconds
		if a.cfg.RecordingLinks && a.rec != nil && rec.Recording != "" {
			item.Metadata.Link = a.rec.URL(rec.Recording)
		}
	}
	item.Embedded.Leads = []map[string]any{{"name": expand(a.cfg.UnknownNumber.LeadName, rec.Customer)}}
	item.Embedded.Contacts = []map[string]any{{"name": expand(a.cfg.UnknownNumber.ContactName, rec.Customer),
		"custom_fields_values": api.PhoneField(rec.Customer)}}
	res, err := a.client.AddUnsortedSIP(ctx, []api.UnsortedSIP{item})
	var state string
	var e *api.Error
	switch {
	case errors.As(err, &e) && e.HTTPStatus == http.StatusBadRequest && duplicateSourceUID(e):
		// Created by an earlier attempt whose answer was lost.
		state = "unsorted:duplicate:0"
	case err != nil:
		return "", fmt.Errorf("creating an incoming lead: %w", err)
	case len(res.Embedded.Unsorted) == 0:
		return "", crm.Transient(errors.New("creating an incoming lead: the answer lists none"))
	default:
		un := res.Embedded.Unsorted[0]
		var lead, contact int64
		if len(un.Embedded.Leads) > 0 {
			lead = un.Embedded.Leads[0].ID
		}
		if len(un.Embedded.Contacts) > 0 {
			contact = un.Embedded.Contacts[0].ID
		}
		state = "unsorted:" + un.UID + ":" + strconv.FormatInt(lead, 10)
		if lead != 0 && un.UID != "" {
			if err := a.rememberUnsorted(ctx, rec.Customer, unsortedRef{UID: un.UID, Lead: lead, Contact: contact, Checked: a.now()}); err != nil {
				a.log.Warn("remembering the incoming lead of a number failed: its next call may make another", "number", rec.Customer, "err", err)
			}
		}
	}
	a.m.unknown.WithLabelValues("unsorted").Inc()
	crm.Trace(ctx, "decision", "incoming lead", "the call from an unknown number became an incoming lead ("+state+")")
	return state, a.setLater(ctx, rec.Key(), fieldCall, state)
}

func duplicateSourceUID(e *api.Error) bool {
	for _, v := range e.Validation {
		for _, ve := range v.Errors {
			if ve.Path == "source_uid" && ve.Code == "NotUnique" {
				return true
			}
		}
	}
	return false
}

// createContactAndLog creates the contact (once per record) and logs the call again.
func (a *Adapter) createContactAndLog(ctx context.Context, rec *call.Record) (string, error) {
	key := rec.Key()
	id, err := a.get(ctx, key, fieldContact)
	if err != nil {
		return "", err
	}
	if id == "" {
		owner := a.agentUser(ctx, rec)
		if owner == 0 {
			owner = a.cfg.DefaultUser
		}
		res, err := a.client.AddContacts(ctx, []api.NewContact{{Name: expand(a.cfg.UnknownNumber.ContactName, rec.Customer),
			ResponsibleUserID: owner, CreatedBy: owner, CustomFields: api.PhoneField(rec.Customer), RequestID: "0"}})
		if err != nil {
			return "", fmt.Errorf("creating a contact for %s: %w", rec.Customer, err)
		}
		created := res.Embedded["contacts"]
		if len(created) == 0 {
			return "", crm.Transient(errors.New("creating a contact: the answer lists none"))
		}
		id = strconv.FormatInt(created[0].ID, 10)
		if err := a.setLater(ctx, key, fieldContact, id); err != nil {
			return "", err
		}
		a.m.unknown.WithLabelValues("contact_created").Inc()
		crm.Trace(ctx, "decision", "contact created", "contact "+id+" for "+rec.Customer+"; logging the call again")
	}
	it, err := a.placeCall(ctx, rec)
	if err != nil {
		return "", err
	}
	switch {
	case it.err != nil:
		return "", it.err
	case it.placed != nil:
		return "logged:" + api.EntityPlural(it.placed.EntityType.String()) + ":" + strconv.FormatInt(it.placed.EntityID, 10), nil
	}
	return "", crm.Transient(fmt.Errorf("logging the call: contact %s was created but amoCRM did not match the call yet (%s %s)", id, it.itemErr.Status, it.itemErr.Title))
}

func (a *Adapter) wantsTask(rec *call.Record) bool {
	return a.cfg.MissedCallTask.Enabled && rec.Direction == call.Inbound && rec.Disposition != call.Answered && rec.Customer != ""
}

// entityOf returns the entity a call landed in, from its call store state.
func entityOf(state string) (string, int64) {
	parts := strings.Split(state, ":")
	switch {
	case len(parts) == 3 && parts[0] == "logged":
		id, _ := strconv.ParseInt(parts[2], 10, 64)
		return parts[1], id
	case len(parts) == 3 && parts[0] == "unsorted":
		id, _ := strconv.ParseInt(parts[2], 10, 64)
		if id != 0 {
			return "leads", id
		}
	}
	return "", 0
}

// ensureTask creates the missed-call task once.
func (a *Adapter) ensureTask(ctx context.Context, rec *call.Record, state string) error {
	key := rec.Key()
	cur, err := a.get(ctx, key, fieldTask)
	if err != nil {
		return err
	}
	if strings.HasPrefix(cur, "done:") || cur == "none" {
		return nil
	}
	etype, eid := entityOf(state)
	marker := "[pbxbridge " + key + "]"
	if cur == "pending" && eid != 0 {
		// An earlier attempt may have created it without us learning the id.
		tasks, err := a.client.FindCallTasks(ctx, etype, eid)
		if err != nil {
			return fmt.Errorf("looking for the missed-call task: %w", err)
		}
		for _, t := range tasks {
			if strings.Contains(t.Text, marker) {
				a.m.tasks.WithLabelValues("found").Inc()
				return a.setLater(ctx, key, fieldTask, "done:"+strconv.FormatInt(t.ID, 10))
			}
		}
	}
	user, why, err := a.taskResponsible(ctx, rec, state)
	if err != nil {
		return err
	}
	if user == 0 {
		a.m.tasks.WithLabelValues("no_responsible").Inc()
		crm.Trace(ctx, "decision", "no missed-call task", "nobody to assign it to: "+why)
		return a.setLater(ctx, key, fieldTask, "none")
	}
	if err := a.setLazy(ctx, key, fieldTask, "pending"); err != nil {
		return err
	}
	till := rec.EndedAt.Add(a.cfg.MissedCallTask.Deadline)
	if soon := a.now().Add(15 * time.Minute); till.Before(soon) {
		till = soon
	}
	text := expand(a.cfg.MissedCallTask.Text, rec.Customer)
	text, till = a.hookTask(ctx, text, till)
	task := api.Task{TaskTypeID: api.TaskTypeCall, Text: text + " " + marker,
		CompleteTill: till.Unix(), ResponsibleUserID: user, RequestID: "t1"}
	if eid != 0 {
		task.EntityType, task.EntityID = etype, eid
	}
	res, err := a.client.AddTasks(ctx, []api.Task{task})
	if err != nil {
		a.m.tasks.WithLabelValues("failed").Inc()
		return fmt.Errorf("creating the missed-call task: %w", err)
	}
	id := int64(0)
	if t := res.Embedded["tasks"]; len(t) > 0 {
		id = t[0].ID
	}
	a.m.tasks.WithLabelValues("created").Inc()
	crm.Trace(ctx, "decision", "missed-call task", fmt.Sprintf("task %d for user %d (%s)", id, user, why))
	return a.setLater(ctx, key, fieldTask, "done:"+strconv.FormatInt(id, 10))
}

// taskResponsible walks missed_call_task.responsible.
func (a *Adapter) taskResponsible(ctx context.Context, rec *call.Record, state string) (int64, string, error) {
	if u := a.hookResponsible(ctx); u != 0 {
		return u, "the responsible hook", nil
	}
	var tried []string
	for _, step := range a.cfg.MissedCallTask.Responsible {
		switch step {
		case ChainContactOwner:
			if strings.HasPrefix(state, "unsorted:") || strings.HasPrefix(state, "skipped:") {
				tried = append(tried, "no contact")
				continue
			}
			c, err := a.findContact(ctx, rec.Customer)
			if err != nil {
				return 0, "", fmt.Errorf("finding the contact's owner: %w", err)
			}
			if c != nil && c.ResponsibleUserID != 0 {
				return c.ResponsibleUserID, fmt.Sprintf("owner of contact %d", c.ID), nil
			}
			tried = append(tried, "the contact has no owner")
		case ChainLastRang:
			for i := len(rec.Rang) - 1; i >= 0; i-- {
				if u := a.user(ctx, rec.Rang[i]); u != 0 {
					return u, "extension " + rec.Rang[i] + " rang last", nil
				}
			}
			tried = append(tried, "no ringing extension is mapped")
		case ChainDefault:
			if a.cfg.DefaultUser != 0 {
				return a.cfg.DefaultUser, "default_user", nil
			}
			tried = append(tried, "no default_user")
		}
	}
	return 0, strings.Join(tried, ", "), nil
}

// findContact returns the first contact whose phone has the same last 10 digits as number.
func (a *Adapter) findContact(ctx context.Context, number string) (*api.Contact, error) {
	want := lastDigits(number, 10)
	if len(want) < 5 {
		return nil, nil
	}
	cs, err := a.client.FindContacts(ctx, want, 10)
	if err != nil {
		return nil, err
	}
	for i := range cs {
		for _, p := range cs[i].Phones() {
			if lastDigits(p, 10) == want {
				return &cs[i], nil
			}
		}
	}
	return nil, nil
}

func lastDigits(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	d := b.String()
	if len(d) > n {
		return d[len(d)-n:]
	}
	return d
}

// Live shows amoCRM's call pop-up (POST /api/v2/events, type phone_call: "a call is in progress
// with this number", with the contact, company, lead or customer it matches, or an offer to
// create a contact) to the user of the ringing extension: for an inbound call the extension that
// rings (popups), for an outbound call the extension that dials, when the customer's phone
// starts ringing (popups_outbound; not for click-to-call, whose user is on the card already).
// The events API has one type for both directions; amoCRM has no separate outgoing pop-up.
//
// The pop-up waits for the account's limiter ahead of every delivery. It is sent only while ctx
// lasts: the daemon cancels ctx when the phone stops ringing, and a pop-up that could not be sent
// by then is dropped (an error wrapping crm.ErrLiveStale), never sent late.
func (a *Adapter) Live(ctx context.Context, ev *call.Live) error {
	if ev.Kind != call.LiveRinging || ev.Customer == "" {
		return nil
	}
	if a.hooks != nil {
		ctx = crm.WithHookCall(ctx, a.hooks, crm.LiveRecord(ev), true)
	}
	switch {
	case ev.Direction == call.Inbound && a.cfg.Popups:
	case ev.Direction == call.Outbound && a.cfg.Popups && a.cfg.PopupsOutbound && ev.OriginateID == "":
	default:
		return nil
	}
	u := a.user(ctx, ev.Ext)
	if u == 0 {
		a.m.popups.WithLabelValues("unmapped").Inc()
		crm.Trace(ctx, "decision", "no pop-up", "extension "+ev.Ext+" is not mapped to an amoCRM user")
		return nil
	}
	ctx = api.WithPriority(ctx, api.PriorityLive)
	if err := a.popups.submit(ctx, api.Event{Type: "phone_call", PhoneNumber: ev.Customer, Users: []int64{u}}); err != nil {
		switch {
		case errors.Is(err, crm.ErrLiveStale):
			a.m.popups.WithLabelValues("dropped").Inc()
			crm.Trace(ctx, "decision", "pop-up dropped", fmt.Sprintf("the pop-up for user %d could not be sent while the phone rang: %v", u, err))
			return fmt.Errorf("%s: pop-up: %w", a.typ, err)
		case errors.Is(err, errPopupQueueFull):
			a.m.popups.WithLabelValues("dropped").Inc()
			return crm.Permanent(fmt.Errorf("%s: pop-up: %w: %w", a.typ, crm.ErrLiveStale, err)) // a late pop-up is useless: do not retry
		}
		a.m.popups.WithLabelValues("failed").Inc()
		return classify(fmt.Errorf("%s: pop-up: %w", a.typ, err))
	}
	a.m.popups.WithLabelValues("sent").Inc()
	return nil
}

// Account implements crm.AccountIdentifier (GET /api/v4/account). When amoCRM is unreachable the
// identity saved at authorisation is returned.
func (a *Adapter) Account(ctx context.Context) (crm.Account, error) {
	acc, err := a.client.Account(ctx)
	if err != nil {
		t := a.tokens.snapshot()
		if t.AccountID != 0 {
			if c, _ := crm.Classify(classify(err)); c == crm.ClassTransient || c == crm.ClassRateLimited {
				return crm.Account{AccountID: t.AccountID, Subdomain: t.Subdomain}, nil
			}
		}
		return crm.Account{}, a.wrap(fmt.Errorf("reading the account: %w", err))
	}
	a.tokens.rememberAccount(acc)
	a.mu.Lock()
	a.account = acc
	a.mu.Unlock()
	return crm.Account{AccountID: acc.ID, Subdomain: acc.Subdomain}, nil
}

// Status implements crm.StatusReporter.
func (a *Adapter) Status() crm.Status {
	st, detail := a.tokens.state()
	s := crm.Status{Auth: st, Detail: detail}
	if st != "ok" {
		s.ConnectURL = a.tokens.connectURL()
	}
	if until := a.limiter.PausedUntil(); !until.IsZero() {
		msg := "amoCRM answered 429: the account pauses until " + until.UTC().Format(time.RFC3339)
		if s.Detail != "" {
			s.Detail += "; " + msg
		} else {
			s.Detail = msg
		}
	}
	if until := a.client.BlockedUntil(); !until.IsZero() {
		msg := "amoCRM blocked requests after repeated 429s; sending resumes at " + until.UTC().Format(time.RFC3339)
		if s.Detail != "" {
			s.Detail += "; " + msg
		} else {
			s.Detail = msg
		}
	}
	return s
}

// memStore is the CallStore used when the daemon gives none (tests of the adapter alone).
type memStore struct {
	mu sync.Mutex
	m  map[string]string
}

func newMemStore() *memStore { return &memStore{m: map[string]string{}} }

func (s *memStore) Get(_ context.Context, key, field string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key+"\x00"+field]
	return v, ok, nil
}

func (s *memStore) Set(_ context.Context, key, field, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key+"\x00"+field] = value
	return nil
}

var (
	_ crm.Adapter           = (*Adapter)(nil)
	_ crm.LiveHandler       = (*Adapter)(nil)
	_ crm.Starter           = (*Adapter)(nil)
	_ crm.Closer            = (*Adapter)(nil)
	_ crm.AccountIdentifier = (*Adapter)(nil)
	_ crm.StatusReporter    = (*Adapter)(nil)
	_ crm.CallStore         = (*memStore)(nil)
)
