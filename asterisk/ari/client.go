package ari

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// maxBody bounds a REST response body (a channel list of a very busy PBX stays far below).
const maxBody = 32 << 20

// Errors of the client. They are matched with errors.Is.
var (
	// ErrAuthFailed: Asterisk refused the credentials (HTTP 401).
	ErrAuthFailed = errors.New("authentication refused (HTTP 401): check the username and password in the config and in ari.conf")
	// ErrNotFound: the resource does not exist (HTTP 404).
	ErrNotFound = errors.New("not found (HTTP 404)")
	// ErrClosed: the Client or Stream was closed.
	ErrClosed = errors.New("ari: closed")
	// ErrDeadPeer: nothing arrived on the websocket (not even a pong) for PingInterval +
	// PingTimeout while the reader waited for it.
	ErrDeadPeer = errors.New("no message or pong from Asterisk within the keepalive bound")
	// ErrBinaryMessage is returned by Stream.Next for a binary websocket message (ARI sends
	// text); the stream stays usable.
	ErrBinaryMessage = errors.New("ari: binary websocket message ignored")
)

// HTTPError is a REST request Asterisk answered with a status other than 2xx. It matches
// ErrAuthFailed (401) and ErrNotFound (404) with errors.Is.
type HTTPError struct {
	Method     string
	Path       string // below /ari, e.g. "/endpoints/PJSIP/101"
	StatusCode int
	Message    string // ARI's {"message": ...}, else the start of the body
}

func (e *HTTPError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("ari: %s %s: HTTP %d: %s", e.Method, e.Path, e.StatusCode, msg)
}

// Is reports whether the status matches a sentinel of this package.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrAuthFailed:
		return e.StatusCode == http.StatusUnauthorized
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	}
	return false
}

