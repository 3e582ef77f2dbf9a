package bitrix24

import (
	_ "embed"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// Sample is the documented sample of the bitrix24 type block (configs/pbxbridge.example.yaml
// carries it; `pbxbridge config sample bitrix24` prints it).
//
//go:embed sample.yaml
var Sample string

// Authentication modes.
const (
	// AuthOAuth: a local application, tokens from Bitrix24's OAuth server (the default; a cloud
	// portal, or a box that may reach the OAuth server).
	AuthOAuth = "oauth"
	// AuthWebhook: an inbound webhook. A boxed portal checks it itself, without the cloud, so it
	// is the simplest mode for an isolated box; it gets no events (no click-to-call).
	AuthWebhook = "webhook"
	// AuthPortalToken: a long-lived application token issued by the pbxbridge portal module
	// (crm/bitrix24/portal-module) on an isolated box; the module posts events directly, signed
	// with module_secret.
	AuthPortalToken = "portal_token"
)

// Config is the bitrix24 block of a connector instance. Defaults come from NewConfig.
type Config struct {
	// PortalURL is the portal's base URL, e.g. https://romashka.bitrix24.ru.
	PortalURL string `yaml:"portal_url"`
	// OAuthURL is the OAuth server's base URL (oauth mode). Empty (the default): the server the
	// portal names in server_endpoint when it is one of Bitrix24's own (oauth.bitrix.info,
	// oauth.bitrix24.tech), else https://oauth.bitrix.info. Set it for a box whose
	// BITRIX_OAUTH_URL names another server: it is then used and allowed besides those.
	OAuthURL string `yaml:"oauth_url"`
	// Timezone renders CALL_START_DATE with its offset (IANA name; default the host's zone).
	Timezone string `yaml:"timezone"`

	Auth        AuthConfig        `yaml:"auth"`
	TLS         TLSConfig         `yaml:"tls"`
	Lines       []LineConfig      `yaml:"lines"`
	Card        CardConfig        `yaml:"card"`
	Finish      FinishConfig      `yaml:"finish"`
	Recordings  RecordingsConfig  `yaml:"recordings"`
	Users       UsersConfig       `yaml:"users"`
	MissedCalls MissedCallsConfig `yaml:"missed_calls"`
	Routing     RoutingConfig     `yaml:"routing"`
	ClickToCall ClickToCallConfig `yaml:"click_to_call"`
	RateLimit   RateLimitConfig   `yaml:"rate_limit"`
	// HTTPTimeout bounds one request attempt.
	HTTPTimeout time.Duration `yaml:"http_timeout"`
	// CallIDReuseGuard detects a CALL_ID that Bitrix24 handed out for another call (a platform
	// bug) and registers the call again with a different de-duplication key.
	CallIDReuseGuard bool `yaml:"call_id_reuse_guard"`
}

// AuthConfig selects and configures the authentication mode.
type AuthConfig struct {
	Mode string `yaml:"mode"` // oauth | webhook | portal_token
	// ClientID and ClientSecret of the local application (oauth mode).
	ClientID     string         `yaml:"client_id"`
	ClientSecret configs.Secret `yaml:"client_secret"`
	// InstallKey, when set, must be given as ?key= on the installation URL registered in
	// Bitrix24 (checked before the installation's tokens are verified at the OAuth server).
	InstallKey configs.Secret `yaml:"install_key"`
	// WebhookURL is the inbound webhook (webhook mode): https://PORTAL/rest/USER_ID/CODE/.
	WebhookURL configs.Secret `yaml:"webhook_url"`
	// ApplicationToken verifies events posted by an outgoing webhook (webhook mode); in oauth
	// mode the token comes with the installation.
	ApplicationToken configs.Secret `yaml:"application_token"`
	// PortalToken is the token the pbxbridge portal module shows on its settings page
	// (portal_token mode).
	PortalToken configs.Secret `yaml:"portal_token"`
	// ModuleSecret verifies the events the module posts (HMAC-SHA256, portal_token mode); the
	// module's settings page shows it.
	ModuleSecret configs.Secret `yaml:"module_secret"`
	// MemberID, when set, is the portal's member_id the module's events must carry
	// (portal_token mode); without it the first verified event binds the connector.
	MemberID string `yaml:"member_id"`
}

// minModuleSecret is the shortest module_secret accepted (the module generates 64 characters).
const minModuleSecret = 32

// LineConfig is an external line registered with telephony.externalLine.add.
type LineConfig struct {
	Number        string `yaml:"number"`
	Name          string `yaml:"name"`
	CRMAutoCreate bool   `yaml:"crm_auto_create"`
	// DefaultUserID receives missed calls and follow-ups of this line when nobody else is found.
	DefaultUserID int `yaml:"default_user_id"`
}

// CardConfig controls the incoming-call card.
type CardConfig struct {
	// Enabled registers calls while they ring (live). When false, calls are registered at
	// delivery, after they ended, with SHOW=0.
	Enabled bool `yaml:"enabled"`
	// ShowInbound shows the card of an incoming call to every ringing employee.
	ShowInbound bool `yaml:"show_inbound"`
	// ShowOutbound shows the customer's card to the employee who dials an outbound call while
	// the customer's phone rings (default true; false registers such calls without a card).
	ShowOutbound bool `yaml:"show_outbound"`
	// CRMCreate asks Bitrix24 to create a lead (or deal) for unknown numbers at registration.
	CRMCreate bool   `yaml:"crm_create"`
	CRMSource string `yaml:"crm_source"`
}

// Finish-user policies.
const (
	FinishUserLastLeg     = "last_leg"
	FinishUserFirstAnswer = "first_answer"
)

// FinishConfig controls telephony.externalCall.finish.
type FinishConfig struct {
	// User is whose call it is: last_leg (the employee who talked last, after transfers) or
	// first_answer.
	User      string `yaml:"user"`
	AddToChat bool   `yaml:"add_to_chat"`
}

// Recording modes.
const (
	RecordingUpload = "upload" // send the file (content, or two-step upload above MaxUpload)
	RecordingURL    = "url"    // give the portal a signed link (needs http.public.url)
)

// RecordingsConfig controls attachRecord.
type RecordingsConfig struct {
	Attach bool   `yaml:"attach"`
	Mode   string `yaml:"mode"`
	// ContentMaxBytes: files up to this size go Base64 inside one request; bigger ones use the
	// two-step upload URL.
	ContentMaxBytes int64 `yaml:"content_max_bytes"`
	// MaxBytes: bigger files are not attached (a warning in the call timeline).
	MaxBytes int64 `yaml:"max_bytes"`
	// Wait: if the file is missing when the call is delivered, retry for this long after the
	// call ended before giving up on the recording.
	Wait time.Duration `yaml:"wait"`
}

// UsersConfig maps extensions to Bitrix24 users.
type UsersConfig struct {
	// CacheTTL: how long the extension→user map (from UF_PHONE_INNER) is trusted; it is
	// refreshed in the background before it expires.
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// Map overrides UF_PHONE_INNER: extension → user id.
	Map map[string]int `yaml:"map"`
	// DefaultUserID takes calls of extensions no user has (0: such calls fail permanently).
	DefaultUserID int `yaml:"default_user_id"`
}

// Missed-call follow-up kinds.
const (
	FollowUpNone = "none"
	FollowUpTask = "task" // tasks.task.add
	FollowUpTodo = "todo" // crm.activity.todo.add
)

// Responsible-chain steps.
const (
	RespEntityOwner = "entity_owner"
	RespLastRang    = "last_rang"
	RespLineDefault = "line_default"
	RespDefault     = "default"
)

// MissedCallsConfig controls what a missed inbound call creates besides the call itself.
type MissedCallsConfig struct {
	FollowUp string        `yaml:"follow_up"` // none | task | todo
	Deadline time.Duration `yaml:"deadline"`
	Title    string        `yaml:"title"` // {customer} and {line} are replaced
	// CreateLead creates a lead for a missed call from a number the CRM does not know.
	CreateLead bool `yaml:"create_lead"`
	// Responsible is the chain that picks who gets the follow-up.
	Responsible []string `yaml:"responsible"`
	// Busy counts calls that found the extension busy as missed (default true).
	Busy bool `yaml:"busy"`
}

// RoutingConfig controls the responsible-manager and caller-name look-ups (crm.Router).
type RoutingConfig struct {
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// OnlyAtWork answers the manager only while their work day is open (TIMEMAN_STATUS OPENED).
	OnlyAtWork bool `yaml:"only_at_work"`
}

// ClickToCallConfig controls the ONEXTERNALCALLSTART / ONEXTERNALCALLBACKSTART handlers.
type ClickToCallConfig struct {
	Enabled bool `yaml:"enabled"`
	// RingTimeout: how long the agent's phone rings before the click-to-call gives up.
	RingTimeout time.Duration `yaml:"ring_timeout"`
	// CallbackExtension is dialled first for web-form callbacks (a queue or ring group).
	CallbackExtension string `yaml:"callback_extension"`
	// CallbackUserID is the user the callback call is registered for (default users.default_user_id).
	CallbackUserID int `yaml:"callback_user_id"`
}

// RateLimitConfig is the client-side leaky bucket shared by live cards and deliveries.
type RateLimitConfig struct {
	RPS   float64 `yaml:"rps"`
	Burst int     `yaml:"burst"`
	// LiveReserve slots of the burst are kept for call cards and routing look-ups.
	LiveReserve int `yaml:"live_reserve"`
}

// NewConfig returns a config with defaults.
func NewConfig() *Config {
	return &Config{
		Auth:   AuthConfig{Mode: AuthOAuth},
		Card:   CardConfig{Enabled: true, ShowInbound: true, ShowOutbound: true, CRMSource: "CALL"},
		Finish: FinishConfig{User: FinishUserLastLeg, AddToChat: true},
		Recordings: RecordingsConfig{
			Attach: true, Mode: RecordingUpload,
			ContentMaxBytes: 10 << 20, MaxBytes: 200 << 20, Wait: 2 * time.Minute,
		},
		Users: UsersConfig{CacheTTL: 15 * time.Minute},
		MissedCalls: MissedCallsConfig{
			FollowUp: FollowUpNone, Deadline: 2 * time.Hour, Title: "Call back {customer} (missed call)",
			Responsible: []string{RespEntityOwner, RespLastRang, RespLineDefault, RespDefault}, Busy: true,
		},
		Routing:          RoutingConfig{CacheTTL: 5 * time.Minute},
		ClickToCall:      ClickToCallConfig{Enabled: true, RingTimeout: 30 * time.Second},
		RateLimit:        RateLimitConfig{RPS: 2, Burst: 50, LiveReserve: 5},
		HTTPTimeout:      15 * time.Second,
		CallIDReuseGuard: true,
	}
}

// Validate reports every problem of the block (paths relative to it).
func (c *Config) Validate() []error {
	var errs []error
	add := func(path, format string, a ...any) {
		errs = append(errs, &crm.FieldError{Path: path, Msg: fmt.Sprintf(format, a...)})
	}
	checkURL := func(path, v string, required bool) {
		if v == "" {
			if required {
				add(path, "is required")
			}
			return
		}
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			add(path, "must be an http(s) URL such as https://romashka.bitrix24.ru, got %q", v)
			return
		}
		if u.Path != "" && u.Path != "/" {
			add(path, "must be the base URL without a path, got %q", v)
		}
	}
	switch c.Auth.Mode {
	case AuthOAuth:
		checkURL("portal_url", c.PortalURL, true)
		checkURL("oauth_url", c.OAuthURL, false)
		if c.Auth.ClientID == "" {
			add("auth.client_id", "is required in oauth mode (the local application's client_id, e.g. local.65f1...)")
		}
		if !c.Auth.ClientSecret.IsSet() {
			add("auth.client_secret", "is required in oauth mode (set it here or in the environment)")
		}
	case AuthWebhook:
		if !c.Auth.WebhookURL.IsSet() {
			add("auth.webhook_url", "is required in webhook mode")
		} else if _, err := api.NewWebhook(c.Auth.WebhookURL.Value()); err != nil {
			add("auth.webhook_url", "%v", err)
		}
		checkURL("portal_url", c.PortalURL, false)
	case AuthPortalToken:
		checkURL("portal_url", c.PortalURL, true)
		if !c.Auth.PortalToken.IsSet() {
			add("auth.portal_token", "is required in portal_token mode (the token the pbxbridge module shows on its settings page)")
		} else if _, err := api.NewPortalToken("https://portal.invalid", c.Auth.PortalToken.Value()); err != nil {
			add("auth.portal_token", "%v", err)
		}
		switch n := len(c.Auth.ModuleSecret.Value()); {
		case n == 0:
			add("auth.module_secret", "is required in portal_token mode (the secret the pbxbridge module shows on its settings page; it signs the module's events)")
		case n < minModuleSecret:
			add("auth.module_secret", "must be at least %d characters, got %d (copy it again from the module's settings page)", minModuleSecret, n)
		}
		if m := c.Auth.MemberID; m != "" && !validMemberID(m) {
			add("auth.member_id", "must be the portal's member_id (letters and digits, as the module's settings page shows it), got %q", m)
		}
	default:
		add("auth.mode", "must be %q, %q or %q, got %q", AuthOAuth, AuthWebhook, AuthPortalToken, c.Auth.Mode)
	}
	if c.TLS.set() {
		c.TLS.validate(add)
		if u := c.restURL(); u != "" && !strings.HasPrefix(strings.ToLower(u), "https://") {
			add("tls", "is set, but the portal is reached over plain http (%s): use https:// in portal_url / auth.webhook_url", portalHost(u))
		}
	}
	if c.Timezone != "" {
		if _, err := time.LoadLocation(c.Timezone); err != nil {
			add("timezone", "unknown time zone %q", c.Timezone)
		}
	}
	seen := map[string]bool{}
	for i, l := range c.Lines {
		p := fmt.Sprintf("lines[%d]", i)
		if strings.TrimSpace(l.Number) == "" {
			add(p+".number", "is required")
		} else if seen[l.Number] {
			add(p+".number", "duplicate line %q", l.Number)
		}
		seen[l.Number] = true
		if l.DefaultUserID < 0 {
			add(p+".default_user_id", "must be a Bitrix24 user id")
		}
	}
	switch c.Finish.User {
	case FinishUserLastLeg, FinishUserFirstAnswer:
	default:
		add("finish.user", "must be %q or %q, got %q", FinishUserLastLeg, FinishUserFirstAnswer, c.Finish.User)
	}
	switch c.Recordings.Mode {
	case RecordingUpload, RecordingURL:
	default:
		add("recordings.mode", "must be %q or %q, got %q", RecordingUpload, RecordingURL, c.Recordings.Mode)
	}
	if c.Recordings.ContentMaxBytes < 0 || c.Recordings.MaxBytes < 0 {
		add("recordings", "sizes must not be negative")
	}
	if c.Recordings.Wait < 0 {
		add("recordings.wait", "must not be negative")
	}
	if c.Users.CacheTTL < time.Minute {
		add("users.cache_ttl", "must be at least 1m, got %v", c.Users.CacheTTL)
	}
	exts := make([]string, 0, len(c.Users.Map))
	for ext := range c.Users.Map {
		exts = append(exts, ext)
	}
	sort.Strings(exts)
	for _, ext := range exts {
		if strings.TrimSpace(ext) == "" {
			add("users.map", "empty extension")
		}
		if c.Users.Map[ext] <= 0 {
			add("users.map."+ext, "must be a Bitrix24 user id, got %d", c.Users.Map[ext])
		}
	}
	if c.Users.DefaultUserID < 0 {
		add("users.default_user_id", "must be a Bitrix24 user id")
	}
	switch c.MissedCalls.FollowUp {
	case FollowUpNone, FollowUpTask, FollowUpTodo:
	default:
		add("missed_calls.follow_up", "must be %q, %q or %q, got %q", FollowUpNone, FollowUpTask, FollowUpTodo, c.MissedCalls.FollowUp)
	}
	if c.MissedCalls.Deadline <= 0 {
		add("missed_calls.deadline", "must be positive")
	}
	for i, s := range c.MissedCalls.Responsible {
		if !slices.Contains([]string{RespEntityOwner, RespLastRang, RespLineDefault, RespDefault}, s) {
			add(fmt.Sprintf("missed_calls.responsible[%d]", i), "unknown step %q (entity_owner, last_rang, line_default, default)", s)
		}
	}
	if c.Routing.CacheTTL < 0 {
		add("routing.cache_ttl", "must not be negative")
	}
	if c.ClickToCall.RingTimeout <= 0 {
		add("click_to_call.ring_timeout", "must be positive")
	}
	if c.RateLimit.RPS <= 0 {
		add("rate_limit.rps", "must be positive, got %v", c.RateLimit.RPS)
	}
	if c.RateLimit.Burst < 1 {
		add("rate_limit.burst", "must be at least 1, got %d", c.RateLimit.Burst)
	}
	if c.RateLimit.LiveReserve < 0 || c.RateLimit.LiveReserve >= max(c.RateLimit.Burst, 1) {
		add("rate_limit.live_reserve", "must be between 0 and burst-1, got %d", c.RateLimit.LiveReserve)
	}
	if c.HTTPTimeout <= 0 {
		add("http_timeout", "must be positive")
	}
	return errs
}

