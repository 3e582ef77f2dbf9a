package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/hooks"
	"github.com/pbxbridge/pbxbridge/connector/recordings"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// DefaultPath is where the packaged daemon reads its config.
const DefaultPath = "/etc/pbxbridge/pbxbridge.yaml"

// Config is the whole daemon configuration. Field comments are the user documentation; the
// sample in configs/pbxbridge.example.yaml shows every section.
type Config struct {
	// StateDir holds the outbox database, OAuth tokens and licence state.
	StateDir string         `yaml:"state_dir"`
	Log      Log            `yaml:"log"`
	HTTP     HTTP           `yaml:"http"`
	Admin    Admin          `yaml:"admin"`
	Numbers  numbers.Config `yaml:"numbers"`
	// PBX lists the Asterisk servers to read calls from.
	PBX []PBX `yaml:"pbx"`
	// Connectors lists the CRM accounts to deliver calls to (several, of any types).
	Connectors []Connector      `yaml:"connectors"`
	Outbox     Outbox           `yaml:"outbox"`
	Backup     Backup           `yaml:"backup"`
	Dispatch   Dispatch         `yaml:"dispatch"`
	Licensing  licensing.Config `yaml:"licensing"`
	// Recordings: where Asterisk writes them, and signed links for CRMs that play them from a URL.
	Recordings recordings.Config `yaml:"recordings"`

	// File is the path the config was loaded from ("" for defaults only).
	File string `yaml:"-"`
}

// Log configures the daemon's log output (stderr, picked up by journald).
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
	// RedactNumbers masks phone numbers in every log line, the CRM adapters' included
	// (+7916***4567): the values of number-like attributes (customer, number, phone, from, to,
	// caller, …) and any value that looks like a phone number (7 or more digits, with an optional
	// +). The log then holds no customer's full number.
	RedactNumbers bool `yaml:"redact_numbers"`
}

// HTTP configures the daemon's two HTTP listeners (docs/security.md says what each exposes).
type HTTP struct {
	// Public serves only what a CRM must reach from the internet: its events, install and OAuth
	// callbacks and widget calls (/crm/<connector>/…) and signed recording links (/rec/…).
	Public PublicHTTP `yaml:"public"`
	// Admin serves the status page, /calls, /metrics, /healthz, /readyz and the dialplan's
	// /v1/responsible and /v1/lookup. It needs a token unless bound to loopback or a socket.
	Admin AdminHTTP `yaml:"admin"`
}

// PublicHTTP is the internet-facing listener.
type PublicHTTP struct {
	// Listen is host:port ("" turns the listener off: no webhooks, click-to-call, OAuth
	// callbacks or recording links). Put a TLS reverse proxy in front (docs/security.md).
	Listen string `yaml:"listen"`
	// URL is how CRMs and users' browsers reach this listener (webhooks, OAuth redirects and
	// recording links), e.g. https://pbx.example.com. Empty disables features that need it.
	URL string `yaml:"url"`
}

// AdminHTTP is the operators' listener.
type AdminHTTP struct {
	// Listen is host:port (default 127.0.0.1:9180) or unix:/path for a socket (created 0660);
	// "" turns the listener off.
	Listen string `yaml:"listen"`
	// Token is required (Authorization: Bearer, or HTTP basic auth with the token as the
	// password) on every route but /healthz. It must be set when Listen is not a loopback
	// address or a socket; on loopback it is optional. Actions on the status page (retrying dead
	// letters) need it in any case.
	Token configs.Secret `yaml:"token"`
	// Language of the status page: "auto" (default: the browser's Accept-Language picks Russian
	// or English), "ru" or "en".
	Language string `yaml:"language"`
}

// Status page languages (AdminHTTP.Language).
const (
	LanguageAuto    = "auto"
	LanguageRussian = "ru"
	LanguageEnglish = "en"
)

// Loopback reports whether the admin listener is reachable only from this host: a unix socket,
// or a loopback address.
func (a AdminHTTP) Loopback() bool {
	if strings.HasPrefix(a.Listen, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return false
	}
	return loopbackHost(host)
}

// Admin configures the local admin API used by `pbxbridge status` and `pbxbridge outbox …`.
type Admin struct {
	// Socket is a unix socket path, created 0600 (default <state_dir>/admin.sock).
	Socket string `yaml:"socket"`
}

