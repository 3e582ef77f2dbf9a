package fakecrm

// The fake amoCRM / Kommo server (docs/crm-apis.md Parts B and C, checklist B.15).

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// AmoOptions configure a fake amoCRM or Kommo server. The zero value is an amoCRM fake with the
// documented defaults.
type AmoOptions struct {
	// Flavor is "amocrm" (default) or "kommo": it changes the host suffix, the OAuth error
	// language, server_time in token answers and retry_after in 429 bodies (Part C).
	Flavor string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Latency is added to every API request.
	Latency time.Duration
	// ErrorRate is the share (0..1) of API requests answered 500 before being processed.
	ErrorRate float64
	// Seed seeds the random choices (ErrorRate); 0 picks one.
	Seed uint64

	// AccessTTL (24 h), RefreshTTL (90 days) and CodeTTL (20 min) are the token lifetimes.
	AccessTTL, RefreshTTL, CodeTTL time.Duration
	// StrictRotation invalidates the old refresh token as soon as it was used once (the default
	// keeps it valid until the new access or refresh token is used, as Kommo documents).
	StrictRotation bool
	// ReuseDoesNotRevoke: presenting a refresh token that was already superseded and consumed
	// normally revokes the whole grant (amoCRM); set this to only refuse it.
	ReuseDoesNotRevoke bool

	// RateLimit is the token-bucket rate per (account, client IP) in requests per second
	// (default 7; negative disables); RateBurst its burst (default 7).
	RateLimit float64
	RateBurst int
	// BlockAfter consecutive 429s (default 10) block the client with 403 for BlockFor
	// (default 1 minute); both are undocumented (Part E.8).
	BlockAfter int
	BlockFor   time.Duration
	// RetryAfter is the retry_after of 429 bodies in seconds (default 1). Kommo sends it in the
	// body; amoCRM only when RetryAfterInBody is set. RetryAfterHeader adds a Retry-After header.
	RetryAfter       int
	RetryAfterInBody bool
	RetryAfterHeader bool
	// PlainForbidden answers blocks with a plain-text "403 Forbidden" instead of problem+json.
	PlainForbidden bool
	// StrictWindow enforces the limit as a client sees it counted at worst: at most RateLimit
	// requests in any rolling second (closed interval [t−1s, t]) per (account, client IP),
	// instead of the token bucket. Every request counts, refused ones included.
	StrictWindow bool

	// DedupUniq makes POST /api/v4/calls ignore a call whose uniq was already logged (answering
	// with the existing call); unconfirmed for the real API (Part E.7), off by default.
	DedupUniq bool
	// UnknownStatus is the HTTP status of a calls batch in which every item failed (default
	// 400, the observed behaviour; 200 is the other variant).
	UnknownStatus int
	// EventsAccepted answers POST /api/v2/events with 202 {} instead of the amoCRM 200 shape.
	EventsAccepted bool
	// OneTimeTTL is the lifetime of the widgets' one-time tokens (OneTimeToken; default 30
	// minutes, the official PHP SDK's figure).
	OneTimeTTL time.Duration
}

// AmoCRM is a fake amoCRM/Kommo server holding any number of accounts, routed by Host
// ({sub}.amocrm.ru or {sub}.kommo.com); requests for any other host (127.0.0.1:port) go to the
// first account. It implements crmtest.Controller for that first account.
type AmoCRM struct {
	o      AmoOptions
	suffix string

	mu       sync.Mutex
	rng      *rand.Rand
	accounts []*amoAccount
	fault    Fault
	requests map[string]int // "METHOD path" -> count
	statuses map[int]int    // HTTP status -> count of API answers
	buckets  map[string]*amoBucket
	nextID   int64
	lose     map[string]int // "METHOD path" -> answers still to lose (LoseAnswers)
	cur      string         // "METHOD path" of the request being served (under mu)
	window   amoWindow      // every API request's arrival, for MaxPerSecond
	// throttledUntil: ThrottleFor's end; every request before it is answered 429.
	throttledUntil time.Time
	throttled      int // answers 429 given by ThrottleFor
	violations     []string
	violationCount int
}

type amoBucket struct {
	lim          *rate.Limiter
	consecutive  int
	blockedUntil time.Time
}

// AmoUser is a user of a fake account.
type AmoUser struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Email       string `json:"email"`
	PhoneNumber string `json:"phone_number,omitempty"`
	Admin       bool   `json:"is_admin"`
	Active      bool   `json:"is_active"`
}

// AmoContact is a contact of a fake account.
type AmoContact struct {
	ID                int64    `json:"id"`
	Name              string   `json:"name"`
	Phones            []string `json:"phones"`
	ResponsibleUserID int64    `json:"responsible_user_id"`
	Leads             []int64  `json:"leads,omitempty"`
	Customers         []int64  `json:"customers,omitempty"`
	// Hidden contacts came with an incoming (unsorted) lead and are not searchable.
	Hidden    bool  `json:"hidden,omitempty"`
	CreatedAt int64 `json:"created_at"`
}

// AmoLead is a lead of a fake account.
type AmoLead struct {
	ID                int64  `json:"id"`
	Name              string `json:"name"`
	StatusID          int64  `json:"status_id"` // 142 won, 143 lost: not active
	ResponsibleUserID int64  `json:"responsible_user_id"`
	Unsorted          bool   `json:"unsorted,omitempty"`
}

// AmoCall is a call the fake placed, with every field it received.
type AmoCall struct {
	ID                int64           `json:"id"`
	EntityID          int64           `json:"entity_id"`
	EntityType        string          `json:"entity_type"` // contact, lead, customer
	Direction         string          `json:"direction"`
	Duration          int             `json:"duration"`
	Source            string          `json:"source"`
	Phone             string          `json:"phone"`
	Uniq              string          `json:"uniq,omitempty"`
	Link              string          `json:"link,omitempty"`
	CallResult        string          `json:"call_result,omitempty"`
	CallStatus        int             `json:"call_status,omitempty"`
	CallResponsible   json.RawMessage `json:"call_responsible,omitempty"`
	ResponsibleUserID int64           `json:"responsible_user_id,omitempty"`
	CreatedBy         int64           `json:"created_by,omitempty"`
	CreatedAt         int64           `json:"created_at,omitempty"`
}

// AmoUnsorted is an incoming lead created from a call.
type AmoUnsorted struct {
	UID        string          `json:"uid"`
	SourceUID  string          `json:"source_uid"`
	SourceName string          `json:"source_name"`
	PipelineID int64           `json:"pipeline_id,omitempty"`
	CreatedAt  int64           `json:"created_at,omitempty"`
	Metadata   json.RawMessage `json:"metadata"`
	LeadID     int64           `json:"lead_id"`
	ContactID  int64           `json:"contact_id,omitempty"`
	Uniq       string          `json:"uniq"`
	Category   string          `json:"category"`
	// Status is "" while the item waits in Incoming, then "accepted" or "declined".
	Status string `json:"status,omitempty"`
}

// AmoTask is a task of a fake account.
type AmoTask struct {
	ID                int64  `json:"id"`
	TaskTypeID        int    `json:"task_type_id"`
	Text              string `json:"text"`
	CompleteTill      int64  `json:"complete_till"`
	EntityID          int64  `json:"entity_id,omitempty"`
	EntityType        string `json:"entity_type,omitempty"`
	ResponsibleUserID int64  `json:"responsible_user_id"`
	CreatedBy         int64  `json:"created_by,omitempty"`
	IsCompleted       bool   `json:"is_completed"`
}

// AmoEvent is a pop-up request received on /api/v2/events.
type AmoEvent struct {
	Type        string  `json:"type"`
	PhoneNumber string  `json:"phone_number"`
	Users       []int64 `json:"users,omitempty"`
	ElementID   int64   `json:"element_id,omitempty"`
	At          int64   `json:"at"`
}

// AmoNote is a note added through /api/v4/{entity}/notes.
type AmoNote struct {
	ID         int64           `json:"id"`
	EntityType string          `json:"entity_type"`
	EntityID   int64           `json:"entity_id"`
	NoteType   string          `json:"note_type"`
	Params     json.RawMessage `json:"params,omitempty"`
	CreatedAt  int64           `json:"created_at"`
	UpdatedAt  int64           `json:"updated_at"`
	// FromCall marks the note amoCRM made of a call logged with POST /api/v4/calls (not one a
	// client added).
	FromCall bool `json:"from_call,omitempty"`
}

type amoGrant struct {
	refresh     string
	refreshExp  time.Time
	prevRefresh string // valid until the new tokens are used (unless StrictRotation)
	newUsed     bool
	consumed    map[string]bool // superseded refresh tokens that must not come back
	access      map[string]time.Time
	revoked     bool
	longLived   bool
}

type amoCode struct {
	code    string
	expires time.Time
	used    bool
}

type amoAccount struct {
	ID        int64
	Subdomain string
	Name      string
	Unpaid    bool

	ClientID, ClientSecret, RedirectURI string

	Users     []AmoUser
	Contacts  []*AmoContact
	Leads     []*AmoLead
	Calls     []AmoCall
	Unsorted  []AmoUnsorted
	Tasks     []AmoTask
	Events    []AmoEvent
	Notes     []AmoNote
	Requests  map[string]int
	codes     []*amoCode
	grants    []*amoGrant
	tokenUser int64 // user the OAuth grant acts as (first admin)
}

