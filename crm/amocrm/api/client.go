// Package api is a thin typed client of the amoCRM / Kommo API v4 (docs/crm-apis.md Parts B and C):
// the requests the pbxbridge adapter makes, their JSON shapes, the error model and the decoders.
// It knows nothing about calls records or configuration; package amocrm maps records onto it.
//
// Every request waits on the account's shared Limiter (with its context's Priority; after a 429
// the account pauses and the refused request is sent again first), carries the bearer token from an
// Authorizer (which refreshes it once on 401), reports the server's Date header, and is traced
// (crm.Trace, redacted). Non-2xx answers come back as *Error. After a 403 that follows 429s the
// client assumes the IP is blocked and refuses further requests locally for BlockPause, so that
// it does not prolong the block. What the shared HTTP client refuses to read comes back already
// classified: a redirect away from the account (not followed, so the token is not resent) is
// crm.ClassAuth, an answer over the size cap crm.ClassTransient. A Client is safe for concurrent
// use.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// Authorizer supplies bearer tokens.
type Authorizer interface {
	// AccessToken returns the token to send.
	AccessToken(ctx context.Context) (string, error)
	// Rejected is told that token got 401. It refreshes the token (once for all concurrent
	// callers) and returns the new one, or an error when the authorisation is broken.
	Rejected(ctx context.Context, token string) (string, error)
	// Accepted is told that token was accepted by the API (confirms a rotated grant).
	Accepted(token string)
}

