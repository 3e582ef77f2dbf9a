package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// AuthState is the state of an authorisation, for the status page.
type AuthState string

// Authorisation states (crm.Status.Auth values).
const (
	StateOK          AuthState = "ok"
	StateMissing     AuthState = "missing"
	StateReauthorize AuthState = "reauthorize"
)

// OAuthConfig configures a TokenSource.
type OAuthConfig struct {
	// PortalURL is the portal's base URL (https://romashka.bitrix24.ru); REST calls go to
	// PortalURL/rest/.
	PortalURL string
	// ServerURL is the OAuth server's base URL (https://oauth.bitrix.info).
	ServerURL    string
	ClientID     string
	ClientSecret string
	// HTTP sends the OAuth server requests. It must not share the portal's rate limiter.
	HTTP *resty.Client
	File TokenFile
	Now  func() time.Time
	// RefreshTimeout bounds one refresh; the refresh is not cancelled by the caller's context,
	// so that a rotated refresh token is always persisted (default 30 s).
	RefreshTimeout time.Duration
	// OnChange is called (outside locks) when the state changes, with the cause.
	OnChange func(state AuthState, cause error)
	// OnRefresh is called after every refresh attempt with its result.
	OnRefresh func(err error)
}

// TokenSource is the Authenticator of a local application: it holds the current tokens,
// refreshes them exactly once per expiry, and persists every change.
type TokenSource struct {
	cfg      OAuthConfig
	restBase string

	mu       sync.Mutex
	tok      *Tokens
	state    AuthState
	cause    error
	inflight *flight
	// gen counts Install and Forget: a refresh that began before one of them is not kept.
	gen uint64
}

type flight struct {
	done chan struct{}
	err  error
	gen  uint64 // s.gen when the refresh began
}

// NewTokenSource loads the token file. A missing or unreadable file is not an error: the
// source starts in StateMissing (the cause is kept for the status page).
func NewTokenSource(cfg OAuthConfig) (*TokenSource, error) {
	if cfg.HTTP == nil {
		return nil, errors.New("oauth: HTTP client is required")
	}
	if cfg.PortalURL == "" || cfg.ServerURL == "" {
		return nil, errors.New("oauth: portal and OAuth server URLs are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RefreshTimeout <= 0 {
		cfg.RefreshTimeout = 30 * time.Second
	}
	s := &TokenSource{cfg: cfg, restBase: strings.TrimRight(cfg.PortalURL, "/") + "/rest/", state: StateMissing}
	t, err := cfg.File.Load()
	switch {
	case err != nil:
		s.cause = err
	case t != nil && t.AccessToken != "" && t.RefreshToken != "":
		s.tok = t
		s.state = StateOK
	}
	return s, nil
}

// Endpoint implements Authenticator.
func (s *TokenSource) Endpoint(context.Context) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case StateMissing:
		return "", "", ErrNotAuthorized
	case StateReauthorize:
		return "", "", ErrReauthorize
	}
	return s.restBase, s.tok.AccessToken, nil
}

// Refresh implements Authenticator: the first caller for a stale token starts one refresh;
// everyone waits for it (or for their context).
func (s *TokenSource) Refresh(ctx context.Context, stale string) error {
	s.mu.Lock()
	if s.state == StateReauthorize {
		s.mu.Unlock()
		return ErrReauthorize
	}
	if s.tok == nil {
		s.mu.Unlock()
		return ErrNotAuthorized
	}
	if s.tok.AccessToken != stale {
		s.mu.Unlock()
		return nil // somebody already refreshed
	}
	if s.inflight == nil {
		f := &flight{done: make(chan struct{}), gen: s.gen}
		s.inflight = f
		refresh := s.tok.RefreshToken
		go s.runRefresh(f, refresh) //nolint:gosec // deliberately detached: a rotated token must be saved even if the caller gives up
	}
	f := s.inflight
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *TokenSource) runRefresh(f *flight, refresh string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RefreshTimeout)
	defer cancel()
	resp, err := s.tokenRequest(ctx, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refresh},
	})
	var changed bool
	var newState AuthState
	var cause error
	s.mu.Lock()
	switch {
	case s.gen != f.gen:
		// Installed anew or forgotten (uninstalled) while the request ran: its outcome is not
		// kept, so an uninstalled application's tokens do not come back (nor does its refusal
		// turn "missing" into "reauthorize").
		err = nil
		if s.tok == nil {
			err = ErrNotAuthorized
		}
	case err == nil:
		t := s.merge(resp)
		serr := s.cfg.File.Save(t)
		s.tok = t
		if serr != nil {
			cause = fmt.Errorf("refreshed tokens could not be saved: %w", serr)
		}
		changed = s.state != StateOK || s.cause != nil || cause != nil
		s.state, s.cause = StateOK, cause
		newState = StateOK
	case IsCode(err, CodeInvalidGrant, CodeInvalidClient, CodePaymentRequired, CodeInvalidScope, CodeInsufficientScope):
		err = fmt.Errorf("%w: %w", ErrReauthorize, err)
		changed = s.state != StateReauthorize
		s.state, s.cause = StateReauthorize, err
		newState, cause = StateReauthorize, err
	default:
		err = fmt.Errorf("refreshing token: %w", err)
	}
	s.inflight = nil
	s.mu.Unlock()
	f.err = err
	close(f.done)
	if s.cfg.OnRefresh != nil {
		s.cfg.OnRefresh(err)
	}
	if changed && s.cfg.OnChange != nil {
		s.cfg.OnChange(newState, cause)
	}
}