// AmoAccountSpec describes an account to add to the fake.
type AmoAccountSpec struct {
	ID        int64
	Subdomain string
	Name      string
	// OAuth integration: ClientID/ClientSecret are checked on the token endpoint; RedirectURI,
	// when set, must match the redirect_uri sent.
	ClientID, ClientSecret, RedirectURI string
	Users                               []AmoUser
	Contacts                            []AmoContact
	Leads                               []AmoLead
}

// NewAmoCRM returns an empty fake; add accounts with AddAccount.
func NewAmoCRM(o AmoOptions) *AmoCRM {
	if o.Flavor == "" {
		o.Flavor = "amocrm"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AccessTTL <= 0 {
		o.AccessTTL = 24 * time.Hour
	}
	if o.RefreshTTL <= 0 {
		o.RefreshTTL = 90 * 24 * time.Hour
	}
	if o.CodeTTL <= 0 {
		o.CodeTTL = 20 * time.Minute
	}
	if o.RateLimit == 0 {
		o.RateLimit = 7
	}
	if o.RateBurst <= 0 {
		o.RateBurst = 7
	}
	if o.BlockAfter <= 0 {
		o.BlockAfter = 10
	}
	if o.BlockFor <= 0 {
		o.BlockFor = time.Minute
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 1
	}
	if o.UnknownStatus == 0 {
		o.UnknownStatus = http.StatusBadRequest
	}
	if o.OneTimeTTL <= 0 {
		o.OneTimeTTL = 30 * time.Minute
	}
	if o.Flavor == "kommo" {
		o.RetryAfterInBody = true
	}
	seed := o.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	f := &AmoCRM{
		o:        o,
		suffix:   ".amocrm.ru",
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		requests: map[string]int{},
		statuses: map[int]int{},
		buckets:  map[string]*amoBucket{},
		nextID:   1000,
	}
	if o.Flavor == "kommo" {
		f.suffix = ".kommo.com"
	}
	return f
}

// NewAmoDemo returns a fake with the demo account of `pbxbridge demo` and cmd/fakecrm: subdomain
// "romashka" (amoCRM) or "romashka" on kommo.com, OAuth client DemoClientID/DemoClientSecret,
// long-lived token DemoLongLivedToken, users 504141..504143 and the customers of the shared
// Asterisk transcripts.
func NewAmoDemo(o AmoOptions) *AmoCRM {
	f := NewAmoCRM(o)
	f.AddAccount(AmoDemoAccount())
	f.AddLongLivedToken("romashka", DemoLongLivedToken, DemoLongLivedTTL)
	return f
}

// Demo credentials of the fake (never valid anywhere else).
const (
	DemoClientID       = "5f2b8a9e-0000-4000-8000-pbxbridgedemo"
	DemoClientSecret   = "demo-client-secret-not-a-real-one" //nolint:gosec // the fake's own demo value
	DemoLongLivedToken = "demo-long-lived-token"
)

// DemoLongLivedTTL is how long DemoLongLivedToken stays valid in the demo environments (NewAmoDemo,
// `pbxbridge demo`, the load harness): longer than any of them runs (`pbxbridge demo` runs until
// Ctrl-C), so their amoCRM/Kommo connectors never lose authorisation on their own.
const DemoLongLivedTTL = 100 * 365 * 24 * time.Hour

// AmoDemoAccount is the account NewAmoDemo creates.
func AmoDemoAccount() AmoAccountSpec {
	return AmoAccountSpec{
		ID: 28805383, Subdomain: "romashka", Name: "Romashka LLC",
		ClientID: DemoClientID, ClientSecret: DemoClientSecret,
		Users: []AmoUser{
			{ID: 504141, Name: "Ivan Petrov", Email: "ivan@romashka.example", PhoneNumber: "101", Admin: true, Active: true},
			{ID: 504142, Name: "Maria Sidorova", Email: "maria@romashka.example", PhoneNumber: "+7 (495) 111-22-02", Active: true},
			{ID: 504143, Name: "Anna Smirnova", Email: "anna@romashka.example", Active: true},
		},
		Contacts: []AmoContact{
			// The customer of most transcripts: one active lead, so calls land in the lead.
			{ID: 3, Name: "Ivan Ivanov", Phones: []string{"+79001234567"}, ResponsibleUserID: 504142, Leads: []int64{1}},
			{ID: 4, Name: "Olga Kuznetsova", Phones: []string{"+7 (916) 555-01-02"}, ResponsibleUserID: 504141},
			{ID: 5, Name: "Pavel Orlov", Phones: []string{"8 903 700-00-01"}, ResponsibleUserID: 504143, Leads: []int64{2, 3}},
		},
		Leads: []AmoLead{
			{ID: 1, Name: "Order #1", StatusID: 142001, ResponsibleUserID: 504142},
			{ID: 2, Name: "Order #2", StatusID: 142002, ResponsibleUserID: 504143},
			{ID: 3, Name: "Order #3", StatusID: 143, ResponsibleUserID: 504143},
		},
	}
}

// AddAccount adds an account; the first one added also serves unknown hosts.
func (f *AmoCRM) AddAccount(s AmoAccountSpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := &amoAccount{ID: s.ID, Subdomain: s.Subdomain, Name: s.Name, ClientID: s.ClientID, ClientSecret: s.ClientSecret,
		RedirectURI: s.RedirectURI, Users: slices.Clone(s.Users), Requests: map[string]int{}}
	for i := range s.Contacts {
		c := s.Contacts[i]
		if c.CreatedAt == 0 {
			c.CreatedAt = f.o.Now().Unix()
		}
		a.Contacts = append(a.Contacts, &c)
		f.nextID = max(f.nextID, c.ID+1)
	}
	for i := range s.Leads {
		l := s.Leads[i]
		a.Leads = append(a.Leads, &l)
		f.nextID = max(f.nextID, l.ID+1)
	}
	for _, u := range a.Users {
		if u.Admin && a.tokenUser == 0 {
			a.tokenUser = u.ID
		}
	}
	if a.tokenUser == 0 && len(a.Users) > 0 {
		a.tokenUser = a.Users[0].ID
	}
	f.accounts = append(f.accounts, a)
}

// Host returns the production host name of an account (e.g. romashka.amocrm.ru).
func (f *AmoCRM) Host(sub string) string { return sub + f.suffix }

func (f *AmoCRM) account(sub string) *amoAccount {
	for _, a := range f.accounts {
		if a.Subdomain == sub {
			return a
		}
	}
	if sub == "" && len(f.accounts) > 0 {
		return f.accounts[0]
	}
	return nil
}

func (f *AmoCRM) id() int64 {
	f.nextID++
	return f.nextID
}

func randToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = crand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// IssueCode returns a fresh authorisation code for the account (what the browser flow yields).
func (f *AmoCRM) IssueCode(sub string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.account(sub)
	if a == nil {
		return ""
	}
	c := &amoCode{code: randToken("def502"), expires: f.o.Now().Add(f.o.CodeTTL)}
	a.codes = append(a.codes, c)
	return c.code
}

// IssueTokens creates an OAuth grant directly and returns its tokens.
func (f *AmoCRM) IssueTokens(sub string) (access, refresh string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.account(sub)
	if a == nil {
		return "", ""
	}
	g := f.newGrant(a)
	for t := range g.access {
		access = t
	}
	return access, g.refresh
}

func (f *AmoCRM) newGrant(a *amoAccount) *amoGrant {
	now := f.o.Now()
	g := &amoGrant{refresh: randToken("def50200"), refreshExp: now.Add(f.o.RefreshTTL), consumed: map[string]bool{},
		access: map[string]time.Time{randToken("eyJ0eXAiOiJKV1Qi."): now.Add(f.o.AccessTTL)}}
	a.grants = append(a.grants, g)
	return g
}

// AddLongLivedToken registers a long-lived token (no refresh) valid for ttl.
func (f *AmoCRM) AddLongLivedToken(sub, token string, ttl time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.account(sub); a != nil {
		a.grants = append(a.grants, &amoGrant{longLived: true, access: map[string]time.Time{token: f.o.Now().Add(ttl)}})
	}
}

// ExpireAccessTokens makes every access token of the account expire now (refresh tokens stay).
func (f *AmoCRM) ExpireAccessTokens(sub string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expireAccess(f.account(sub))
}

func (f *AmoCRM) expireAccess(a *amoAccount) {
	if a == nil {
		return
	}
	now := f.o.Now()
	for _, g := range a.grants {
		if g.longLived {
			continue
		}
		for t := range g.access {
			g.access[t] = now
		}
	}
}

// Revoke revokes every grant of the account (the admin disabled the integration).
func (f *AmoCRM) Revoke(sub string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.account(sub); a != nil {
		for _, g := range a.grants {
			g.revoked = true
		}
	}
}

// SetUnpaid toggles the account's "subscription expired" state (402).
func (f *AmoCRM) SetUnpaid(sub string, unpaid bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.account(sub); a != nil {
		a.Unpaid = unpaid
	}
}

// SetDedupUniq switches the uniq de-duplication of POST /api/v4/calls.
func (f *AmoCRM) SetDedupUniq(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.o.DedupUniq = on
}

// Inject implements crmtest.Controller for the first account.
func (f *AmoCRM) Inject(fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = fault
	var a *amoAccount
	if len(f.accounts) > 0 {
		a = f.accounts[0]
	}
	switch fault {
	case FaultUnauthorized:
		f.expireAccess(a)
		f.fault = FaultNone
	case FaultRevoked:
		if a != nil {
			for _, g := range a.grants {
				g.revoked = true
			}
		}
		f.fault = FaultNone
	}
}

// Logged implements crmtest.Controller: how many calls and incoming leads of the first account carry
// uniq == key.
func (f *AmoCRM) Logged(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.accounts) == 0 {
		return 0
	}
	n := 0
	for _, c := range f.accounts[0].Calls {
		if c.Uniq == key {
			n++
		}
	}
	for _, u := range f.accounts[0].Unsorted {
		if u.Uniq == key {
			n++
		}
	}
	for _, nt := range f.accounts[0].Notes {
		if !nt.FromCall && noteUniq(nt.Params) == key {
			n++
		}
	}
	return n
}