// PBX is one Asterisk server.
type PBX struct {
	Name string `yaml:"name"`
	// Type is "ami" (default) or "ari".
	Type string `yaml:"type"`
	AMI  AMI    `yaml:"ami"`
	ARI  ARI    `yaml:"ari"`
	// Calls tells the call model how this PBX names extensions and trunks (empty: defaults
	// that fit plain Asterisk and FreePBX).
	Calls callmodel.Config `yaml:"calls"`
	// Originate configures click-to-call on this PBX.
	Originate Originate `yaml:"originate"`
	// CDR is where this PBX writes its Call Detail Records. With it, calls that began and ended
	// while the daemon or its connection was down are recovered from the CDR after every start
	// and reconnect (docs/operations.md); without it they are lost.
	CDR *CDR `yaml:"cdr"`
}

// CDR is one PBX's Call Detail Records: exactly one of CSV and MySQL.
type CDR struct {
	CSV   *CDRCSV   `yaml:"csv"`
	MySQL *CDRMySQL `yaml:"mysql"`
	// Delay is how long after a (re)connect the CDR is read, and read again three delays later:
	// the time Asterisk may take to write a finished call's rows (a few seconds; with cdr.conf
	// batch=yes, a third of its time setting or more). Default 10s.
	Delay time.Duration `yaml:"delay"`
	// MaxGap bounds how far back a recovery reads: after an outage longer than this only its
	// last MaxGap is recovered (calls older than that are no news to a CRM). Default 24h.
	MaxGap time.Duration `yaml:"max_gap"`
}

// CDRCSV is Asterisk's cdr_csv file and the [csv] settings of the cdr.conf that writes it.
type CDRCSV struct {
	// Path of Master.csv (default /var/log/asterisk/cdr-csv/Master.csv).
	Path string `yaml:"path"`
	// The cdr.conf [csv] options that decide the file's columns; loguniqueid must be yes (the
	// uniqueid is how a row is matched to the calls the daemon saw).
	LogUniqueID   bool `yaml:"loguniqueid"`
	LogUserField  bool `yaml:"loguserfield"`
	NewCDRColumns bool `yaml:"newcdrcolumns"`
	UseGMTime     bool `yaml:"usegmtime"`
	// Timezone the PBX writes local times in (usegmtime=no), an IANA name such as
	// Europe/Moscow; default: this host's zone.
	Timezone string `yaml:"timezone"`
	// MaxCallAge bounds the time from a call's start to the writing of its last row (the
	// longest call plus batching); the file is searched by time with it. Default 24h.
	MaxCallAge time.Duration `yaml:"max_call_age"`
}

// CDRMySQL is a CDR table in MySQL or MariaDB: FreePBX's asteriskcdrdb.cdr, or one written by
// cdr_adaptive_odbc. A read-only user suffices (SELECT on the table and information_schema).
type CDRMySQL struct {
	// DSN in go-sql-driver/mysql form: user:password@unix(/run/mysqld/mysqld.sock)/asteriskcdrdb
	// or user:password@tcp(10.0.0.5:3306)/asteriskcdrdb. Better from the environment:
	// PBXBRIDGE_PBX_<NAME>_CDR_MYSQL_DSN.
	DSN configs.Secret `yaml:"dsn"`
	// Table is "cdr" (default) or "schema.table".
	Table string `yaml:"table"`
	// Timezone calldate is written in (an IANA name); default: this host's zone.
	Timezone string `yaml:"timezone"`
	// QueryTimeout bounds each query, on the server too. Default 10s.
	QueryTimeout time.Duration `yaml:"query_timeout"`
}

// AMI is an Asterisk Manager Interface connection (manager.conf user with read
// call,dialplan,agent,cdr and write originate,call).
type AMI struct {
	Host     string         `yaml:"host"`
	Port     int            `yaml:"port"` // default 5038
	Username string         `yaml:"username"`
	Secret   configs.Secret `yaml:"secret"`
	Auth     string         `yaml:"auth"` // md5 (challenge, default) or plain
	// Events is the Login event mask (default: what the call model needs).
	Events       string        `yaml:"events"`
	PingInterval time.Duration `yaml:"ping_interval"`
	Timeout      time.Duration `yaml:"timeout"` // connect and login
}