// Options configure a Client.
type Options struct {
	// BaseURL is the account's API root, e.g. https://romashka.amocrm.ru (no trailing slash).
	BaseURL string
	// HTTP is the client built by crm/internal/httpclient.
	HTTP *resty.Client
	// Limiter is the account's shared limiter (nil: no client-side limit). A request waits on it
	// with its context's priority (WithPriority); after a 429 it pauses the whole account and the
	// refused request is sent again first when the pause ends (unless WithoutRetry).
	Limiter *Limiter
	// Auth supplies tokens; nil sends no Authorization header (token endpoint only).
	Auth Authorizer
	// ObserveDate is given each response's Date header (nil: ignored).
	ObserveDate func(time.Time)
	// BlockPause is how long the client stops sending after a 403 that follows 429s
	// (default 10 minutes).
	BlockPause time.Duration
	// OnThrottle is told about each 429 (blocked=false) and each detected block (true).
	OnThrottle func(status int, blocked bool)
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Client talks to one amoCRM/Kommo account.
type Client struct {
	o Options

	mu           sync.Mutex
	last429      time.Time
	blockedUntil time.Time
}

// New returns a Client.
func New(o Options) *Client {
	if o.BlockPause <= 0 {
		o.BlockPause = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	return &Client{o: o}
}

// BaseURL returns the account's API root.
func (c *Client) BaseURL() string { return c.o.BaseURL }

// BlockedUntil returns when a detected block is assumed to end (zero when not blocked).
func (c *Client) BlockedUntil() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.o.Now().After(c.blockedUntil) {
		return time.Time{}
	}
	return c.blockedUntil
}

// block429Window: a 403 within this time after a 429 is read as a block for repeated 429s.
const block429Window = 5 * time.Minute

// do sends one request and decodes a 2xx JSON body into out. It returns the HTTP status; 204
// leaves out untouched.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) (int, error) {
	permit := permitFrom(ctx)
	if err := ctx.Err(); err != nil {
		permit.cancel()
		return 0, err
	}
	if until := c.BlockedUntil(); !until.IsZero() {
		permit.cancel()
		return 0, &Error{Method: method, Path: path, Blocked: true, RetryAfter: until.Sub(c.o.Now())}
	}
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			permit.cancel()
			return 0, fmt.Errorf("%s %s: encoding request: %w", method, path, err)
		}
	}
	target := c.o.BaseURL + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	summary := method + " " + path
	trace(ctx, "request", summary, payload)

	prio := PriorityOf(ctx)
	var token string
	refreshed := false
	for refused := 0; ; {
		if permit == nil && c.o.Limiter != nil {
			var err error
			if permit, err = c.o.Limiter.Acquire(ctx, prio); err != nil {
				var pe *PausedError
				if errors.As(err, &pe) {
					return 0, &Error{Method: method, Path: path, Paused: true, RetryAfter: pe.RetryAfter}
				}
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				return 0, fmt.Errorf("%s: waiting for the rate limiter: %w", summary, err)
			}
		}
		req := c.o.HTTP.R().SetContext(ctx).SetHeader("Accept", "application/json")
		if payload != nil {
			req.SetHeader("Content-Type", "application/json").SetBody(payload)
		}
		if c.o.Auth != nil {
			if token == "" {
				var err error
				if token, err = c.o.Auth.AccessToken(ctx); err != nil {
					permit.cancel()
					return 0, err
				}
			}
			req.SetHeader("Authorization", "Bearer "+token)
		}
		resp, err := req.Execute(method, target)
		if err != nil {
			permit.release(false, 0)
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			crm.Trace(ctx, "error", summary, httpclient.Redact(err.Error()))
			return 0, classifyRefusal(fmt.Errorf("%s: %w", summary, redactErr(err)))
		}
		c.observeDate(resp.Header())
		status := resp.StatusCode()
		trace(ctx, "response", strconv.Itoa(status)+" "+summary, resp.Body())
		if status == http.StatusUnauthorized && c.o.Auth != nil && !refreshed {
			permit.release(false, 0)
			permit, refreshed = nil, true
			if token, err = c.o.Auth.Rejected(ctx, token); err != nil {
				return status, err
			}
			continue
		}
		if status >= 200 && status < 300 {
			permit.release(false, 0)
			if c.o.Auth != nil {
				c.o.Auth.Accepted(token)
			}
			if status == http.StatusNoContent || out == nil || len(resp.Body()) == 0 {
				return status, nil
			}
			if err := decodeAnswer(resp.Body(), out); err != nil {
				return status, fmt.Errorf("%s: %w", summary, err)
			}
			return status, nil
		}
		e := DecodeError(status, resp.Body(), resp.Header().Get("Retry-After"))
		e.Method, e.Path = method, path
		permit.release(status == http.StatusTooManyRequests, e.RetryAfter)
		permit = nil
		c.throttle(e)
		if status == http.StatusTooManyRequests && c.o.Limiter != nil && !noRetry(ctx) && refused < maxRefusals {
			// The whole account pauses (Limiter); this request goes first when it resumes, if
			// its context lasts that long (else Acquire refuses it at once with the pause left).
			refused++
			prio = PriorityRetry
			crm.Trace(ctx, "decision", "429: the account pauses", fmt.Sprintf("amoCRM refused %s (retry_after %v); sending it again first when the pause ends", summary, e.RetryAfter.Round(time.Second)))
			continue
		}
		return status, e
	}
}

// maxRefusals bounds how often one request is sent again after a 429: once, as the probe when
// the pause ends; a second 429 goes back to the caller with the new pause as its retry-after.
const maxRefusals = 1

type permitKey struct{}
type noRetryKey struct{}

// WithPermit returns a context whose next request uses p instead of waiting for the limiter
// (a caller that acquired the slot itself, to decide what to send once it has one). The request
// releases p.
func WithPermit(ctx context.Context, p *Permit) context.Context {
	return context.WithValue(ctx, permitKey{}, p)
}

// PermitFrom returns the permit WithPermit put in ctx (nil when none).
func PermitFrom(ctx context.Context) *Permit { return permitFrom(ctx) }

func permitFrom(ctx context.Context) *Permit {
	p, _ := ctx.Value(permitKey{}).(*Permit)
	return p
}

// WithoutRetry returns a context whose request is not sent again after a 429: the caller decides
// (pop-ups, whose moment may pass during the pause).
func WithoutRetry(ctx context.Context) context.Context {
	return context.WithValue(ctx, noRetryKey{}, true)
}