// AmoState is the JSON of GET /_fake/state.
type AmoState struct {
	Flavor   string            `json:"flavor"`
	Accounts []AmoAccountState `json:"accounts"`
	// Requests counts API requests per "METHOD path" (all accounts).
	Requests map[string]int `json:"requests"`
	// Statuses counts API answers per HTTP status ("200", "429", "403", ...).
	Statuses map[string]int `json:"statuses"`
	// RateLimited is the number of 429 answers; Blocked the number of 403 block answers.
	RateLimited int `json:"rate_limited"`
	Blocked     int `json:"blocked"`
	// MaxPerSecond is the most API requests that arrived within one rolling second (closed
	// interval, per account and client IP); OverLimit how many requests arrived when RateLimit
	// others had already arrived in the second before them.
	MaxPerSecond int `json:"max_per_second"`
	OverLimit    int `json:"over_limit"`
	// Throttled is how many requests ThrottleFor answered 429.
	Throttled int `json:"throttled"`
	// Violations counts requests that break the API contract as the fake checks it: refused with
	// 400 validation-errors, or accepted but wrong (an unknown user id, a call_responsible given as
	// a string, a time in the future); ViolationList describes the first 1,000.
	Violations    int      `json:"violations"`
	ViolationList []string `json:"violation_list,omitempty"`
}

// AmoAccountState is one account in AmoState.
type AmoAccountState struct {
	ID        int64          `json:"id"`
	Subdomain string         `json:"subdomain"`
	Users     []AmoUser      `json:"users"`
	Contacts  []AmoContact   `json:"contacts"`
	Leads     []AmoLead      `json:"leads"`
	Calls     []AmoCall      `json:"calls"`
	Unsorted  []AmoUnsorted  `json:"unsorted"`
	Tasks     []AmoTask      `json:"tasks"`
	Events    []AmoEvent     `json:"events"`
	Notes     []AmoNote      `json:"notes"`
	Requests  map[string]int `json:"requests"`
	Grants    int            `json:"grants"`
}

// State returns a copy of everything the fake holds.
func (f *AmoCRM) State() AmoState {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := AmoState{Flavor: f.o.Flavor, Requests: map[string]int{}, Statuses: map[string]int{}}
	for k, v := range f.requests {
		s.Requests[k] = v
	}
	for k, v := range f.statuses {
		s.Statuses[strconv.Itoa(k)] = v
	}
	s.RateLimited = f.statuses[http.StatusTooManyRequests]
	s.Blocked = f.statuses[http.StatusForbidden]
	s.MaxPerSecond, s.OverLimit = f.window.max, f.window.over
	s.Throttled = f.throttled
	s.Violations, s.ViolationList = f.violationCount, slices.Clone(f.violations)
	for _, a := range f.accounts {
		as := AmoAccountState{ID: a.ID, Subdomain: a.Subdomain, Users: slices.Clone(a.Users), Calls: slices.Clone(a.Calls),
			Unsorted: slices.Clone(a.Unsorted), Tasks: slices.Clone(a.Tasks), Events: slices.Clone(a.Events),
			Notes: slices.Clone(a.Notes), Requests: map[string]int{}, Grants: len(a.grants)}
		for _, c := range a.Contacts {
			as.Contacts = append(as.Contacts, *c)
		}
		for _, l := range a.Leads {
			as.Leads = append(as.Leads, *l)
		}
		for k, v := range a.Requests {
			as.Requests[k] = v
		}
		s.Accounts = append(s.Accounts, as)
	}
	return s
}

// ServeHTTP implements http.Handler.
func (f *AmoCRM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_fake/state" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, "application/json", f.State())
		return
	case r.URL.Path == "/_fake/code" && r.Method == http.MethodGet:
		code := f.IssueCode(r.URL.Query().Get("subdomain"))
		writeJSON(w, http.StatusOK, "application/json", map[string]string{"code": code})
		return
	case r.URL.Path == "/_fake/fault" && r.Method == http.MethodPost:
		f.serveFault(w, r)
		return
	case r.URL.Path == "/_fake/onetime" && r.Method == http.MethodGet:
		f.serveOneTime(w, r)
		return
	case r.URL.Path == "/oauth" && r.Method == http.MethodGet:
		f.serveAuthorize(w, r)
		return
	}
	if f.takeLoss(r.Method + " " + strings.TrimSuffix(r.URL.Path, "/")) {
		// The request is carried out, then the connection drops before any answer: what a
		// client sees when a proxy or the network fails after amoCRM did the work.
		f.serveAPI(&discardWriter{h: http.Header{}}, r)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	f.serveAPI(w, r)
}

// LoseAnswers makes the next n requests "METHOD /path" (e.g. "POST /api/v4/calls") take
// effect as usual but lose their answer: the connection is closed without a response.
func (f *AmoCRM) LoseAnswers(key string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lose == nil {
		f.lose = map[string]int{}
	}
	f.lose[key] = n
}

func (f *AmoCRM) takeLoss(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lose[key] <= 0 {
		return false
	}
	f.lose[key]--
	return true
}

// discardWriter is a ResponseWriter that drops what is written.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

// serveFault: POST /_fake/fault?fault=none|unauthorized|revoked|rate_limited|server_error|slow
// &dedup_uniq=0|1&unpaid=0|1 (for scripts and the demo).
func (f *AmoCRM) serveFault(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	faults := map[string]Fault{"none": FaultNone, "unauthorized": FaultUnauthorized, "revoked": FaultRevoked,
		"rate_limited": FaultRateLimited, "server_error": FaultServerError, "slow": FaultSlow}
	if v := q.Get("fault"); v != "" {
		fl, ok := faults[v]
		if !ok {
			http.Error(w, "unknown fault "+v, http.StatusBadRequest)
			return
		}
		f.Inject(fl)
	}
	if v := q.Get("dedup_uniq"); v != "" {
		f.SetDedupUniq(v == "1" || v == "true")
	}
	if v := q.Get("unpaid"); v != "" {
		f.SetUnpaid(q.Get("subdomain"), v == "1" || v == "true")
	}
	writeJSON(w, http.StatusOK, "application/json", map[string]bool{"ok": true})
}

// serveAuthorize plays the browser consent page www.amocrm.ru/oauth: it allows at once and
// redirects to redirect_uri with a fresh code (decline with ?decline=1).
func (f *AmoCRM) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	var a *amoAccount
	for _, acc := range f.accounts {
		if acc.ClientID == q.Get("client_id") {
			a = acc
			break
		}
	}
	f.mu.Unlock()
	if a == nil {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		redirect = a.RedirectURI
	}
	u, err := url.Parse(redirect)
	if err != nil || redirect == "" {
		http.Error(w, "no redirect_uri", http.StatusBadRequest)
		return
	}
	v := u.Query()
	v.Set("state", q.Get("state"))
	v.Set("client_id", a.ClientID)
	if q.Get("decline") != "" {
		v.Set("error", "access_denied")
	} else {
		v.Set("code", f.IssueCode(a.Subdomain))
		v.Set("referer", f.Host(a.Subdomain))
	}
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound) //nolint:gosec // the fake plays the consent page: redirecting to redirect_uri is its job
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *AmoCRM) problem(w http.ResponseWriter, status int, title, detail string, extra map[string]any) {
	body := map[string]any{"title": title, "type": "https://httpstatus.es/" + strconv.Itoa(status), "status": status, "detail": detail}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, status, "application/problem+json", body)
}

// routeAccount finds the account of a request by its Host.
func (f *AmoCRM) routeAccount(r *http.Request) *amoAccount {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if sub, ok := strings.CutSuffix(host, f.suffix); ok {
		return f.account(sub)
	}
	return f.account("")
}

