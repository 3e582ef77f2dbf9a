package fakecrm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Bitrix24 is a fake Bitrix24 portal and OAuth server built from docs/crm-apis.md Part A (checklist
// A.9): REST routing for webhooks and OAuth apps, the error envelopes, a leaky bucket per client
// IP, token expiry and refresh-token rotation, the telephony call state machine with the
// 30-minute de-duplication of register (and, optionally, the platform bug that hands out one
// CALL_ID for two calls), users, CRM objects, tasks, event bindings and an event emitter.
//
// It serves the portal (/rest/...) and the OAuth server (/oauth/...) on one listener, plus
// GET /_fake/state (JSON B24State), POST /_fake/faults (JSON B24Faults), POST /_fake/install,
// POST /_fake/module/install?pbxbridge_url= (InstallModule), POST /_fake/click2call and POST
// /_fake/callback (see ServeHTTP). It is safe for concurrent use and implements
// crmtest.Controller; the adapter is expected to send Record.Key() as EXTERNAL_CALL_ID.
type Bitrix24 struct {
	cfg b24Config
	log *slog.Logger

	mu        sync.Mutex
	baseURL   string
	faults    B24Faults
	rng       *mrand.Rand
	seq       int
	users     []B24User
	entities  []B24Entity
	lines     []B24Line
	calls     []*b24Call
	byID      map[string]*b24Call
	tasks     []B24Task
	todos     []B24Todo
	leads     []B24Lead
	cards     []B24CardEvent
	bindings  []B24Binding
	access    map[string]*b24Token
	refresh   map[string]*b24Token // valid refresh tokens
	codes     map[string]time.Time // authorisation codes and their expiry
	uploads   map[string]string    // upload token -> CALL_ID
	appToken  string
	requests  map[string]int
	batchCmds map[string]int
	refused   int
	opLimited int
	injected  int
	refreshes int
	installs  int
	// cloudRefused counts OAuth server requests a boxed portal's unreachable cloud swallowed.
	cloudRefused int
	bucket       map[string]*b24Bucket
	fileSeq      int
	statSeq      int
	actSeq       int
	entSeq       int
}

type b24Config struct {
	clientID, clientSecret string
	memberID               string
	scope                  string
	webhooks               map[string]b24Webhook // "uid/code"
	users                  []B24User
	entities               []B24Entity
	redirectURI            string
	now                    func() time.Time
	log                    *slog.Logger
	faults                 B24Faults
	seed                   uint64
	// Boxed portal (bitrix24_boxed.go).
	boxed          bool
	portalToken    string
	moduleSecret   string
	moduleURL      string // the pbxbridge URL saved on the module's page ("" any)
	serverEndpoint string
}

type b24Webhook struct {
	userID int
	scope  string
}

type b24Token struct {
	access, refresh string
	expires         time.Time
	scope           string
	userID          int
	revoked         bool
}

// B24User is a portal employee.
type B24User struct {
	ID            int    `json:"id"`
	Name          string `json:"name"`
	LastName      string `json:"last_name"`
	Ext           string `json:"ext"` // UF_PHONE_INNER
	Active        bool   `json:"active"`
	TimemanStatus string `json:"timeman_status,omitempty"` // OPENED, CLOSED, ...
}

// B24Entity is a CRM contact, company or lead with its phone.
type B24Entity struct {
	Type       string `json:"type"` // CONTACT, COMPANY, LEAD
	ID         int    `json:"id"`
	Name       string `json:"name"`
	Phone      string `json:"phone"`
	AssignedBy int    `json:"assigned_by"`
}

// B24Line is an external line.
type B24Line struct {
	ID            int    `json:"id"`
	Number        string `json:"number"`
	Name          string `json:"name"`
	CRMAutoCreate string `json:"crm_auto_create"`
}

// B24Call is a call as the fake's state shows it.
type B24Call struct {
	CallID         string         `json:"call_id"`
	ExternalCallID string         `json:"external_call_id"`
	FromClick      bool           `json:"from_click,omitempty"` // registered by Bitrix24 for click-to-call
	UserID         int            `json:"user_id"`
	Type           int            `json:"type"`
	Phone          string         `json:"phone"`
	Line           string         `json:"line"`
	StartDate      string         `json:"start_date,omitempty"`
	State          string         `json:"state"` // registered, finished
	RegisterCount  int            `json:"register_count"`
	RegisteredAt   time.Time      `json:"registered_at"`
	Register       map[string]any `json:"register,omitempty"` // parameters of the first register
	Finish         map[string]any `json:"finish,omitempty"`   // parameters of finish
	FinishedAt     *time.Time     `json:"finished_at,omitempty"`
	FinishUserID   int            `json:"finish_user_id,omitempty"`
	Duration       int            `json:"duration"`
	StatusCode     string         `json:"status_code,omitempty"`
	AddToChat      string         `json:"add_to_chat,omitempty"`
	StatID         int            `json:"stat_id,omitempty"`
	ActivityID     int            `json:"activity_id,omitempty"`
	EntityType     string         `json:"entity_type,omitempty"`
	EntityID       int            `json:"entity_id,omitempty"`
	CreatedLead    int            `json:"created_lead,omitempty"`
	Record         *B24Record     `json:"record,omitempty"`
	RecordAttaches int            `json:"record_attaches"`
	VisibleTo      []int          `json:"visible_to"`
}

type b24Call struct {
	B24Call
	visible map[int]bool
}

// B24Record is an attached recording.
type B24Record struct {
	FileID   int    `json:"file_id"`
	Filename string `json:"filename"`
	Size     int    `json:"size"`
	Mode     string `json:"mode"` // content, url, upload
	URL      string `json:"url,omitempty"`
}

// B24CardEvent is one change of call-card visibility.
type B24CardEvent struct {
	Seq    int       `json:"seq"`
	CallID string    `json:"call_id"`
	Action string    `json:"action"` // register, show, hide, finish
	Users  []int     `json:"users"`
	At     time.Time `json:"at"`
}

// B24Task is a task created by tasks.task.add.
type B24Task struct {
	ID            int            `json:"id"`
	Title         string         `json:"title"`
	ResponsibleID int            `json:"responsible_id"`
	Deadline      string         `json:"deadline,omitempty"`
	Bindings      []string       `json:"bindings,omitempty"`
	Fields        map[string]any `json:"fields"`
}

// B24Todo is an activity created by crm.activity.todo.add.
type B24Todo struct {
	ID            int            `json:"id"`
	OwnerTypeID   int            `json:"owner_type_id"`
	OwnerID       int            `json:"owner_id"`
	ResponsibleID int            `json:"responsible_id"`
	Deadline      string         `json:"deadline"`
	Params        map[string]any `json:"params"`
}

// B24Lead is a lead created by crm.lead.add or by register's CRM_CREATE.
type B24Lead struct {
	ID         int            `json:"id"`
	Title      string         `json:"title"`
	Phone      string         `json:"phone"`
	AssignedBy int            `json:"assigned_by"`
	ByRegister bool           `json:"by_register,omitempty"`
	Fields     map[string]any `json:"fields,omitempty"`
}

// B24Binding is an event.bind subscription.
type B24Binding struct {
	Event   string `json:"event"`
	Handler string `json:"handler"`
	// Module: bound with the pbxbridge module's token; its events are posted by the module,
	// signed, straight from the portal.
	Module bool `json:"module,omitempty"`
}

// B24Faults are the fault knobs (all optional in JSON).
type B24Faults struct {
	// Latency is added to every REST and OAuth request.
	Latency time.Duration `json:"latency"`
	// FailRate is the share of REST requests answered 500 INTERNAL_SERVER_ERROR.
	FailRate float64 `json:"fail_rate"`
	// FailAfterProcessing makes those 500s come after the method ran (ambiguous failures).
	FailAfterProcessing bool `json:"fail_after_processing"`
	// FailMethods limits the random 500s to these methods (empty: every method).
	FailMethods []string `json:"fail_methods,omitempty"`
	// RateLimit is the leaky bucket per client IP: RPS drained per second, Burst the level
	// above which requests are refused with 503 QUERY_LIMIT_EXCEEDED. RPS 0 disables it.
	RateLimitRPS   float64 `json:"rate_limit_rps"`
	RateLimitBurst int     `json:"rate_limit_burst"`
	// TokenTTL is the lifetime of new access tokens (default 1 h).
	TokenTTL time.Duration `json:"token_ttl"`
	// ReuseCallID reproduces the platform bug: register ignores EXTERNAL_CALL_ID when it looks
	// for an open call with the same number, type, user and line in the last 30 minutes, so two
	// different calls get one CALL_ID.
	ReuseCallID bool `json:"reuse_call_id"`
	// TelephonyAppOnly answers 403 WRONG_AUTH_TYPE to telephony.externalCall.register/finish and
	// telephony.externalLine.* through a webhook (the current docs; default true).
	TelephonyAppOnly bool `json:"telephony_app_only"`
	// KeepOldRefreshToken keeps a refresh token valid after it was used (Part E.5).
	KeepOldRefreshToken bool `json:"keep_old_refresh_token"`
	// OperationLimited lists methods answered 429 OPERATION_TIME_LIMIT.
	OperationLimited []string `json:"operation_limited,omitempty"`
	// OAuthFailStatus, when 500 or more, makes the OAuth server (/oauth/token) answer every
	// request with that status and an error body (an outage of oauth.bitrix.info); the request
	// is counted but has no effect (refresh tokens stay valid).
	OAuthFailStatus int `json:"oauth_fail_status,omitempty"`
	// StatisticDenied answers voximplant.statistic.get with 403 ACCESS_DENIED (the application's
	// user lacks the "call statistics: view" permission).
	StatisticDenied bool `json:"statistic_denied,omitempty"`
	// GarbleMethods lists methods whose answers are cut short after the method ran: HTTP 200 with
	// a body that does not decode (a proxy or the network damaged it). Inside a batch the whole
	// batch answer is cut when one of its commands is listed.
	GarbleMethods []string `json:"garble_methods,omitempty"`
	// Mode is a persistent conformance fault: "", "rate_limited", "server_error", "slow".
	Mode string `json:"mode,omitempty"`

	// Boxed portal knobs (bitrix24_boxed.go; B24Boxed sets the first two).
	// CloudOAuth is the cloud OAuth server as the box sees it: "" up, "refused", "blackhole".
	CloudOAuth string `json:"cloud_oauth,omitempty"`
	// WebhookHTTPSRequired refuses webhook requests over plain http with 400 INVALID_REQUEST
	// "Https required." (a box without REST_APAUTH_ALLOW_HTTP); only a boxed fake applies it.
	WebhookHTTPSRequired bool `json:"webhook_https_required,omitempty"`
	// InvalidCredentialsStatus is the HTTP status of a boxed portal's INVALID_CREDENTIALS
	// (default 401; the docs also show 403).
	InvalidCredentialsStatus int `json:"invalid_credentials_status,omitempty"`
	// PortalTokenExpired answers 401 expired_token to the module's token.
	PortalTokenExpired bool `json:"portal_token_expired,omitempty"`
}

// B24State is what GET /_fake/state returns.
type B24State struct {
	Calls          []B24Call      `json:"calls"`
	Tasks          []B24Task      `json:"tasks"`
	Todos          []B24Todo      `json:"todos"`
	Leads          []B24Lead      `json:"leads"`
	Cards          []B24CardEvent `json:"cards"`
	Lines          []B24Line      `json:"lines"`
	Bindings       []B24Binding   `json:"bindings"`
	Users          []B24User      `json:"users"`
	Requests       map[string]int `json:"requests"`       // HTTP requests per method (lower case)
	BatchCommands  map[string]int `json:"batch_commands"` // commands inside batches per method
	RateLimited    int            `json:"rate_limited"`   // QUERY_LIMIT_EXCEEDED answers
	OperationLimit int            `json:"operation_limited"`
	InjectedErrors int            `json:"injected_errors"`
	TokenRefreshes int            `json:"token_refreshes"`
	Installs       int            `json:"installs"`
	// CloudRefused counts OAuth server requests the unreachable cloud swallowed (boxed).
	CloudRefused int       `json:"cloud_refused,omitempty"`
	Faults       B24Faults `json:"faults"`
}

// Bitrix24Option configures the fake.
type Bitrix24Option func(*b24Config)

// B24App sets the local application's credentials (default local.pbxbridge / secret).
func B24App(clientID, clientSecret string) Bitrix24Option {
	return func(c *b24Config) { c.clientID, c.clientSecret = clientID, clientSecret }
}

// B24Webhook adds an inbound webhook /rest/<userID>/<code>/ with a scope (comma-separated).
func B24Webhook(userID int, code, scope string) Bitrix24Option {
	return func(c *b24Config) {
		c.webhooks[fmt.Sprintf("%d/%s", userID, code)] = b24Webhook{userID: userID, scope: scope}
	}
}

// B24MemberID sets the portal's member_id (default a223c6b3710f85df22e9377d6c4f7553), to run
// two fakes that are different portals.
func B24MemberID(id string) Bitrix24Option { return func(c *b24Config) { c.memberID = id } }

// B24Scope sets the scope of issued OAuth tokens (default crm,telephony,user,task).
func B24Scope(scope string) Bitrix24Option { return func(c *b24Config) { c.scope = scope } }

// B24Users replaces the default employees.
func B24Users(u ...B24User) Bitrix24Option { return func(c *b24Config) { c.users = u } }

// B24Entities replaces the default CRM objects.
func B24Entities(e ...B24Entity) Bitrix24Option { return func(c *b24Config) { c.entities = e } }

// B24RedirectURI makes GET /oauth/authorize/ redirect there with a code (auto-approval).
func B24RedirectURI(u string) Bitrix24Option { return func(c *b24Config) { c.redirectURI = u } }

// B24Clock sets the clock (token expiry, de-duplication window, rate limit).
func B24Clock(now func() time.Time) Bitrix24Option { return func(c *b24Config) { c.now = now } }

// B24Logger sets a logger for requests (debug) and emitter failures.
func B24Logger(l *slog.Logger) Bitrix24Option { return func(c *b24Config) { c.log = l } }

// B24WithFaults sets the initial fault knobs.
func B24WithFaults(f B24Faults) Bitrix24Option { return func(c *b24Config) { c.faults = f } }

// B24Latency adds latency to every request.
func B24Latency(d time.Duration) Bitrix24Option { return func(c *b24Config) { c.faults.Latency = d } }

// B24FailRate answers that share of REST requests with 500.
func B24FailRate(r float64) Bitrix24Option { return func(c *b24Config) { c.faults.FailRate = r } }

// B24RateLimit sets the leaky bucket (A.1.4; the cloud default is 2 req/s, burst 50).
func B24RateLimit(rps float64, burst int) Bitrix24Option {
	return func(c *b24Config) { c.faults.RateLimitRPS, c.faults.RateLimitBurst = rps, burst }
}

// B24TokenTTL sets the lifetime of access tokens.
func B24TokenTTL(d time.Duration) Bitrix24Option { return func(c *b24Config) { c.faults.TokenTTL = d } }

// B24ReuseCallID turns the CALL_ID reuse bug on.
func B24ReuseCallID(on bool) Bitrix24Option { return func(c *b24Config) { c.faults.ReuseCallID = on } }

// B24Seed seeds the fault randomness.
func B24Seed(s uint64) Bitrix24Option { return func(c *b24Config) { c.seed = s } }

// DefaultB24Users are the employees of a new fake: 1 is the admin without an extension,
// 1269/1270/1271 have extensions 101/102/103, 1272 (104) is inactive.
func DefaultB24Users() []B24User {
	return []B24User{
		{ID: 1, Name: "Admin", LastName: "Adminov", Active: true, TimemanStatus: "OPENED"},
		{ID: 1269, Name: "Anna", LastName: "Smith", Ext: "101", Active: true, TimemanStatus: "OPENED"},
		{ID: 1270, Name: "Maria", LastName: "Sidorova", Ext: "102", Active: true, TimemanStatus: "OPENED"},
		{ID: 1271, Name: "Ivan", LastName: "Petrov", Ext: "103", Active: true, TimemanStatus: "CLOSED"},
		{ID: 1272, Name: "Olga", LastName: "Gone", Ext: "104", Active: false},
	}
}

// DefaultB24Entities are the CRM objects of a new fake: contact 797 John Doe (+79001234567,
// responsible 1269) and company 12 Romashka LLC (+74957654321, responsible 1270).
func DefaultB24Entities() []B24Entity {
	return []B24Entity{
		{Type: "CONTACT", ID: 797, Name: "John Doe", Phone: "+79001234567", AssignedBy: 1269},
		{Type: "COMPANY", ID: 12, Name: "Romashka LLC", Phone: "+74957654321", AssignedBy: 1270},
	}
}

// NewBitrix24 returns a fake; set its base URL with SetBaseURL (StartBitrix24 does it).
func NewBitrix24(opts ...Bitrix24Option) *Bitrix24 {
	c := b24Config{
		clientID: "local.pbxbridge", clientSecret: "pbxbridge-secret",
		memberID: "a223c6b3710f85df22e9377d6c4f7553",
		scope:    "crm,telephony,user,task",
		webhooks: map[string]b24Webhook{},
		users:    DefaultB24Users(), entities: DefaultB24Entities(),
		now:    time.Now,
		faults: B24Faults{TelephonyAppOnly: true},
		seed:   1,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	f := &Bitrix24{
		cfg: c, log: c.log, faults: c.faults,
		rng:   mrand.New(mrand.NewPCG(c.seed, c.seed^0x5eed)),
		users: append([]B24User(nil), c.users...), entities: append([]B24Entity(nil), c.entities...),
		byID: map[string]*b24Call{}, access: map[string]*b24Token{}, refresh: map[string]*b24Token{},
		codes: map[string]time.Time{}, uploads: map[string]string{},
		requests: map[string]int{}, batchCmds: map[string]int{}, bucket: map[string]*b24Bucket{},
		entSeq: 5000, appToken: b24Rand(16),
	}
	return f
}

// SetBaseURL tells the fake its public URL (client endpoints, upload URLs).
func (f *Bitrix24) SetBaseURL(u string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.baseURL = strings.TrimRight(u, "/")
}

// URL is the fake's base URL (portal and OAuth server).
func (f *Bitrix24) URL() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.baseURL
}

// ClientID is the local application's client_id.
func (f *Bitrix24) ClientID() string { return f.cfg.clientID }

// ClientSecret is the local application's client_secret.
func (f *Bitrix24) ClientSecret() string { return f.cfg.clientSecret }

// MemberID is the portal's member_id.
func (f *Bitrix24) MemberID() string { return f.cfg.memberID }

// Domain is the portal's domain as sent in auth[domain] (the base URL's host).
func (f *Bitrix24) Domain() string {
	u, err := url.Parse(f.URL())
	if err != nil {
		return ""
	}
	return u.Host
}

// ApplicationToken is the application_token sent with events.
func (f *Bitrix24) ApplicationToken() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.appToken
}

