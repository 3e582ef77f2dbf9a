package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// maxTrace bounds the request and response excerpts given to crm.Trace.
const maxTrace = 2048

// Authenticator supplies the endpoint and credentials of REST calls.
type Authenticator interface {
	// Endpoint returns the REST base URL (ending in "/", e.g. https://portal/rest/ or the
	// webhook URL https://portal/rest/1/code/) and the access token to send as "auth" ("" for
	// a webhook). It returns ErrNotAuthorized or ErrReauthorize when no call can succeed.
	Endpoint(ctx context.Context) (base, token string, err error)
	// Refresh is called after the portal answered 401 expired_token to a request made with
	// token. It returns nil once a newer token is available, whoever fetched it.
	Refresh(ctx context.Context, token string) error
}

// Options configure a Client.
type Options struct {
	// HTTP sends the requests (crm/internal/httpclient, rate-limited transport).
	HTTP *resty.Client
	// Upload sends recording uploads (a longer timeout); nil means HTTP.
	Upload *resty.Client
	Auth   Authenticator
	// ObserveServerDate, when set, receives the Date header of every portal response.
	ObserveServerDate func(time.Time)
	// OnResponse, when set, is called once per REST call with its outcome (metrics).
	OnResponse func(Outcome)
}

// Outcome describes one finished REST call.
type Outcome struct {
	Method   string
	Status   int    // 0 when no response arrived
	Code     string // Bitrix24 error code, "" on success
	Duration time.Duration
	Err      error
}

// Client calls one portal's REST API. It is safe for concurrent use.
type Client struct {
	http    *resty.Client
	upload  *resty.Client
	auth    Authenticator
	observe func(time.Time)
	onResp  func(Outcome)
}

// New returns a client.
func New(o Options) (*Client, error) {
	if o.HTTP == nil || o.Auth == nil {
		return nil, errors.New("api: HTTP and Auth are required")
	}
	if o.Upload == nil {
		o.Upload = o.HTTP
	}
	return &Client{http: o.HTTP, upload: o.Upload, auth: o.Auth, observe: o.ObserveServerDate, onResp: o.OnResponse}, nil
}

// Meta is the part of the success envelope besides "result".
type Meta struct {
	Total int
	Next  int // 0 when there is no further page
	Time  Timing
}

// Timing is the "time" object of every response (A.1.2).
type Timing struct {
	Operating        float64 `json:"operating"`
	OperatingResetAt float64 `json:"operating_reset_at"`
}

// envelope is the union of the success and error envelopes.
type envelope struct {
	Result           json.RawMessage `json:"result"`
	Total            Int             `json:"total"`
	Next             Int             `json:"next"`
	Time             *Timing         `json:"time"`
	Error            *String         `json:"error"`
	ErrorDescription String          `json:"error_description"`
}

// DecodeEnvelope parses a REST response body with its HTTP status. It returns the raw result,
// or an *Error when the status or the body says the call failed. It never panics on bad input.
func DecodeEnvelope(method string, status int, body []byte) (json.RawMessage, Meta, error) {
	var env envelope
	jerr := json.Unmarshal(body, &env)
	if jerr != nil || (status >= 400 && env.Error == nil) {
		if status >= 200 && status < 300 {
			return nil, Meta{}, fmt.Errorf("%s: decoding response: %w", method, jerr)
		}
		return nil, Meta{}, &Error{Method: method, Status: status, Description: excerpt(body)}
	}
	if env.Error != nil {
		if status < 400 {
			// An error envelope with a success status (seen in batch answers): keep the code.
			status = http.StatusBadRequest
		}
		e := &Error{Method: method, Status: status, Code: string(*env.Error), Description: string(env.ErrorDescription)}
		if env.Time != nil && env.Time.OperatingResetAt > 0 && strings.EqualFold(e.Code, CodeOperationTimeLimit) {
			reset := time.Unix(int64(env.Time.OperatingResetAt), 0)
			if d := time.Until(reset); d > 0 {
				e.RetryAfter = d
			}
		}
		return nil, Meta{}, e
	}
	if status < 200 || status >= 300 {
		return nil, Meta{}, &Error{Method: method, Status: status, Description: excerpt(body)}
	}
	m := Meta{Total: int(env.Total), Next: int(env.Next)}
	if env.Time != nil {
		m.Time = *env.Time
	}
	return env.Result, m, nil
}

func excerpt(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return httpclient.Redact(strings.TrimSpace(string(b)))
}