func (f *AmoCRM) serveAPI(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + strings.TrimSuffix(r.URL.Path, "/")
	if f.o.Latency > 0 {
		sleep(r.Context(), f.o.Latency)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		return
	}
	f.mu.Lock()
	fault := f.fault
	f.mu.Unlock()
	if fault == FaultSlow {
		sleep(r.Context(), 2*time.Second)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if sw.status != 0 {
			f.statuses[sw.status]++
		}
	}()
	w = sw
	f.requests[key]++
	f.cur = key
	a := f.routeAccount(r)
	if a == nil {
		f.problem(w, http.StatusNotFound, "Not Found", "Account not found", nil)
		return
	}
	a.Requests[key]++

	if !f.allow(w, r, a, fault) {
		return
	}
	if fault == FaultServerError || (f.o.ErrorRate > 0 && f.rng.Float64() < f.o.ErrorRate) {
		f.problem(w, http.StatusInternalServerError, "ErrInternalServer", "internal error", map[string]any{"trace_id": randToken("")[:16]})
		return
	}

	path := strings.TrimSuffix(r.URL.Path, "/")
	if path == "/oauth2/access_token" && r.Method == http.MethodPost {
		f.serveToken(w, r, a, body)
		return
	}
	user, ok := f.authenticate(w, r, a)
	if !ok {
		return
	}
	if a.Unpaid {
		f.problem(w, http.StatusPaymentRequired, "Payment Required", "Payment required", nil)
		return
	}
	switch {
	case path == "/api/v4/account" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{
			"id": a.ID, "name": a.Name, "subdomain": a.Subdomain, "country": "RU", "currency": "RUB",
			"current_user_id": user, "_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/account")}}})
	case path == "/api/v4/users" && r.Method == http.MethodGet:
		f.serveUsers(w, r, a)
	case path == "/api/v4/contacts" && r.Method == http.MethodGet:
		f.serveFindContacts(w, r, a)
	case path == "/api/v4/contacts" && r.Method == http.MethodPost:
		f.serveAddContacts(w, a, user, body)
	case path == "/api/v4/calls" && r.Method == http.MethodPost:
		f.serveCalls(w, a, body)
	case path == "/api/v4/leads/unsorted/sip" && r.Method == http.MethodPost:
		f.serveUnsorted(w, a, user, body)
	case path == "/api/v4/leads/unsorted" && r.Method == http.MethodGet:
		f.serveListUnsorted(w, r, a)
	case strings.HasPrefix(path, "/api/v4/leads/unsorted/") && strings.HasSuffix(path, "/accept") && r.Method == http.MethodPost:
		f.serveAcceptUnsorted(w, a, user, strings.TrimSuffix(strings.TrimPrefix(path, "/api/v4/leads/unsorted/"), "/accept"))
	case strings.HasPrefix(path, "/api/v4/leads/unsorted/") && strings.HasSuffix(path, "/decline") && r.Method == http.MethodDelete:
		f.serveDeclineUnsorted(w, a, strings.TrimSuffix(strings.TrimPrefix(path, "/api/v4/leads/unsorted/"), "/decline"))
	case path == "/api/v4/tasks" && r.Method == http.MethodPost:
		f.serveAddTasks(w, a, user, body)
	case path == "/api/v4/tasks" && r.Method == http.MethodGet:
		f.serveFindTasks(w, r, a)
	case path == "/api/v2/events" && r.Method == http.MethodPost:
		f.serveEvents(w, a, body)
	case strings.HasSuffix(path, "/notes") && r.Method == http.MethodPost:
		f.serveNotes(w, a, path, body)
	case strings.HasSuffix(path, "/notes") && r.Method == http.MethodGet:
		f.serveFindNotes(w, r, a, path)
	case path == "/api/v4/calls" || path == "/api/v4/contacts" || path == "/api/v4/tasks":
		f.problem(w, http.StatusMethodNotAllowed, "Method Not Allowed", "Method Not Allowed", nil)
	default:
		f.problem(w, http.StatusNotFound, "Not Found", "Cannot "+r.Method+" "+f.href(a, r.URL.Path), nil)
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (f *AmoCRM) href(a *amoAccount, p string) string { return "https://" + f.Host(a.Subdomain) + p }

// allow applies the rate limit per (account, client IP) and the block after repeated 429s.
func (f *AmoCRM) allow(w http.ResponseWriter, r *http.Request, a *amoAccount, fault Fault) bool {
	ip := r.RemoteAddr
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	bk := a.Subdomain + "|" + ip
	b := f.buckets[bk]
	if b == nil {
		lim := rate.NewLimiter(rate.Inf, 0)
		if f.o.RateLimit > 0 {
			lim = rate.NewLimiter(rate.Limit(f.o.RateLimit), f.o.RateBurst)
		}
		b = &amoBucket{lim: lim}
		f.buckets[bk] = b
	}
	now := f.o.Now()
	inWindow := f.window.arrive(bk, now, int(math.Max(f.o.RateLimit, 0)))
	if now.Before(b.blockedUntil) {
		f.forbidden(w)
		return false
	}
	if now.Before(f.throttledUntil) {
		f.throttled++
		left := int(math.Ceil(f.throttledUntil.Sub(now).Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(left))
		f.problem(w, http.StatusTooManyRequests, "Too Many Requests",
			"You have sent too many requests in a given amount of time. Please try again later.", map[string]any{"retry_after": left})
		return false
	}
	allowed := b.lim.AllowN(now, 1)
	if f.o.StrictWindow && f.o.RateLimit > 0 {
		allowed = inWindow <= int(f.o.RateLimit)
	}
	if fault != FaultRateLimited && allowed {
		b.consecutive = 0
		return true
	}
	b.consecutive++
	if b.consecutive >= f.o.BlockAfter {
		b.blockedUntil = now.Add(f.o.BlockFor)
		b.consecutive = 0
		f.forbidden(w)
		return false
	}
	if f.o.RetryAfterHeader {
		w.Header().Set("Retry-After", strconv.Itoa(f.o.RetryAfter))
	}
	var extra map[string]any
	if f.o.RetryAfterInBody {
		extra = map[string]any{"retry_after": f.o.RetryAfter}
	}
	f.problem(w, http.StatusTooManyRequests, "Too Many Requests",
		"You have sent too many requests in a given amount of time. Please try again later.", extra)
	return false
}

func (f *AmoCRM) forbidden(w http.ResponseWriter) {
	if f.o.PlainForbidden {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "403 Forbidden")
		return
	}
	f.problem(w, http.StatusForbidden, "Forbidden", "Access denied", nil)
}

// authenticate checks the bearer token; it marks a rotated grant's new tokens as used.
func (f *AmoCRM) authenticate(w http.ResponseWriter, r *http.Request, a *amoAccount) (int64, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && tok != "" {
		now := f.o.Now()
		for _, g := range a.grants {
			exp, found := g.access[tok]
			if !found || g.revoked || !now.Before(exp) {
				continue
			}
			f.useNew(g)
			return a.tokenUser, true
		}
	}
	f.problem(w, http.StatusUnauthorized, "Unauthorized", "Invalid user name or password", nil)
	return 0, false
}

// useNew records that the current tokens of g were used: the previous refresh token is spent.
func (f *AmoCRM) useNew(g *amoGrant) {
	if g.prevRefresh != "" {
		g.consumed[g.prevRefresh] = true
		g.prevRefresh = ""
	}
	g.newUsed = true
}

func (f *AmoCRM) oauthError(w http.ResponseWriter, hint string) {
	title, detail := "Некорректный запрос", "В запросе отсутствует ряд параметров или параметры невалидны"
	if f.o.Flavor == "kommo" {
		title, detail = "Bad request", "Some parameters are missing or invalid"
	}
	writeJSON(w, http.StatusBadRequest, "application/problem+json", map[string]any{
		"hint": hint, "title": title, "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson", "status": 400, "detail": detail})
}

func (f *AmoCRM) serveToken(w http.ResponseWriter, r *http.Request, a *amoAccount, body []byte) {
	var req struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		GrantType    string `json:"grant_type"`
		Code         string `json:"code"`
		RefreshToken string `json:"refresh_token"`
		RedirectURI  string `json:"redirect_uri"`
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		v, err := url.ParseQuery(string(body))
		if err != nil {
			f.oauthError(w, "Cannot parse the request body")
			return
		}
		req.ClientID, req.ClientSecret, req.GrantType = v.Get("client_id"), v.Get("client_secret"), v.Get("grant_type")
		req.Code, req.RefreshToken, req.RedirectURI = v.Get("code"), v.Get("refresh_token"), v.Get("redirect_uri")
	} else if err := json.Unmarshal(body, &req); err != nil {
		f.oauthError(w, "Cannot parse the request body")
		return
	}
	if req.ClientID != a.ClientID || req.ClientSecret != a.ClientSecret || a.ClientID == "" {
		f.oauthError(w, "Check the `client_id` parameter")
		return
	}
	if a.RedirectURI != "" && req.RedirectURI != a.RedirectURI {
		f.oauthError(w, "Check the `redirect_uri` parameter")
		return
	}
	now := f.o.Now()
	var g *amoGrant
	switch req.GrantType {
	case "authorization_code":
		var c *amoCode
		for _, x := range a.codes {
			if x.code == req.Code {
				c = x
			}
		}
		switch {
		case c == nil:
			f.oauthError(w, "Cannot decrypt the authorization code")
			return
		case c.used:
			f.oauthError(w, "Authorization code has been revoked")
			return
		case !now.Before(c.expires):
			f.oauthError(w, "Authorization code has expired")
			return
		}
		c.used = true
		g = f.newGrant(a)
	case "refresh_token":
		g = f.refresh(w, a, req.RefreshToken, now)
		if g == nil {
			return
		}
	default:
		f.oauthError(w, "Unsupported grant type")
		return
	}
	var access string
	var exp time.Time
	for t, e := range g.access {
		if e.After(exp) {
			access, exp = t, e
		}
	}
	resp := map[string]any{"token_type": "Bearer", "expires_in": int64(f.o.AccessTTL / time.Second),
		"access_token": access, "refresh_token": g.refresh}
	if f.o.Flavor == "kommo" {
		resp["server_time"] = now.Unix()
	}
	writeJSON(w, http.StatusOK, "application/json", resp)
}