// Exchange trades an authorisation code (from the OAuth redirect) for tokens and stores them.
func (s *TokenSource) Exchange(ctx context.Context, code string) error {
	resp, err := s.tokenRequest(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}})
	if err != nil {
		return fmt.Errorf("exchanging the authorisation code: %w", err)
	}
	s.mu.Lock()
	t := s.merge(resp)
	s.mu.Unlock()
	return s.Install(*t)
}

// Install stores tokens delivered by the ONAPPINSTALL event or the code exchange, replacing
// the current ones, and leaves any re-authorise state.
func (s *TokenSource) Install(t Tokens) error {
	if t.AccessToken == "" || t.RefreshToken == "" {
		return errors.New("install: access and refresh tokens are required")
	}
	s.mu.Lock()
	if t.ApplicationToken == "" && s.tok != nil {
		t.ApplicationToken = s.tok.ApplicationToken
	}
	if t.MemberID == "" && s.tok != nil {
		t.MemberID = s.tok.MemberID
	}
	if t.Domain == "" {
		t.Domain = domainOf(t.ClientEndpoint)
	}
	t.UpdatedAt = s.cfg.Now().UTC()
	err := s.cfg.File.Save(&t)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("install: %w", err)
	}
	s.tok = &t
	s.gen++
	changed := s.state != StateOK || s.cause != nil
	s.state, s.cause = StateOK, nil
	s.mu.Unlock()
	if changed && s.cfg.OnChange != nil {
		s.cfg.OnChange(StateOK, nil)
	}
	return nil
}

// Forget drops the tokens and removes the token file durably (the application was
// uninstalled), so a restarted daemon starts in StateMissing ("not authorised: install the
// application") instead of refreshing a token Bitrix24 has revoked. A refresh running meanwhile
// does not bring the tokens back. The tokens are dropped from memory even when the file cannot
// be removed; the error says so (the file then holds them until the next installation
// replaces it).
func (s *TokenSource) Forget(cause error) error {
	s.mu.Lock()
	s.tok = nil
	s.gen++
	changed := s.state != StateMissing
	s.state, s.cause = StateMissing, cause
	err := s.cfg.File.Remove()
	s.mu.Unlock()
	if changed && s.cfg.OnChange != nil {
		s.cfg.OnChange(StateMissing, cause)
	}
	if err != nil {
		return fmt.Errorf("forgetting the tokens: %w", err)
	}
	return nil
}

// State returns the authorisation state and its cause.
func (s *TokenSource) State() (AuthState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.cause
}

// Tokens returns a copy of the current tokens (nil when there are none).
func (s *TokenSource) Tokens() *Tokens {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == nil {
		return nil
	}
	t := *s.tok
	return &t
}

// AuthorizeURL is where an admin (re-)authorises the application in the browser.
func (s *TokenSource) AuthorizeURL(state string) string {
	v := url.Values{"client_id": {s.cfg.ClientID}}
	if state != "" {
		v.Set("state", state)
	}
	return strings.TrimRight(s.cfg.PortalURL, "/") + "/oauth/authorize/?" + v.Encode()
}

