package bitrix24

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// bindingFile records the portal (member_id) the connector is bound to, in its state directory.
const bindingFile = "bitrix24-portal.json"

// Limits of the install proof: the OAuth-server requests unauthenticated installs may cause.
const (
	installProofBurst  = 6 // at most this many proofs per installProofWindow
	installProofWindow = time.Minute
	maxOAuthAnswer     = 64 << 10    // bytes read of an OAuth-server answer
	rebindLogEvery     = time.Minute // refused-rebind warnings are logged at most this often
)

// Install refusals. Each maps to an HTTP status and a webhook_rejected_total reason.
var (
	errProofRefused     = errors.New("the Bitrix24 OAuth server does not accept the installation's refresh token")
	errProofUnavailable = errors.New("the Bitrix24 OAuth server could not be asked")
	errProofWrongPortal = errors.New("the installation's tokens belong to another portal")
)

// portalBinding is the content of bindingFile.
type portalBinding struct {
	MemberID string    `json:"member_id"`
	Domain   string    `json:"domain,omitempty"` // at binding time (informational: portals can be renamed)
	BoundAt  time.Time `json:"bound_at"`
}

// loadBinding reads the binding; without a file, the member_id of stored tokens (written by
// versions that had no binding file) binds the connector, and the file is written.
func (a *Adapter) loadBinding() error {
	path := filepath.Join(a.stateDir, bindingFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var pb portalBinding
		if err := json.Unmarshal(b, &pb); err != nil || pb.MemberID == "" {
			if err == nil {
				err = errors.New("no member_id")
			}
			return fmt.Errorf("reading the portal binding %s (fix it, or delete it to bind the connector at the next installation): %w", path, err)
		}
		a.bound = pb
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("reading the portal binding: %w", err)
	}
	if t := a.tokens.Tokens(); t != nil && t.MemberID != "" {
		if err := a.bind(t.MemberID, t.Domain); err != nil {
			a.log.Warn("bitrix24: the portal binding could not be saved; it holds until the daemon stops", "err", err)
		}
	}
	return nil
}

// boundMember returns the member_id the connector is bound to ("" before the first install).
func (a *Adapter) boundMember() string {
	a.bindMu.Lock()
	defer a.bindMu.Unlock()
	return a.bound.MemberID
}

// bind binds the connector to member (in memory at once, then on disk).
func (a *Adapter) bind(member, domain string) error {
	a.bindMu.Lock()
	defer a.bindMu.Unlock()
	if a.bound.MemberID == member {
		return nil
	}
	a.bound = portalBinding{MemberID: member, Domain: domain, BoundAt: a.now().UTC()}
	b, err := json.MarshalIndent(a.bound, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the portal binding: %w", err)
	}
	return api.WriteFileAtomic(filepath.Join(a.stateDir, bindingFile), b, 0o600)
}

// refuseRebind logs (at most once per rebindLogEvery) how an admin moves the connector.
func (a *Adapter) refuseRebind(bound, got string) {
	a.bindMu.Lock()
	now := a.now()
	quiet := now.Sub(a.rebindLogged) < rebindLogEvery
	if !quiet {
		a.rebindLogged = now
	}
	a.bindMu.Unlock()
	if quiet {
		return
	}
	a.log.Warn("bitrix24: refused an installation from another portal: this connector is bound to the portal of its first installation; "+
		"to move it to another portal, stop pbxbridge, delete the binding and token files, start pbxbridge and install the application on the new portal",
		"bound_member_id", bound, "member_id", got,
		"binding_file", filepath.Join(a.stateDir, bindingFile), "token_file", filepath.Join(a.stateDir, tokenFile))
}

// proofLimiter bounds the OAuth-server requests that installs (unauthenticated requests) can
// cause: one at a time, at most installProofBurst per installProofWindow.
type proofLimiter struct {
	mu     sync.Mutex
	busy   bool
	starts []time.Time
}

// acquire reserves a proof; ok is false when one is running or the window is used up.
func (l *proofLimiter) acquire(now time.Time) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy {
		return nil, false
	}
	keep := l.starts[:0]
	for _, t := range l.starts {
		if now.Sub(t) < installProofWindow {
			keep = append(keep, t)
		}
	}
	l.starts = keep
	if len(l.starts) >= installProofBurst {
		return nil, false
	}
	l.starts = append(l.starts, now)
	l.busy = true
	return func() {
		l.mu.Lock()
		l.busy = false
		l.mu.Unlock()
	}, true
}

