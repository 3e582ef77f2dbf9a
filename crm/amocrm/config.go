package amocrm

import (
	_ "embed"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
)

// Connector types registered by this package.
const (
	TypeAmoCRM = "amocrm"
	TypeKommo  = "kommo"
)

// Config is the type block of an amocrm or kommo connector instance.
type Config struct {
	// Subdomain of the account: romashka for https://romashka.amocrm.ru.
	Subdomain string `yaml:"subdomain"`
	// BaseURL overrides https://{subdomain}.amocrm.ru (or .kommo.com), e.g. for a fake CRM.
	BaseURL string `yaml:"base_url"`
	// AuthorizeURL overrides the browser consent page (https://www.amocrm.ru/oauth or
	// https://www.kommo.com/oauth).
	AuthorizeURL string `yaml:"authorize_url"`

	Auth AuthConfig `yaml:"auth"`

	// Users maps extensions to amoCRM user ids.
	Users map[string]int64 `yaml:"users"`
	// AutoMapUsers also maps users whose phone_number (amoCRM profile) is an extension number;
	// Users wins on conflicts.
	AutoMapUsers bool `yaml:"auto_map_users"`
	// DefaultUser is the amoCRM user id used when no extension maps (missed-call tasks, new
	// contacts); 0 = none.
	DefaultUser int64 `yaml:"default_user"`
	// Source is the call source shown in amoCRM.
	Source string `yaml:"source"`

	// RateLimit is the client-side request rate per second for this account (Live, Deliver
	// and routing share it; default 7, the documented limit; more only for a raised quota or
	// a test server).
	RateLimit float64     `yaml:"rate_limit"`
	Batch     BatchConfig `yaml:"batch"`

	UnknownNumber  UnknownNumberConfig `yaml:"unknown_number"`
	MissedCallTask TaskConfig          `yaml:"missed_call_task"`

	// Popups shows amoCRM's call pop-up (POST /api/v2/events) to the ringing extension's user;
	// off turns every pop-up off.
	Popups bool `yaml:"popups"`
	// PopupsOutbound also shows it to the dialling extension's user when an outbound call's
	// customer starts ringing (default on; click-to-call calls never get one).
	PopupsOutbound bool `yaml:"popups_outbound"`
	// RecordingLinks sends the signed recording URL as the call's link (needs the daemon's
	// recordings: block).
	RecordingLinks bool `yaml:"recording_links"`

	ClickToCall ClickToCallConfig `yaml:"click_to_call"`

	flavor string // TypeAmoCRM or TypeKommo, set by NewConfig
}

// AuthConfig selects OAuth 2.0 or a long-lived token.
type AuthConfig struct {
	// ClientID and ClientSecret of the integration (OAuth 2.0). With LongLivedToken,
	// ClientSecret (the integration's secret key) only verifies the widget's one-time tokens,
	// and ClientID, when set, must be their client_uuid.
	ClientID     string         `yaml:"client_id"`
	ClientSecret configs.Secret `yaml:"client_secret"`
	// RedirectURI must equal the integration's Redirect URI; default
	// {http.public.url}/crm/{name}/oauth/callback.
	RedirectURI string `yaml:"redirect_uri"`
	// LongLivedToken of a private integration (instead of OAuth; no refresh).
	LongLivedToken configs.Secret `yaml:"long_lived_token"`
	// ProactiveRefresh rotates the refresh token when it has not been used for this long, well
	// before amoCRM revokes it after 3 months idle (default 720h = 30 days).
	ProactiveRefresh time.Duration `yaml:"proactive_refresh"`
}

// BatchConfig tunes POST /api/v4/calls batching.
type BatchConfig struct {
	// Max calls per request (default 50, amoCRM's recommendation; at most 250).
	Max int `yaml:"max"`
	// Window is how long a lone call waits for company before it is sent (default 100ms).
	Window time.Duration `yaml:"window"`
}

// Unknown-number actions.
const (
	UnknownCreateContact = "create_contact"
	UnknownUnsorted      = "unsorted"
	UnknownSkip          = "skip"
)