func (f *Bitrix24) now() time.Time { return f.cfg.now() }

// SetFaults replaces the fault knobs.
func (f *Bitrix24) SetFaults(x B24Faults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = x
}

// Faults returns the fault knobs.
func (f *Bitrix24) Faults() B24Faults {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.faults
}

// Inject implements crmtest.Controller.
func (f *Bitrix24) Inject(x Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch x {
	case FaultNone:
		f.faults.Mode = ""
	case FaultUnauthorized:
		f.expireLocked()
	case FaultRevoked:
		f.expireLocked()
		for k, t := range f.refresh {
			t.revoked = true
			delete(f.refresh, k)
		}
	case FaultRateLimited:
		f.faults.Mode = "rate_limited"
	case FaultServerError:
		f.faults.Mode = "server_error"
	case FaultSlow:
		f.faults.Mode = "slow"
	}
}

// ExpireTokens makes every access token issued so far expired.
func (f *Bitrix24) ExpireTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expireLocked()
}

func (f *Bitrix24) expireLocked() {
	past := f.now().Add(-time.Second)
	for _, t := range f.access {
		t.expires = past
	}
}

// Logged implements crmtest.Controller: finished calls whose EXTERNAL_CALL_ID is key.
func (f *Bitrix24) Logged(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.ExternalCallID == key && c.State == "finished" {
			n++
		}
	}
	return n
}