// serveInstall receives ONAPPINSTALL and ONAPPUNINSTALL of the local application.
//
// An installation is accepted only on positive proof that Bitrix24 issued its tokens to this
// application for the configured portal: its refresh token is refreshed at the OAuth server
// with our client_id and client_secret (only tokens issued to our application refresh with our
// secret), and the answer must name the configured portal (client_endpoint) and the event's
// member_id. The refreshed pair is stored (refresh tokens are single-use). Before any outbound
// request, the event's domain must be the configured portal's and its member_id the bound one;
// proofs go through a small limiter of their own, never the portal's. Any other outcome
// refuses the installation (Bitrix24 retries it).
//
// The first accepted installation binds the connector to its member_id; installations from
// another member_id are refused until an admin removes the binding. An uninstall must carry the
// installed application_token, domain and member_id.
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
		if !a.checkEventAuth(w, ev) {
			return
		}
		if err := a.tokens.Forget(errors.New("the application was uninstalled from Bitrix24")); err != nil {
			a.log.Error("bitrix24: the application was uninstalled, but its token file could not be removed: delete it by hand", "err", err)
		}
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
	// Free checks first: a forged install for another portal costs nothing.
	if want := portalHost(a.cfg.PortalURL); !strings.EqualFold(t.Domain, want) {
		a.reject(w, http.StatusForbidden, "wrong_portal", fmt.Sprintf("this connector serves %s, not %s", want, t.Domain))
		return
	}
	if bound := a.boundMember(); bound != "" && bound != t.MemberID {
		a.refuseRebind(bound, t.MemberID)
		a.reject(w, http.StatusForbidden, "member_id", "this connector is bound to another Bitrix24 portal (member_id): see the pbxbridge log")
		return
	}
	release, ok := a.proofs.acquire(a.now())
	if !ok {
		a.m.installProofs.WithLabelValues("rate_limited").Inc()
		w.Header().Set("Retry-After", "10")
		a.reject(w, http.StatusTooManyRequests, "install_rate_limited", "too many installation attempts: try again in a minute")
		return
	}
	defer release()
	// Bound meanwhile by a concurrent installation? (Proofs run one at a time.)
	if bound := a.boundMember(); bound != "" && bound != t.MemberID {
		a.refuseRebind(bound, t.MemberID)
		a.reject(w, http.StatusForbidden, "member_id", "this connector is bound to another Bitrix24 portal (member_id): see the pbxbridge log")
		return
	}
	// Not cancelled with the request: a refresh the server performed must be stored, or the
	// installation's single-use refresh token is spent for nothing.
	proven, err := a.proveInstall(context.WithoutCancel(r.Context()), t)
	if err != nil {
		a.refuseUnproven(w, err)
		return
	}
	if err := a.tokens.Install(proven); err != nil {
		a.log.Error("bitrix24: storing the tokens of a verified installation failed", "err", err)
		http.Error(w, "cannot store the tokens", http.StatusInternalServerError)
		return
	}
	if err := a.bind(proven.MemberID, proven.Domain); err != nil {
		a.log.Warn("bitrix24: the portal binding could not be saved; it holds until the daemon stops", "err", err)
	}
	// Bitrix24 drops event handlers when an application is reinstalled: bind them again.
	a.requestSetup()
	a.users.kick()
	a.log.Info("bitrix24 application installed", "domain", proven.Domain, "member_id", proven.MemberID, "scope", proven.Scope)
	_, _ = io.WriteString(w, "ok\n")
}

// refuseUnproven answers an installation (or authorisation) whose proof failed.
func (a *Adapter) refuseUnproven(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errProofUnavailable):
		a.m.installProofs.WithLabelValues("unavailable").Inc()
		a.log.Warn("bitrix24: an installation could not be verified (the OAuth server did not answer); Bitrix24 will retry it", "err", err)
		a.reject(w, http.StatusServiceUnavailable, "install_unverified", "the installation could not be verified now: try again later")
	case errors.Is(err, errProofWrongPortal):
		a.m.installProofs.WithLabelValues("wrong_portal").Inc()
		a.log.Warn("bitrix24: refused an installation", "err", err)
		a.reject(w, http.StatusForbidden, "wrong_portal", err.Error())
	default:
		a.m.installProofs.WithLabelValues("refused").Inc()
		a.reject(w, http.StatusUnauthorized, "install_token", "Bitrix24 does not confirm this installation")
	}
}