func noRetry(ctx context.Context) bool {
	v, _ := ctx.Value(noRetryKey{}).(bool)
	return v
}

func (c *Client) throttle(e *Error) {
	switch e.HTTPStatus {
	case http.StatusTooManyRequests:
		c.mu.Lock()
		c.last429 = c.o.Now()
		c.mu.Unlock()
		if c.o.OnThrottle != nil {
			c.o.OnThrottle(e.HTTPStatus, false)
		}
	case http.StatusForbidden:
		c.mu.Lock()
		now := c.o.Now()
		recent := !c.last429.IsZero() && now.Sub(c.last429) < block429Window
		if recent || e.Excerpt != "" {
			// Repeated 429s end in a 403 block (B.4); a plain-text 403 is the same block
			// seen from a proxy. Stop sending for a while so the block is not prolonged.
			e.Blocked = true
			c.blockedUntil = now.Add(c.o.BlockPause)
			e.RetryAfter = c.o.BlockPause
		}
		c.mu.Unlock()
		if e.Blocked && c.o.OnThrottle != nil {
			c.o.OnThrottle(e.HTTPStatus, true)
		}
	}
}

func (c *Client) observeDate(h http.Header) {
	if c.o.ObserveDate == nil {
		return
	}
	if t, err := http.ParseTime(h.Get("Date")); err == nil {
		c.o.ObserveDate(t)
	}
}

// redactErr keeps the error chain (context errors, net errors) while hiding URLs with secrets.
// A refused redirect loses the URL: it is the Location the server chose, and the
// *httpclient.RedirectError names its origin.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		var re *httpclient.RedirectError
		if errors.As(ue.Err, &re) {
			return ue.Err
		}
		return &url.Error{Op: ue.Op, URL: httpclient.Redact(ue.URL), Err: ue.Err}
	}
	return err
}

// classifyRefusal classifies the answers the shared HTTP client refuses to read:
//
//   - a redirect away from the account's origin (*httpclient.RedirectError: a renamed subdomain,
//     a proxy, an http URL answered by a move to https) is crm.ClassAuth: no request can succeed
//     until an admin corrects the URL, so calls stay queued without burning attempts;
//   - an answer over the size cap (*httpclient.BodyTooLargeError) is crm.ClassTransient: the
//     server or something in between misbehaved, and the outbox retries later.
//
// Other errors are returned as they are.
func classifyRefusal(err error) error {
	var re *httpclient.RedirectError
	if errors.As(err, &re) {
		return crm.AuthBroken(err)
	}
	var tl *httpclient.BodyTooLargeError
	if errors.As(err, &tl) {
		return crm.Transient(err)
	}
	return err
}

// maxTrace bounds the request and response excerpts given to crm.Trace.
const maxTrace = 4096

// trace records a request or response step with the body's start, redacted.
func trace(ctx context.Context, kind, summary string, body []byte) {
	if !crm.Tracing(ctx) {
		return
	}
	crm.Trace(ctx, kind, summary, traceExcerpt(body))
}

func traceExcerpt(b []byte) string {
	if len(b) > maxTrace {
		return httpclient.Redact(string(b[:maxTrace])) + "…"
	}
	return httpclient.Redact(string(b))
}

// decodeAnswer decodes a 2xx JSON answer into out (one of the answer types below).
func decodeAnswer(body []byte, out any) error {
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	return nil
}

// Paths of the endpoints used.
const (
	PathToken    = "/oauth2/access_token" //nolint:gosec // a path, not a credential
	PathAccount  = "/api/v4/account"
	PathUsers    = "/api/v4/users"
	PathContacts = "/api/v4/contacts"
	PathCalls    = "/api/v4/calls"
	PathUnsorted = "/api/v4/leads/unsorted/sip"
	// PathUnsortedList lists incoming leads.
	PathUnsortedList = "/api/v4/leads/unsorted"
	PathTasks        = "/api/v4/tasks"
	PathEvents       = "/api/v2/events"
)