// refresh rotates a grant's tokens, or answers the OAuth error and returns nil.
func (f *AmoCRM) refresh(w http.ResponseWriter, a *amoAccount, token string, now time.Time) *amoGrant {
	for _, g := range a.grants {
		if g.longLived || token == "" {
			continue
		}
		switch {
		case g.consumed[token]:
			if !f.o.ReuseDoesNotRevoke {
				g.revoked = true
			}
			f.oauthError(w, "Refresh token has been revoked")
			return nil
		case token != g.refresh && token != g.prevRefresh:
			continue
		case g.revoked:
			f.oauthError(w, "Refresh token has been revoked")
			return nil
		case token == g.refresh && !now.Before(g.refreshExp):
			f.oauthError(w, "Refresh token has expired")
			return nil
		}
		if token == g.refresh {
			// Rotate: the presented token stays usable until the new tokens are used.
			if g.prevRefresh != "" {
				g.consumed[g.prevRefresh] = true
			}
			g.prevRefresh = g.refresh
			if f.o.StrictRotation {
				g.consumed[g.refresh] = true
				g.prevRefresh = ""
			}
		} else {
			// The previous token again (the answer to its first use was lost): the unused
			// tokens issued then are dropped.
			g.consumed[g.refresh] = true
		}
		g.refresh = randToken("def50200")
		g.refreshExp = now.Add(f.o.RefreshTTL)
		g.newUsed = false
		g.access[randToken("eyJ0eXAiOiJKV1Qi.")] = now.Add(f.o.AccessTTL)
		return g
	}
	f.oauthError(w, "Invalid refresh token")
	return nil
}

func (f *AmoCRM) serveUsers(w http.ResponseWriter, r *http.Request, a *amoAccount) {
	withPhone := strings.Contains(r.URL.Query().Get("with"), "phone_number")
	items := make([]map[string]any, 0, len(a.Users))
	for _, u := range a.Users {
		m := map[string]any{"id": u.ID, "name": u.Name, "email": u.Email, "lang": "ru",
			"rights": map[string]any{"is_admin": u.Admin, "is_active": u.Active, "is_free": false},
			"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/users/"+strconv.FormatInt(u.ID, 10))}}}
		if withPhone {
			if u.PhoneNumber == "" {
				m["phone_number"] = nil
			} else {
				m["phone_number"] = u.PhoneNumber
			}
		}
		items = append(items, m)
	}
	f.page(w, r, a, "users", items, true)
}

// page answers one page of a list (B.14): 204 when empty, _links.next only when more exist.
func (f *AmoCRM) page(w http.ResponseWriter, r *http.Request, a *amoAccount, kind string, items []map[string]any, totals bool) {
	q := r.URL.Query()
	page, limit := 1, 50
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		page = v
	}
	if v, err := strconv.Atoi(q.Get("limit")); err == nil && v > 0 {
		limit = v
	}
	if limit > 250 {
		f.problem(w, http.StatusUnprocessableEntity, "Unprocessable Entity", "Limit 250 per page", nil)
		return
	}
	start := (page - 1) * limit
	if start >= len(items) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	end := min(start+limit, len(items))
	self := f.href(a, r.URL.Path) + "?" + q.Encode()
	links := map[string]any{"self": map[string]string{"href": self}}
	if end < len(items) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("page", strconv.Itoa(page+1))
		links["next"] = map[string]string{"href": f.href(a, r.URL.Path) + "?" + nq.Encode()}
	}
	out := map[string]any{"_page": page, "_links": links, "_embedded": map[string]any{kind: items[start:end]}}
	if totals {
		out["_total_items"] = len(items)
		out["_page_count"] = int(math.Ceil(float64(len(items)) / float64(limit)))
	}
	writeJSON(w, http.StatusOK, "application/hal+json", out)
}

// digits keeps the digits of s.
func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func lastN(s string, n int) string {
	d := digits(s)
	if len(d) > n {
		return d[len(d)-n:]
	}
	return d
}

func (f *AmoCRM) contactJSON(a *amoAccount, c *AmoContact, withLeads bool) map[string]any {
	vals := make([]map[string]any, 0, len(c.Phones))
	for _, p := range c.Phones {
		vals = append(vals, map[string]any{"value": p, "enum_id": 1, "enum": "WORK"})
	}
	m := map[string]any{"id": c.ID, "name": c.Name, "responsible_user_id": c.ResponsibleUserID, "group_id": 0,
		"created_at": c.CreatedAt, "updated_at": c.CreatedAt, "is_deleted": false, "account_id": a.ID,
		"custom_fields_values": []map[string]any{{"field_id": 3, "field_name": "Телефон", "field_code": "PHONE", "field_type": "multitext", "values": vals}},
		"_links":               map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/contacts/"+strconv.FormatInt(c.ID, 10))}}}
	emb := map[string]any{"tags": []any{}, "companies": []any{}}
	if withLeads {
		leads := []map[string]any{}
		for _, id := range c.Leads {
			leads = append(leads, map[string]any{"id": id, "_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/leads/"+strconv.FormatInt(id, 10))}}})
		}
		emb["leads"] = leads
	}
	m["_embedded"] = emb
	return m
}

func (f *AmoCRM) serveFindContacts(w http.ResponseWriter, r *http.Request, a *amoAccount) {
	q := r.URL.Query()
	query := strings.TrimSpace(q.Get("query"))
	qd := digits(query)
	withLeads := strings.Contains(q.Get("with"), "leads")
	var items []map[string]any
	for _, c := range a.Contacts {
		if c.Hidden {
			continue
		}
		match := query == ""
		if !match && qd != "" && len(qd) >= len(query)/2 {
			for _, p := range c.Phones {
				if strings.Contains(digits(p), qd) {
					match = true
				}
			}
		}
		if !match && query != "" && strings.Contains(strings.ToLower(c.Name), strings.ToLower(query)) {
			match = true
		}
		if match {
			items = append(items, f.contactJSON(a, c, withLeads))
		}
	}
	f.page(w, r, a, "contacts", items, false)
}

// decodeItems decodes a JSON array body of an add endpoint: 400 when empty or not an array,
// 422 over 250 items.
func (f *AmoCRM) decodeItems(w http.ResponseWriter, body []byte) ([]json.RawMessage, bool) {
	var items []json.RawMessage
	if len(strings.TrimSpace(string(body))) == 0 {
		f.problem(w, http.StatusBadRequest, "Bad Request", "Request data can not be empty", nil)
		return nil, false
	}
	if err := json.Unmarshal(body, &items); err != nil {
		f.problem(w, http.StatusBadRequest, "Bad Request", "Request data must be an array", nil)
		return nil, false
	}
	if len(items) == 0 {
		f.problem(w, http.StatusBadRequest, "Bad Request", "Request data can not be empty", nil)
		return nil, false
	}
	if len(items) > 250 {
		f.problem(w, http.StatusUnprocessableEntity, "Unprocessable Entity", "Limit 250 per page", nil)
		return nil, false
	}
	return items, true
}

type amoValidation struct {
	RequestID string           `json:"request_id"`
	Errors    []map[string]any `json:"errors"`
}

func (f *AmoCRM) validationFailed(w http.ResponseWriter, v []amoValidation) {
	for _, it := range v {
		for _, e := range it.Errors {
			f.violation(fmt.Sprintf("item %s: %v %v", it.RequestID, e["path"], e["code"]))
		}
	}
	f.problem(w, http.StatusBadRequest, "Bad Request", "Request validation failed", map[string]any{"validation-errors": v})
}

// violation records a break of the API contract by the request being served (f.mu held).
func (f *AmoCRM) violation(what string) {
	f.violationCount++
	if len(f.violations) < 1000 {
		f.violations = append(f.violations, f.cur+": "+what)
	}
}

func reqID(raw json.RawMessage, i int) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil && s != "" {
		return s
	}
	if len(raw) > 0 && string(raw) != "null" {
		return strings.Trim(string(raw), `"`)
	}
	return strconv.Itoa(i)
}

