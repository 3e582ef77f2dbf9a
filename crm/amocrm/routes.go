package amocrm

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

type originator = asterisk.Originator

// Click-to-call request headers (HMAC authentication, see README "Click-to-call").
const (
	HeaderTimestamp = "X-Pbxbridge-Timestamp"
	HeaderSignature = "X-Pbxbridge-Signature"
	HeaderAuthToken = "X-Auth-Token" //nolint:gosec // a header name: the amoCRM/Kommo one-time token ($authorizedAjax)
)

// maxSkew bounds the age of a signed click-to-call request.
const maxSkew = 5 * time.Minute

// Routes implements crm.HTTPRoutes.
func (a *Adapter) Routes() []crm.Route {
	return []crm.Route{
		{Pattern: "GET /oauth/callback", Handler: http.HandlerFunc(a.serveOAuthCallback)},
		{Pattern: "POST /click2call", Handler: http.HandlerFunc(a.serveClick2Call)},
		{Pattern: "OPTIONS /click2call", Handler: http.HandlerFunc(a.serveClick2Call)},
	}
}

// Click2CallRequest is the JSON body the widget posts.
type Click2CallRequest struct {
	UserID     int64  `json:"user_id"`
	Phone      string `json:"phone"`
	EntityType string `json:"entity_type,omitempty"`
	EntityID   int64  `json:"entity_id,omitempty"`
	Account    string `json:"account,omitempty"` // subdomain, informative
}

// Click2CallResponse is the JSON answer.
type Click2CallResponse struct {
	OK      bool   `json:"ok"`
	ID      string `json:"id,omitempty"`    // originate correlation id
	Error   string `json:"error,omitempty"` // machine-readable code
	Message string `json:"message"`         // plain words for the user
}

// ParseClick2Call decodes and checks a click-to-call body: a known shape, a user id and a
// dialable phone number (returned normalised to digits with an optional leading +).
func ParseClick2Call(body []byte) (Click2CallRequest, error) { return parseClick2Call(body, 0) }

// parseClick2Call parses a body; user, when non-zero, is the verified user of a one-time token:
// it fills a missing user_id and must match a given one.
func parseClick2Call(body []byte, user int64) (Click2CallRequest, error) {
	var r Click2CallRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("the request is not the expected JSON: %w", err)
	}
	if dec.More() {
		return r, errors.New("the request has trailing data")
	}
	if user != 0 {
		if r.UserID != 0 && r.UserID != user {
			return r, errors.New("user_id is not the signed-in user")
		}
		r.UserID = user
	}
	if r.UserID <= 0 {
		return r, errors.New("user_id is missing")
	}
	p, err := normalisePhone(r.Phone)
	if err != nil {
		return r, err
	}
	r.Phone = p
	return r, nil
}

func normalisePhone(s string) (string, error) {
	var b strings.Builder
	for i, c := range strings.TrimSpace(s) {
		switch {
		case c >= '0' && c <= '9':
			b.WriteRune(c)
		case c == '+' && i == 0:
			b.WriteRune(c)
		case c == ' ' || c == '-' || c == '(' || c == ')' || c == '.' || c == '\u00a0':
		default:
			return "", fmt.Errorf("%q is not a phone number", s)
		}
	}
	p := b.String()
	n := len(strings.TrimPrefix(p, "+"))
	if n < 2 || n > 20 {
		return "", fmt.Errorf("%q is not a phone number", s)
	}
	return p, nil
}

func (a *Adapter) allowedOrigin(origin string) bool {
	if origin == "" {
		return false
	}
	if len(a.cfg.ClickToCall.AllowedOrigins) > 0 {
		return slices.Contains(a.cfg.ClickToCall.AllowedOrigins, origin)
	}
	return origin == "https://"+a.cfg.Host()
}