// State returns a snapshot of what the fake received.
func (f *Bitrix24) State() B24State {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := B24State{
		Calls: make([]B24Call, 0, len(f.calls)), Tasks: append([]B24Task{}, f.tasks...),
		Todos: append([]B24Todo{}, f.todos...), Leads: append([]B24Lead{}, f.leads...),
		Cards: append([]B24CardEvent{}, f.cards...), Lines: append([]B24Line{}, f.lines...),
		Bindings: append([]B24Binding{}, f.bindings...), Users: append([]B24User{}, f.users...),
		Requests: map[string]int{}, BatchCommands: map[string]int{},
		RateLimited: f.refused, OperationLimit: f.opLimited, InjectedErrors: f.injected,
		TokenRefreshes: f.refreshes, Installs: f.installs, Faults: f.faults, CloudRefused: f.cloudRefused,
	}
	for _, c := range f.calls {
		cc := c.B24Call
		cc.VisibleTo = c.visibleList()
		if c.Record != nil {
			r := *c.Record
			cc.Record = &r
		}
		s.Calls = append(s.Calls, cc)
	}
	for k, v := range f.requests {
		s.Requests[k] = v
	}
	for k, v := range f.batchCmds {
		s.BatchCommands[k] = v
	}
	return s
}

func (c *b24Call) visibleList() []int {
	out := make([]int, 0, len(c.visible))
	for u, v := range c.visible {
		if v {
			out = append(out, u)
		}
	}
	sort.Ints(out)
	return out
}