// proveInstall refreshes the installation's refresh token with our client credentials and
// checks that the answer names the configured portal and the installation's member_id. It
// returns the tokens to store: the refreshed pair with the event's application_token.
func (a *Adapter) proveInstall(ctx context.Context, t api.Tokens) (api.Tokens, error) {
	resp, err := a.tokenRequest(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {t.RefreshToken}})
	if err != nil {
		return api.Tokens{}, err
	}
	out, err := a.provenTokens(resp, t.MemberID)
	if err != nil {
		return api.Tokens{}, err
	}
	out.ApplicationToken = t.ApplicationToken
	if out.Scope == "" {
		out.Scope = t.Scope
	}
	if out.Status == "" {
		out.Status = t.Status
	}
	a.m.installProofs.WithLabelValues("ok").Inc()
	return out, nil
}

// provenTokens checks a token answer of the OAuth server against the configured portal and,
// when member is not empty, the expected member_id, and converts it.
func (a *Adapter) provenTokens(r *api.TokenResponse, member string) (api.Tokens, error) {
	want := strings.TrimRight(a.cfg.PortalURL, "/") + "/rest/"
	if !sameEndpoint(string(r.ClientEndpoint), want) {
		return api.Tokens{}, fmt.Errorf("%w: Bitrix24 says they are for %q, this connector serves %s (if the portal was renamed, update portal_url)",
			errProofWrongPortal, string(r.ClientEndpoint), want)
	}
	if r.MemberID == "" || (member != "" && string(r.MemberID) != member) {
		return api.Tokens{}, fmt.Errorf("%w: Bitrix24 says member_id %q, the request claimed %q", errProofWrongPortal, string(r.MemberID), member)
	}
	t := api.Tokens{
		AccessToken: r.AccessToken, RefreshToken: r.RefreshToken,
		ClientEndpoint: string(r.ClientEndpoint), ServerEndpoint: string(r.ServerEndpoint),
		Domain: portalHost(a.cfg.PortalURL), MemberID: string(r.MemberID),
		Scope: string(r.Scope), Status: string(r.Status), UserID: int(r.UserID),
	}
	switch {
	case r.Expires > 0:
		t.Expires = time.Unix(int64(r.Expires), 0).UTC()
	case r.ExpiresIn > 0:
		t.Expires = a.now().Add(time.Duration(r.ExpiresIn) * time.Second).UTC()
	}
	return t, nil
}

// sameEndpoint compares two REST endpoints: scheme and host case-insensitively, paths without
// trailing slashes.
func sameEndpoint(got, want string) bool {
	g, err1 := url.Parse(got)
	w, err2 := url.Parse(want)
	if err1 != nil || err2 != nil || g.Host == "" {
		return false
	}
	return strings.EqualFold(g.Scheme, w.Scheme) && strings.EqualFold(g.Host, w.Host) &&
		strings.TrimRight(g.Path, "/") == strings.TrimRight(w.Path, "/") && g.RawQuery == "" && g.User == nil
}

// tokenRequest sends one request to the OAuth server's token endpoint with our client
// credentials: one attempt, no redirects, the answer capped, never through the portal's rate
// limiter. Transport errors and 5xx answers wrap errProofUnavailable; other refusals wrap
// errProofRefused.
func (a *Adapter) tokenRequest(ctx context.Context, v url.Values) (*api.TokenResponse, error) {
	v.Set("client_id", a.cfg.Auth.ClientID)
	v.Set("client_secret", a.cfg.Auth.ClientSecret.Value())
	u := strings.TrimRight(a.cfg.OAuthURL, "/") + "/oauth/token/?" + v.Encode()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.HTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: building the request: %w", errProofUnavailable, redactURLError(err))
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := a.oauthHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errProofUnavailable, redactURLError(err))
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOAuthAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the answer: %w", errProofUnavailable, redactURLError(err))
	}
	if len(body) > maxOAuthAnswer {
		return nil, fmt.Errorf("%w: answer larger than %d bytes", errProofRefused, maxOAuthAnswer)
	}
	tr, err := api.DecodeTokenResponse(resp.StatusCode, body)
	var oe *api.OAuthError
	switch {
	case err == nil && resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: http %d", errProofRefused, resp.StatusCode)
	case err == nil:
		return tr, nil
	case errors.As(err, &oe) && oe.Status >= 500:
		return nil, fmt.Errorf("%w: %w", errProofUnavailable, err)
	default:
		return nil, fmt.Errorf("%w: %w", errProofRefused, err)
	}
}

// redactURLError drops the URL (it carries the client secret) from a *url.Error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