func (a *Adapter) serveClick2Call(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); a.allowedOrigin(o) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", o)
		h.Set("Vary", "Origin")
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", strings.Join([]string{"Content-Type", HeaderTimestamp, HeaderSignature, HeaderAuthToken}, ", "))
		h.Set("Access-Control-Max-Age", "600")
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	reply := func(status int, res Click2CallResponse, metric string) {
		a.m.click2call.WithLabelValues(metric).Inc()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(res)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<10))
	if err != nil {
		reply(http.StatusRequestEntityTooLarge, Click2CallResponse{Error: "bad_request", Message: "The request is too large."}, "bad_request")
		return
	}
	jwtUser, authErr := a.authenticateClick(r, body)
	if authErr != nil {
		a.m.authFailure.WithLabelValues("click2call").Inc()
		reply(http.StatusUnauthorized, Click2CallResponse{Error: "unauthorized", Message: "pbxbridge did not accept this request: " + authErr.Error() + ". Check the widget's settings."}, "unauthorized")
		return
	}
	req, err := parseClick2Call(body, jwtUser)
	if err != nil {
		reply(http.StatusBadRequest, Click2CallResponse{Error: "bad_request", Message: "Cannot call: " + err.Error() + "."}, "bad_request")
		return
	}
	ext := a.users.ext(req.UserID)
	if ext == "" {
		reply(http.StatusForbidden, Click2CallResponse{Error: "user_not_mapped",
			Message: fmt.Sprintf("Your user (id %d) has no phone extension in pbxbridge: ask the administrator to add it under users: in pbxbridge.yaml.", req.UserID)}, "unmapped")
		return
	}
	if a.orig == nil {
		reply(http.StatusServiceUnavailable, Click2CallResponse{Error: "pbx_unavailable", Message: "The phone system does not accept click-to-call right now (no PBX connection supports it)."}, "failed")
		return
	}
	id := "amo-" + randomHex(8)
	timeout := a.cfg.ClickToCall.RingTimeout
	ctx, cancel := context.WithTimeout(r.Context(), timeout+15*time.Second)
	defer cancel()
	vars := map[string]string{"__PBXBRIDGE_CRM": a.name}
	if req.EntityType != "" && req.EntityID > 0 {
		vars["__PBXBRIDGE_ENTITY"] = req.EntityType + ":" + strconv.FormatInt(req.EntityID, 10)
	}
	_, err = a.orig.Originate(ctx, asterisk.OriginateRequest{Extension: ext, Number: req.Phone, ID: id, Timeout: timeout,
		CallerIDName: req.Phone, Variables: vars})
	if err != nil {
		status, code, msg := originateError(err, ext)
		reply(status, Click2CallResponse{ID: id, Error: code, Message: msg}, "failed")
		return
	}
	reply(http.StatusOK, Click2CallResponse{OK: true, ID: id, Message: fmt.Sprintf("Calling %s from extension %s.", req.Phone, ext)}, "ok")
}

func originateError(err error, ext string) (int, string, string) {
	switch {
	case errors.Is(err, asterisk.ErrExtensionUnknown):
		return http.StatusConflict, "extension_unknown", "The phone system does not know your extension " + ext + "."
	case errors.Is(err, asterisk.ErrExtensionBusy):
		return http.StatusConflict, "extension_busy", "Your phone (extension " + ext + ") is busy or set to do-not-disturb."
	case errors.Is(err, asterisk.ErrExtensionUnreachable):
		return http.StatusConflict, "extension_unreachable", "Your phone (extension " + ext + ") is not connected to the phone system."
	case errors.Is(err, asterisk.ErrNoAnswer):
		return http.StatusConflict, "no_answer", "Your phone (extension " + ext + ") rang but was not picked up."
	case errors.Is(err, asterisk.ErrNotConnected):
		return http.StatusServiceUnavailable, "pbx_unavailable", "pbxbridge is not connected to the phone system right now."
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout", "The phone system did not answer in time."
	}
	return http.StatusBadGateway, "originate_failed", "The phone system could not place the call."
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// authenticateClick checks the HMAC signature or the one-time token; it returns the user id of a
// verified token (0 for HMAC).
func (a *Adapter) authenticateClick(r *http.Request, body []byte) (int64, error) {
	if tok := r.Header.Get(HeaderAuthToken); tok != "" && a.cfg.ClickToCall.AcceptJWT {
		claims, err := VerifyOneTimeToken(tok, a.cfg.Auth.ClientSecret.Value(), a.now())
		if err != nil {
			return 0, err
		}
		if err := a.checkClaims(claims); err != nil {
			return 0, err
		}
		if !a.replay.first("jwt:"+claims.JTI, time.Unix(claims.Exp, 0).Add(time.Minute)) {
			return 0, errors.New("the one-time token was already used")
		}
		return claims.UserID, nil
	}
	secret := a.cfg.ClickToCall.Secret.Value()
	if secret == "" {
		return 0, errors.New("click-to-call is not enabled (no click_to_call.secret)")
	}
	ts, sig := r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature)
	if ts == "" || sig == "" {
		return 0, errors.New("the request is not signed")
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, errors.New("bad timestamp")
	}
	if d := a.now().Sub(time.Unix(n, 0)); d > maxSkew || d < -maxSkew {
		return 0, errors.New("the request is too old or the clocks differ by more than 5 minutes")
	}
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, SignClick2Call(secret, ts, body)) {
		return 0, errors.New("bad signature")
	}
	if !a.replay.first("hmac:"+sig, a.now().Add(2*maxSkew)) {
		return 0, errors.New("the request was already used")
	}
	return 0, nil
}

