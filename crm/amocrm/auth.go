package amocrm

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

// tokenFileName is the OAuth state in the instance's state directory.
const tokenFileName = "amocrm-oauth.json" //nolint:gosec // a file name, not a credential

// tokenFile is what is persisted (0600, written atomically).
type tokenFile struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	ExpiresAt    time.Time `json:"expires_at"`
	// PreviousRefresh is the refresh token the current tokens were obtained with; amoCRM keeps
	// it valid until the new tokens are used. It is dropped once they have worked (Confirmed).
	PreviousRefresh string    `json:"previous_refresh_token,omitempty"`
	Confirmed       bool      `json:"confirmed"`
	RefreshedAt     time.Time `json:"refreshed_at"`
	// Broken says why the grant no longer works (re-authorisation needed); "" when fine.
	Broken    string `json:"broken,omitempty"`
	AccountID int64  `json:"account_id,omitempty"`
	Subdomain string `json:"subdomain,omitempty"`
}

// writeFileAtomic writes data to path through a temporary file in the same directory: write,
// fsync, rename, then fsync the directory, so a crash leaves either the old or the new file.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			_ = os.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func loadTokenFile(path string) (tokenFile, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return tokenFile{}, false, nil
	}
	if err != nil {
		return tokenFile{}, false, err
	}
	var t tokenFile
	if err := json.Unmarshal(b, &t); err != nil {
		return tokenFile{}, false, fmt.Errorf("%s is damaged (%w): authorise again", path, err)
	}
	return t, true, nil
}

// tokens manages the account's bearer token: OAuth with rotation, or a long-lived token. It
// implements api.Authorizer. A refresh runs at most once at a time (amoCRM revokes a refresh
// token that is used twice); concurrent callers wait for it and share its result.
type tokens struct {
	cfg      *Config
	path     string
	redirect string
	oauth    *api.Client // token endpoint client (no Authorizer)
	now      func() time.Time
	onChange func(event string) // metrics: "refreshed", "refresh_failed", "broken", "confirmed"

	states *replayCache // OAuth states already used

	refreshMu sync.Mutex // held during a refresh
	mu        sync.Mutex
	t         tokenFile
	have      bool
}

// errNotAuthorised is the cause of AuthBroken errors before the first authorisation.
var errNotAuthorised = errors.New("not authorised yet: open the connect link on the status page or run `pbxbridge crm auth NAME --code CODE`")

func newTokens(cfg *Config, stateDir, redirect string, oauth *api.Client, now func() time.Time) (*tokens, error) {
	tk := &tokens{cfg: cfg, path: filepath.Join(stateDir, tokenFileName), redirect: redirect, oauth: oauth, now: now, onChange: func(string) {},
		states: newReplayCache(now, maxStates)}
	if cfg.LongLived() {
		return tk, nil
	}
	t, ok, err := loadTokenFile(tk.path)
	if err != nil {
		return nil, err
	}
	tk.t, tk.have = t, ok
	return tk, nil
}