// ARI is an Asterisk REST Interface connection (ari.conf user, http.conf enabled).
type ARI struct {
	URL      string         `yaml:"url"` // e.g. http://127.0.0.1:8088
	Username string         `yaml:"username"`
	Password configs.Secret `yaml:"password"`
	App      string         `yaml:"app"`
}

// Originate configures click-to-call: the agent's phone rings first, then the customer is dialled
// through the outbound route. {ext} is replaced by the agent's extension.
type Originate struct {
	Channel string `yaml:"channel"` // default PJSIP/{ext}; FreePBX: Local/{ext}@from-internal
	Context string `yaml:"context"` // where the customer's number is dialled (default from-internal)
	// StateContext is where the extension's hint lives for the busy/unknown check (default:
	// Context).
	StateContext string `yaml:"state_context"`
	// CallerID shown on the agent's phone; {name}, {number} and {ext} are replaced.
	CallerID    string        `yaml:"caller_id"`
	RingTimeout time.Duration `yaml:"ring_timeout"` // default 30s
	// Precheck is "extension_state" (default: refuse unknown, busy and unavailable extensions
	// with a clear error) or "none".
	Precheck   string `yaml:"precheck"`
	AllowInUse bool   `yaml:"allow_in_use"` // ring agents already in a call (call waiting)
	// Allow lists what click-to-call may dial: number classes (extensions, national,
	// international, premium, satellite) or E.164 prefixes ("+7495"). Default: extensions and
	// national. Premium-rate and satellite numbers are dialled only when a class or prefix here
	// names them.
	Allow []string `yaml:"allow"`
	// Deny lists classes or prefixes never dialled; it wins over Allow.
	Deny []string `yaml:"deny"`
	// PerMinute is how many click-to-calls one extension may start per minute (default 10).
	PerMinute int `yaml:"per_minute"`
}

// Connector is one CRM account. Its type block (the key named like Type) is decoded into the
// config value of the registered connector type.
type Connector struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Enabled turns the connector off without deleting it (default true).
	Enabled *bool `yaml:"enabled"`
	// PBX lists the pbx names feeding this connector (default: all).
	PBX []string `yaml:"pbx"`
	// Directions sent to this connector (default inbound, outbound; internal is opt-in).
	Directions []string `yaml:"directions"`
	// Include, when not empty, sends only matching calls; Exclude drops matching calls.
	Include Filter `yaml:"include"`
	Exclude Filter `yaml:"exclude"`
	// MaxResponseBytes bounds each CRM answer the connector reads (default 8 MiB): a larger or
	// endless answer fails the request instead of filling memory.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// Hooks override the connector's decisions with expressions or a program (docs/hooks.md);
	// they are compiled when the config is loaded.
	Hooks *hooks.Config `yaml:"hooks"`

	// Settings is the decoded type block (the value crm.Factory.NewConfig returned).
	Settings any `yaml:"-"`
	// settingsNode is the type block as parsed, for line numbers.
	settingsNode ast.Node
	// compiled is Hooks compiled (nil: no hooks block).
	compiled *hooks.Compiled
}

// CompiledHooks returns the connector's hooks as compiled at load (nil when it has none).
func (c *Connector) CompiledHooks() *hooks.Compiled { return c.compiled }

// SetHooks replaces the connector's hooks block and compiles it, for configs built in code
// (tests, the load harness); the error lists the block's problems.
func (c *Connector) SetHooks(h *hooks.Config) error {
	compiled, probs := hooks.Compile(h)
	if len(probs) > 0 {
		errs := make([]error, len(probs))
		for i, p := range probs {
			errs[i] = p
		}
		return fmt.Errorf("connector %s: hooks: %w", c.Name, errors.Join(errs...))
	}
	c.Hooks, c.compiled = h, compiled
	return nil
}

// Address returns host:port of the AMI connection.
func (a *AMI) Address() string { return net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) }

// Stripped returns c without parse-time details (for comparing configs).
func (c Connector) Stripped() Connector {
	c.settingsNode = nil
	c.compiled = nil
	return c
}

// IsEnabled reports whether the connector is enabled.
func (c *Connector) IsEnabled() bool { return c.Enabled == nil || *c.Enabled }