// Call invokes a REST method with params (a value that marshals to a JSON object, or nil) and
// decodes "result" into out (nil to ignore it). On 401 expired_token it refreshes the token once
// and repeats the call.
func (c *Client) Call(ctx context.Context, method string, params, out any) (Meta, error) {
	body, err := json.Marshal(params)
	if err != nil {
		return Meta{}, fmt.Errorf("%s: encoding parameters: %w", method, err)
	}
	if params == nil || string(body) == "null" {
		body = []byte("{}")
	}
	if len(body) == 0 || body[0] != '{' {
		return Meta{}, fmt.Errorf("%s: parameters must be a JSON object", method)
	}
	for attempt := 0; ; attempt++ {
		raw, meta, token, err := c.do(ctx, method, body)
		if err != nil {
			if attempt == 0 && token != "" && IsCode(err, CodeExpiredToken) {
				crm.Trace(ctx, "decision", "access token expired: refreshing once and repeating "+method, "")
				if rerr := c.auth.Refresh(ctx, token); rerr != nil {
					return Meta{}, fmt.Errorf("%s: refreshing the access token: %w", method, rerr)
				}
				continue
			}
			return Meta{}, err
		}
		if out != nil && len(raw) > 0 {
			if err := json.Unmarshal(raw, out); err != nil {
				return meta, fmt.Errorf("%s: decoding result: %w", method, err)
			}
		}
		return meta, nil
	}
}

// do sends one request; it returns the token used so that Call can refresh it.
func (c *Client) do(ctx context.Context, method string, params []byte) (json.RawMessage, Meta, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, Meta{}, "", fmt.Errorf("%s: %w", method, err)
	}
	base, token, err := c.auth.Endpoint(ctx)
	if err != nil {
		return nil, Meta{}, "", fmt.Errorf("%s: %w", method, err)
	}
	body := params
	if token != "" {
		body = withAuth(params, token)
	}
	trace(ctx, "request", "POST "+method, params)
	start := time.Now()
	resp, err := c.http.R().
		SetContext(ctx).
		SetHeader("Content-Type", "application/json").
		SetHeader("Accept", "application/json").
		SetBody(body).
		Post(base + method + ".json")
	out := Outcome{Method: method, Duration: time.Since(start)}
	if err != nil {
		err = transportError(ctx, method, err)
		out.Err = err
		c.report(out)
		crm.Trace(ctx, "error", method+": "+err.Error(), "")
		return nil, Meta{}, token, err
	}
	c.observeDate(resp.Header())
	out.Status = resp.StatusCode()
	raw, meta, derr := DecodeEnvelope(method, resp.StatusCode(), resp.Body())
	if derr != nil {
		var e *Error
		if errors.As(derr, &e) {
			out.Code = e.Code
			if d, ok := httpclient.RetryAfter(resp.RawResponse); ok && e.RetryAfter == 0 {
				e.RetryAfter = d
			}
		}
		out.Err = derr
		c.report(out)
		trace(ctx, "response", method+": http "+strconv.Itoa(resp.StatusCode()), resp.Body())
		return nil, Meta{}, token, derr
	}
	c.report(out)
	trace(ctx, "response", method+": http "+strconv.Itoa(resp.StatusCode()), raw)
	return raw, meta, token, nil
}

func (c *Client) report(o Outcome) {
	if c.onResp != nil {
		c.onResp(o)
	}
}

func (c *Client) observeDate(h http.Header) {
	if c.observe == nil {
		return
	}
	if d := h.Get("Date"); d != "" {
		if t, err := http.ParseTime(d); err == nil {
			c.observe(t)
		}
	}
}

// withAuth inserts "auth":token into a JSON object.
func withAuth(obj []byte, token string) []byte {
	tok, _ := json.Marshal(token)
	var b bytes.Buffer
	b.Grow(len(obj) + len(tok) + 10)
	b.WriteString(`{"auth":`)
	b.Write(tok)
	rest := bytes.TrimSpace(obj[1:])
	if len(rest) > 0 && rest[0] != '}' {
		b.WriteByte(',')
	}
	b.Write(rest)
	return b.Bytes()
}

// transportError strips the URL (it may carry a webhook secret) from a transport error and
// keeps the cause (context errors stay matchable with errors.Is). It classifies what the shared
// client refuses (see classifyRefusal).
func transportError(ctx context.Context, method string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%s: %w (%s)", method, cerr, httpclient.Redact(err.Error()))
	}
	return classifyRefusal(fmt.Errorf("%s: %w", method, redactErr{err}))
}

// classifyRefusal classifies the answers the shared HTTP client refuses to read:
//
//   - a redirect away from the portal (*httpclient.RedirectError: a renamed portal, a proxy, an
//     http URL answered by a move to https) is crm.ClassAuth: no request can succeed until an
//     admin corrects the URL, so calls stay queued without burning attempts;
//   - an answer over the size cap (*httpclient.BodyTooLargeError) is crm.ClassTransient: the
//     portal or something in between misbehaved, and the outbox retries later.
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

// redactErr masks secrets in an error's text while keeping it matchable.
type redactErr struct{ err error }

func (r redactErr) Error() string { return httpclient.Redact(r.err.Error()) }
func (r redactErr) Unwrap() error { return r.err }

// trace records a request or response step with the body's start, redacted.
func trace(ctx context.Context, kind, summary string, body []byte) {
	if !crm.Tracing(ctx) {
		return
	}
	crm.Trace(ctx, kind, summary, traceBody(body))
}

func traceBody(b []byte) string {
	if len(b) > maxTrace {
		return httpclient.Redact(string(b[:maxTrace])) + "…(truncated)"
	}
	return httpclient.Redact(string(b))
}