func (f *AmoCRM) serveAddContacts(w http.ResponseWriter, a *amoAccount, user int64, body []byte) {
	items, ok := f.decodeItems(w, body)
	if !ok {
		return
	}
	var out []map[string]any
	for i, raw := range items {
		var in struct {
			Name              string          `json:"name"`
			ResponsibleUserID int64           `json:"responsible_user_id"`
			RequestID         json.RawMessage `json:"request_id"`
			CustomFields      []struct {
				FieldCode string `json:"field_code"`
				Values    []struct {
					Value string `json:"value"`
				} `json:"values"`
			} `json:"custom_fields_values"`
		}
		if err := json.Unmarshal(raw, &in); err != nil {
			f.validationFailed(w, []amoValidation{{RequestID: strconv.Itoa(i), Errors: []map[string]any{{"code": "InvalidType", "path": "", "detail": err.Error()}}}})
			return
		}
		c := &AmoContact{ID: f.id(), Name: in.Name, ResponsibleUserID: in.ResponsibleUserID, CreatedAt: f.o.Now().Unix()}
		if c.ResponsibleUserID == 0 {
			c.ResponsibleUserID = user
		}
		for _, cf := range in.CustomFields {
			if cf.FieldCode == "PHONE" {
				for _, v := range cf.Values {
					c.Phones = append(c.Phones, v.Value)
				}
			}
		}
		a.Contacts = append(a.Contacts, c)
		out = append(out, map[string]any{"id": c.ID, "request_id": reqID(in.RequestID, i),
			"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/contacts/"+strconv.FormatInt(c.ID, 10))}}})
	}
	writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{
		"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/contacts")}}, "_embedded": map[string]any{"contacts": out}})
}

// matchEntity places a call by phone (B.5): the contact with the number (last 10 digits); its
// single active lead if it has no customers, its single customer if it has no active leads,
// otherwise the contact.
func (f *AmoCRM) matchEntity(a *amoAccount, phone string) (string, int64, bool) {
	want := lastN(phone, 10)
	if len(want) < 5 {
		return "", 0, false
	}
	for _, c := range a.Contacts {
		if c.Hidden {
			continue
		}
		for _, p := range c.Phones {
			if lastN(p, 10) != want {
				continue
			}
			var active []int64
			for _, id := range c.Leads {
				for _, l := range a.Leads {
					if l.ID == id && l.StatusID != 142 && l.StatusID != 143 && !l.Unsorted {
						active = append(active, id)
					}
				}
			}
			switch {
			case len(active) == 1 && len(c.Customers) == 0:
				return "lead", active[0], true
			case len(c.Customers) == 1 && len(active) == 0:
				return "customer", c.Customers[0], true
			}
			return "contact", c.ID, true
		}
	}
	return "", 0, false
}

var amoCallFields = map[string]bool{"direction": true, "duration": true, "source": true, "phone": true, "uniq": true,
	"link": true, "call_result": true, "call_status": true, "call_responsible": true, "responsible_user_id": true,
	"created_by": true, "updated_by": true, "created_at": true, "updated_at": true, "request_id": true}

func (f *AmoCRM) serveCalls(w http.ResponseWriter, a *amoAccount, body []byte) {
	items, ok := f.decodeItems(w, body)
	if !ok {
		return
	}
	type parsed struct {
		call AmoCall
		rid  string
	}
	var all []parsed
	var invalid []amoValidation
	for i, raw := range items {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			invalid = append(invalid, amoValidation{RequestID: strconv.Itoa(i), Errors: []map[string]any{{"code": "InvalidType", "path": "", "detail": "This value should be of type object."}}})
			continue
		}
		rid := reqID(m["request_id"], i)
		var errs []map[string]any
		for k := range m {
			if !amoCallFields[k] {
				errs = append(errs, map[string]any{"code": "FieldNotExpected", "path": k, "detail": "This field was not expected."})
			}
		}
		for _, req := range []string{"direction", "duration", "source", "phone"} {
			if _, ok := m[req]; !ok {
				errs = append(errs, map[string]any{"code": "FieldMissing", "path": req, "detail": "This field is missing."})
			}
		}
		var c AmoCall
		c.CallResponsible = m["call_responsible"]
		delete(m, "call_responsible")
		clean, _ := json.Marshal(m)
		if err := json.Unmarshal(clean, &c); err != nil {
			errs = append(errs, map[string]any{"code": "InvalidType", "path": "", "detail": err.Error()})
		}
		if c.Direction != "" && c.Direction != "inbound" && c.Direction != "outbound" {
			errs = append(errs, map[string]any{"code": "NotSupportedChoice", "path": "direction", "detail": "The value you selected is not a valid choice."})
		}
		if c.CallStatus < 0 || c.CallStatus > 8 {
			errs = append(errs, map[string]any{"code": "NotSupportedChoice", "path": "call_status", "detail": "The value you selected is not a valid choice."})
		}
		if c.Phone == "" {
			errs = append(errs, map[string]any{"code": "InvalidType", "path": "phone", "detail": "This value should not be blank."})
		}
		if c.Duration < 0 {
			errs = append(errs, map[string]any{"code": "InvalidType", "path": "duration", "detail": "This value should be positive."})
		}
		if len(errs) > 0 {
			invalid = append(invalid, amoValidation{RequestID: rid, Errors: errs})
			continue
		}
		f.checkUser(a, "item "+rid+": call_responsible", c.CallResponsible)
		f.checkUser(a, "item "+rid+": responsible_user_id", m["responsible_user_id"])
		f.checkUser(a, "item "+rid+": created_by", m["created_by"])
		f.checkTime(c.CreatedAt, "item "+rid+": created_at")
		if c.Link != "" && !strings.HasPrefix(c.Link, "https://") && !strings.HasPrefix(c.Link, "http://") {
			f.violation("item " + rid + ": link is not a URL: " + c.Link)
		}
		all = append(all, parsed{call: c, rid: rid})
	}
	if len(invalid) > 0 {
		f.validationFailed(w, invalid)
		return
	}
	var placed []map[string]any
	var failed []map[string]any
	for _, p := range all {
		c := p.call
		var existing *AmoCall
		if f.o.DedupUniq && c.Uniq != "" {
			for i := range a.Calls {
				if a.Calls[i].Uniq == c.Uniq {
					existing = &a.Calls[i]
				}
			}
		}
		if existing == nil {
			typ, id, ok := f.matchEntity(a, c.Phone)
			if !ok {
				failed = append(failed, map[string]any{"request_id": p.rid, "title": "Entity not found", "status": 263})
				continue
			}
			c.ID, c.EntityType, c.EntityID = f.id(), typ, id
			a.Calls = append(a.Calls, c)
			f.addCallNote(a, c)
			existing = &a.Calls[len(a.Calls)-1]
		}
		plural := existing.EntityType + "s"
		placed = append(placed, map[string]any{"id": existing.ID, "entity_id": existing.EntityID, "entity_type": existing.EntityType,
			"account_id": a.ID, "request_id": p.rid,
			"_embedded": map[string]any{"entity": map[string]any{"id": existing.EntityID,
				"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/"+plural+"/"+strconv.FormatInt(existing.EntityID, 10))}}}}})
	}
	resp := map[string]any{"_total_items": len(placed), "errors": failed, "_embedded": map[string]any{"calls": placed}}
	status := http.StatusOK
	if len(placed) == 0 {
		status = f.o.UnknownStatus
		if status >= 400 {
			writeJSON(w, status, "application/problem+json", map[string]any{"_total_items": 0, "errors": failed})
			return
		}
	}
	if failed == nil {
		resp["errors"] = []any{}
	}
	writeJSON(w, status, "application/hal+json", resp)
}

