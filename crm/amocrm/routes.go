package amocrm

import (
	"bytes"
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
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

type originator = asterisk.Originator

// HeaderAuthToken carries amoCRM's or Kommo's one-time token: the widget's
// self.$authorizedAjax adds it to every request.
const HeaderAuthToken = "X-Auth-Token" //nolint:gosec // a header name, not a credential

// One-time token limits. amoCRM's tokens live 30 minutes (the official PHP SDK); a token that
// claims to live longer than maxTokenLifetime is refused, so that an entry of the replay cache
// never has to outlive it for long.
const (
	tokenLeeway      = 30 * time.Second
	maxTokenLifetime = time.Hour
	maxTokenLength   = 8 << 10
)

// maxClickBody bounds a click-to-call request body.
const maxClickBody = 8 << 10

// Routes implements crm.HTTPRoutes.
func (a *Adapter) Routes() []crm.Route {
	return []crm.Route{
		{Pattern: "GET /oauth/callback", Handler: http.HandlerFunc(a.serveOAuthCallback)},
		{Pattern: "POST /click2call", Handler: http.HandlerFunc(a.serveClick2Call)},
		{Pattern: "OPTIONS /click2call", Handler: http.HandlerFunc(a.serveClick2Call)},
	}
}

// Click2CallRequest is the JSON body the widget posts. Who clicked comes from the one-time
// token, never from the body: UserID, when given, must be the token's user.
type Click2CallRequest struct {
	UserID     int64  `json:"user_id,omitempty"`
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

// entityTypes are the amoCRM entities a click can come from (the widget's current card); the
// value ends up in a channel variable, so nothing else passes.
var entityTypes = []string{"contacts", "leads", "companies", "customers"}

// ParseClick2Call decodes and checks a click-to-call body for user, the user id of a verified
// one-time token (positive): a known shape, no other user named, a dialable phone number
// (returned normalised to digits with an optional leading +) and, when given, one of the
// CRM's entity types with a positive id. The returned UserID is always user.
func ParseClick2Call(body []byte, user int64) (Click2CallRequest, error) {
	var r Click2CallRequest
	if user <= 0 {
		return r, errors.New("no signed-in user")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("the request is not the expected JSON: %w", err)
	}
	if dec.More() {
		return r, errors.New("the request has trailing data")
	}
	if r.UserID != 0 && r.UserID != user {
		return r, errors.New("user_id is not the signed-in user")
	}
	r.UserID = user
	p, err := normalisePhone(r.Phone)
	if err != nil {
		return r, err
	}
	r.Phone = p
	switch {
	case r.EntityType == "" && r.EntityID == 0:
	case !slices.Contains(entityTypes, r.EntityType):
		return r, fmt.Errorf("entity_type must be one of %s, got %s", strings.Join(entityTypes, ", "), quoteShort(r.EntityType))
	case r.EntityID <= 0:
		return r, fmt.Errorf("entity_id must be a positive id, got %d", r.EntityID)
	}
	return r, nil
}

// quoteShort quotes s for a message, cut to 32 characters.
func quoteShort(s string) string {
	const n = 32
	if utf8.RuneCountInString(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(string([]rune(s)[:n])) + "…"
}

// normalisePhone keeps the digits 0-9 and one leading +, drops the usual separators (space,
// no-break space, - ( ) .) and refuses anything else (*, #, letters, other scripts' digits,
// control characters), so that only a plain number reaches the originator.
func normalisePhone(s string) (string, error) {
	bad := fmt.Errorf("%s is not a phone number", quoteShort(s))
	t := strings.TrimSpace(s)
	if len(t) > 64 {
		return "", bad
	}
	var b strings.Builder
	for i, c := range t {
		switch {
		case c >= '0' && c <= '9':
			b.WriteRune(c)
		case c == '+' && i == 0:
			b.WriteRune(c)
		case c == ' ' || c == '-' || c == '(' || c == ')' || c == '.' || c == '\u00a0':
		default:
			return "", bad
		}
	}
	p := b.String()
	n := len(strings.TrimPrefix(p, "+"))
	if n < 2 || n > 20 {
		return "", bad
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

// serveClick2Call is the widget's click-to-call. The clicking user is the user_id of the
// amoCRM/Kommo one-time token in X-Auth-Token (HS256 with the integration's secret key, single
// use); nothing else identifies a user. An unauthenticated request is answered without any
// request to amoCRM and without touching the PBX.
func (a *Adapter) serveClick2Call(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); a.allowedOrigin(o) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", o)
		h.Set("Vary", "Origin")
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Content-Type, "+HeaderAuthToken)
		h.Set("Access-Control-Max-Age", "600")
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	reply := func(status int, res Click2CallResponse, metric string) {
		a.m.click2call.WithLabelValues(metric).Inc()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(res)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxClickBody))
	if err != nil {
		reply(http.StatusRequestEntityTooLarge, Click2CallResponse{Error: "bad_request", Message: "The request is too large."}, "bad_request")
		return
	}
	user, err := a.authenticateClick(r)
	switch {
	case errors.Is(err, errReplayCacheFull):
		a.m.replayFull.Inc()
		reply(http.StatusServiceUnavailable, Click2CallResponse{Error: "busy", Message: "pbxbridge is receiving too many click-to-call requests right now; try again in a minute."}, "busy")
		return
	case err != nil:
		a.m.authFailure.WithLabelValues("click2call").Inc()
		reply(http.StatusUnauthorized, Click2CallResponse{Error: "unauthorized", Message: "pbxbridge did not accept this request: " + err.Error() + "."}, "unauthorized")
		return
	}
	req, err := ParseClick2Call(body, user)
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
	if req.EntityType != "" {
		vars["__PBXBRIDGE_ENTITY"] = req.EntityType + ":" + strconv.FormatInt(req.EntityID, 10)
	}
	_, err = a.orig.Originate(ctx, asterisk.OriginateRequest{Extension: ext, Number: req.Phone, ID: id, Timeout: timeout,
		CallerIDName: req.Phone, Variables: vars, Requester: fmt.Sprintf("%s user %d on %s", a.typ, req.UserID, a.cfg.Host())})
	if err != nil {
		status, code, msg := originateError(err, ext)
		reply(status, Click2CallResponse{ID: id, Error: code, Message: msg}, "failed")
		return
	}
	reply(http.StatusOK, Click2CallResponse{OK: true, ID: id, Message: fmt.Sprintf("Calling %s from extension %s.", req.Phone, ext)}, "ok")
}

func originateError(err error, ext string) (int, string, string) {
	switch {
	case errors.Is(err, crm.ErrClickToCallUnlicensed):
		return http.StatusForbidden, "unlicensed", "Click-to-call is paused: pbxbridge has no valid licence for this account. Ask the administrator."
	case errors.Is(err, crm.ErrClickToCallDenied):
		return http.StatusForbidden, "number_not_allowed", "The phone system's click-to-call policy does not allow this number (premium, satellite and international numbers need the administrator's permission)."
	case errors.Is(err, crm.ErrClickToCallRate):
		return http.StatusTooManyRequests, "rate_limited", "Too many calls from your phone (extension " + ext + ") in the last minute: try again in a moment."
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

// authenticateClick verifies the request's one-time token (signature, time, account,
// integration, audience) and spends its jti; it returns the token's user id.
func (a *Adapter) authenticateClick(r *http.Request) (int64, error) {
	if !a.cfg.ClickToCall.AcceptJWT {
		return 0, errors.New("click-to-call is off (click_to_call.accept_jwt is false)")
	}
	tok := r.Header.Get(HeaderAuthToken)
	if tok == "" {
		return 0, errors.New("the request carries no amoCRM one-time token (" + HeaderAuthToken + "): update the widget to version " + WidgetVersion)
	}
	claims, err := VerifyOneTimeToken(tok, a.cfg.Auth.ClientSecret.Value(), a.now())
	if err != nil {
		return 0, err
	}
	if err := a.checkClaims(claims); err != nil {
		return 0, err
	}
	// The key is the jti as signed: one token, one click.
	switch a.replay.first("jti:"+claims.JTI, time.Unix(claims.Exp, 0).Add(tokenLeeway+time.Second)) {
	case replayUsed:
		return 0, errors.New("the one-time token was already used")
	case replayFull:
		return 0, errReplayCacheFull
	}
	return claims.UserID, nil
}

// WidgetVersion is the version of the widget in widget/ (manifest.json) that speaks this
// protocol.
const WidgetVersion = "1.1.0"

// OneTimeClaims are the claims of an amoCRM/Kommo one-time token.
type OneTimeClaims struct {
	Iss        string // account address, https://romashka.kommo.com
	Aud        string // origin of the server the widget's request went to
	JTI        string
	Iat        int64
	Nbf        int64
	Exp        int64
	AccountID  int64
	Subdomain  string
	ClientUUID string // the integration id
	UserID     int64
}

// wireClaims is the JSON of the claims. Numbers are read leniently (JSON numbers, integral or
// not, or decimal strings), as PHP JWT libraries write dates with fractions and ids as either.
type wireClaims struct {
	Iss        string  `json:"iss"`
	Aud        string  `json:"aud"`
	JTI        string  `json:"jti"`
	Iat        jsonInt `json:"iat"`
	Nbf        jsonInt `json:"nbf"`
	Exp        jsonInt `json:"exp"`
	AccountID  jsonInt `json:"account_id"`
	Subdomain  string  `json:"subdomain"`
	ClientUUID string  `json:"client_uuid"`
	UserID     jsonInt `json:"user_id"`
}

// jsonInt is an integer claim: a JSON number (a fraction is cut off) or a string of digits;
// null is 0.
type jsonInt int64

// UnmarshalJSON implements json.Unmarshaler.
func (n *jsonInt) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		*n = 0
		return nil
	}
	if len(s) >= 2 && s[0] == '"' {
		u, err := strconv.Unquote(s)
		if err != nil {
			return errors.New("not a number")
		}
		v, err := strconv.ParseInt(u, 10, 64)
		if err != nil {
			return errors.New("not a number")
		}
		*n = jsonInt(v)
		return nil
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		*n = jsonInt(v)
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return errors.New("not a number")
	}
	*n = jsonInt(int64(f))
	return nil
}

// VerifyOneTimeToken verifies an HS256 JWT signed with the integration's secret key and its
// time claims (30 s leeway; a token living more than an hour is refused), and that it names a
// user and has an id. It never panics on malformed input. Account, integration and audience
// are the caller's to check.
func VerifyOneTimeToken(tok, secret string, now time.Time) (*OneTimeClaims, error) {
	if secret == "" {
		return nil, errors.New("one-time tokens are not accepted (no auth.client_secret)")
	}
	if len(tok) > maxTokenLength {
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
		return nil, errors.New("the one-time token's signature is wrong (is auth.client_secret the integration's secret key?)")
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("the one-time token is malformed")
	}
	c, err := decodeClaims(pb)
	if err != nil {
		return nil, err
	}
	leeway := int64(tokenLeeway / time.Second)
	t := now.Unix()
	switch {
	case c.Exp <= 0 || t-leeway > c.Exp:
		return nil, errors.New("the one-time token has expired")
	case c.Nbf != 0 && t+leeway < c.Nbf:
		return nil, errors.New("the one-time token is not valid yet")
	case c.Exp > t+int64(maxTokenLifetime/time.Second):
		return nil, errors.New("the one-time token claims to live more than an hour")
	case c.UserID <= 0:
		return nil, errors.New("the one-time token names no user")
	case c.JTI == "" || len(c.JTI) > 128:
		return nil, errors.New("the one-time token has no usable id")
	}
	return &c, nil
}

// decodeClaims decodes a token's payload (JSON object; numbers as wireClaims reads them).
func decodeClaims(b []byte) (OneTimeClaims, error) {
	var w wireClaims
	if err := json.Unmarshal(b, &w); err != nil {
		return OneTimeClaims{}, errors.New("the one-time token's claims are malformed")
	}
	return OneTimeClaims{Iss: w.Iss, Aud: w.Aud, JTI: w.JTI, Iat: int64(w.Iat), Nbf: int64(w.Nbf), Exp: int64(w.Exp),
		AccountID: int64(w.AccountID), Subdomain: w.Subdomain, ClientUUID: w.ClientUUID, UserID: int64(w.UserID)}, nil
}

// checkClaims checks that a verified token was issued by this connector's account, for this
// integration and (when the daemon's public URL is known) for this server.
func (a *Adapter) checkClaims(c *OneTimeClaims) error {
	if id := a.cfg.Auth.ClientID; id != "" && c.ClientUUID != id {
		return errors.New("the one-time token is for another integration")
	}
	if c.Subdomain != a.cfg.Subdomain {
		return fmt.Errorf("the one-time token is for another account (%s)", quoteShort(c.Subdomain))
	}
	if c.Iss != "" {
		u, err := url.Parse(c.Iss)
		if err != nil || !slices.Contains(a.accountHosts(), strings.ToLower(u.Hostname())) {
			return fmt.Errorf("the one-time token is for another account (%s)", quoteShort(c.Iss))
		}
	}
	if id := a.knownAccountID(); id != 0 && c.AccountID != id {
		return errors.New("the one-time token is for another account")
	}
	if a.audience != "" {
		u, err := url.Parse(c.Aud)
		if err != nil || u.Scheme+"://"+strings.ToLower(u.Hostname()) != a.audience {
			return fmt.Errorf("the one-time token was issued for %s, not for this pbxbridge (%s): the widget's pbxbridge address must be on the daemon's http.public.url", quoteShort(c.Aud), a.audience)
		}
	}
	return nil
}

// accountHosts are the host names a token's iss may name: the account's production host and,
// with base_url, the host it points at (a proxy or a fake).
func (a *Adapter) accountHosts() []string {
	hosts := []string{a.cfg.Host()}
	if u, err := url.Parse(a.cfg.APIBase()); err == nil && u.Hostname() != "" {
		hosts = append(hosts, strings.ToLower(u.Hostname()))
	}
	return hosts
}

// knownAccountID is the account id saved at authorisation or read from amoCRM; 0 before.
func (a *Adapter) knownAccountID() int64 {
	if id := a.tokens.snapshot().AccountID; id != 0 {
		return id
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.account != nil {
		return a.account.ID
	}
	return 0
}

// origin returns scheme://host (lower case, no port) of an absolute URL, "" otherwise.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Hostname() == "" {
		return ""
	}
	return u.Scheme + "://" + strings.ToLower(u.Hostname())
}

// Replay cache outcomes.
type replayResult int

const (
	replayNew  replayResult = iota // recorded: first use
	replayUsed                     // seen before and not expired
	replayFull                     // refused: the cache is full of live entries
)

// errReplayCacheFull refuses a valid token when the replay cache cannot remember it.
var errReplayCacheFull = errors.New("too many one-time tokens in use")

// defaultReplayCapacity bounds the replay cache: 100 000 live tokens (30 minutes each) is more
// than 50 clicks a second, sustained; an entry costs about 100 bytes.
const defaultReplayCapacity = 100_000

// replaySweepEvery is how often expired entries are dropped (and, when full, at most once a
// second).
const replaySweepEvery = 30 * time.Second

// replayCache remembers used keys (token ids, OAuth states) until they expire. It holds at
// most capacity entries: when full of live ones it refuses new keys rather than forget used
// ones. Safe for concurrent use.
type replayCache struct {
	mu        sync.Mutex
	now       func() time.Time
	capacity  int
	seen      map[string]time.Time
	nextSweep time.Time
	lastSweep time.Time
}

func newReplayCache(now func() time.Time, capacity int) *replayCache {
	return &replayCache{now: now, capacity: capacity, seen: map[string]time.Time{}}
}

// first records key until `until` unless it is already recorded.
func (c *replayCache) first(key string, until time.Time) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	full := len(c.seen) >= c.capacity
	if !now.Before(c.nextSweep) || (full && now.Sub(c.lastSweep) >= time.Second) {
		for k, t := range c.seen {
			if !now.Before(t) {
				delete(c.seen, k)
			}
		}
		c.lastSweep, c.nextSweep = now, now.Add(replaySweepEvery)
	}
	if t, ok := c.seen[key]; ok && now.Before(t) {
		return replayUsed
	}
	if len(c.seen) >= c.capacity {
		return replayFull
	}
	c.seen[key] = until
	return replayNew
}

// len is the number of entries (tests).
func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// serveOAuthCallback is the integration's Redirect URI: it exchanges the code and saves tokens.
// Every request must carry a state this connector issued (its connect link), unused and at
// most stateTTL old; anything else, amoCRM's widget-install redirect included, is refused
// before any request to amoCRM. The state is spent by its first use, whatever the outcome.
func (a *Adapter) serveOAuthCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page := func(status int, title, msg string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, "<!doctype html><meta charset=utf-8><title>pbxbridge</title><h1>%s</h1><p>%s</p>\n", html.EscapeString(title), html.EscapeString(msg))
	}
	if a.cfg.LongLived() {
		page(http.StatusNotFound, "Not used", "This connector uses a long-lived token.")
		return
	}
	if err := a.tokens.spendState(q.Get("state")); err != nil {
		a.m.authFailure.WithLabelValues("oauth_callback").Inc()
		page(http.StatusUnauthorized, "Link not valid", "pbxbridge did not accept this authorisation ("+err.Error()+"). "+
			"Open the connect link on pbxbridge's status page and press Allow, or copy the authorisation code from the integration's card and run `pbxbridge crm auth "+a.name+" --code CODE` within 20 minutes.")
		return
	}
	if e := q.Get("error"); e != "" {
		page(http.StatusOK, "Access was not granted", "amoCRM says: "+quoteShort(e)+". Open the connect link again and press Allow.")
		return
	}
	if ref := q.Get("referer"); ref != "" && ref != a.cfg.Host() {
		page(http.StatusBadRequest, "Wrong account", "The authorisation came from "+quoteShort(ref)+" but this connector is configured for "+a.cfg.Host()+".")
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
	hc := newHTTP(o.HTTPClient, nil, 0)
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