// Filter selects calls. Each list holds literal values or regexps written /like this/.
type Filter struct {
	Extensions []string `yaml:"extensions"` // any extension that rang or talked
	Trunks     []string `yaml:"trunks"`     // trunk channel name prefix
	DIDs       []string `yaml:"dids"`       // the call's line
	Numbers    []string `yaml:"numbers"`    // the customer's number
}

// Empty reports whether the filter has no rules.
func (f *Filter) Empty() bool {
	return len(f.Extensions)+len(f.Trunks)+len(f.DIDs)+len(f.Numbers) == 0
}

// Outbox configures the durable queue.
type Outbox struct {
	// RetentionDays keeps delivered calls (for `outbox redeliver` and timelines), and the call
	// state, timelines and stale open calls of calls no longer queued.
	RetentionDays int `yaml:"retention_days"`
	// DeadLetterRetentionDays keeps calls the CRM refused (dead letters) after they died, for
	// `outbox retry` (default 90).
	DeadLetterRetentionDays int `yaml:"dead_letter_retention_days"`
}

// Backup configures the automatic online backups of the state directory (the outbox database,
// the CRM tokens and the licence state).
type Backup struct {
	// Interval between automatic backups (default 24h; 0 turns them off, `pbxbridge backup now`
	// still works).
	Interval time.Duration `yaml:"interval"`
	// Dir receives the backups (default <state_dir>/backups), created 0700.
	Dir string `yaml:"dir"`
	// Keep is how many backups are kept, the newest (default 7).
	Keep int `yaml:"keep"`
}

// Dispatch configures delivery.
type Dispatch struct {
	Workers    int           `yaml:"workers"`     // concurrent deliveries per connector
	BackoffMin time.Duration `yaml:"backoff_min"` // first retry delay
	BackoffMax time.Duration `yaml:"backoff_max"` // longest retry delay
	// GiveUpAfter dead-letters a call still failing this long after it ended (0 = never).
	GiveUpAfter time.Duration `yaml:"give_up_after"`
	// DrainTimeout is how long shutdown waits for deliveries in progress.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// DeliveryTimeout bounds one delivery attempt.
	DeliveryTimeout time.Duration `yaml:"delivery_timeout"`
}

// Default returns the built-in defaults.
func Default() *Config {
	return &Config{
		StateDir: "/var/lib/pbxbridge",
		Log:      Log{Level: "info", Format: "text"},
		HTTP:     HTTP{Admin: AdminHTTP{Listen: "127.0.0.1:9180", Language: LanguageAuto}},
		Numbers:  numbers.Config{DefaultRegion: "RU"},
		Outbox:   Outbox{RetentionDays: 30, DeadLetterRetentionDays: 90},
		Backup:   Backup{Interval: 24 * time.Hour, Keep: 7},
		Dispatch: Dispatch{
			Workers:         2,
			BackoffMin:      5 * time.Second,
			BackoffMax:      10 * time.Minute,
			DrainTimeout:    10 * time.Second,
			DeliveryTimeout: 60 * time.Second,
		},
		Licensing:  licensing.Config{Dir: licensing.DefaultDir},
		Recordings: recordings.DefaultConfig(),
	}
}