// UnknownNumberConfig says what to do with a call whose number matches no contact (amoCRM
// refuses to log it: error 263).
type UnknownNumberConfig struct {
	// Inbound: unsorted (an incoming lead, default), create_contact or skip.
	Inbound string `yaml:"inbound"`
	// Outbound: create_contact (default), unsorted or skip.
	Outbound string `yaml:"outbound"`
	// ContactName is the new contact's name; {number} is replaced (default "{number}").
	ContactName string `yaml:"contact_name"`
	// LeadName is the incoming lead's name (default "Call from {number}" / Russian for amoCRM).
	LeadName string `yaml:"lead_name"`
	// PipelineID of incoming leads (0 = the main pipeline).
	PipelineID int64 `yaml:"pipeline_id"`
}

// Responsible chain elements.
const (
	ChainContactOwner = "contact_owner"
	ChainLastRang     = "last_rang"
	ChainDefault      = "default"
)

// TaskConfig configures missed-call tasks.
type TaskConfig struct {
	Enabled bool `yaml:"enabled"`
	// Deadline after the call's end (default 1h; never earlier than 15 minutes from now).
	Deadline time.Duration `yaml:"deadline"`
	// Text of the task; {number} is replaced.
	Text string `yaml:"text"`
	// Responsible is tried in order: contact_owner, last_rang, default.
	Responsible []string `yaml:"responsible"`
}

// ClickToCallConfig configures POST /crm/{name}/click2call for the widget.
type ClickToCallConfig struct {
	// Secret was the widget's shared HMAC key. It is refused: a widget setting reaches every
	// user's browser, so anyone holding it could ring any extension. Kept only so that a config
	// that still sets it gets an error saying so rather than "unknown field".
	Secret configs.Secret `yaml:"secret"`
	// AcceptJWT turns click-to-call on: the widget's requests are authenticated by amoCRM's or
	// Kommo's one-time token of the clicking user (X-Auth-Token, HS256 with the integration's
	// secret key auth.client_secret), the only credential accepted.
	AcceptJWT bool `yaml:"accept_jwt"`
	// AllowedOrigins for CORS (default the account's own origin).
	AllowedOrigins []string `yaml:"allowed_origins"`
	// RingTimeout is how long the agent's phone rings (default 30s).
	RingTimeout time.Duration `yaml:"ring_timeout"`
}

//go:embed sample.yaml
var sampleAmoCRM []byte

//go:embed sample_kommo.yaml
var sampleKommo []byte

// Sample returns the documented sample connector block of a type (amocrm or kommo).
func Sample(typ string) []byte {
	if typ == TypeKommo {
		return slices.Clone(sampleKommo)
	}
	return slices.Clone(sampleAmoCRM)
}

// NewConfig returns a config with the defaults of a type applied.
func NewConfig(typ string) *Config {
	c := &Config{
		Source:         "pbxbridge",
		RateLimit:      7,
		Batch:          BatchConfig{Max: 50, Window: 100 * time.Millisecond},
		Popups:         true,
		PopupsOutbound: true,
		RecordingLinks: true,
		UnknownNumber: UnknownNumberConfig{Inbound: UnknownUnsorted, Outbound: UnknownCreateContact,
			ContactName: "{number}", LeadName: "Call from {number}"},
		MissedCallTask: TaskConfig{Enabled: true, Deadline: time.Hour, Text: "Call back {number}: missed call",
			Responsible: []string{ChainContactOwner, ChainLastRang, ChainDefault}},
		ClickToCall: ClickToCallConfig{RingTimeout: 30 * time.Second},
		Auth:        AuthConfig{ProactiveRefresh: 30 * 24 * time.Hour},
		flavor:      TypeAmoCRM,
	}
	if typ == TypeKommo {
		c.flavor = TypeKommo
	} else {
		c.UnknownNumber.LeadName = "Звонок с {number}"
		c.MissedCallTask.Text = "Перезвонить {number}: пропущенный звонок"
	}
	return c
}

