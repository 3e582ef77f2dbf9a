package bitrix24

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// Route paths, relative to /crm/<connector name>/.
const (
	pathInstall  = "/install"
	pathCallback = "/oauth/callback"
	pathEvents   = "/events"
)

// originateGrace is added to the ring timeout for an originate to complete.
const originateGrace = 30 * time.Second

// Routes implements crm.HTTPRoutes:
//
//	POST /install         ONAPPINSTALL / ONAPPUNINSTALL of the local application
//	GET  /oauth/callback  the OAuth redirect (re-authorisation from the status page)
//	POST /events          ONEXTERNALCALLSTART (click-to-call), ONEXTERNALCALLBACKSTART
//	POST /module/events   the same events, posted and signed by the pbxbridge portal module
//	                      (portal_token mode; module.go)
func (a *Adapter) Routes() []crm.Route {
	return []crm.Route{
		{Pattern: "POST " + pathInstall, Handler: http.HandlerFunc(a.serveInstall)},
		{Pattern: "GET " + pathCallback, Handler: http.HandlerFunc(a.serveOAuthCallback)},
		{Pattern: "POST " + pathEvents, Handler: http.HandlerFunc(a.serveEvent)},
		{Pattern: "POST " + pathModuleEvents, Handler: http.HandlerFunc(a.serveModuleEvent)},
	}
}

func (a *Adapter) reject(w http.ResponseWriter, status int, reason, msg string) {
	a.m.webhookRejected.WithLabelValues(reason).Inc()
	http.Error(w, msg, status)
}

func readEvent(w http.ResponseWriter, r *http.Request) (*api.Event, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxEventBody))
	if err != nil {
		return nil, fmt.Errorf("reading the request: %w", err)
	}
	return api.ParseEvent(body)
}