// applyDefaults fills per-entry defaults that depend on the entry.
func (c *Config) applyDefaults() {
	if c.Admin.Socket == "" && c.StateDir != "" {
		c.Admin.Socket = strings.TrimRight(c.StateDir, "/") + "/admin.sock"
	}
	if c.Backup.Dir == "" && c.StateDir != "" {
		c.Backup.Dir = strings.TrimRight(c.StateDir, "/") + "/backups"
	}
	for i := range c.PBX {
		p := &c.PBX[i]
		if p.Type == "" {
			p.Type = "ami"
		}
		if p.AMI.Port == 0 {
			p.AMI.Port = 5038
		}
		if p.AMI.Auth == "" {
			p.AMI.Auth = "md5"
		}
		if p.AMI.PingInterval == 0 {
			p.AMI.PingInterval = 20 * time.Second
		}
		if p.AMI.Timeout == 0 {
			p.AMI.Timeout = 10 * time.Second
		}
		if p.ARI.App == "" {
			p.ARI.App = "pbxbridge"
		}
		if p.Originate.Channel == "" {
			p.Originate.Channel = "PJSIP/{ext}"
		}
		if p.Originate.Context == "" {
			p.Originate.Context = "from-internal"
		}
		if p.Originate.Allow == nil {
			p.Originate.Allow = []string{"extensions", "national"}
		}
		if p.Originate.PerMinute == 0 {
			p.Originate.PerMinute = 10
		}
		if p.Originate.RingTimeout == 0 {
			p.Originate.RingTimeout = 30 * time.Second
		}
		if p.Originate.Precheck == "" {
			p.Originate.Precheck = "extension_state"
		}
		if c := p.CDR; c != nil {
			if c.Delay == 0 {
				c.Delay = 10 * time.Second
			}
			if c.MaxGap == 0 {
				c.MaxGap = 24 * time.Hour
			}
			if c.CSV != nil && c.CSV.Path == "" {
				c.CSV.Path = "/var/log/asterisk/cdr-csv/Master.csv"
			}
			if c.CSV != nil && c.CSV.MaxCallAge == 0 {
				c.CSV.MaxCallAge = 24 * time.Hour
			}
			if c.MySQL != nil && c.MySQL.Table == "" {
				c.MySQL.Table = "cdr"
			}
			if c.MySQL != nil && c.MySQL.QueryTimeout == 0 {
				c.MySQL.QueryTimeout = 10 * time.Second
			}
		}
	}
	for i := range c.Connectors {
		cn := &c.Connectors[i]
		if len(cn.Directions) == 0 {
			cn.Directions = []string{"inbound", "outbound"}
		}
		if len(cn.PBX) == 0 {
			for _, p := range c.PBX {
				cn.PBX = append(cn.PBX, p.Name)
			}
		}
	}
}