// B24Tokens is a token set issued by the fake.
type B24Tokens struct {
	AccessToken      string `json:"access_token"`
	RefreshToken     string `json:"refresh_token"`
	ExpiresIn        int    `json:"expires_in"`
	ApplicationToken string `json:"application_token"`
	MemberID         string `json:"member_id"`
	Domain           string `json:"domain"`
	ClientEndpoint   string `json:"client_endpoint"`
	ServerEndpoint   string `json:"server_endpoint"`
	Scope            string `json:"scope"`
}

// IssueTokens issues a token pair for the application (as an installation would).
func (f *Bitrix24) IssueTokens() B24Tokens {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.issueLocked(1)
	return B24Tokens{
		AccessToken: t.access, RefreshToken: t.refresh, ExpiresIn: int(f.ttl().Seconds()),
		ApplicationToken: f.appToken, MemberID: f.cfg.memberID, Domain: f.hostLocked(),
		ClientEndpoint: f.baseURL + "/rest/", ServerEndpoint: f.serverEndpointLocked(), Scope: t.scope,
	}
}

// serverEndpointLocked is the server_endpoint the fake names.
func (f *Bitrix24) serverEndpointLocked() string {
	if f.cfg.serverEndpoint != "" {
		return f.cfg.serverEndpoint
	}
	return f.baseURL + "/rest/"
}