// Flavor returns the connector type the config was made for.
func (c *Config) Flavor() string {
	if c.flavor == "" {
		return TypeAmoCRM
	}
	return c.flavor
}

// APIBase returns the account's API root.
func (c *Config) APIBase() string {
	if c.BaseURL != "" {
		return strings.TrimRight(c.BaseURL, "/")
	}
	if c.Flavor() == TypeKommo {
		return "https://" + c.Subdomain + ".kommo.com"
	}
	return "https://" + c.Subdomain + ".amocrm.ru"
}

// Host returns the account's production host (romashka.amocrm.ru), used as the CORS origin
// and to check the OAuth referer.
func (c *Config) Host() string {
	if c.Flavor() == TypeKommo {
		return c.Subdomain + ".kommo.com"
	}
	return c.Subdomain + ".amocrm.ru"
}

func (c *Config) authorizePage() string {
	if c.AuthorizeURL != "" {
		return c.AuthorizeURL
	}
	if c.Flavor() == TypeKommo {
		return "https://www.kommo.com/oauth"
	}
	return "https://www.amocrm.ru/oauth"
}

// LongLived reports whether the instance uses a long-lived token.
func (c *Config) LongLived() bool { return c.Auth.LongLivedToken.IsSet() }

// ConfiguredAccount implements crm.AccountConfigurer: the account's subdomain.
func (c *Config) ConfiguredAccount() crm.Account { return crm.Account{Subdomain: c.Subdomain} }

// MappedExtensions lists the extensions mapped to amoCRM users in the config (licence seats).
func (c *Config) MappedExtensions() []string {
	out := make([]string, 0, len(c.Users))
	for ext := range c.Users {
		out = append(out, ext)
	}
	sort.Strings(out)
	return out
}

var (
	subdomainRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	extRe       = regexp.MustCompile(`^[0-9A-Za-z*#+_-]{1,32}$`)
)