// ConnectError is a failed websocket connection attempt. Stage is "dial" (no TCP/TLS
// connection), "auth" (HTTP 401) or "handshake" (any other refusal).
type ConnectError struct {
	Stage      string
	URL        string // without credentials
	StatusCode int    // of the handshake response, 0 when none
	Err        error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("ari: connecting to %s: %v", e.URL, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Client is a thin ARI client for one Asterisk: REST requests (each bounded by
// Options.RequestTimeout and the caller's context) and the events websocket (Connect). It holds
// no goroutine of its own; Close releases idle HTTP connections and is idempotent. A Client is
// safe for concurrent use.
type Client struct {
	opts Options
	base *url.URL
	auth string
	tr   *http.Transport
	hc   *http.Client
	m    *metrics

	mu     sync.Mutex
	closed bool
}

// NewClient validates opts and returns a Client. Metrics are not registered (NewSource does
// that); no environment variable is read, and no proxy is used.
func NewClient(opts Options) (*Client, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return newClient(opts, nil)
}

// newClient returns a Client that records its requests in m (nil: nowhere).
func newClient(opts Options, m *metrics) (*Client, error) {
	if m == nil {
		m = noMetrics
	}
	base, err := opts.baseURL()
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // never from the environment
		DialContext:           d.DialContext,
		TLSClientConfig:       opts.TLSConfig.Clone(),
		TLSHandshakeTimeout:   opts.ConnectTimeout,
		MaxIdleConns:          8,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false, // Asterisk speaks HTTP/1.1; the websocket needs it too
	}
	return &Client{
		opts: opts,
		base: base,
		auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(opts.Username+":"+opts.Password)),
		tr:   tr,
		hc: &http.Client{
			Transport: tr,
			// Never follow redirects: a redirect would carry the credentials elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		m: m,
	}, nil
}

// BaseURL returns the REST base URL (".../ari"), without credentials.
func (c *Client) BaseURL() string { return c.base.String() }

// Close releases idle connections; requests made afterwards fail with ErrClosed. Streams
// already connected stay open until their own Close. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.tr.CloseIdleConnections()
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// endpointURL returns the URL of path segments below the base, each escaped on its own (a
// device name "PJSIP/101" stays one segment).
func (c *Client) endpointURL(segs []string, q url.Values) (string, string) {
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	u := *c.base
	u.RawPath = u.Path + b.String()
	u.Path = u.Path + "/" + strings.Join(segs, "/")
	u.RawQuery = q.Encode()
	return u.String(), b.String()
}

// do performs one REST request: name is the request template for the metrics, out (when not
// nil) receives the decoded JSON body of a 2xx answer.
func (c *Client) do(ctx context.Context, method, name string, segs []string, q url.Values, body, out any) error {
	if c.isClosed() {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	u, path := c.endpointURL(segs, q)
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("ari: %s %s: encoding the body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("ari: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.m.request(name, 0, time.Since(start))
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return fmt.Errorf("ari: %s %s: no answer within %v: %w", method, path, c.opts.RequestTimeout, err)
		}
		return fmt.Errorf("ari: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	c.m.request(name, resp.StatusCode, time.Since(start))
	if err != nil {
		return fmt.Errorf("ari: %s %s: reading the answer: %w", method, path, err)
	}
	if len(data) > maxBody {
		return fmt.Errorf("ari: %s %s: answer larger than %d bytes", method, path, maxBody)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &HTTPError{Method: method, Path: path, StatusCode: resp.StatusCode, Message: errorMessage(data)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("ari: %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// errorMessage extracts ARI's {"message": "..."} or the start of a body.
func errorMessage(data []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &m) == nil && m.Message != "" {
		return transport.Truncate(m.Message, 200)
	}
	s := strings.TrimSpace(string(data))
	return transport.Truncate(strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s), 200)
}

// AsteriskInfo is what GET /asterisk/info tells about the PBX.
type AsteriskInfo struct {
	Version  string // e.g. "22.1.0"
	EntityID string
}

// Info returns the Asterisk version (GET /asterisk/info).
func (c *Client) Info(ctx context.Context) (AsteriskInfo, error) {
	var raw struct {
		System struct {
			Version  string `json:"version"`
			EntityID string `json:"entity_id"`
		} `json:"system"`
	}
	if err := c.do(ctx, http.MethodGet, "GET /asterisk/info", []string{"asterisk", "info"}, nil, nil, &raw); err != nil {
		return AsteriskInfo{}, err
	}
	return AsteriskInfo{Version: raw.System.Version, EntityID: raw.System.EntityID}, nil
}

// Channels returns every channel Asterisk has now (GET /channels), each as its JSON object
// (decode with Snapshot).
func (c *Client) Channels(ctx context.Context) ([]json.RawMessage, error) {
	var out []json.RawMessage
	err := c.do(ctx, http.MethodGet, "GET /channels", []string{"channels"}, nil, nil, &out)
	return out, err
}

// ChannelInfo is the part of an ARI channel object the client reads.
type ChannelInfo struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
}

// Channel returns one channel (GET /channels/{id}); a channel that no longer exists matches
// ErrNotFound.
func (c *Client) Channel(ctx context.Context, id string) (ChannelInfo, error) {
	var ch ChannelInfo
	err := c.do(ctx, http.MethodGet, "GET /channels/{id}", []string{"channels", id}, nil, nil, &ch)
	return ch, err
}

// ChannelVar returns a channel variable or dialplan function of a channel (GET
// /channels/{id}/variable), e.g. "CHANNEL(linkedid)"; a channel that no longer exists, or a
// variable that is not set, matches ErrNotFound.
func (c *Client) ChannelVar(ctx context.Context, id, name string) (string, error) {
	var v struct {
		Value string `json:"value"`
	}
	q := url.Values{}
	q.Set("variable", name)
	err := c.do(ctx, http.MethodGet, "GET /channels/{id}/variable", []string{"channels", id, "variable"}, q, nil, &v)
	return v.Value, err
}

// Bridge is the part of an ARI bridge object the client reads.
type Bridge struct {
	ID          string   `json:"id"`
	Technology  string   `json:"technology"`
	BridgeType  string   `json:"bridge_type"`
	BridgeClass string   `json:"bridge_class"`
	Channels    []string `json:"channels"`
}

// Bridges returns every bridge Asterisk has now (GET /bridges).
func (c *Client) Bridges(ctx context.Context) ([]Bridge, error) {
	var out []Bridge
	err := c.do(ctx, http.MethodGet, "GET /bridges", []string{"bridges"}, nil, nil, &out)
	return out, err
}

// Endpoint is an ARI endpoint (a PJSIP/SIP/IAX2 peer).
type Endpoint struct {
	Technology string   `json:"technology"`
	Resource   string   `json:"resource"`
	State      string   `json:"state"` // "online", "offline", "unknown"
	ChannelIDs []string `json:"channel_ids"`
}

// Endpoint returns one endpoint (GET /endpoints/{tech}/{resource}); an unknown one matches
// ErrNotFound.
func (c *Client) Endpoint(ctx context.Context, tech, resource string) (Endpoint, error) {
	var ep Endpoint
	err := c.do(ctx, http.MethodGet, "GET /endpoints/{tech}/{resource}", []string{"endpoints", tech, resource}, nil, nil, &ep)
	return ep, err
}

// DeviceState returns Asterisk's device state of a device such as "PJSIP/101" (GET
// /deviceStates/{name}): NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE,
// ONHOLD or UNKNOWN. Asterisk without res_ari_device_states answers 404 (ErrNotFound).
func (c *Client) DeviceState(ctx context.Context, device string) (string, error) {
	var ds struct {
		State string `json:"state"`
	}
	err := c.do(ctx, http.MethodGet, "GET /deviceStates/{name}", []string{"deviceStates", device}, nil, nil, &ds)
	return ds.State, err
}

// OriginateParams is a POST /channels request that dials Endpoint and, once it answers,
// continues it in the dialplan at Context/Extension/Priority.
type OriginateParams struct {
	Endpoint  string // dial string, e.g. "PJSIP/101" or "Local/101@from-internal"
	Extension string
	Context   string
	Priority  int
	CallerID  string        // e.g. `"Ivan" <101>`
	Timeout   time.Duration // ring time; rounded up to whole seconds, 0: Asterisk's default (30 s)
	Variables map[string]string
}

// Originate creates a channel (POST /channels) and returns it. Asterisk answers as soon as the
// channel exists; the dial outcome arrives later on the events websocket.
func (c *Client) Originate(ctx context.Context, p OriginateParams) (ChannelInfo, error) {
	q := url.Values{}
	q.Set("endpoint", p.Endpoint)
	q.Set("extension", p.Extension)
	if p.Context != "" {
		q.Set("context", p.Context)
	}
	if p.Priority > 0 {
		q.Set("priority", strconv.Itoa(p.Priority))
	}
	if p.CallerID != "" {
		q.Set("callerId", p.CallerID)
	}
	if p.Timeout > 0 {
		q.Set("timeout", strconv.Itoa(int(math.Ceil(p.Timeout.Seconds()))))
	}
	body := struct {
		Variables map[string]string `json:"variables,omitempty"`
	}{p.Variables}
	var ch ChannelInfo
	err := c.do(ctx, http.MethodPost, "POST /channels", []string{"channels"}, q, body, &ch)
	return ch, err
}

// eventsURL is the websocket URL of the events stream (no credentials).
func (c *Client) eventsURL() string {
	u := *c.base
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path += "/events"
	u.RawPath = ""
	q := url.Values{}
	q.Set("app", c.opts.App)
	q.Set("subscribeAll", "true")
	u.RawQuery = q.Encode()
	return u.String()
}

// Connect opens the events websocket (GET /events?app=…&subscribeAll=true). ctx and
// Options.ConnectTimeout bound only the dial and handshake; the Stream lives until its Close.
// Errors are *ConnectError; a refused login matches ErrAuthFailed.
func (c *Client) Connect(ctx context.Context) (*Stream, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	u := c.eventsURL()
	st := newStream(c.opts)
	start := time.Now()
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{ //nolint:bodyclose // the library closes the handshake body
		HTTPClient: &http.Client{
			Transport:     c.tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		HTTPHeader:     http.Header{"Authorization": {c.auth}},
		OnPongReceived: st.onPong,
	})
	if err != nil {
		_ = st.Close() // releases its timer and context; nothing was started
		ce := &ConnectError{Stage: "dial", URL: u, Err: err}
		if resp != nil {
			c.m.request("GET /events", resp.StatusCode, time.Since(start))
			ce.StatusCode = resp.StatusCode
			var msg string
			if resp.Body != nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
				msg = errorMessage(b)
			}
			switch {
			case resp.StatusCode == http.StatusUnauthorized:
				ce.Stage, ce.Err = "auth", ErrAuthFailed
			case resp.StatusCode != http.StatusSwitchingProtocols:
				ce.Stage = "handshake"
				he := &HTTPError{Method: http.MethodGet, Path: "/events", StatusCode: resp.StatusCode, Message: msg}
				ce.Err = fmt.Errorf("HTTP %d: %s (is ARI enabled in ari.conf and http.conf?): %w", resp.StatusCode, he.Message, he)
			default:
				ce.Stage = "handshake"
			}
		} else {
			c.m.request("GET /events", 0, time.Since(start))
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				ce.Err = fmt.Errorf("no connection within %v: %w", c.opts.ConnectTimeout, err)
			}
		}
		return nil, ce
	}
	c.m.request("GET /events", http.StatusSwitchingProtocols, time.Since(start))
	ws.SetReadLimit(MaxMessageSize)
	st.start(ws)
	return st, nil
}