func (f *AmoCRM) serveUnsorted(w http.ResponseWriter, a *amoAccount, user int64, body []byte) {
	items, ok := f.decodeItems(w, body)
	if !ok {
		return
	}
	type item struct {
		SourceUID  string          `json:"source_uid"`
		SourceName string          `json:"source_name"`
		PipelineID int64           `json:"pipeline_id"`
		CreatedAt  int64           `json:"created_at"`
		RequestID  json.RawMessage `json:"request_id"`
		Metadata   json.RawMessage `json:"metadata"`
		Embedded   struct {
			Leads []struct {
				Name string `json:"name"`
			} `json:"leads"`
			Contacts []struct {
				Name         string `json:"name"`
				CustomFields []struct {
					FieldCode string `json:"field_code"`
					Values    []struct {
						Value string `json:"value"`
					} `json:"values"`
				} `json:"custom_fields_values"`
			} `json:"contacts"`
		} `json:"_embedded"`
	}
	var parsed []item
	var invalid []amoValidation
	for i, raw := range items {
		var it item
		var errs []map[string]any
		if err := json.Unmarshal(raw, &it); err != nil {
			errs = append(errs, map[string]any{"code": "InvalidType", "path": "", "detail": err.Error()})
		}
		errs = append(errs, unexpectedFields(raw, "", amoUnsortedFields)...)
		errs = append(errs, unexpectedFields(it.Metadata, "metadata.", amoSIPMetadataFields)...)
		var md struct {
			Uniq            string          `json:"uniq"`
			From            string          `json:"from"`
			Phone           string          `json:"phone"`
			CalledAt        int64           `json:"called_at"`
			Duration        *int            `json:"duration"`
			ServiceCode     string          `json:"service_code"`
			CallResponsible json.RawMessage `json:"call_responsible"`
		}
		if err := json.Unmarshal(it.Metadata, &md); err != nil || md.Uniq == "" || md.From == "" {
			errs = append(errs, map[string]any{"code": "FieldMissing", "path": "metadata", "detail": "metadata.uniq and metadata.from are required"})
		}
		if md.Duration != nil && *md.Duration < 0 {
			errs = append(errs, map[string]any{"code": "InvalidType", "path": "metadata.duration", "detail": "must not be negative"})
		}
		if it.SourceUID == "" || it.SourceName == "" {
			errs = append(errs, map[string]any{"code": "FieldMissing", "path": "source_uid", "detail": "source_uid and source_name are required"})
		}
		for _, u := range a.Unsorted {
			if it.SourceUID != "" && u.SourceUID == it.SourceUID {
				errs = append(errs, map[string]any{"code": "NotUnique", "path": "source_uid", "detail": "Duplicate incoming lead"})
			}
		}
		rid := reqID(it.RequestID, i)
		if len(errs) > 0 {
			invalid = append(invalid, amoValidation{RequestID: rid, Errors: errs})
		} else {
			f.checkUser(a, "item "+rid+": metadata.call_responsible", md.CallResponsible)
			f.checkTime(it.CreatedAt, "item "+rid+": created_at")
			f.checkTime(md.CalledAt, "item "+rid+": metadata.called_at")
		}
		parsed = append(parsed, it)
	}
	if len(invalid) > 0 {
		f.validationFailed(w, invalid)
		return
	}
	var out []map[string]any
	for i, it := range parsed {
		var md struct {
			Uniq string `json:"uniq"`
			From string `json:"from"`
		}
		_ = json.Unmarshal(it.Metadata, &md)
		created := it.CreatedAt
		if created == 0 {
			created = f.o.Now().Unix()
		}
		u := AmoUnsorted{UID: (randToken("") + randToken(""))[:60], SourceUID: it.SourceUID, SourceName: it.SourceName, PipelineID: it.PipelineID,
			CreatedAt: created, Metadata: it.Metadata, Uniq: md.Uniq, Category: "sip"}
		leadName := "Incoming call " + md.From
		if len(it.Embedded.Leads) > 0 && it.Embedded.Leads[0].Name != "" {
			leadName = it.Embedded.Leads[0].Name
		}
		lead := &AmoLead{ID: f.id(), Name: leadName, Unsorted: true, ResponsibleUserID: user}
		a.Leads = append(a.Leads, lead)
		u.LeadID = lead.ID
		contacts := []map[string]any{}
		if len(it.Embedded.Contacts) > 0 {
			ec := it.Embedded.Contacts[0]
			// Hidden until the incoming lead is accepted (B.8): no search, no call matching.
			c := &AmoContact{ID: f.id(), Name: ec.Name, Hidden: true, Leads: []int64{lead.ID}, CreatedAt: f.o.Now().Unix()}
			for _, cf := range ec.CustomFields {
				if cf.FieldCode == "PHONE" {
					for _, v := range cf.Values {
						c.Phones = append(c.Phones, v.Value)
					}
				}
			}
			a.Contacts = append(a.Contacts, c)
			u.ContactID = c.ID
			contacts = append(contacts, map[string]any{"id": c.ID})
		}
		a.Unsorted = append(a.Unsorted, u)
		out = append(out, map[string]any{"uid": u.UID, "account_id": a.ID, "request_id": reqID(it.RequestID, i),
			"_links":    map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/leads/unsorted/"+u.UID)}},
			"_embedded": map[string]any{"contacts": contacts, "leads": []map[string]any{{"id": lead.ID}}, "companies": []any{}}})
	}
	writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{"_total_items": len(out), "_embedded": map[string]any{"unsorted": out}})
}

func (f *AmoCRM) serveAddTasks(w http.ResponseWriter, a *amoAccount, user int64, body []byte) {
	items, ok := f.decodeItems(w, body)
	if !ok {
		return
	}
	var tasks []AmoTask
	var rids []string
	var invalid []amoValidation
	for i, raw := range items {
		var in struct {
			AmoTask
			RequestID json.RawMessage `json:"request_id"`
		}
		var errs []map[string]any
		if err := json.Unmarshal(raw, &in); err != nil {
			errs = append(errs, map[string]any{"code": "InvalidType", "path": "", "detail": err.Error()})
		}
		if in.Text == "" {
			errs = append(errs, map[string]any{"code": "FieldMissing", "path": "text", "detail": "This field is missing."})
		}
		if in.CompleteTill == 0 {
			errs = append(errs, map[string]any{"code": "FieldMissing", "path": "complete_till", "detail": "This field is missing."})
		}
		if in.EntityType != "" && !slices.Contains([]string{"leads", "contacts", "companies", "customers"}, in.EntityType) {
			errs = append(errs, map[string]any{"code": "NotSupportedChoice", "path": "entity_type", "detail": "The value you selected is not a valid choice."})
		}
		rid := reqID(in.RequestID, i)
		if len(errs) > 0 {
			invalid = append(invalid, amoValidation{RequestID: rid, Errors: errs})
			continue
		}
		f.checkUser(a, "item "+rid+": responsible_user_id", json.RawMessage(strconv.FormatInt(in.ResponsibleUserID, 10)))
		if in.EntityID != 0 && !a.hasEntity(in.EntityType, in.EntityID) {
			f.violation("item " + rid + ": no " + in.EntityType + " " + strconv.FormatInt(in.EntityID, 10))
		}
		t := in.AmoTask
		if t.TaskTypeID == 0 {
			t.TaskTypeID = 1
		}
		if t.ResponsibleUserID == 0 {
			t.ResponsibleUserID = user
		}
		tasks = append(tasks, t)
		rids = append(rids, rid)
	}
	if len(invalid) > 0 {
		f.validationFailed(w, invalid)
		return
	}
	var out []map[string]any
	for i := range tasks {
		tasks[i].ID = f.id()
		a.Tasks = append(a.Tasks, tasks[i])
		out = append(out, map[string]any{"id": tasks[i].ID, "request_id": rids[i],
			"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/tasks/"+strconv.FormatInt(tasks[i].ID, 10))}}})
	}
	writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{
		"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/tasks")}}, "_embedded": map[string]any{"tasks": out}})
}

func (f *AmoCRM) serveFindTasks(w http.ResponseWriter, r *http.Request, a *amoAccount) {
	q := r.URL.Query()
	var items []map[string]any
	for _, t := range a.Tasks {
		if v := q.Get("filter[entity_type]"); v != "" && v != t.EntityType {
			continue
		}
		if ids := q["filter[entity_id][]"]; len(ids) > 0 && !slices.Contains(ids, strconv.FormatInt(t.EntityID, 10)) {
			continue
		}
		if types := q["filter[task_type][]"]; len(types) > 0 && !slices.Contains(types, strconv.Itoa(t.TaskTypeID)) {
			continue
		}
		if v := q.Get("filter[is_completed]"); v != "" && (v == "1") != t.IsCompleted {
			continue
		}
		var m map[string]any
		b, _ := json.Marshal(t)
		_ = json.Unmarshal(b, &m)
		m["account_id"] = a.ID
		items = append(items, m)
	}
	f.page(w, r, a, "tasks", items, true)
}

func (f *AmoCRM) serveEvents(w http.ResponseWriter, a *amoAccount, body []byte) {
	var in struct {
		Add []struct {
			Type        string  `json:"type"`
			PhoneNumber string  `json:"phone_number"`
			Users       []int64 `json:"users"`
		} `json:"add"`
	}
	if err := json.Unmarshal(body, &in); err != nil || len(in.Add) == 0 {
		f.violation("the body is not {\"add\": [...]} with at least one item")
		f.problem(w, http.StatusBadRequest, "Bad Request", "Request data can not be empty", nil)
		return
	}
	n := 10
	if f.o.Flavor == "kommo" {
		n = 8 // Kommo matches pop-ups on the last 8 digits
	}
	var items []map[string]any
	for _, e := range in.Add {
		if e.Type != "phone_call" || e.PhoneNumber == "" {
			f.violation("type must be phone_call and phone_number is required")
			f.problem(w, http.StatusBadRequest, "Bad Request", "type must be phone_call and phone_number is required", nil)
			return
		}
		for _, u := range e.Users {
			f.checkUser(a, "users", json.RawMessage(strconv.FormatInt(u, 10)))
		}
		ev := AmoEvent{Type: e.Type, PhoneNumber: e.PhoneNumber, Users: e.Users, At: f.o.Now().Unix()}
		item := map[string]any{"element_id": nil, "element_type": nil, "uid": randToken("")[:32], "phone_number": e.PhoneNumber}
		want := lastN(e.PhoneNumber, n)
	match:
		for _, c := range a.Contacts {
			for _, p := range c.Phones {
				if !c.Hidden && len(want) >= 5 && lastN(p, n) == want {
					ev.ElementID = c.ID
					item["element_id"], item["element_type"] = c.ID, 1
					break match
				}
			}
		}
		a.Events = append(a.Events, ev)
		items = append(items, item)
	}
	if f.o.EventsAccepted {
		writeJSON(w, http.StatusAccepted, "application/hal+json", map[string]any{})
		return
	}
	writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{
		"_links": map[string]any{"self": map[string]string{"href": "/api/v2/events", "method": "post"}}, "_embedded": map[string]any{"items": items}})
}