// state returns the status-page view: ok, missing or reauthorize, and why.
func (tk *tokens) state() (string, string) {
	if !tk.cfg.LongLived() {
		tk.mu.Lock()
		stale := !tk.have || tk.t.Broken != ""
		tk.mu.Unlock()
		if stale {
			tk.reload() // `pbxbridge crm auth` may have fixed it meanwhile
		}
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	switch {
	case tk.cfg.LongLived() && tk.t.Broken != "":
		return "reauthorize", tk.t.Broken
	case tk.cfg.LongLived():
		return "ok", "long-lived token"
	case !tk.have || tk.t.RefreshToken == "":
		return "missing", "not authorised yet"
	case tk.t.Broken != "":
		return "reauthorize", tk.t.Broken
	}
	return "ok", ""
}

func (tk *tokens) snapshot() tokenFile {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.t
}

// AccessToken implements api.Authorizer.
func (tk *tokens) AccessToken(ctx context.Context) (string, error) {
	if tk.cfg.LongLived() {
		tk.mu.Lock()
		broken := tk.t.Broken
		tk.mu.Unlock()
		if broken != "" {
			return "", crm.AuthBroken(errors.New(broken))
		}
		return tk.cfg.Auth.LongLivedToken.Value(), nil
	}
	tk.mu.Lock()
	t, have := tk.t, tk.have
	tk.mu.Unlock()
	if !have || t.Broken != "" {
		// `pbxbridge crm auth` may have written new tokens while the daemon runs.
		t, have = tk.reload()
	}
	switch {
	case !have || t.RefreshToken == "":
		return "", crm.AuthBroken(errNotAuthorised)
	case t.Broken != "":
		return "", crm.AuthBroken(errors.New(t.Broken))
	case tk.now().Add(time.Minute).Before(t.ExpiresAt):
		return t.AccessToken, nil
	}
	return tk.refresh(ctx, t.AccessToken, false)
}

// reload re-reads the token file when it holds a newer, working grant.
func (tk *tokens) reload() (tokenFile, bool) {
	t, ok, err := loadTokenFile(tk.path)
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if err == nil && ok && t.Broken == "" && t.RefreshToken != "" && t.RefreshToken != tk.t.RefreshToken {
		tk.t, tk.have = t, true
		tk.onChange("reloaded")
	}
	return tk.t, tk.have
}

// Rejected implements api.Authorizer: the token got 401.
func (tk *tokens) Rejected(ctx context.Context, token string) (string, error) {
	if tk.cfg.LongLived() {
		tk.markBroken("the long-lived token was rejected (401): create a new one in the integration's Keys and scopes tab")
		return "", crm.AuthBroken(errors.New("amocrm: long-lived token rejected"))
	}
	return tk.refresh(ctx, token, false)
}

// Accepted implements api.Authorizer: the first success of rotated tokens confirms them.
func (tk *tokens) Accepted(token string) {
	tk.mu.Lock()
	if tk.t.Confirmed || token != tk.t.AccessToken || tk.cfg.LongLived() {
		tk.mu.Unlock()
		return
	}
	tk.t.Confirmed = true
	tk.t.PreviousRefresh = ""
	t := tk.t
	tk.mu.Unlock()
	if err := tk.persist(t); err == nil {
		tk.onChange("confirmed")
	}
}

func (tk *tokens) markBroken(reason string) {
	tk.mu.Lock()
	tk.t.Broken = reason
	t := tk.t
	tk.mu.Unlock()
	tk.onChange("broken")
	if !tk.cfg.LongLived() {
		_ = tk.persist(t) // the in-memory state is what matters until restart
	}
}

func (tk *tokens) persist(t tokenFile) error {
	b, err := json.MarshalIndent(t, "", "  ") //nolint:gosec // the token file is the one place tokens are meant to be written (0600)
	if err != nil {
		return err
	}
	return writeFileAtomic(tk.path, b, 0o600)
}

// refresh obtains new tokens unless another caller already replaced the token that failed
// (stale != current) and force is not set.
func (tk *tokens) refresh(ctx context.Context, stale string, force bool) (string, error) {
	tk.refreshMu.Lock()
	defer tk.refreshMu.Unlock()
	tk.mu.Lock()
	t := tk.t
	tk.mu.Unlock()
	if t.Broken != "" {
		return "", crm.AuthBroken(errors.New(t.Broken))
	}
	if !force && t.AccessToken != stale && tk.now().Add(time.Minute).Before(t.ExpiresAt) {
		return t.AccessToken, nil // someone else refreshed meanwhile
	}
	used := t.RefreshToken
	nt, err := tk.oauth.ExchangeToken(ctx, tk.request("refresh_token", "", used))
	if isGrantRejected(err) && !t.Confirmed && t.PreviousRefresh != "" {
		// The current tokens never worked; the refresh token they came with is still valid
		// until they are used (B.2.2), e.g. when our last answer was lost.
		used = t.PreviousRefresh
		nt, err = tk.oauth.ExchangeToken(ctx, tk.request("refresh_token", "", used))
	}
	if err != nil {
		tk.onChange("refresh_failed")
		if isGrantRejected(err) {
			reason := "amoCRM rejected the refresh token (" + err.Error() + "): authorise the integration again"
			tk.markBroken(reason)
			return "", crm.AuthBroken(fmt.Errorf("refreshing the token: %w", err))
		}
		if api.IsStatus(err, http.StatusTooManyRequests) {
			var e *api.Error
			errors.As(err, &e)
			return "", crm.RateLimited(fmt.Errorf("refreshing the token: %w", err), e.RetryAfter)
		}
		return "", crm.Transient(fmt.Errorf("refreshing the token: %w", err))
	}
	n := tokenFile{AccessToken: nt.AccessToken, RefreshToken: nt.RefreshToken, ExpiresAt: tk.now().Add(time.Duration(nt.ExpiresIn) * time.Second),
		PreviousRefresh: used, RefreshedAt: tk.now(), AccountID: t.AccountID, Subdomain: t.Subdomain}
	if nt.RefreshToken == "" {
		n.RefreshToken = used
	}
	if err := tk.persist(n); err != nil {
		// Do not use tokens we could not save: the old refresh token stays valid until the new
		// ones are used, so the next attempt can refresh again.
		tk.onChange("refresh_failed")
		return "", crm.Transient(fmt.Errorf("saving refreshed tokens to %s: %w", tk.path, err))
	}
	tk.mu.Lock()
	tk.t, tk.have = n, true
	tk.mu.Unlock()
	tk.onChange("refreshed")
	return n.AccessToken, nil
}

// isGrantRejected: any 4xx from the token endpoint but 429 means re-authorisation (B.2.2).
func isGrantRejected(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.HTTPStatus >= 400 && e.HTTPStatus < 500 && e.HTTPStatus != http.StatusTooManyRequests
}

func (tk *tokens) request(grant, code, refresh string) api.TokenRequest {
	return api.TokenRequest{ClientID: tk.cfg.Auth.ClientID, ClientSecret: tk.cfg.Auth.ClientSecret.Value(), GrantType: grant,
		Code: code, RefreshToken: refresh, RedirectURI: tk.redirect}
}

// exchange trades an authorisation code for tokens and saves them with the account identity.
func (tk *tokens) exchange(ctx context.Context, code string, account func(ctx context.Context) (*api.Account, error)) (*api.Account, error) {
	if tk.cfg.LongLived() {
		return nil, errors.New("this connector uses a long-lived token; there is nothing to authorise")
	}
	if tk.redirect == "" {
		return nil, errors.New("the redirect URI is unknown: set auth.redirect_uri to the integration's Redirect URI")
	}
	tk.refreshMu.Lock()
	defer tk.refreshMu.Unlock()
	nt, err := tk.oauth.ExchangeToken(ctx, tk.request("authorization_code", strings.TrimSpace(code), ""))
	if err != nil {
		return nil, fmt.Errorf("exchanging the code: %w", err)
	}
	n := tokenFile{AccessToken: nt.AccessToken, RefreshToken: nt.RefreshToken, ExpiresAt: tk.now().Add(time.Duration(nt.ExpiresIn) * time.Second),
		RefreshedAt: tk.now()}
	tk.mu.Lock()
	tk.t, tk.have = n, true
	tk.mu.Unlock()
	acc, err := account(ctx)
	if err != nil {
		_ = tk.persist(n)
		return nil, fmt.Errorf("reading the account: %w", err)
	}
	if acc.Subdomain != "" && acc.Subdomain != tk.cfg.Subdomain {
		tk.mu.Lock()
		tk.t, tk.have = tokenFile{}, false
		tk.mu.Unlock()
		return nil, fmt.Errorf("the code is for account %q but the connector is configured for %q", acc.Subdomain, tk.cfg.Subdomain)
	}
	tk.mu.Lock()
	tk.t.AccountID, tk.t.Subdomain = acc.ID, acc.Subdomain
	n = tk.t
	tk.mu.Unlock()
	if err := tk.persist(n); err != nil {
		return nil, fmt.Errorf("saving tokens to %s: %w", tk.path, err)
	}
	tk.onChange("authorised")
	return acc, nil
}

func (tk *tokens) rememberAccount(acc *api.Account) {
	tk.mu.Lock()
	if tk.cfg.LongLived() || (tk.t.AccountID == acc.ID && tk.t.Subdomain == acc.Subdomain) {
		tk.t.AccountID, tk.t.Subdomain = acc.ID, acc.Subdomain
		tk.mu.Unlock()
		return
	}
	tk.t.AccountID, tk.t.Subdomain = acc.ID, acc.Subdomain
	t := tk.t
	tk.mu.Unlock()
	_ = tk.persist(t)
}

// needsProactiveRefresh reports whether the refresh token has been idle long enough to rotate.
func (tk *tokens) needsProactiveRefresh() bool {
	if tk.cfg.LongLived() {
		return false
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.have && tk.t.Broken == "" && tk.t.RefreshToken != "" && tk.now().Sub(tk.t.RefreshedAt) >= tk.cfg.Auth.ProactiveRefresh
}

// OAuth state: a self-verifying value "nonce.unix.mac", the MAC (HMAC-SHA256 keyed with the
// client secret) also covering the subdomain and the redirect URI, so that a state is valid only
// for the connector that issued it. The callback needs no session; spendState accepts a state
// once (the used ones are remembered until they expire, in memory) and for stateTTL.
const (
	stateTTL      = 30 * time.Minute
	stateSkew     = time.Minute // a state from the near future (clock steps) is still fine
	maxStates     = 1024        // used states remembered at once (only states with a valid MAC)
	maxStateChars = 256
)

func (tk *tokens) newState() string {
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	body := base64.RawURLEncoding.EncodeToString(nonce) + "." + strconv.FormatInt(tk.now().Unix(), 10)
	return body + "." + tk.stateMAC(body)
}

func (tk *tokens) stateMAC(body string) string {
	m := hmac.New(sha256.New, []byte("pbxbridge-oauth-state\x00"+tk.cfg.Auth.ClientSecret.Value()))
	m.Write([]byte(body + "\x00" + tk.cfg.Subdomain + "\x00" + tk.redirect))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// spendState accepts a state issued by this connector, unexpired and not used before, and
// marks it used; the error says why it is refused.
func (tk *tokens) spendState(s string) error {
	if s == "" {
		return errors.New("the redirect carries no state: it did not start from this pbxbridge's connect link")
	}
	i := strings.LastIndexByte(s, '.')
	if len(s) > maxStateChars || i <= 0 {
		return errors.New("the state is malformed")
	}
	body, mac := s[:i], s[i+1:]
	if !hmac.Equal([]byte(mac), []byte(tk.stateMAC(body))) {
		return errors.New("the state was not issued by this connector")
	}
	j := strings.LastIndexByte(body, '.')
	ts, err := strconv.ParseInt(body[j+1:], 10, 64)
	if j < 0 || err != nil {
		return errors.New("the state is malformed")
	}
	issued := time.Unix(ts, 0)
	switch age := tk.now().Sub(issued); {
	case age < -stateSkew:
		return errors.New("the state is from the future (check the server's clock)")
	case age >= stateTTL:
		return fmt.Errorf("the connect link has expired (it is valid for %v)", stateTTL)
	}
	switch tk.states.first("state:"+body, issued.Add(stateTTL+stateSkew)) {
	case replayUsed:
		return errors.New("the connect link was already used")
	case replayFull:
		return errors.New("too many authorisations at once: try again in a minute")
	}
	return nil
}

// connectURL is the consent page link an admin opens to (re)authorise the integration.
func (tk *tokens) connectURL() string {
	if tk.cfg.LongLived() || tk.cfg.Auth.ClientID == "" {
		return ""
	}
	q := url.Values{"client_id": {tk.cfg.Auth.ClientID}, "state": {tk.newState()}, "mode": {"post_message"}}
	if tk.redirect != "" {
		q.Set("redirect_uri", tk.redirect)
	}
	return tk.cfg.authorizePage() + "?" + q.Encode()
}