func (f *Bitrix24) hostLocked() string {
	u, err := url.Parse(f.baseURL)
	if err != nil {
		return ""
	}
	return u.Host
}

func (f *Bitrix24) ttl() time.Duration {
	if f.faults.TokenTTL > 0 {
		return f.faults.TokenTTL
	}
	return time.Hour
}

func (f *Bitrix24) issueLocked(userID int) *b24Token {
	t := &b24Token{access: b24Rand(16), refresh: b24Rand(16), expires: f.now().Add(f.ttl()), scope: f.cfg.scope, userID: userID}
	f.access[t.access] = t
	f.refresh[t.refresh] = t
	return t
}

// Install issues new tokens and a new application_token and POSTs ONAPPINSTALL to handlerURL
// (the "initial installation path" of a local application).
func (f *Bitrix24) Install(ctx context.Context, handlerURL string) error {
	f.mu.Lock()
	f.appToken = b24Rand(16)
	t := f.issueLocked(1)
	f.installs++
	form := url.Values{
		"event": {"ONAPPINSTALL"}, "data[VERSION]": {"1"}, "data[ACTIVE]": {"Y"}, "data[INSTALLED]": {"Y"},
		"data[LANGUAGE_ID]": {"en"}, "ts": {fmt.Sprint(f.now().Unix())},
	}
	f.authFormLocked(form, t, true)
	f.mu.Unlock()
	return f.post(ctx, handlerURL, form)
}

func (f *Bitrix24) authFormLocked(form url.Values, t *b24Token, withRefresh bool) {
	form.Set("auth[access_token]", t.access)
	if withRefresh {
		form.Set("auth[refresh_token]", t.refresh)
	}
	form.Set("auth[expires_in]", fmt.Sprint(int(f.ttl().Seconds())))
	form.Set("auth[scope]", t.scope)
	form.Set("auth[domain]", f.hostLocked())
	form.Set("auth[server_endpoint]", f.serverEndpointLocked())
	form.Set("auth[client_endpoint]", f.baseURL+"/rest/")
	form.Set("auth[status]", "L")
	form.Set("auth[member_id]", f.cfg.memberID)
	form.Set("auth[application_token]", f.appToken)
}

// ClickToCall simulates a user clicking a phone number in the CRM: the portal registers the call
// (no EXTERNAL_CALL_ID) and POSTs ONEXTERNALCALLSTART to the bound handler. It returns the CALL_ID.
func (f *Bitrix24) ClickToCall(ctx context.Context, userID int, phone, line string) (string, error) {
	f.mu.Lock()
	b, bound := f.bindingLocked("ONEXTERNALCALLSTART")
	if !bound {
		f.mu.Unlock()
		return "", errors.New("fake bitrix24: no handler bound to ONEXTERNALCALLSTART")
	}
	if why := f.cloudEventsBlockedLocked(b); why != "" {
		f.mu.Unlock()
		return "", errors.New(why)
	}
	h := b.Handler
	c := f.newCallLocked(userID, 1, phone, line, "")
	c.FromClick = true
	c.Register = map[string]any{"USER_ID": userID, "PHONE_NUMBER": phone, "TYPE": 1, "LINE_NUMBER": line}
	c.visible[userID] = true
	f.cardLocked(c.CallID, "register", []int{userID})
	if e := f.entityByPhoneLocked(phone); e != nil {
		c.EntityType, c.EntityID = e.Type, e.ID
	}
	t := f.issueLocked(userID)
	form := url.Values{
		"event": {"ONEXTERNALCALLSTART"}, "event_handler_id": {"1055"},
		"data[PHONE_NUMBER]": {phone}, "data[PHONE_NUMBER_INTERNATIONAL]": {phone}, "data[EXTENSION]": {""},
		"data[USER_ID]": {fmt.Sprint(userID)}, "data[CALL_LIST_ID]": {"0"}, "data[LINE_NUMBER]": {line},
		"data[IS_MOBILE]": {"0"}, "data[CALL_ID]": {c.CallID},
		"data[CRM_ENTITY_TYPE]": {c.EntityType}, "data[CRM_ENTITY_ID]": {fmt.Sprint(c.EntityID)},
		"ts": {fmt.Sprint(f.now().Unix())},
	}
	id := c.CallID
	if b.Module {
		f.moduleFormLocked(form)
		f.mu.Unlock()
		return id, f.postModuleOK(ctx, h, form)
	}
	f.authFormLocked(form, t, false)
	f.mu.Unlock()
	return id, f.post(ctx, h, form)
}

