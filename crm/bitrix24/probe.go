package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// Status implements crm.StatusReporter.
func (a *Adapter) Status() crm.Status {
	var s crm.Status
	var details []string
	if a.tokens != nil {
		st, cause := a.tokens.State()
		s.Auth = string(st)
		if st != api.StateOK {
			s.ConnectURL = a.connectURL()
			switch st {
			case api.StateMissing:
				details = append(details, "install the local application in Bitrix24 (its installation path is "+a.routeURL+pathInstall+")")
			case api.StateReauthorize:
				details = append(details, "Bitrix24 refused the refresh token: authorise the application again")
			}
		}
		if cause != nil {
			details = append(details, cause.Error())
		}
	} else {
		s.Auth = string(api.StateOK)
	}
	if p := a.authProblem.Load(); p != nil {
		if s.Auth == string(api.StateOK) {
			s.Auth = string(api.StateReauthorize)
		}
		details = append(details, *p)
	}
	a.setupMu.Lock()
	if a.setupErr != nil && !errors.Is(a.setupErr, api.ErrNotAuthorized) && !errors.Is(a.setupErr, api.ErrReauthorize) {
		details = append(details, "set-up: "+a.setupErr.Error())
	}
	a.setupMu.Unlock()
	s.Detail = strings.Join(details, "; ")
	return s
}

// Account implements crm.AccountIdentifier: the portal domain and member_id (oauth); the
// domain only for a webhook (Bitrix24 tells a webhook no member_id).
func (a *Adapter) Account(context.Context) (crm.Account, error) {
	if a.webhook != nil {
		return crm.Account{Domain: a.webhook.Domain()}, nil
	}
	if a.portal != nil {
		// The member_id is known once configured or bound by the module's first event.
		m := a.cfg.Auth.MemberID
		if m == "" {
			m = a.boundMember()
		}
		return crm.Account{Domain: portalHost(a.cfg.PortalURL), MemberID: m}, nil
	}
	t := a.tokens.Tokens()
	if t == nil || t.MemberID == "" {
		return crm.Account{}, fmt.Errorf("bitrix24: %w", api.ErrNotAuthorized)
	}
	d := t.Domain
	if d == "" {
		d = portalHost(a.cfg.PortalURL)
	}
	return crm.Account{Domain: strings.ToLower(d), MemberID: t.MemberID}, nil
}