// ConfiguredAccount implements crm.AccountConfigurer: the portal's domain, with its port when
// portal_url has one (a box portal on its own port), as the portal sends it in auth[domain] and
// as Account reports it once installed: a licence requested before or after the installation
// binds the same account.
func (c *Config) ConfiguredAccount() crm.Account {
	u, err := url.Parse(c.PortalURL)
	if err != nil || u.Hostname() == "" {
		return crm.Account{}
	}
	return crm.Account{Domain: portalHost(c.PortalURL)}
}

// MappedExtensions lists the extensions mapped to users by configuration (licence seats).
func (c *Config) MappedExtensions() []string {
	out := make([]string, 0, len(c.Users.Map))
	for ext := range c.Users.Map {
		out = append(out, ext)
	}
	sort.Strings(out)
	return out
}

// restURL is the URL REST calls go to: the webhook's in webhook mode, else portal_url.
func (c *Config) restURL() string {
	if c.Auth.Mode == AuthWebhook && c.Auth.WebhookURL.IsSet() {
		return c.Auth.WebhookURL.Value()
	}
	return c.PortalURL
}

// validMemberID reports whether s looks like a Bitrix24 member_id (hex, at most 64 characters;
// letters and digits are accepted for boxes that format it otherwise).
func validMemberID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
			return false
		}
	}
	return true
}

// location returns the time zone for CALL_START_DATE.
func (c *Config) location() *time.Location {
	if c.Timezone != "" {
		if l, err := time.LoadLocation(c.Timezone); err == nil {
			return l
		}
	}
	return time.Local
}

// lineDefault returns the per-line default user of a line number.
func (c *Config) lineDefault(line string) int {
	for _, l := range c.Lines {
		if l.Number == line || (digits(l.Number) != "" && digits(l.Number) == digits(line)) {
			return l.DefaultUserID
		}
	}
	return 0
}

func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func itoa(n int) string { return strconv.Itoa(n) }

var (
	_ crm.AccountConfigurer = (*Config)(nil)
	_ crm.ExtensionMapper   = (*Config)(nil)
	_ crm.ConfigValidator   = (*Config)(nil)
)