// Validate reports every problem of the block; paths are relative to it.
func (c *Config) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &crm.FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Subdomain == "" {
		add("subdomain", "is required (romashka for https://romashka.%s)", map[bool]string{true: "kommo.com", false: "amocrm.ru"}[c.Flavor() == TypeKommo])
	} else if !subdomainRe.MatchString(c.Subdomain) {
		add("subdomain", "%q is not a subdomain (only the first label of the account's host, in lower case)", c.Subdomain)
	}
	for path, raw := range map[string]string{"base_url": c.BaseURL, "authorize_url": c.AuthorizeURL} {
		if raw == "" {
			continue
		}
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add(path, "must be an absolute http(s) URL, got %q", raw)
		}
	}
	a := c.Auth
	switch {
	case a.LongLivedToken.IsSet():
		if a.ClientID != "" && !a.ClientSecret.IsSet() {
			add("auth", "client_id with long_lived_token only serves to check the widget's one-time tokens: set client_secret (the integration's secret key) too, or remove client_id")
		}
	case a.ClientID == "" && !a.ClientSecret.IsSet():
		add("auth", "set client_id and client_secret of the integration (OAuth) or long_lived_token")
	default:
		if a.ClientID == "" {
			add("auth.client_id", "is required with client_secret")
		}
		if !a.ClientSecret.IsSet() {
			add("auth.client_secret", "is required with client_id (set PBXBRIDGE_… from the environment)")
		}
	}
	if a.RedirectURI != "" {
		if u, err := url.Parse(a.RedirectURI); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			add("auth.redirect_uri", "must be an absolute http(s) URL, got %q", a.RedirectURI)
		}
	}
	if a.ProactiveRefresh <= 0 || a.ProactiveRefresh > 80*24*time.Hour {
		add("auth.proactive_refresh", "must be between 1s and 1920h (amoCRM revokes refresh tokens idle for 3 months), got %v", a.ProactiveRefresh)
	}
	seen := map[int64]string{}
	for _, ext := range c.MappedExtensions() {
		id := c.Users[ext]
		if !extRe.MatchString(ext) {
			add("users."+ext, "%q is not an extension number", ext)
		}
		if id <= 0 {
			add("users."+ext, "must be an amoCRM user id (a positive number), got %d", id)
		} else if prev, dup := seen[id]; dup {
			add("users."+ext, "user %d is already mapped to extension %s", id, prev)
		}
		seen[id] = ext
	}
	if c.DefaultUser < 0 {
		add("default_user", "must be an amoCRM user id or 0")
	}
	if strings.TrimSpace(c.Source) == "" {
		add("source", "must not be empty (it is shown as the call's source)")
	}
	if c.RateLimit <= 0 || c.RateLimit > 1000 {
		add("rate_limit", "must be above 0 and at most 1000 requests per second (amoCRM allows 7), got %v", c.RateLimit)
	}
	if c.Batch.Max < 1 || c.Batch.Max > 250 {
		add("batch.max", "must be between 1 and 250 (amoCRM's limit per request), got %d", c.Batch.Max)
	}
	if c.Batch.Window < 0 || c.Batch.Window > 5*time.Second {
		add("batch.window", "must be between 0 and 5s, got %v", c.Batch.Window)
	}
	actions := []string{UnknownUnsorted, UnknownCreateContact, UnknownSkip}
	if !slices.Contains(actions, c.UnknownNumber.Inbound) {
		add("unknown_number.inbound", "must be one of %s, got %q", strings.Join(actions, ", "), c.UnknownNumber.Inbound)
	}
	if !slices.Contains(actions, c.UnknownNumber.Outbound) {
		add("unknown_number.outbound", "must be one of %s, got %q", strings.Join(actions, ", "), c.UnknownNumber.Outbound)
	}
	if c.UnknownNumber.PipelineID < 0 {
		add("unknown_number.pipeline_id", "must be a pipeline id or 0")
	}
	t := c.MissedCallTask
	if t.Enabled {
		if t.Deadline <= 0 {
			add("missed_call_task.deadline", "must be positive, got %v", t.Deadline)
		}
		if strings.TrimSpace(t.Text) == "" {
			add("missed_call_task.text", "must not be empty")
		}
		if len(t.Responsible) == 0 {
			add("missed_call_task.responsible", "must list at least one of contact_owner, last_rang, default")
		}
		for i, r := range t.Responsible {
			if r != ChainContactOwner && r != ChainLastRang && r != ChainDefault {
				add(fmt.Sprintf("missed_call_task.responsible[%d]", i), "must be contact_owner, last_rang or default, got %q", r)
			}
			if r == ChainDefault && c.DefaultUser == 0 {
				add(fmt.Sprintf("missed_call_task.responsible[%d]", i), "default needs default_user")
			}
		}
	}
	cc := c.ClickToCall
	if cc.Secret.IsSet() {
		add("click_to_call.secret", "is no longer supported: a key kept in the widget's settings reaches every CRM user's browser, so any user could ring any extension. "+
			"Remove it and set click_to_call.accept_jwt: true: the widget (version %s) then authenticates each click with amoCRM's one-time token of the user who clicked, checked with auth.client_secret (the integration's secret key)", WidgetVersion)
	}
	if cc.AcceptJWT && !a.ClientSecret.IsSet() {
		add("click_to_call.accept_jwt", "needs auth.client_secret, the integration's secret key (one-time tokens are signed with it; it may be set together with long_lived_token)")
	}
	for i, o := range cc.AllowedOrigins {
		if u, err := url.Parse(o); err != nil || u.Host == "" || u.Path != "" {
			add(fmt.Sprintf("click_to_call.allowed_origins[%d]", i), "must be an origin like https://romashka.amocrm.ru, got %q", o)
		}
	}
	if cc.RingTimeout < 0 || cc.RingTimeout > 5*time.Minute {
		add("click_to_call.ring_timeout", "must be between 0 and 5m, got %v", cc.RingTimeout)
	}
	return errs
}

var (
	_ crm.AccountConfigurer = (*Config)(nil)
	_ crm.ExtensionMapper   = (*Config)(nil)
	_ crm.ConfigValidator   = (*Config)(nil)
)