// Probe implements crm.Prober: authorisation, scopes, telephony rights, user mapping and the
// handlers, each in plain words.
func (a *Adapter) Probe(ctx context.Context) []crm.Check {
	var out []crm.Check
	add := func(name string, ok bool, format string, args ...any) {
		out = append(out, crm.Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	// 1. Authorisation.
	if a.tokens != nil {
		st, cause := a.tokens.State()
		switch st {
		case api.StateMissing:
			add("authorisation", false, "not authorised yet: create a local application in Bitrix24 (Developer resources → Other → Local application, \"uses API only\") with installation path %s%s and install it", a.routeURL, pathInstall)
			return out
		case api.StateReauthorize:
			add("authorisation", false, "Bitrix24 refused the refresh token (%v): open %s as a Bitrix24 admin to authorise pbxbridge again", cause, a.connectURL())
			return out
		}
	}
	users, _, total, err := a.client.GetUsers(ctx, map[string]any{"ACTIVE": true}, 0)
	switch {
	case err == nil:
		mode := "a local application"
		switch {
		case a.webhook != nil:
			mode = "an inbound webhook"
		case a.portal != nil:
			mode = "a pbxbridge module token"
		}
		add("authorisation", true, "connected to %s as %s", a.portalName(), mode)
		if t := a.tokens; t != nil {
			if tok := t.Tokens(); tok != nil && tok.Scope != "" {
				missing := missingScopes(tok.Scope, a.neededScopes())
				if len(missing) > 0 {
					add("scope", false, "the application lacks the scope %s: add it in the local application's settings and reinstall", strings.Join(missing, ", "))
				} else {
					add("scope", true, "scopes: %s", tok.Scope)
				}
			}
		}
	case api.IsCode(err, api.CodeInsufficientScope):
		add("authorisation", true, "connected to %s", a.portalName())
		add("user scope", false, "the application may not read users (scope \"user\" missing): extensions cannot be mapped to employees; add the scope and reinstall")
	default:
		add("authorisation", false, "%s", a.plainAuthError(err))
		return out
	}
	// 2. Telephony rights: telephony.externalLine.get needs the scope and an application (or,
	// on portals that allow it, a webhook): the same auth check as externalCall.register.
	if _, err := a.client.ExternalLines(ctx); err != nil {
		switch {
		case api.IsCode(err, api.CodeAccessDenied, api.CodeUserAccessError) && a.webhook == nil:
			add("telephony rights", false, "the Bitrix24 user who installed the application may not use telephony (%v): install it as a portal admin", err)
		case a.accessProblem(err) != "":
			add("telephony rights", false, "%s", a.accessProblem(err))
		default:
			add("telephony rights", false, "checking telephony failed: %v", err)
		}
	} else {
		add("telephony rights", true, "telephony.externalCall.* is allowed")
	}
	// 3. CRM scope (routing, look-ups, leads).
	if _, err := a.client.FindByComm(ctx, []string{"+70000000000"}); err != nil {
		if api.IsCode(err, api.CodeInsufficientScope, api.CodeAccessDenied) {
			add("crm scope", false, "the application may not search the CRM (scope \"crm\"): responsible-manager routing, caller names and missed-call leads will not work")
		} else {
			add("crm scope", false, "searching the CRM failed: %v", err)
		}
	} else {
		add("crm scope", true, "the CRM can be searched by phone")
	}
	// 4. User mapping.
	if users != nil || total > 0 {
		if err := a.users.refresh(ctx); err != nil {
			add("user mapping", false, "loading users failed: %v", err)
		} else {
			out = append(out, a.mappingChecks()...)
		}
	}
	// 5. Handlers.
	if a.cfg.ClickToCall.Enabled {
		switch {
		case a.webhook != nil:
			add("click-to-call", false, "not available with a webhook: Bitrix24 sends ONEXTERNALCALLSTART only to applications (event.bind refuses webhooks); "+
				"use auth.mode: oauth, or on an isolated boxed portal the pbxbridge portal module (auth.mode: portal_token). "+
				"Call cards, the call log and recordings work; web-form callbacks work with an outgoing webhook and auth.application_token "+
				"on portals that reach the Bitrix24 cloud (a box sends outgoing webhooks through it too). Set click_to_call.enabled: false to silence this")
		case a.routeURL == "":
			add("click-to-call", false, "http.public.url is not set: Bitrix24 cannot reach pbxbridge, so click-to-call and callbacks cannot work")
		case a.orig == nil:
			add("click-to-call", false, "no PBX connection can originate calls (AMI originate permission or ARI needed)")
		default:
			a.setupMu.Lock()
			serr, done := a.setupErr, a.setupDone
			a.setupMu.Unlock()
			switch {
			case serr != nil:
				add("click-to-call", false, "binding events failed: %v", serr)
			case done:
				add("click-to-call", true, "events are bound to %s%s", a.routeURL, a.eventsPath())
			default:
				add("click-to-call", true, "events will be bound to %s%s when the daemon starts", a.routeURL, a.eventsPath())
			}
		}
	}
	return out
}

func (a *Adapter) portalName() string {
	if a.webhook != nil {
		return a.webhook.Domain()
	}
	return portalHost(a.cfg.PortalURL)
}

// eventsPath is the route the click-to-call events are bound to.
func (a *Adapter) eventsPath() string {
	if a.portal != nil {
		return pathModuleEvents
	}
	return pathEvents
}

func (a *Adapter) neededScopes() []string {
	s := []string{"telephony", "user", "crm"}
	if a.cfg.MissedCalls.FollowUp == FollowUpTask {
		s = append(s, "task")
	}
	return s
}

func missingScopes(have string, need []string) []string {
	got := map[string]bool{}
	for _, s := range strings.Split(have, ",") {
		got[strings.TrimSpace(s)] = true
	}
	var out []string
	for _, n := range need {
		basic := n == "user" && (got["user_basic"] || got["user_brief"])
		if !got[n] && !basic {
			out = append(out, n)
		}
	}
	return out
}

// plainAuthError explains why the first request of a probe failed.
func (a *Adapter) plainAuthError(err error) string {
	if h := a.accessProblem(err); h != "" {
		return h
	}
	switch {
	case errors.Is(err, api.ErrReauthorize):
		return "Bitrix24 refused the refresh token: authorise the application again from the pbxbridge status page"
	case api.IsCode(err, api.CodePaymentRequired):
		return "the Bitrix24 subscription of the application has ended"
	case api.IsCode(err, api.CodePortalDeleted):
		return "the Bitrix24 portal was deleted"
	}
	return "cannot reach Bitrix24: " + err.Error()
}

// accessProblem explains, in an admin's words for this connector's mode, an answer no retry
// fixes until an admin acts: the portal's certificate, the webhook's or token's rights, the
// authorisation type; "" for other errors.
func (a *Adapter) accessProblem(err error) string {
	if h := a.tlsProblem(err); h != "" {
		return h
	}
	var method string
	var e *api.Error
	if errors.As(err, &e) {
		method = e.Method
	}
	if method == "" {
		method = "this method"
	}
	switch {
	case api.IsCode(err, api.CodeWrongAuthType):
		switch {
		case a.webhook != nil:
			return "this portal allows " + method + " only for applications, not inbound webhooks (WRONG_AUTH_TYPE): " +
				"on a portal that reaches the Bitrix24 cloud use auth.mode: oauth (a local application); on an isolated boxed portal " +
				"install the pbxbridge portal module and use auth.mode: portal_token (crm/bitrix24/README.md, \"On-premise (boxed) Bitrix24\")"
		case a.portal != nil:
			return "the portal does not take the pbxbridge module's token as an application's for " + method + " (WRONG_AUTH_TYPE): " +
				"check that the module is installed and up to date (crm/bitrix24/README.md, \"On-premise (boxed) Bitrix24\")"
		}
		return "Bitrix24 refuses the application's authorisation for " + method + " (WRONG_AUTH_TYPE)"
	case errors.Is(err, api.ErrPortalTokenRejected):
		return api.ErrPortalTokenRejected.Error()
	case api.IsCode(err, api.CodeInvalidCredentials) && a.webhook != nil:
		return "the portal does not accept the webhook (INVALID_CREDENTIALS): check the user id and secret in auth.webhook_url; " +
			"the webhook may have been deleted or expired, or its user deactivated"
	case api.IsCode(err, api.CodeNoAuthFound, api.CodeInvalidCredentials):
		switch {
		case a.webhook != nil:
			return "Bitrix24 does not accept the webhook URL (NO_AUTH_FOUND): check auth.webhook_url (Developer resources → Other → Inbound webhook)"
		case a.portal != nil:
			return api.ErrPortalTokenRejected.Error() + " (the portal does not know the token: was the module reinstalled, or the token rotated?)"
		}
		return "Bitrix24 does not accept the stored token: reinstall the local application"
	case api.IsCode(err, api.CodeInvalidToken, api.CodeExpiredToken) && a.portal != nil:
		return api.ErrPortalTokenRejected.Error()
	case api.IsCode(err, api.CodeInsufficientScope):
		scope := "the " + strconv.Quote(scopeOf(method)) + " scope (" + method + ")"
		switch {
		case a.webhook != nil:
			return "the webhook lacks " + scope + ": edit the inbound webhook and tick telephony, crm and user (and task for missed-call tasks)"
		case a.portal != nil:
			return "the pbxbridge module's application lacks " + scope + ": reinstall the module (it grants telephony, crm, user and task)"
		}
		return "the application lacks " + scope + ": add it in the local application's settings and reinstall it"
	case api.IsCode(err, api.CodeInvalidRequest) && api.DescriptionContains(err, "https required"):
		return "the portal refuses webhooks over plain http (\"Https required\"): use https:// in auth.webhook_url; a portal served only over http, " +
			"or behind a proxy that terminates TLS, needs define('REST_APAUTH_ALLOW_HTTP', true); in its bitrix/php_interface/dbconn.php"
	case api.IsCode(err, api.CodeAccessDenied):
		return "Bitrix24 refused REST access (" + err.Error() + "): REST needs a commercial plan (a box: an active licence), and the user must be a portal admin"
	}
	return ""
}

// scopeOf names the scope a REST method needs.
func scopeOf(method string) string {
	m := strings.ToLower(method)
	for _, p := range []struct{ prefix, scope string }{
		{"telephony.", "telephony"}, {"voximplant.", "telephony"}, {"crm.", "crm"}, {"user.", "user"}, {"tasks.", "task"},
	} {
		if strings.HasPrefix(m, p.prefix) {
			return p.scope
		}
	}
	return method
}

// mappingChecks reports the extension→user map: how many are mapped, overrides that name
// unknown users, extensions two users claim, the default user.
func (a *Adapter) mappingChecks() []crm.Check {
	byExt, byID, dups, _, _ := a.users.snapshot()
	var out []crm.Check
	exts := make([]string, 0, len(byExt))
	for e := range byExt {
		exts = append(exts, e)
	}
	sort.Strings(exts)
	var pairs []string
	for _, e := range exts {
		pairs = append(pairs, e+" → "+byExt[e].Name)
	}
	if len(exts) == 0 && len(a.cfg.Users.Map) == 0 {
		out = append(out, crm.Check{Name: "user mapping", OK: false,
			Detail: "no Bitrix24 user has an Internal phone (UF_PHONE_INNER) and users.map is empty: calls cannot be assigned to employees; fill in Internal phone in the users' profiles"})
	} else {
		detail := fmt.Sprintf("%d extensions mapped from the users' Internal phone", len(exts))
		if len(pairs) > 0 {
			detail += ": " + strings.Join(pairs[:min(len(pairs), 20)], ", ")
			if len(pairs) > 20 {
				detail += ", …"
			}
		}
		out = append(out, crm.Check{Name: "user mapping", OK: true, Detail: detail})
	}
	var bad []string
	for _, ext := range a.cfg.MappedExtensions() {
		id := a.cfg.Users.Map[ext]
		if u, ok := byID[id]; !ok || !u.Active {
			bad = append(bad, fmt.Sprintf("%s → %d", ext, id))
		}
	}
	if len(bad) > 0 {
		out = append(out, crm.Check{Name: "user overrides", OK: false,
			Detail: "users.map names users that do not exist or are not active: " + strings.Join(bad, ", ")})
	}
	if len(dups) > 0 {
		var d []string
		for ext, ids := range dups {
			d = append(d, fmt.Sprintf("%s is the Internal phone of users %v (calls go to %d)", ext, ids, slices.Min(ids)))
		}
		sort.Strings(d)
		out = append(out, crm.Check{Name: "duplicate extensions", OK: false, Detail: strings.Join(d, "; ")})
	}
	if def := a.cfg.Users.DefaultUserID; def == 0 {
		out = append(out, crm.Check{Name: "default user", OK: false,
			Detail: "users.default_user_id is not set: calls of extensions without a Bitrix24 user will be refused"})
	} else {
		if u, ok := byID[def]; !ok || !u.Active {
			out = append(out, crm.Check{Name: "default user", OK: false,
				Detail: fmt.Sprintf("users.default_user_id %d is not an active Bitrix24 user", def)})
		} else {
			out = append(out, crm.Check{Name: "default user", OK: true, Detail: fmt.Sprintf("calls of unknown extensions go to %s (%d)", u.Name, def)})
		}
	}
	return out
}