// CallbackRequest simulates a CRM web-form callback request (ONEXTERNALCALLBACKSTART).
func (f *Bitrix24) CallbackRequest(ctx context.Context, phone, line, text string) error {
	f.mu.Lock()
	b, bound := f.bindingLocked("ONEXTERNALCALLBACKSTART")
	if !bound {
		f.mu.Unlock()
		return errors.New("fake bitrix24: no handler bound to ONEXTERNALCALLBACKSTART")
	}
	if why := f.cloudEventsBlockedLocked(b); why != "" {
		f.mu.Unlock()
		return errors.New(why)
	}
	h := b.Handler
	form := url.Values{
		"event": {"ONEXTERNALCALLBACKSTART"}, "event_handler_id": {"1056"},
		"data[PHONE_NUMBER]": {phone}, "data[TEXT]": {text}, "data[VOICE]": {"ruinternalfemale"},
		"data[LINE_NUMBER]": {line}, "data[CRM_ENTITY_TYPE]": {""}, "data[CRM_ENTITY_ID]": {"0"},
		"ts": {fmt.Sprint(f.now().Unix())},
	}
	if b.Module {
		f.moduleFormLocked(form)
		f.mu.Unlock()
		return f.postModuleOK(ctx, h, form)
	}
	form.Set("auth[domain]", f.hostLocked())
	form.Set("auth[member_id]", f.cfg.memberID)
	form.Set("auth[application_token]", f.appToken)
	f.mu.Unlock()
	return f.post(ctx, h, form)
}

// SendEvent POSTs an arbitrary form to the handler bound to event (tests of handler security).
func (f *Bitrix24) SendEvent(ctx context.Context, event string, form url.Values) (int, error) {
	f.mu.Lock()
	h := f.handlerLocked(event)
	f.mu.Unlock()
	if h == "" {
		return 0, fmt.Errorf("fake bitrix24: no handler bound to %s", event)
	}
	return f.postStatus(ctx, h, form)
}

func (f *Bitrix24) handlerLocked(event string) string {
	for i := len(f.bindings) - 1; i >= 0; i-- {
		if strings.EqualFold(f.bindings[i].Event, event) {
			return f.bindings[i].Handler
		}
	}
	return ""
}

func (f *Bitrix24) post(ctx context.Context, u string, form url.Values) error {
	st, err := f.postStatus(ctx, u, form)
	if err != nil {
		return err
	}
	if st >= 300 {
		return fmt.Errorf("fake bitrix24: handler answered http %d", st)
	}
	return nil
}

func (f *Bitrix24) postStatus(ctx context.Context, u string, form url.Values) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode())) //nolint:gosec // events go to the handler URL the adapter bound
	if err != nil {
		return 0, fmt.Errorf("fake bitrix24: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req) //nolint:gosec // see above
	if err != nil {
		return 0, fmt.Errorf("fake bitrix24: posting event: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// ServeHTTP routes portal, OAuth and control requests.
func (f *Bitrix24) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/_fake/state" && r.Method == http.MethodGet:
		b24JSON(w, http.StatusOK, f.State())
	case p == "/_fake/faults" && r.Method == http.MethodGet:
		b24JSON(w, http.StatusOK, f.Faults())
	case p == "/_fake/faults" && r.Method == http.MethodPost:
		f.serveFaults(w, r)
	case p == "/_fake/install" && r.Method == http.MethodPost:
		f.serveControl(w, r, func(ctx context.Context, q url.Values) (any, error) {
			return nil, f.Install(ctx, q.Get("url"))
		})
	case p == "/_fake/module/install" && r.Method == http.MethodPost:
		f.serveControl(w, r, func(_ context.Context, q url.Values) (any, error) {
			return f.InstallModule(q.Get("pbxbridge_url"))
		})
	case p == "/_fake/click2call" && r.Method == http.MethodPost:
		f.serveControl(w, r, func(ctx context.Context, q url.Values) (any, error) {
			uid, _ := b24Int(q.Get("user_id"))
			id, err := f.ClickToCall(ctx, uid, q.Get("phone"), q.Get("line"))
			return map[string]string{"call_id": id}, err
		})
	case p == "/_fake/callback" && r.Method == http.MethodPost:
		f.serveControl(w, r, func(ctx context.Context, q url.Values) (any, error) {
			return nil, f.CallbackRequest(ctx, q.Get("phone"), q.Get("line"), q.Get("text"))
		})
	case strings.HasPrefix(p, "/oauth/token"):
		f.serveToken(w, r)
	case strings.HasPrefix(p, "/oauth/authorize"):
		f.serveAuthorize(w, r)
	case strings.HasPrefix(p, "/rest/"):
		f.serveREST(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *Bitrix24) serveFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	x := f.faults
	f.mu.Unlock()
	// Partial update: unknown keys are refused, absent keys keep their value.
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var raw struct {
		B24Faults
		Latency  *string `json:"latency"`
		TokenTTL *string `json:"token_ttl"`
	}
	raw.B24Faults = x
	if err := dec.Decode(&raw); err != nil {
		http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
		return
	}
	x = raw.B24Faults
	for _, d := range []struct {
		s   *string
		dst *time.Duration
	}{{raw.Latency, &x.Latency}, {raw.TokenTTL, &x.TokenTTL}} {
		if d.s != nil {
			v, err := time.ParseDuration(*d.s)
			if err != nil {
				http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
				return
			}
			*d.dst = v
		}
	}
	f.SetFaults(x)
	b24JSON(w, http.StatusOK, x)
}

func (f *Bitrix24) serveControl(w http.ResponseWriter, r *http.Request, fn func(context.Context, url.Values) (any, error)) {
	_ = r.ParseForm()
	out, err := fn(r.Context(), r.Form)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	b24JSON(w, http.StatusOK, out)
}

func (f *Bitrix24) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	code := b24Rand(12)
	f.codes[code] = f.now().Add(30 * time.Second)
	redirect := f.cfg.redirectURI
	host := f.hostLocked()
	f.mu.Unlock()
	if r.URL.Query().Get("client_id") != f.cfg.clientID {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	if redirect == "" {
		b24JSON(w, http.StatusOK, map[string]string{"code": code})
		return
	}
	v := url.Values{
		"code": {code}, "state": {r.URL.Query().Get("state")}, "domain": {host},
		"member_id": {f.cfg.memberID}, "scope": {f.cfg.scope}, "server_domain": {host},
	}
	http.Redirect(w, r, redirect+"?"+v.Encode(), http.StatusFound)
}

func (f *Bitrix24) serveToken(w http.ResponseWriter, r *http.Request) {
	if f.cloudOAuth(w, r) {
		return
	}
	f.sleep(r.Context())
	p, _, err := b24ReadParams(r)
	if err != nil {
		b24JSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests["oauth/token"]++
	if st := f.faults.OAuthFailStatus; st >= 500 {
		b24JSON(w, st, map[string]string{"error": "", "error_description": "Service temporarily unavailable"})
		return
	}
	if p.str("client_id") != f.cfg.clientID || p.str("client_secret") != f.cfg.clientSecret {
		b24JSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "Invalid client credentials"})
		return
	}
	var t *b24Token
	switch p.str("grant_type") {
	case "authorization_code":
		exp, ok := f.codes[p.str("code")]
		delete(f.codes, p.str("code"))
		if !ok || f.now().After(exp) {
			b24JSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "Invalid authorization code"})
			return
		}
		t = f.issueLocked(1)
	case "refresh_token":
		old, ok := f.refresh[p.str("refresh_token")]
		if !ok || old.revoked {
			b24JSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "Invalid refresh token"})
			return
		}
		if !f.faults.KeepOldRefreshToken {
			delete(f.refresh, old.refresh)
		}
		t = f.issueLocked(old.userID)
		f.refreshes++
	default:
		b24JSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "Unsupported grant_type"})
		return
	}
	b24JSON(w, http.StatusOK, map[string]any{
		"access_token": t.access, "refresh_token": t.refresh,
		"expires": t.expires.Unix(), "expires_in": int(f.ttl().Seconds()),
		"client_endpoint": f.baseURL + "/rest/", "server_endpoint": f.serverEndpointLocked(),
		"domain": f.hostLocked(), "member_id": f.cfg.memberID, "scope": t.scope,
		"status": "L", "user_id": t.userID,
	})
}