func (f *AmoCRM) serveNotes(w http.ResponseWriter, a *amoAccount, path string, body []byte) {
	parts := strings.Split(strings.Trim(path, "/"), "/") // api v4 {entity} [id] notes
	if len(parts) < 4 || !slices.Contains([]string{"leads", "contacts", "companies", "customers"}, parts[2]) {
		f.problem(w, http.StatusNotFound, "Not Found", "Cannot POST "+path, nil)
		return
	}
	var scoped int64
	if len(parts) == 5 {
		id, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil {
			f.problem(w, http.StatusNotFound, "Not Found", "Cannot POST "+path, nil)
			return
		}
		scoped = id
	}
	items, ok := f.decodeItems(w, body)
	if !ok {
		return
	}
	type parsed struct {
		note AmoNote
		rid  string
	}
	var notes []parsed
	var invalid []amoValidation
	for i, raw := range items {
		var in struct {
			EntityID  int64           `json:"entity_id"`
			NoteType  string          `json:"note_type"`
			Params    json.RawMessage `json:"params"`
			CreatedBy json.RawMessage `json:"created_by"`
			RequestID json.RawMessage `json:"request_id"`
		}
		err := json.Unmarshal(raw, &in)
		rid := reqID(in.RequestID, i)
		var errs []map[string]any
		switch {
		case err != nil:
			errs = append(errs, map[string]any{"code": "InvalidType", "path": "", "detail": err.Error()})
		case in.NoteType == "" || (in.EntityID == 0 && scoped == 0):
			errs = append(errs, map[string]any{"code": "FieldMissing", "path": "note_type", "detail": "note_type and entity_id are required"})
		}
		errs = append(errs, unexpectedFields(raw, "", amoNoteFields)...)
		if scoped != 0 {
			in.EntityID = scoped
		}
		if in.EntityID != 0 && !a.hasEntity(parts[2], in.EntityID) {
			errs = append(errs, map[string]any{"code": "NotFound", "path": "entity_id", "detail": "Entity not found"})
		}
		if in.NoteType == "call_in" || in.NoteType == "call_out" {
			errs = append(errs, unexpectedFields(in.Params, "params.", amoCallNoteParams)...)
			var p struct {
				Duration   *int    `json:"duration"`
				Source     *string `json:"source"`
				CallStatus int     `json:"call_status"`
			}
			if err := json.Unmarshal(in.Params, &p); err != nil {
				errs = append(errs, map[string]any{"code": "InvalidType", "path": "params", "detail": err.Error()})
			}
			if p.Duration == nil || p.Source == nil {
				errs = append(errs, map[string]any{"code": "FieldMissing", "path": "params", "detail": "params.duration and params.source are required"})
			}
			if p.CallStatus < 0 || p.CallStatus > 8 {
				errs = append(errs, map[string]any{"code": "NotSupportedChoice", "path": "params.call_status", "detail": "The value you selected is not a valid choice."})
			}
		}
		if len(errs) > 0 {
			invalid = append(invalid, amoValidation{RequestID: rid, Errors: errs})
			continue
		}
		f.checkUser(a, "item "+rid+": created_by", in.CreatedBy)
		if in.NoteType == "call_in" || in.NoteType == "call_out" {
			var p struct {
				CallResponsible json.RawMessage `json:"call_responsible"`
			}
			_ = json.Unmarshal(in.Params, &p)
			f.checkUser(a, "item "+rid+": params.call_responsible", p.CallResponsible)
		}
		now := f.o.Now().Unix()
		notes = append(notes, parsed{rid: rid, note: AmoNote{EntityType: parts[2], EntityID: in.EntityID, NoteType: in.NoteType,
			Params: in.Params, CreatedAt: now, UpdatedAt: now}})
	}
	if len(invalid) > 0 {
		f.validationFailed(w, invalid)
		return
	}
	var out []map[string]any
	for _, n := range notes {
		n.note.ID = f.id()
		a.Notes = append(a.Notes, n.note)
		out = append(out, map[string]any{"id": n.note.ID, "entity_id": n.note.EntityID, "request_id": n.rid})
	}
	writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{"_embedded": map[string]any{"notes": out}})
}

// amoNoteFields are the fields of a POST /api/v4/{entity}/notes item (B.9).
var amoNoteFields = map[string]bool{"entity_id": true, "note_type": true, "params": true, "created_by": true, "created_at": true,
	"responsible_user_id": true, "updated_by": true, "is_need_to_trigger_digital_pipeline": true, "request_id": true}

// hasEntity reports whether the account has the entity (leads, contacts; companies and
// customers are not modelled and always exist).
func (a *amoAccount) hasEntity(kind string, id int64) bool {
	switch kind {
	case "leads":
		return a.lead(id) != nil
	case "contacts":
		return a.contact(id) != nil
	}
	return true
}

// DialerTo returns an http.Transport DialContext that sends every connection to addr, so a
// client configured with https-less base URL http://{sub}.amocrm.ru reaches the fake.
func DialerTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
}

// errNoAccount is returned by helpers for an unknown subdomain.
var errNoAccount = errors.New("fakecrm: no such fake account")

// ContactByPhone returns the first visible contact whose phone ends like number (last 10
// digits), for tests.
func (f *AmoCRM) ContactByPhone(sub, number string) (AmoContact, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.account(sub)
	if a == nil {
		return AmoContact{}, errNoAccount
	}
	for _, c := range a.Contacts {
		for _, p := range c.Phones {
			if lastN(p, 10) == lastN(number, 10) {
				return *c, nil
			}
		}
	}
	return AmoContact{}, fmt.Errorf("fakecrm: no contact with %s", number)
}

// addCallNote adds the call_in or call_out note amoCRM shows a logged call as, with the call's
// fields in params (uniq among them).
func (f *AmoCRM) addCallNote(a *amoAccount, c AmoCall) {
	typ := "call_in"
	if c.Direction == "outbound" {
		typ = "call_out"
	}
	params, _ := json.Marshal(map[string]any{"uniq": c.Uniq, "duration": c.Duration, "source": c.Source, "phone": c.Phone,
		"link": c.Link, "call_status": c.CallStatus, "call_result": c.CallResult})
	now := f.o.Now().Unix()
	a.Notes = append(a.Notes, AmoNote{ID: f.id(), EntityType: c.EntityType + "s", EntityID: c.EntityID, NoteType: typ,
		Params: params, CreatedAt: now, UpdatedAt: now, FromCall: true})
}

// serveFindNotes: GET /api/v4/{entity}/notes and /api/v4/{entity}/{id}/notes with
// filter[note_type] (one value or filter[note_type][]), filter[updated_at][from|to] (or
// filter[updated_at] for one second), page and limit; 204 when nothing matches.
func (f *AmoCRM) serveFindNotes(w http.ResponseWriter, r *http.Request, a *amoAccount, path string) {
	parts := strings.Split(strings.Trim(path, "/"), "/") // api v4 {entity} [id] notes
	if len(parts) < 4 || !slices.Contains([]string{"leads", "contacts", "companies", "customers"}, parts[2]) {
		f.problem(w, http.StatusNotFound, "Not Found", "Cannot GET "+path, nil)
		return
	}
	var scoped int64
	if len(parts) == 5 {
		id, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil {
			f.problem(w, http.StatusNotFound, "Not Found", "Cannot GET "+path, nil)
			return
		}
		scoped = id
	}
	q := r.URL.Query()
	types := append(q["filter[note_type]"], q["filter[note_type][]"]...)
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if v, err := strconv.ParseInt(q.Get("filter[updated_at]"), 10, 64); err == nil {
		from, to = v, v
	}
	if v, err := strconv.ParseInt(q.Get("filter[updated_at][from]"), 10, 64); err == nil {
		from = v
	}
	if v, err := strconv.ParseInt(q.Get("filter[updated_at][to]"), 10, 64); err == nil {
		to = v
	}
	var items []map[string]any
	for _, n := range a.Notes {
		if n.EntityType != parts[2] || (scoped != 0 && n.EntityID != scoped) || n.UpdatedAt < from || n.UpdatedAt > to ||
			(len(types) > 0 && !slices.Contains(types, n.NoteType)) {
			continue
		}
		items = append(items, map[string]any{"id": n.ID, "entity_id": n.EntityID, "note_type": n.NoteType,
			"params": n.Params, "created_at": n.CreatedAt, "updated_at": n.UpdatedAt, "account_id": a.ID})
	}
	f.page(w, r, a, "notes", items, false)
}