func equalSecret(got, want string) bool {
	if want == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func portalHost(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return strings.ToLower(p.Host)
}

// eventDomain is the domain events must carry: the configured portal's (in webhook mode
// without portal_url, the webhook's host).
func (a *Adapter) eventDomain() string {
	if h := portalHost(a.cfg.PortalURL); h != "" {
		return h
	}
	if a.webhook != nil {
		return portalHost(a.cfg.Auth.WebhookURL.Value())
	}
	return ""
}

// checkEventAuth checks that an event (or an uninstall) comes from the installed application on
// the bound portal: auth[application_token] must be the installed one (compared in constant
// time), auth[domain] the configured portal's and auth[member_id] the installed (or bound) one.
// Without an installation (and no auth.application_token) nothing is accepted. It answers a
// refusal itself (401) and reports whether the event may go on.
func (a *Adapter) checkEventAuth(w http.ResponseWriter, ev *api.Event) bool {
	wantToken, wantMember := a.cfg.Auth.ApplicationToken.Value(), ""
	if a.tokens != nil {
		if t := a.tokens.Tokens(); t != nil {
			if t.ApplicationToken != "" {
				wantToken = t.ApplicationToken
			}
			wantMember = t.MemberID
		}
		if wantMember == "" {
			wantMember = a.boundMember()
		}
	}
	if !equalSecret(ev.Auth["application_token"], wantToken) {
		a.reject(w, http.StatusUnauthorized, "application_token", "wrong application token")
		return false
	}
	if d := a.eventDomain(); d == "" || !strings.EqualFold(strings.TrimSpace(ev.Auth["domain"]), d) {
		a.reject(w, http.StatusUnauthorized, "wrong_portal", "the event is not from the portal this connector serves")
		return false
	}
	if wantMember != "" && ev.Auth["member_id"] != wantMember {
		a.reject(w, http.StatusUnauthorized, "member_id", "the event is not from the portal this connector is bound to")
		return false
	}
	return true
}

// connectURL is where an admin (re-)authorises the application: the portal's authorisation page
// with a fresh state (see oauthStates).
func (a *Adapter) connectURL() string {
	if a.tokens == nil {
		return ""
	}
	return a.tokens.AuthorizeURL(a.states.issue(a.now()))
}

// serveOAuthCallback finishes a browser authorisation. The state must be one this connector
// issued (single use, 30 minutes), the portal the configured one and, once bound, the member_id
// the bound one; the code is exchanged at the OAuth server with our client credentials, and the
// answer must name the configured portal and the bound member_id before the tokens are stored.
func (a *Adapter) serveOAuthCallback(w http.ResponseWriter, r *http.Request) {
	if a.tokens == nil {
		a.reject(w, http.StatusNotFound, "install_not_oauth", "this connector does not use a local application (its auth.mode is not oauth)")
		return
	}
	q := r.URL.Query()
	if !a.states.consume(a.now(), q.Get("state")) {
		a.reject(w, http.StatusUnauthorized, "oauth_state", "unknown, used or expired authorisation request: start it again from the pbxbridge status page")
		return
	}
	if d := q.Get("domain"); d != "" && !strings.EqualFold(d, portalHost(a.cfg.PortalURL)) {
		a.reject(w, http.StatusForbidden, "wrong_portal", "this connector serves "+portalHost(a.cfg.PortalURL))
		return
	}
	bound := a.boundMember()
	if m := q.Get("member_id"); bound != "" && m != "" && m != bound {
		a.refuseRebind(bound, m)
		a.reject(w, http.StatusForbidden, "member_id", "this connector is bound to another Bitrix24 portal (member_id): see the pbxbridge log")
		return
	}
	code := q.Get("code")
	if code == "" {
		a.reject(w, http.StatusBadRequest, "malformed", "no code")
		return
	}
	endpoint := ""
	if d := strings.TrimSpace(q.Get("server_domain")); d != "" {
		endpoint = "https://" + d + "/rest/"
	} else if t := a.tokens.Tokens(); t != nil {
		endpoint = t.ServerEndpoint
	}
	resp, err := a.tokenRequest(context.WithoutCancel(r.Context()), endpoint, url.Values{"grant_type": {"authorization_code"}, "code": {code}})
	if err != nil {
		if errors.Is(err, errProofUnavailable) {
			http.Error(w, "the Bitrix24 OAuth server did not answer: try again", http.StatusBadGateway)
			return
		}
		a.reject(w, http.StatusUnauthorized, "oauth_code", "Bitrix24 refused the authorisation: "+err.Error())
		return
	}
	t, err := a.provenTokens(resp, bound)
	if err != nil {
		a.refuseUnproven(w, err)
		return
	}
	if err := a.tokens.Install(t); err != nil {
		a.log.Error("bitrix24: storing the tokens of an authorisation failed", "err", err)
		http.Error(w, "cannot store the tokens", http.StatusInternalServerError)
		return
	}
	if err := a.bind(t.MemberID, t.Domain); err != nil {
		a.log.Warn("bitrix24: the portal binding could not be saved; it holds until the daemon stops", "err", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "Bitrix24 is connected to pbxbridge. You can close this page.\n")
}

// serveEvent receives click-to-call and callback events. The event must come from the installed
// application on the bound portal (checkEventAuth: 401 otherwise), be fresh (its ts within the
// last hour: 400 otherwise) and new: a click-to-call is accepted once per CALL_ID, a callback
// once per content (see replay.go); a repeated one is answered 200 "duplicate" and does
// nothing. Accepted events are answered at once (Bitrix24 does not wait) and handled in the
// background.
func (a *Adapter) serveEvent(w http.ResponseWriter, r *http.Request) {
	ev, err := readEvent(w, r)
	if err != nil {
		a.reject(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	if !a.checkEventAuth(w, ev) {
		return
	}
	a.handleEvent(w, r, ev)
}

// handleEvent runs an authenticated click-to-call or callback event (serveEvent, and
// serveModuleEvent for the portal module's): it checks the data, the event's freshness and that
// it is new (replay guard and CallStore), answers, and handles it in the background.
func (a *Adapter) handleEvent(w http.ResponseWriter, r *http.Request, ev *api.Event) {
	var id, kind string
	var run func(context.Context)
	switch ev.Name {
	case api.EventExternalCallStart:
		s, err := ev.ExternalCallStart()
		if err != nil {
			a.reject(w, http.StatusBadRequest, "malformed", err.Error())
			return
		}
		id, kind, run = clickID(s), "click_to_call", func(ctx context.Context) { a.clickToCall(ctx, s) }
	case api.EventExternalCallbackStart:
		s, err := ev.ExternalCallbackStart()
		if err != nil {
			a.reject(w, http.StatusBadRequest, "malformed", err.Error())
			return
		}
		number, err := dialNumber(s.PhoneNumber)
		if err != nil {
			a.m.clickToCall.WithLabelValues("callback_bad_number").Inc()
			a.reject(w, http.StatusBadRequest, "bad_number", "ONEXTERNALCALLBACKSTART: data[PHONE_NUMBER]: "+err.Error())
			return
		}
		id, kind = callbackID(ev, s), "callback"
		s.PhoneNumber = number
		run = func(ctx context.Context) { a.callback(ctx, s) }
	default:
		_, _ = io.WriteString(w, "ignored\n")
		return
	}
	now := a.now()
	if !fresh(ev, now) {
		a.reject(w, http.StatusBadRequest, "stale_event", "the event's ts is not within the last hour")
		return
	}
	switch a.replays.admit(now, id) {
	case replayDuplicate:
		a.m.replays.WithLabelValues(kind).Inc()
		_, _ = io.WriteString(w, "duplicate\n")
		return
	case replayFull:
		a.m.replayFull.Inc()
		a.reject(w, http.StatusServiceUnavailable, "replay_guard_full", "too many events: try again later")
		return
	}
	a.m.replayEntries.Set(float64(a.replays.len()))
	// The memory forgets at a restart or reload: the CallStore remembers too.
	seen, err := a.markEvent(r.Context(), id)
	if err != nil {
		a.replays.forget(id)
		a.log.Warn("bitrix24: recording an event failed", "event", ev.Name, "err", err)
		http.Error(w, "cannot record the event", http.StatusServiceUnavailable)
		return
	}
	if seen {
		a.m.replays.WithLabelValues(kind).Inc()
		_, _ = io.WriteString(w, "duplicate\n")
		return
	}
	a.spawn(run)
	_, _ = io.WriteString(w, "ok\n")
}

// markEvent records an accepted event id in the CallStore; seen is true when it was there
// already (a replay after a restart). The entries go with the store's retention.
func (a *Adapter) markEvent(ctx context.Context, id string) (seen bool, err error) {
	sum := sha256.Sum256([]byte(id))
	key := eventIndex + hex.EncodeToString(sum[:16])
	v, err := a.get(ctx, key, fEventSeen)
	if err != nil || v != "" {
		return v != "", err
	}
	return false, a.set(ctx, key, fEventSeen, a.now().UTC().Format(time.RFC3339))
}

func (a *Adapter) spawn(fn func(context.Context)) {
	ctx := a.background()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn(ctx)
	}()
}

func newOriginateID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// clickToCall rings the clicking user's extension, then dials the number. The call is already
// registered by Bitrix24: its CALL_ID is remembered under the originate id, so the record of the
// call finishes it without a second register. A failure finishes it at once with the reason, so
// the CRM user sees it on the card.
func (a *Adapter) clickToCall(ctx context.Context, s *api.ExternalCallStart) {
	ctx = api.WithPriority(ctx)
	fail := func(result, code, reason string) {
		a.m.clickToCall.WithLabelValues(result).Inc()
		a.finishFailed(ctx, s.CallID, s.UserID, code, reason)
	}
	if !a.cfg.ClickToCall.Enabled {
		fail("disabled", "OTHER", "click-to-call is switched off in pbxbridge")
		return
	}
	if a.orig == nil {
		fail("unavailable", "503", "click-to-call is not available: pbxbridge has no PBX connection that can place calls")
		return
	}
	raw := s.PhoneNumber
	if raw == "" {
		raw = s.PhoneNumberInternational
	}
	number, err := dialNumber(raw)
	if err != nil {
		if len(raw) > 40 {
			raw = raw[:40] + "…"
		}
		fail("bad_number", "OTHER", "pbxbridge does not dial "+strconv.Quote(raw)+": only digits and one leading + are allowed")
		return
	}
	ext, err := a.users.extOf(ctx, s.UserID)
	if err != nil {
		fail("error", "OTHER", "pbxbridge could not look up your extension in Bitrix24")
		return
	}
	if ext == "" {
		fail("no_extension", "OTHER", "your Bitrix24 user has no extension: fill in Internal phone in your profile or ask the admin to map it in pbxbridge")
		return
	}
	if !validExtension(ext) {
		fail("bad_extension", "OTHER", "your Internal phone in Bitrix24 is not an extension pbxbridge rings (letters, digits, - and _ only)")
		return
	}
	id := newOriginateID("b24c2c-")
	if err := a.rememberOriginate(ctx, id, s.CallID, s.UserID, "click2call"); err != nil {
		fail("error", "OTHER", "pbxbridge could not store the call")
		return
	}
	octx, cancel := context.WithTimeout(ctx, a.cfg.ClickToCall.RingTimeout+originateGrace)
	defer cancel()
	_, err = a.orig.Originate(octx, asterisk.OriginateRequest{
		Extension: ext, Number: number, CallerIDName: "CRM: " + number, ID: id, Timeout: a.cfg.ClickToCall.RingTimeout,
		Requester: fmt.Sprintf("bitrix24 user %d on %s", s.UserID, portalHost(a.cfg.PortalURL)),
	})
	if err != nil {
		code, reason := originateFailure(ext, err)
		a.m.clickToCall.WithLabelValues("failed").Inc()
		a.finishFailed(ctx, s.CallID, s.UserID, code, reason)
		_ = a.set(ctx, originateIndex+id, fOrigDone, "1")
		return
	}
	a.m.clickToCall.WithLabelValues("originated").Inc()
}

// callback handles a CRM web-form callback request: the call is registered (TYPE=4) for the
// callback user, then the callback extension is rung and the customer dialled.
func (a *Adapter) callback(ctx context.Context, s *api.ExternalCallbackStart) {
	ctx = api.WithPriority(ctx)
	user := a.cfg.ClickToCall.CallbackUserID
	if user == 0 {
		user = a.cfg.lineDefault(s.LineNumber)
	}
	if user == 0 {
		user = a.cfg.Users.DefaultUserID
	}
	ext := a.cfg.ClickToCall.CallbackExtension
	if user == 0 || !validExtension(ext) || a.orig == nil || !a.cfg.ClickToCall.Enabled {
		a.m.clickToCall.WithLabelValues("callback_unconfigured").Inc()
		a.log.Warn("bitrix24 callback request not handled: set click_to_call.callback_extension and a callback user", "line", s.LineNumber)
		return
	}
	id := newOriginateID("b24cb-")
	reg, err := a.register(ctx, regRequest{
		key: "callback/" + id, typ: api.TypeCallback, customer: s.PhoneNumber, line: s.LineNumber,
		started: a.now(), user: user, show: true, source: "callback",
	})
	if err != nil {
		a.m.clickToCall.WithLabelValues("callback_error").Inc()
		a.log.Warn("bitrix24 callback request: registering the call failed", "err", err)
		return
	}
	if err := a.rememberOriginate(ctx, id, reg.callID, reg.user, "callback"); err != nil {
		a.finishFailed(ctx, reg.callID, reg.user, "OTHER", "pbxbridge could not store the call")
		return
	}
	octx, cancel := context.WithTimeout(ctx, a.cfg.ClickToCall.RingTimeout+originateGrace)
	defer cancel()
	_, err = a.orig.Originate(octx, asterisk.OriginateRequest{
		Extension: ext, Number: s.PhoneNumber, CallerIDName: "Callback: " + s.PhoneNumber, ID: id, Timeout: a.cfg.ClickToCall.RingTimeout,
		Requester: "a Bitrix24 web-form callback request on " + portalHost(a.cfg.PortalURL),
	})
	if err != nil {
		code, reason := originateFailure(ext, err)
		a.m.clickToCall.WithLabelValues("callback_failed").Inc()
		a.finishFailed(ctx, reg.callID, reg.user, code, reason)
		_ = a.set(ctx, originateIndex+id, fOrigDone, "1")
		return
	}
	a.m.clickToCall.WithLabelValues("callback_originated").Inc()
}

// rememberOriginate binds an originate id to its CALL_ID before the PBX is asked to call (one
// write, committed when it returns: it survives a crash of the daemon).
func (a *Adapter) rememberOriginate(ctx context.Context, id, callID string, user int, kind string) error {
	return a.setLazy(ctx, originateIndex+id, map[string]string{fOrigCallID: callID, fOrigUser: itoa(user), fOrigKind: kind})
}

// originateFailure explains an originate error in the CRM user's words.
func originateFailure(ext string, err error) (string, string) {
	switch {
	case errors.Is(err, crm.ErrClickToCallUnlicensed):
		return "403", "click-to-call is paused: pbxbridge has no valid licence for this Bitrix24 portal (ask the administrator)"
	case errors.Is(err, crm.ErrClickToCallDenied):
		return "403", "the PBX's click-to-call policy does not allow this number (premium, satellite and international numbers need the administrator's permission)"
	case errors.Is(err, crm.ErrClickToCallRate):
		return "486", "too many calls from your phone (extension " + ext + ") in the last minute: try again in a moment"
	case errors.Is(err, asterisk.ErrExtensionUnknown):
		return "404", "the PBX does not know extension " + ext
	case errors.Is(err, asterisk.ErrExtensionBusy):
		return "486", "your phone (extension " + ext + ") is busy or in do-not-disturb"
	case errors.Is(err, asterisk.ErrExtensionUnreachable):
		return "480", "your phone (extension " + ext + ") is not registered or not reachable"
	case errors.Is(err, asterisk.ErrNoAnswer):
		return "304", "you did not pick up your phone (extension " + ext + ")"
	case errors.Is(err, asterisk.ErrNotConnected):
		return "503", "pbxbridge is not connected to the PBX right now"
	case errors.Is(err, context.DeadlineExceeded):
		return "304", "the PBX did not answer in time"
	}
	return "OTHER", "the PBX could not place the call"
}

// finishFailed finishes a call that never happened, with a reason the CRM user reads on the card.
func (a *Adapter) finishFailed(ctx context.Context, callID string, user int, code, reason string) {
	_, err := a.client.FinishCall(ctx, api.FinishParams{
		CallID: callID, UserID: user, Duration: 0, StatusCode: code, FailedReason: reason,
		AddToChat: api.Flag(a.cfg.Finish.AddToChat),
	})
	if err != nil {
		a.log.Warn("bitrix24: finishing a failed click-to-call", "call_id", callID, "reason", reason, "err", err)
	}
}