func (f *Bitrix24) sleep(ctx context.Context) {
	f.mu.Lock()
	d := f.faults.Latency
	f.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// b24Caller is who made a REST request.
type b24Caller struct {
	webhook bool
	userID  int
	scope   string
	token   string
	module  bool // the pbxbridge module's token (an application's authorisation type)
}

func (c b24Caller) hasScope(s string) bool {
	if s == "" {
		return true
	}
	for _, x := range strings.Split(c.scope, ",") {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}

// b24Err is an error answer.
type b24Err struct {
	status int
	code   string
	desc   string
}

func (e *b24Err) Error() string { return e.code + ": " + e.desc }

func b24Core(desc string) *b24Err { return &b24Err{http.StatusBadRequest, "ERROR_CORE", desc} }

func (f *Bitrix24) serveREST(w http.ResponseWriter, r *http.Request) {
	start := f.now()
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/rest/"), "/"), "/")
	var method string
	var hook *b24Webhook
	switch len(parts) {
	case 1:
		method = parts[0]
	case 3:
		method = parts[2]
		f.mu.Lock()
		h, ok := f.cfg.webhooks[parts[0]+"/"+parts[1]]
		f.mu.Unlock()
		if e := f.boxedWebhookErr(r); e != nil {
			f.count(method)
			f.writeErr(w, start, e)
			return
		}
		if !ok {
			f.count(method)
			f.writeErr(w, start, f.badWebhook())
			return
		}
		hook = &h
	default:
		f.writeErr(w, start, &b24Err{http.StatusNotFound, "ERROR_METHOD_NOT_FOUND", "Method not found"})
		return
	}
	method = strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(method, ".json"), ".xml"))
	f.count(method)

	// Read the request first, so that the server notices when the client gives up.
	params, files, err := b24ReadParams(r)
	f.sleep(r.Context())
	if ok := f.admit(w, r, start, method); !ok {
		return
	}
	if err != nil {
		f.writeErr(w, start, &b24Err{http.StatusBadRequest, "INVALID_REQUEST", "Cannot parse request: " + err.Error()})
		return
	}
	if method == "upload" {
		f.serveUpload(w, start, params, files)
		return
	}
	caller, aerr := f.authenticate(params, hook)
	if aerr != nil {
		f.writeErr(w, start, aerr)
		return
	}
	var res any
	var total, next int
	if method == "batch" {
		res, err = f.batch(caller, params)
	} else {
		res, total, next, err = f.call(caller, method, params)
	}
	if err != nil {
		var be *b24Err
		if !errors.As(err, &be) {
			be = &b24Err{http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", err.Error()}
		}
		f.writeErr(w, start, be)
		return
	}
	f.mu.Lock()
	after := f.faults.FailAfterProcessing && f.failsLocked(method)
	if after {
		f.injected++
	}
	f.mu.Unlock()
	if after {
		f.writeErr(w, start, &b24Err{http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "Internal server error"})
		return
	}
	out := map[string]any{"result": res, "time": f.timing(start)}
	if total > 0 || next > 0 {
		out["total"] = total
	}
	if next > 0 {
		out["next"] = next
	}
	if f.garbles(method, params) {
		b, _ := json.Marshal(out)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b[:len(b)/2])
		return
	}
	b24JSON(w, http.StatusOK, out)
}