// decodeExtra decodes the connector's type block (the key named like its type).
func (c *Connector) decodeExtra(d *decoder, key string, value ast.Node, path string) bool {
	f, ok := crm.Lookup(key)
	if !ok {
		return false
	}
	if c.Type != "" && key != c.Type {
		d.addf(value, path, "a %s block in a connector of type %q", key, c.Type)
		return true
	}
	if c.Settings != nil {
		d.addf(value, path, "duplicate type block")
		return true
	}
	settings := f.NewConfig()
	d.decode(value, reflectValue(settings), path)
	c.Settings = settings
	c.settingsNode = value
	return true
}

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// validate checks the whole config; every problem is added to d. deployment adds the checks a
// config the daemon runs on must pass (at least one pbx and one connector).
func (c *Config) validate(d *decoder, deployment bool) {
	bad := func(path, format string, args ...any) {
		d.problems = append(d.problems, &Problem{Line: d.lineOf(path), Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.StateDir == "" {
		bad("state_dir", "must not be empty")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	if l := c.HTTP.Public.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			bad("http.public.listen", "must be host:port, got %q", l)
		}
	}
	if u := c.HTTP.Public.URL; u != "" {
		pu, err := url.Parse(u)
		switch {
		case err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.RawQuery != "" || pu.Fragment != "":
			bad("http.public.url", "must be an absolute http(s) URL without query, got %q", u)
		case pu.Scheme == "http" && !loopbackHost(pu.Hostname()):
			bad("http.public.url", "must be https: CRMs send their application tokens and users their sessions to it (plain http is accepted only for a loopback address), got %q", u)
		}
	}
	if l := c.HTTP.Admin.Listen; l != "" {
		if path, ok := strings.CutPrefix(l, "unix:"); ok {
			if !filepath.IsAbs(path) {
				bad("http.admin.listen", "a socket needs an absolute path (unix:/run/pbxbridge/admin-http.sock), got %q", l)
			}
		} else if _, _, err := net.SplitHostPort(l); err != nil {
			bad("http.admin.listen", "must be host:port or unix:/path, got %q", l)
		}
		if !c.HTTP.Admin.Loopback() && !c.HTTP.Admin.Token.IsSet() {
			bad("http.admin.token", "is required when http.admin.listen (%s) is reachable from other hosts: the admin listener shows customer numbers and CRM answers (set PBXBRIDGE_HTTP_ADMIN_TOKEN, or listen on 127.0.0.1)", l)
		}
		if t := c.HTTP.Admin.Token; t.IsSet() && len(t.Value()) < 16 {
			bad("http.admin.token", "must be at least 16 characters")
		}
	}
	switch c.HTTP.Admin.Language {
	case "", LanguageAuto, LanguageRussian, LanguageEnglish: // "" is auto
	default:
		bad("http.admin.language", "must be auto, ru or en, got %q", c.HTTP.Admin.Language)
	}
	if c.HTTP.Public.Listen != "" && c.HTTP.Public.Listen == c.HTTP.Admin.Listen {
		bad("http.public.listen", "must differ from http.admin.listen: the public listener serves only what CRMs must reach")
	}
	if _, err := numbers.New(c.Numbers); err != nil {
		bad("numbers", "%s", strings.TrimPrefix(err.Error(), "numbers: "))
	}

	if deployment && len(c.PBX) == 0 {
		bad("pbx", "no PBX is configured: add a pbx: entry (the Asterisk whose calls pbxbridge reads)")
	}
	if deployment && len(c.Connectors) == 0 {
		bad("connectors", "no connector is configured: add a connectors: entry (the CRM account calls go to)")
	}
	pbxNames := map[string]bool{}
	for i := range c.PBX {
		p := &c.PBX[i]
		path := fmt.Sprintf("pbx[%d]", i)
		switch {
		case !nameRe.MatchString(p.Name):
			bad(path+".name", "must be a short lowercase name (a-z, 0-9, - and _), got %q", p.Name)
		case pbxNames[p.Name]:
			bad(path+".name", "duplicate pbx name %q", p.Name)
		}
		pbxNames[p.Name] = true
		switch p.Type {
		case "ami":
			if p.AMI.Host == "" {
				bad(path+".ami.host", "must be the Asterisk host name or address, e.g. 127.0.0.1")
			}
			if p.AMI.Port < 1 || p.AMI.Port > 65535 {
				bad(path+".ami.port", "must be a TCP port (AMI listens on 5038 by default), got %d", p.AMI.Port)
			}
			if p.AMI.Username == "" {
				bad(path+".ami.username", "must not be empty")
			}
			if !p.AMI.Secret.IsSet() {
				bad(path+".ami.secret", "must be set (in the file or in %s)", EnvName(path+".ami.secret", c))
			}
			if p.AMI.Auth != "md5" && p.AMI.Auth != "plain" {
				bad(path+".ami.auth", "must be md5 or plain, got %q", p.AMI.Auth)
			}
			if p.AMI.PingInterval < time.Second {
				bad(path+".ami.ping_interval", "must be at least 1s")
			}
		case "ari":
			if u, err := url.Parse(p.ARI.URL); err != nil || u.Host == "" {
				bad(path+".ari.url", "must be the Asterisk HTTP URL such as http://127.0.0.1:8088, got %q", p.ARI.URL)
			}
			if p.ARI.Username == "" {
				bad(path+".ari.username", "must not be empty")
			}
		default:
			bad(path+".type", "must be ami or ari, got %q", p.Type)
		}
		if _, err := p.Calls.Compile(nil); err != nil {
			bad(path+".calls", "%s", strings.TrimPrefix(err.Error(), "callmodel: "))
		}
		if p.Originate.Precheck != "extension_state" && p.Originate.Precheck != "none" {
			bad(path+".originate.precheck", "must be extension_state or none, got %q", p.Originate.Precheck)
		}
		if !strings.Contains(p.Originate.Channel, "{ext}") {
			bad(path+".originate.channel", "must contain {ext}, got %q", p.Originate.Channel)
		}
		for _, list := range []struct {
			key   string
			items []string
		}{{"allow", p.Originate.Allow}, {"deny", p.Originate.Deny}} {
			for j, it := range list.items {
				if !ValidNumberRule(it) {
					bad(fmt.Sprintf("%s.originate.%s[%d]", path, list.key, j),
						"must be a number class (extensions, national, international, premium, satellite) or an E.164 prefix like +7495, got %q", it)
				}
			}
		}
		if p.Originate.PerMinute < 0 {
			bad(path+".originate.per_minute", "must not be negative")
		}
		if p.CDR != nil {
			checkCDR(bad, path+".cdr", p.CDR, EnvName(path+".cdr.mysql.dsn", c))
		}
	}

	names := map[string]bool{}
	for i := range c.Connectors {
		cn := &c.Connectors[i]
		path := fmt.Sprintf("connectors[%d]", i)
		switch {
		case !nameRe.MatchString(cn.Name):
			bad(path+".name", "must be a short lowercase name (a-z, 0-9, - and _), got %q", cn.Name)
		case names[cn.Name]:
			bad(path+".name", "duplicate connector name %q", cn.Name)
		}
		names[cn.Name] = true
		f, ok := crm.Lookup(cn.Type)
		if !ok {
			bad(path+".type", "unknown connector type %q (known: %s)", cn.Type, strings.Join(crm.Types(), ", "))
			continue
		}
		if cn.Settings == nil {
			cn.Settings = f.NewConfig() // defaults only; Validate says what is missing
		}
		if v, ok := cn.Settings.(crm.ConfigValidator); ok {
			for _, err := range v.Validate() {
				var fe *crm.FieldError
				if asFieldError(err, &fe) {
					fp := path + "." + cn.Type + "." + fe.Path
					bad(fp, "%s", fe.Msg)
				} else {
					bad(path+"."+cn.Type, "%v", err)
				}
			}
		}
		for j, p := range cn.PBX {
			if !pbxNames[p] {
				bad(fmt.Sprintf("%s.pbx[%d]", path, j), "no pbx named %q", p)
			}
		}
		for j, dir := range cn.Directions {
			if dir != "inbound" && dir != "outbound" && dir != "internal" {
				bad(fmt.Sprintf("%s.directions[%d]", path, j), "must be inbound, outbound or internal, got %q", dir)
			}
		}
		checkFilter(bad, path+".include", &cn.Include)
		checkFilter(bad, path+".exclude", &cn.Exclude)
		if n := cn.MaxResponseBytes; n != 0 && (n < 64<<10 || n > 256<<20) {
			bad(path+".max_response_bytes", "must be between 65536 (64 KiB) and 268435456 (256 MiB), got %d", n)
		}
		if cn.Hooks != nil {
			compiled, probs := hooks.Compile(cn.Hooks)
			for _, p := range probs {
				bad(path+".hooks."+p.Path, "%s", p.Msg)
			}
			cn.compiled = compiled
		}
	}

	if c.Outbox.RetentionDays < 1 {
		bad("outbox.retention_days", "must be at least 1")
	}
	if c.Outbox.DeadLetterRetentionDays < 1 {
		bad("outbox.dead_letter_retention_days", "must be at least 1")
	}
	if c.Backup.Interval != 0 && c.Backup.Interval < time.Minute {
		bad("backup.interval", "must be at least 1m, or 0 to turn automatic backups off, got %v", c.Backup.Interval)
	}
	if c.Backup.Keep < 1 {
		bad("backup.keep", "must be at least 1, got %d", c.Backup.Keep)
	}
	if c.Backup.Dir != "" && !filepath.IsAbs(c.Backup.Dir) {
		bad("backup.dir", "must be an absolute path, got %q", c.Backup.Dir)
	}
	if c.Dispatch.Workers < 1 || c.Dispatch.Workers > 64 {
		bad("dispatch.workers", "must be between 1 and 64, got %d", c.Dispatch.Workers)
	}
	if c.Dispatch.BackoffMin <= 0 || c.Dispatch.BackoffMax < c.Dispatch.BackoffMin {
		bad("dispatch.backoff_max", "must be at least backoff_min (%v), got %v", c.Dispatch.BackoffMin, c.Dispatch.BackoffMax)
	}
	if c.Dispatch.DeliveryTimeout <= 0 {
		bad("dispatch.delivery_timeout", "must be positive")
	}
	if err := c.Licensing.Validate(); err != nil {
		path, msg, _ := strings.Cut(err.Error(), ": ")
		bad(path, "%s", msg)
	}
	for _, err := range c.Recordings.Validate() {
		var fe *crm.FieldError
		if asFieldError(err, &fe) {
			bad("recordings."+fe.Path, "%s", fe.Msg)
		} else {
			bad("recordings", "%v", err)
		}
	}
	for name := range c.Licensing.SeatPriority {
		if !names[name] {
			bad("licensing.seat_priority."+name, "no connector named %q", name)
		}
	}
}

// checkCDR validates a pbx[].cdr block; env is the DSN's environment variable.
func checkCDR(bad func(string, string, ...any), path string, c *CDR, env string) {
	switch {
	case c.CSV == nil && c.MySQL == nil:
		bad(path, "needs a csv block (Asterisk's Master.csv) or a mysql block (FreePBX's asteriskcdrdb.cdr)")
	case c.CSV != nil && c.MySQL != nil:
		bad(path, "has both csv and mysql: give the one the PBX writes")
	}
	if c.Delay < 0 || c.Delay > 10*time.Minute {
		bad(path+".delay", "must be between 0s and 10m, got %v", c.Delay)
	}
	if c.MaxGap < time.Minute {
		bad(path+".max_gap", "must be at least 1m, got %v", c.MaxGap)
	}
	if v := c.CSV; v != nil {
		if !filepath.IsAbs(v.Path) {
			bad(path+".csv.path", "must be an absolute path, got %q", v.Path)
		}
		if !v.LogUniqueID {
			bad(path+".csv.loguniqueid", "must be true, and cdr.conf's [csv] must say loguniqueid=yes: calls are matched by uniqueid")
		}
		if v.UseGMTime && v.Timezone != "" {
			bad(path+".csv.timezone", "must be empty with usegmtime (the file's times are UTC)")
		}
		checkZone(bad, path+".csv.timezone", v.Timezone)
		if v.MaxCallAge < time.Minute {
			bad(path+".csv.max_call_age", "must be at least 1m, got %v", v.MaxCallAge)
		}
	}
	if v := c.MySQL; v != nil {
		if !v.DSN.IsSet() {
			bad(path+".mysql.dsn", "must be set (in the file or in %s), e.g. cdrreader:secret@unix(/run/mysqld/mysqld.sock)/asteriskcdrdb", env)
		} else if r, err := cdr.OpenMySQL(cdr.MySQLConfig{DSN: v.DSN.Value(), Table: v.Table}); err != nil {
			bad(path+".mysql", "%s", strings.TrimPrefix(err.Error(), "cdr: mysql: "))
		} else {
			_ = r.Close() // it never connected: the DSN and table name only were checked
		}
		checkZone(bad, path+".mysql.timezone", v.Timezone)
		if v.QueryTimeout < 100*time.Millisecond || v.QueryTimeout > 5*time.Minute {
			bad(path+".mysql.query_timeout", "must be between 100ms and 5m, got %v", v.QueryTimeout)
		}
	}
}

func checkZone(bad func(string, string, ...any), path, zone string) {
	if zone == "" {
		return
	}
	if _, err := time.LoadLocation(zone); err != nil {
		bad(path, "unknown time zone %q (want an IANA name such as Europe/Moscow)", zone)
	}
}

// Location returns the time zone of an IANA name, or the local zone for "" (validated names
// only; an unknown one also gives the local zone).
func Location(zone string) *time.Location {
	if zone == "" {
		return time.Local
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return time.Local
	}
	return loc
}

func checkFilter(bad func(string, string, ...any), path string, f *Filter) {
	lists := map[string][]string{"extensions": f.Extensions, "trunks": f.Trunks, "dids": f.DIDs, "numbers": f.Numbers}
	for key, list := range lists {
		for i, v := range list {
			if IsPattern(v) {
				if _, err := regexp.Compile(v[1 : len(v)-1]); err != nil {
					bad(fmt.Sprintf("%s.%s[%d]", path, key, i), "invalid regexp: %v", err)
				}
			}
		}
	}
}

// IsPattern reports whether a filter value is a regexp (written /like this/).
func IsPattern(v string) bool { return len(v) >= 2 && v[0] == '/' && v[len(v)-1] == '/' }

var e164Prefix = regexp.MustCompile(`^\+[1-9][0-9]{0,14}$`)

// ValidNumberRule reports whether s is a click-to-call allow/deny entry: a number class or an
// E.164 prefix.
func ValidNumberRule(s string) bool {
	if e164Prefix.MatchString(s) {
		return true
	}
	return slices.Contains(numbers.Classes(), numbers.Class(s))
}

// loopbackHost reports whether host is localhost or a loopback address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