// merge builds the tokens after a token response; the caller holds s.mu.
func (s *TokenSource) merge(r *TokenResponse) *Tokens {
	t := Tokens{}
	if s.tok != nil {
		t = *s.tok
	}
	t.AccessToken = r.AccessToken
	t.RefreshToken = r.RefreshToken
	switch {
	case r.Expires > 0:
		t.Expires = time.Unix(int64(r.Expires), 0).UTC()
	case r.ExpiresIn > 0:
		t.Expires = s.cfg.Now().Add(time.Duration(r.ExpiresIn) * time.Second).UTC()
	}
	if r.ClientEndpoint != "" {
		t.ClientEndpoint = string(r.ClientEndpoint)
		t.Domain = domainOf(string(r.ClientEndpoint))
	}
	if r.ServerEndpoint != "" {
		t.ServerEndpoint = string(r.ServerEndpoint)
	}
	if r.MemberID != "" {
		t.MemberID = string(r.MemberID)
	}
	if r.Scope != "" {
		t.Scope = string(r.Scope)
	}
	if r.Status != "" {
		t.Status = string(r.Status)
	}
	if r.UserID > 0 {
		t.UserID = int(r.UserID)
	}
	t.UpdatedAt = s.cfg.Now().UTC()
	return &t
}

// TokenResponse is the OAuth server's token answer (A.1.5).
type TokenResponse struct {
	AccessToken      string `json:"access_token"`
	RefreshToken     string `json:"refresh_token"`
	Expires          Int    `json:"expires"`
	ExpiresIn        Int    `json:"expires_in"`
	ClientEndpoint   String `json:"client_endpoint"`
	ServerEndpoint   String `json:"server_endpoint"`
	MemberID         String `json:"member_id"`
	Scope            String `json:"scope"`
	Status           String `json:"status"`
	UserID           Int    `json:"user_id"`
	Error            String `json:"error"`
	ErrorDescription String `json:"error_description"`
}

// DecodeTokenResponse parses an OAuth server answer (A.1.5).
func DecodeTokenResponse(status int, body []byte) (*TokenResponse, error) {
	var r TokenResponse
	jerr := json.Unmarshal(body, &r)
	if r.Error != "" || status >= 400 {
		code := string(r.Error)
		desc := string(r.ErrorDescription)
		if jerr != nil {
			desc = excerpt(body)
		}
		return nil, &OAuthError{Status: status, Code: code, Description: desc}
	}
	if jerr != nil {
		return nil, fmt.Errorf("oauth server: decoding response: %w", jerr)
	}
	if r.AccessToken == "" || r.RefreshToken == "" {
		return nil, errors.New("oauth server: response without access or refresh token")
	}
	return &r, nil
}

func (s *TokenSource) tokenRequest(ctx context.Context, v url.Values) (*TokenResponse, error) {
	v.Set("client_id", s.cfg.ClientID)
	v.Set("client_secret", s.cfg.ClientSecret)
	u := strings.TrimRight(s.cfg.ServerURL, "/") + "/oauth/token/?" + v.Encode()
	resp, err := s.cfg.HTTP.R().SetContext(httpclient.Idempotent(ctx)).Get(u)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL carries the client secret
		}
		return nil, classifyRefusal(fmt.Errorf("oauth server: %w", redactErr{err}))
	}
	return DecodeTokenResponse(resp.StatusCode(), resp.Body())
}

func domainOf(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Hostname()
}

// Webhook is the Authenticator of the legacy inbound-webhook mode: the credential is part of
// the URL (https://portal/rest/<user id>/<code>/).
type Webhook struct{ base string }

// NewWebhook validates a webhook URL.
func NewWebhook(raw string) (*Webhook, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, errors.New("webhook URL must look like https://PORTAL/rest/USER_ID/CODE/")
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 3 || parts[0] != "rest" || parts[1] == "" || parts[2] == "" {
		return nil, errors.New("webhook URL must look like https://PORTAL/rest/USER_ID/CODE/")
	}
	for _, c := range parts[1] {
		if c < '0' || c > '9' {
			return nil, errors.New("webhook URL: the part after /rest/ must be the numeric user id")
		}
	}
	u.Path = "/" + strings.Join(parts, "/") + "/"
	u.RawQuery, u.Fragment = "", ""
	return &Webhook{base: u.String()}, nil
}

// Endpoint implements Authenticator.
func (w *Webhook) Endpoint(context.Context) (string, string, error) { return w.base, "", nil }

// Refresh implements Authenticator: webhooks have nothing to refresh.
func (w *Webhook) Refresh(context.Context, string) error {
	return errors.New("webhook credentials cannot be refreshed")
}

// Domain returns the portal's domain.
func (w *Webhook) Domain() string { return domainOf(w.base) }