// ExchangeToken calls the token endpoint (code exchange or refresh). Errors are *Error with the
// OAuth hint; the caller treats any 4xx but 429 as "re-authorisation required".
func (c *Client) ExchangeToken(ctx context.Context, r TokenRequest) (*Token, error) {
	var t Token
	if _, err := c.do(ctx, http.MethodPost, PathToken, nil, r, &t); err != nil {
		return nil, err
	}
	if t.AccessToken == "" {
		return nil, fmt.Errorf("%s %s: answer has no access_token", http.MethodPost, PathToken)
	}
	return &t, nil
}

// Account returns the account the token belongs to.
func (c *Client) Account(ctx context.Context) (*Account, error) {
	var a Account
	status, err := c.do(httpclient.Idempotent(ctx), http.MethodGet, PathAccount, nil, nil, &a)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNoContent || a.ID == 0 {
		return nil, fmt.Errorf("GET %s: answer has no account id", PathAccount)
	}
	return &a, nil
}

// Users lists all users (every page), with their phone numbers when withPhone.
func (c *Client) Users(ctx context.Context, withPhone bool) ([]User, error) {
	var all []User
	for page := 1; page <= 100; page++ {
		q := url.Values{"page": {strconv.Itoa(page)}, "limit": {"250"}}
		if withPhone {
			q.Set("with", "phone_number")
		}
		var r usersPage
		status, err := c.do(httpclient.Idempotent(ctx), http.MethodGet, PathUsers, q, nil, &r)
		if err != nil {
			return nil, err
		}
		if status == http.StatusNoContent {
			break
		}
		all = append(all, r.Embedded.Users...)
		if r.Links.Next == nil || len(r.Embedded.Users) == 0 {
			break
		}
	}
	return all, nil
}

// FindContacts searches contacts by free text (a phone number's digits), with their leads.
// No match is an empty result (amoCRM answers 204).
func (c *Client) FindContacts(ctx context.Context, query string, limit int) ([]Contact, error) {
	q := url.Values{"query": {query}, "with": {"leads"}, "limit": {strconv.Itoa(limit)}}
	var r contactsPage
	if _, err := c.do(httpclient.Idempotent(ctx), http.MethodGet, PathContacts, q, nil, &r); err != nil {
		return nil, err
	}
	return r.Embedded.Contacts, nil
}