// SignClick2Call is the widget's signature: HMAC-SHA256(secret, timestamp + "." + body).
func SignClick2Call(secret, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp + "."))
	m.Write(body)
	return m.Sum(nil)
}

// OneTimeClaims are the claims of an amoCRM/Kommo one-time token.
type OneTimeClaims struct {
	Iss        string `json:"iss"` // account address, https://romashka.kommo.com
	Aud        string `json:"aud"`
	JTI        string `json:"jti"`
	Iat        int64  `json:"iat"`
	Nbf        int64  `json:"nbf"`
	Exp        int64  `json:"exp"`
	AccountID  int64  `json:"account_id"`
	Subdomain  string `json:"subdomain"`
	ClientUUID string `json:"client_uuid"`
	UserID     int64  `json:"user_id"`
}

// VerifyOneTimeToken verifies an HS256 JWT signed with the integration's secret and its time
// claims (30 s leeway). It never panics on malformed input.
func VerifyOneTimeToken(tok, secret string, now time.Time) (*OneTimeClaims, error) {
	if secret == "" {
		return nil, errors.New("one-time tokens are not accepted (no client secret)")
	}
	if len(tok) > 8<<10 {
		return nil, errors.New("the one-time token is too long")
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("the one-time token is malformed")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, errors.New("the one-time token is malformed")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg != "HS256" {
		return nil, errors.New("the one-time token is not HS256")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("the one-time token is malformed")
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, m.Sum(nil)) {
		return nil, errors.New("the one-time token's signature is wrong")
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("the one-time token is malformed")
	}
	var c OneTimeClaims
	if err := json.Unmarshal(pb, &c); err != nil {
		return nil, errors.New("the one-time token's claims are malformed")
	}
	const leeway = 30
	t := now.Unix()
	switch {
	case c.Exp == 0 || t > c.Exp+leeway:
		return nil, errors.New("the one-time token has expired")
	case c.Nbf != 0 && t+leeway < c.Nbf:
		return nil, errors.New("the one-time token is not valid yet")
	case c.UserID <= 0:
		return nil, errors.New("the one-time token names no user")
	case c.JTI == "":
		return nil, errors.New("the one-time token has no id")
	}
	return &c, nil
}

func (a *Adapter) checkClaims(c *OneTimeClaims) error {
	if c.ClientUUID != "" && c.ClientUUID != a.cfg.Auth.ClientID {
		return errors.New("the one-time token is for another integration")
	}
	if c.Subdomain != "" && c.Subdomain != a.cfg.Subdomain {
		return errors.New("the one-time token is for another account")
	}
	if c.Iss != "" {
		if u, err := url.Parse(c.Iss); err != nil || (u.Host != a.cfg.Host() && !strings.HasPrefix(u.Host, a.cfg.Subdomain+".")) {
			return errors.New("the one-time token is for another account")
		}
	}
	if id := a.tokens.snapshot().AccountID; id != 0 && c.AccountID != 0 && c.AccountID != id {
		return errors.New("the one-time token is for another account")
	}
	return nil
}

// replayCache remembers used signatures and token ids until they expire.
type replayCache struct {
	mu   sync.Mutex
	now  func() time.Time
	seen map[string]time.Time
}

func newReplayCache(now func() time.Time) *replayCache {
	return &replayCache{now: now, seen: map[string]time.Time{}}
}

// first records key until `until` and reports whether it was new.
func (c *replayCache) first(key string, until time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.seen) > 1024 {
		for k, t := range c.seen {
			if now.After(t) {
				delete(c.seen, k)
			}
		}
	}
	if t, ok := c.seen[key]; ok && now.Before(t) {
		return false
	}
	if len(c.seen) >= 100_000 {
		return false // refuse rather than grow without bound under a flood
	}
	c.seen[key] = until
	return true
}

