package bitrix24

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
func (a *Adapter) Routes() []crm.Route {
	return []crm.Route{
		{Pattern: "POST " + pathInstall, Handler: http.HandlerFunc(a.serveInstall)},
		{Pattern: "GET " + pathCallback, Handler: http.HandlerFunc(a.serveOAuthCallback)},
		{Pattern: "POST " + pathEvents, Handler: http.HandlerFunc(a.serveEvent)},
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

// serveInstall receives the local application's installation event. The tokens it carries
// are accepted only when the optional install key matches, the portal is ours and the portal
// accepts the access token.
func (a *Adapter) serveInstall(w http.ResponseWriter, r *http.Request) {
	if a.tokens == nil {
		a.reject(w, http.StatusNotFound, "install_not_oauth", "this connector uses a webhook, not an application")
		return
	}
	if a.cfg.Auth.InstallKey.IsSet() && !equalSecret(r.URL.Query().Get("key"), a.cfg.Auth.InstallKey.Value()) {
		a.reject(w, http.StatusUnauthorized, "install_key", "wrong or missing key")
		return
	}
	ev, err := readEvent(w, r)
	if err != nil {
		a.reject(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	switch ev.Name {
	case api.EventAppUninstall:
		cur := a.tokens.Tokens()
		if cur == nil || !equalSecret(ev.Auth["application_token"], cur.ApplicationToken) {
			a.reject(w, http.StatusUnauthorized, "application_token", "wrong application token")
			return
		}
		a.tokens.Forget(errors.New("the application was uninstalled from Bitrix24"))
		_, _ = io.WriteString(w, "ok\n")
		return
	case api.EventAppInstall:
	default:
		a.reject(w, http.StatusBadRequest, "unexpected_event", "expected ONAPPINSTALL")
		return
	}
	t, err := ev.InstallTokens(a.now())
	if err != nil {
		a.reject(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	if want := portalHost(a.cfg.PortalURL); want != "" && !strings.EqualFold(t.Domain, want) {
		a.reject(w, http.StatusForbidden, "wrong_portal", fmt.Sprintf("this connector serves %s, not %s", want, t.Domain))
		return
	}
	if cur := a.tokens.Tokens(); cur != nil && cur.MemberID != "" && cur.MemberID != t.MemberID {
		a.log.Warn("bitrix24 application installed on a portal with another member_id; replacing the authorisation",
			"old_member_id", cur.MemberID, "member_id", t.MemberID)
	}
	if err := a.verifyToken(r.Context(), t.AccessToken); err != nil {
		a.reject(w, http.StatusUnauthorized, "install_token", "the portal does not accept this token")
		return
	}
	if err := a.tokens.Install(t); err != nil {
		http.Error(w, "cannot store the tokens", http.StatusInternalServerError)
		return
	}
	// Bitrix24 drops event handlers when an application is reinstalled: bind them again.
	a.requestSetup()
	a.users.kick()
	a.log.Info("bitrix24 application installed", "domain", t.Domain, "member_id", t.MemberID, "scope", t.Scope)
	_, _ = io.WriteString(w, "ok\n")
}

// verifyToken checks with the portal that an access token is genuine: any answer but a 401
// means the portal knows it.
func (a *Adapter) verifyToken(ctx context.Context, token string) error {
	opts := a.apiOpts
	opts.Auth = staticAuth{base: strings.TrimRight(a.cfg.PortalURL, "/") + "/rest/", token: token}
	c, err := api.New(opts)
	if err != nil {
		return err
	}
	_, err = c.ExternalLines(api.WithPriority(ctx))
	var e *api.Error
	if err != nil && (!errors.As(err, &e) || e.Status == http.StatusUnauthorized) {
		return err
	}
	return nil
}

type staticAuth struct{ base, token string }

func (s staticAuth) Endpoint(context.Context) (string, string, error) { return s.base, s.token, nil }
func (s staticAuth) Refresh(context.Context, string) error {
	return errors.New("token verification: no refresh")
}

func portalHost(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return strings.ToLower(p.Host)
}

// oauthState is the state parameter of the authorisation URL: an HMAC under the client secret,
// so the callback knows the flow started here.
func (a *Adapter) oauthState() string {
	m := hmac.New(sha256.New, []byte(a.cfg.Auth.ClientSecret.Value()))
	m.Write([]byte("pbxbridge-bitrix24-oauth:" + a.name))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

func (a *Adapter) connectURL() string {
	if a.tokens == nil {
		return ""
	}
	return a.tokens.AuthorizeURL(a.oauthState())
}

// serveOAuthCallback finishes a browser authorisation: it exchanges the code for tokens.
func (a *Adapter) serveOAuthCallback(w http.ResponseWriter, r *http.Request) {
	if a.tokens == nil {
		a.reject(w, http.StatusNotFound, "install_not_oauth", "this connector uses a webhook, not an application")
		return
	}
	q := r.URL.Query()
	if !equalSecret(q.Get("state"), a.oauthState()) {
		a.reject(w, http.StatusUnauthorized, "oauth_state", "unknown authorisation request: start it from the pbxbridge status page")
		return
	}
	if d := q.Get("domain"); d != "" && !strings.EqualFold(d, portalHost(a.cfg.PortalURL)) {
		a.reject(w, http.StatusForbidden, "wrong_portal", "this connector serves "+portalHost(a.cfg.PortalURL))
		return
	}
	code := q.Get("code")
	if code == "" {
		a.reject(w, http.StatusBadRequest, "malformed", "no code")
		return
	}
	if err := a.tokens.Exchange(r.Context(), code); err != nil {
		http.Error(w, "Bitrix24 refused the authorisation: "+err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "Bitrix24 is connected to pbxbridge. You can close this page.\n")
}

// serveEvent receives click-to-call and callback events. The application token is compared in
// constant time; a wrong or missing one answers 401 and originates nothing. Accepted events are
// answered at once (Bitrix24 does not wait) and handled in the background.
func (a *Adapter) serveEvent(w http.ResponseWriter, r *http.Request) {
	ev, err := readEvent(w, r)
	if err != nil {
		a.reject(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	want := a.cfg.Auth.ApplicationToken.Value()
	if a.tokens != nil {
		if t := a.tokens.Tokens(); t != nil && t.ApplicationToken != "" {
			want = t.ApplicationToken
		}
	}
	if !equalSecret(ev.Auth["application_token"], want) {
		a.reject(w, http.StatusUnauthorized, "application_token", "wrong application token")
		return
	}
	switch ev.Name {
	case api.EventExternalCallStart:
		s, err := ev.ExternalCallStart()
		if err != nil {
			a.reject(w, http.StatusBadRequest, "malformed", err.Error())
			return
		}
		a.spawn(func(ctx context.Context) { a.clickToCall(ctx, s) })
	case api.EventExternalCallbackStart:
		s, err := ev.ExternalCallbackStart()
		if err != nil {
			a.reject(w, http.StatusBadRequest, "malformed", err.Error())
			return
		}
		a.spawn(func(ctx context.Context) { a.callback(ctx, s) })
	default:
		_, _ = io.WriteString(w, "ignored\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
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
	ext, err := a.users.extOf(ctx, s.UserID)
	if err != nil {
		fail("error", "OTHER", "pbxbridge could not look up your extension in Bitrix24")
		return
	}
	if ext == "" {
		fail("no_extension", "OTHER", "your Bitrix24 user has no extension: fill in Internal phone in your profile or ask the admin to map it in pbxbridge")
		return
	}
	number := s.PhoneNumber
	if number == "" {
		number = s.PhoneNumberInternational
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
	if user == 0 || ext == "" || a.orig == nil || !a.cfg.ClickToCall.Enabled {
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

func (a *Adapter) rememberOriginate(ctx context.Context, id, callID string, user int, kind string) error {
	ik := originateIndex + id
	for _, kv := range [][2]string{{fOrigCallID, callID}, {fOrigUser, itoa(user)}, {fOrigKind, kind}} {
		if err := a.set(ctx, ik, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// originateFailure explains an originate error in the CRM user's words.
func originateFailure(ext string, err error) (string, string) {
	switch {
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