// garbles reports whether the answer to method (or to a batch holding it) is to be cut short.
func (f *Bitrix24) garbles(method string, p b24Params) bool {
	f.mu.Lock()
	list := append([]string(nil), f.faults.GarbleMethods...)
	f.mu.Unlock()
	if len(list) == 0 {
		return false
	}
	methods := []string{method}
	if method == "batch" {
		cv, _ := p.get("cmd")
		for _, v := range b24Map(cv) {
			s, _ := b24Str(v)
			m, _, _ := strings.Cut(s, "?")
			methods = append(methods, m)
		}
	}
	for _, m := range methods {
		for _, g := range list {
			if strings.EqualFold(m, g) {
				f.mu.Lock()
				f.injected++
				f.mu.Unlock()
				return true
			}
		}
	}
	return false
}

func (f *Bitrix24) count(method string) {
	f.mu.Lock()
	f.requests[strings.ToLower(method)]++
	f.mu.Unlock()
}

// admit applies the persistent faults, the random 5xx and the leaky bucket.
func (f *Bitrix24) admit(w http.ResponseWriter, r *http.Request, start time.Time, method string) bool {
	f.mu.Lock()
	mode := f.faults.Mode
	f.mu.Unlock()
	if mode == "slow" {
		t := time.NewTimer(30 * time.Second)
		defer t.Stop()
		select {
		case <-r.Context().Done():
		case <-t.C:
		}
		f.writeErr(w, start, &b24Err{http.StatusGatewayTimeout, "", "timeout"})
		return false
	}
	if e := f.admitErr(r, start, method, mode); e != nil {
		f.writeErr(w, start, e)
		return false
	}
	return true
}

// admitErr decides on a request that arrived at start (the bucket counts arrivals, not the
// moment the fake got round to the request).
func (f *Bitrix24) admitErr(r *http.Request, start time.Time, method, mode string) *b24Err {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch mode {
	case "server_error":
		f.injected++
		return &b24Err{http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "Internal server error"}
	case "rate_limited":
		f.refused++
		return &b24Err{http.StatusServiceUnavailable, "QUERY_LIMIT_EXCEEDED", "Too many requests"}
	}
	if f.faults.RateLimitRPS > 0 {
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		b := f.bucket[ip]
		if b == nil {
			b = &b24Bucket{last: start}
			f.bucket[ip] = b
		}
		if !b.admit(start, f.faults.RateLimitRPS, f.faults.RateLimitBurst) {
			f.refused++
			return &b24Err{http.StatusServiceUnavailable, "QUERY_LIMIT_EXCEEDED", "Too many requests"}
		}
	}
	for _, m := range f.faults.OperationLimited {
		if strings.EqualFold(m, method) {
			f.opLimited++
			return &b24Err{http.StatusTooManyRequests, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."}
		}
	}
	if !f.faults.FailAfterProcessing && f.failsLocked(method) {
		f.injected++
		return &b24Err{http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "Internal server error"}
	}
	return nil
}

// failsLocked draws whether a request of method gets an injected 500.
func (f *Bitrix24) failsLocked(method string) bool {
	if f.faults.FailRate <= 0 {
		return false
	}
	if len(f.faults.FailMethods) > 0 {
		match := false
		for _, m := range f.faults.FailMethods {
			match = match || strings.EqualFold(m, method)
		}
		if !match {
			return false
		}
	}
	return f.rng.Float64() < f.faults.FailRate
}

// b24Bucket is the portal's leaky bucket (A.1.4): each request adds 1, the level drains by rps
// per second, and a request is refused once the level is above burst.
type b24Bucket struct {
	level float64
	last  time.Time
}

func (b *b24Bucket) admit(now time.Time, rps float64, burst int) bool {
	if burst <= 0 {
		burst = 50
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.level = math.Max(0, b.level-dt*rps)
		b.last = now
	}
	if b.level > float64(burst) {
		return false
	}
	b.level++
	return true
}

func (f *Bitrix24) authenticate(p b24Params, hook *b24Webhook) (b24Caller, *b24Err) {
	if hook != nil {
		return b24Caller{webhook: true, userID: hook.userID, scope: hook.scope}, nil
	}
	tok := p.str("auth")
	if c, err, ok := f.portalTokenCaller(tok); ok {
		return c, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.access[tok]
	if tok == "" || !ok {
		return b24Caller{}, &b24Err{http.StatusUnauthorized, "NO_AUTH_FOUND", "Wrong authorization data"}
	}
	if !f.now().Before(t.expires) {
		return b24Caller{}, &b24Err{http.StatusUnauthorized, "expired_token", "The access token provided has expired."}
	}
	return b24Caller{userID: t.userID, scope: t.scope, token: tok}, nil
}

func (f *Bitrix24) timing(start time.Time) map[string]any {
	end := f.now()
	st := float64(start.UnixNano()) / 1e9
	en := float64(end.UnixNano()) / 1e9
	return map[string]any{
		"start": st, "finish": en, "duration": en - st, "processing": en - st,
		"date_start": start.Format(time.RFC3339), "date_finish": end.Format(time.RFC3339),
		"operating_reset_at": end.Add(10 * time.Minute).Unix(), "operating": 0,
	}
}

func (f *Bitrix24) writeErr(w http.ResponseWriter, start time.Time, e *b24Err) {
	b24JSON(w, e.status, map[string]any{"error": e.code, "error_description": e.desc, "time": f.timing(start)})
}

func b24JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func b24Rand(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