// serveOAuthCallback is the integration's Redirect URI: it exchanges the code and saves tokens.
func (a *Adapter) serveOAuthCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page := func(status int, title, msg string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, "<!doctype html><meta charset=utf-8><title>pbxbridge</title><h1>%s</h1><p>%s</p>\n", html.EscapeString(title), html.EscapeString(msg))
	}
	if a.cfg.LongLived() {
		page(http.StatusNotFound, "Not used", "This connector uses a long-lived token.")
		return
	}
	if e := q.Get("error"); e != "" {
		page(http.StatusOK, "Access was not granted", "amoCRM says: "+e+". Open the connect link again and press Allow.")
		return
	}
	stateOK := a.tokens.checkState(q.Get("state"))
	widget := q.Get("from_widget") == "1" && q.Get("client_id") == a.cfg.Auth.ClientID
	if !stateOK && !widget {
		a.m.authFailure.WithLabelValues("oauth_callback").Inc()
		page(http.StatusUnauthorized, "Link expired", "This authorisation link is not valid any more (or not from this pbxbridge). Open the connect link on the status page again.")
		return
	}
	if ref := q.Get("referer"); ref != "" && ref != a.cfg.Host() {
		page(http.StatusBadRequest, "Wrong account", "The authorisation came from "+ref+" but this connector is configured for "+a.cfg.Host()+".")
		return
	}
	code := q.Get("code")
	if code == "" {
		page(http.StatusBadRequest, "No code", "The redirect carries no authorisation code.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	acc, err := a.tokens.exchange(ctx, code, a.client.Account)
	if err != nil {
		page(http.StatusBadGateway, "Authorisation failed", err.Error())
		return
	}
	a.mu.Lock()
	a.account = acc
	a.mu.Unlock()
	page(http.StatusOK, "Connected", fmt.Sprintf("pbxbridge is connected to %s (%s, account %d). You can close this window.", acc.Name, acc.Subdomain, acc.ID))
}

// ExchangeOptions tune ExchangeCode.
type ExchangeOptions struct {
	// RedirectURI overrides cfg.Auth.RedirectURI (e.g. the daemon's {RouteURL}/oauth/callback).
	RedirectURI string
	// HTTPClient is the transport (nil: defaults).
	HTTPClient *http.Client
	// Type is amocrm or kommo when cfg did not come from NewConfig of that type.
	Type string
	// Now is the clock the saved token times come from (nil: time.Now).
	Now func() time.Time
}

// ExchangeCode trades an authorisation code for tokens and saves them in stateDir, as
// `pbxbridge crm auth NAME --code CODE` does; it returns the account the code belongs to.
// cfg.Auth.RedirectURI must equal the integration's Redirect URI.
func ExchangeCode(ctx context.Context, cfg *Config, stateDir, code string) (crm.Account, error) {
	return ExchangeCodeWith(ctx, cfg, stateDir, code, ExchangeOptions{})
}

// ExchangeCodeWith is ExchangeCode with options.
func ExchangeCodeWith(ctx context.Context, cfg *Config, stateDir, code string, o ExchangeOptions) (crm.Account, error) {
	c := *cfg
	if o.Type == TypeAmoCRM || o.Type == TypeKommo {
		c.flavor = o.Type
	}
	prefix := c.Flavor()
	if errs := c.Validate(); len(errs) > 0 {
		return crm.Account{}, fmt.Errorf("%s: %w", prefix, errors.Join(errs...))
	}
	redirect := c.Auth.RedirectURI
	if o.RedirectURI != "" {
		redirect = o.RedirectURI
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	hc := newHTTP(o.HTTPClient, nil)
	oauth := api.New(api.Options{BaseURL: c.APIBase(), HTTP: hc, Now: now})
	tk, err := newTokens(&c, stateDir, redirect, oauth, now)
	if err != nil {
		return crm.Account{}, fmt.Errorf("%s: %w", prefix, err)
	}
	client := api.New(api.Options{BaseURL: c.APIBase(), HTTP: hc, Auth: tk, Now: now})
	acc, err := tk.exchange(ctx, code, client.Account)
	if err != nil {
		return crm.Account{}, fmt.Errorf("%s: %w", prefix, err)
	}
	return crm.Account{AccountID: acc.ID, Subdomain: acc.Subdomain}, nil
}

// AuthorizeCode implements crm.CodeAuthorizer: it trades the code an admin copied from the
// integration's settings for tokens and saves them where the adapter reads them (a running
// daemon's adapter picks them up on its next request). The redirect URI is the adapter's: its
// configured one, else {RouteURL}/oauth/callback.
func (a *Adapter) AuthorizeCode(ctx context.Context, code string) (crm.Account, error) {
	acc, err := a.tokens.exchange(ctx, code, a.client.Account)
	if err != nil {
		return crm.Account{}, fmt.Errorf("%s: %w", a.typ, err)
	}
	a.mu.Lock()
	a.account = acc
	a.mu.Unlock()
	return crm.Account{AccountID: acc.ID, Subdomain: acc.Subdomain}, nil
}

var (
	_ crm.HTTPRoutes     = (*Adapter)(nil)
	_ crm.CodeAuthorizer = (*Adapter)(nil)
)