// AddContacts creates contacts; the answer maps request_id to the new ids.
func (c *Client) AddContacts(ctx context.Context, items []NewContact) (*CreatedIDs, error) {
	var r CreatedIDs
	if _, err := c.do(ctx, http.MethodPost, PathContacts, nil, items, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// AddCalls logs calls. The result lists placed calls and per-item failures; a 400 whose body
// only carries per-item errors (all items failed, e.g. 263 Entity not found) is returned as a
// result, not an error. Any other failure (validation errors, 401, 429, 5xx) is an *Error or a
// transport error and concerns the whole batch.
func (c *Client) AddCalls(ctx context.Context, items []Call) (*CallsResult, error) {
	var r CallsResult
	_, err := c.do(ctx, http.MethodPost, PathCalls, nil, items, &r)
	var e *Error
	if errors.As(err, &e) && e.HTTPStatus == http.StatusBadRequest && len(e.Items) > 0 && len(e.Validation) == 0 {
		return &CallsResult{Errors: e.Items}, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// AddUnsortedSIP creates incoming leads from calls.
func (c *Client) AddUnsortedSIP(ctx context.Context, items []UnsortedSIP) (*UnsortedResult, error) {
	var r UnsortedResult
	if _, err := c.do(ctx, http.MethodPost, PathUnsorted, nil, items, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListUnsorted lists one page (pages from 1, at most limit ≤ 250 items) of the incoming leads
// still waiting in Incoming, newest first: those with the given uid when uid is not "", else
// those of the category (sip, forms, mail, chats). No item is an empty result (204).
func (c *Client) ListUnsorted(ctx context.Context, uid, category string, page, limit int) ([]UnsortedItem, error) {
	q := url.Values{"page": {strconv.Itoa(page)}, "limit": {strconv.Itoa(limit)}, "order[created_at]": {"desc"}}
	if uid != "" {
		q.Set("filter[uid]", uid)
	}
	if category != "" {
		q.Set("filter[category][]", category)
	}
	var r unsortedPage
	if _, err := c.do(httpclient.Idempotent(ctx), http.MethodGet, PathUnsortedList, q, nil, &r); err != nil {
		return nil, err
	}
	return r.Embedded.Unsorted, nil
}

// AddCallNotes adds call_in / call_out notes to entities of one type (leads, contacts, ...).
func (c *Client) AddCallNotes(ctx context.Context, entityPlural string, notes []NewCallNote) (*CreatedIDs, error) {
	var r CreatedIDs
	if _, err := c.do(ctx, http.MethodPost, "/api/v4/"+entityPlural+"/notes", nil, notes, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// AddTasks creates tasks.
func (c *Client) AddTasks(ctx context.Context, items []Task) (*CreatedIDs, error) {
	var r CreatedIDs
	if _, err := c.do(ctx, http.MethodPost, PathTasks, nil, items, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// FindCallTasks lists the call tasks (type 1) linked to an entity (first 250).
func (c *Client) FindCallTasks(ctx context.Context, entityType string, entityID int64) ([]Task, error) {
	q := url.Values{
		"filter[entity_type]":  {entityType},
		"filter[entity_id][]":  {strconv.FormatInt(entityID, 10)},
		"filter[task_type][]":  {strconv.Itoa(TaskTypeCall)},
		"filter[is_completed]": {"0"},
		"limit":                {"250"},
	}
	var r tasksPage
	if _, err := c.do(httpclient.Idempotent(ctx), http.MethodGet, PathTasks, q, nil, &r); err != nil {
		return nil, err
	}
	return r.Embedded.Tasks, nil
}

// CallNote is a call_in or call_out note: how amoCRM shows a logged call on its entity.
type CallNote struct {
	ID        int64  `json:"id"`
	EntityID  int64  `json:"entity_id"`
	NoteType  string `json:"note_type"`
	UpdatedAt int64  `json:"updated_at"`
	// Uniq is params.uniq: the uniq the call was logged with.
	Uniq string `json:"-"`
}

// Note types of logged calls.
const (
	NoteCallIn  = "call_in"
	NoteCallOut = "call_out"
)

// CallNotes lists one page (up to 250, pages from 1) of the call notes on entities of one type
// (leads, contacts, companies, customers) updated at or after since: GET
// /api/v4/{entity}/notes with filter[note_type] and filter[updated_at][from]. more says a next
// page may exist. No note is an empty result (amoCRM answers 204).
func (c *Client) CallNotes(ctx context.Context, entityPlural string, since time.Time, page int) (notes []CallNote, more bool, err error) {
	const limit = 250
	q := url.Values{
		"filter[note_type][]":      {NoteCallIn, NoteCallOut},
		"filter[updated_at][from]": {strconv.FormatInt(since.Unix(), 10)},
		"page":                     {strconv.Itoa(page)},
		"limit":                    {strconv.Itoa(limit)},
	}
	var r notesPage
	if _, err := c.do(httpclient.Idempotent(ctx), http.MethodGet, "/api/v4/"+entityPlural+"/notes", q, nil, &r); err != nil {
		return nil, false, err
	}
	return r.callNotes(), len(r.Embedded.Notes) == limit, nil
}

// AddEvents shows incoming-call pop-ups (API v2; 200 or 202).
func (c *Client) AddEvents(ctx context.Context, items []Event) error {
	_, err := c.do(ctx, http.MethodPost, PathEvents, nil, map[string]any{"add": items}, nil)
	return err
}
