// Package httpclient builds the HTTP client every CRM adapter uses: resty on top of
// go-retryablehttp with the five settings docs/deps.md §2.3 makes mandatory:
//
//  1. no library loggers (a redacting slog logger of ours at debug level);
//  2. retryablehttp's PassthroughErrorHandler, so the last response and its body reach the caller;
//  3. Retry-After honoured only up to MaxRetryAfter; a longer wait is not slept here but returned
//     to the caller, who turns it into a crm.RateLimited error and lets the outbox wait;
//  4. a CheckRetry that retries a non-idempotent request (POST) only when it certainly never
//     reached the server (dial, DNS, TLS handshake errors) or on 429/503, which are refusals;
//  5. resty's own retries off (one retry layer).
//
// Every byte from the network is hostile, so the client also:
//
//   - follows a redirect only to the origin the request was sent to (or from http to https on the
//     same host), keeping method and body; any other redirect fails with a *RedirectError, so a
//     token in a header or body is never sent to another host;
//   - caps every response body at Options.MaxResponseBody (8 MiB by default): reading further
//     fails with a *BodyTooLargeError, whoever reads the body, and the cap also bounds a gzip
//     body after decompression.
//
// Long retries belong to the outbox; this layer only absorbs short blips.
package httpclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-resty/resty/v2"
	cleanhttp "github.com/hashicorp/go-cleanhttp"
	retryablehttp "github.com/hashicorp/go-retryablehttp"

	"github.com/pbxbridge/pbxbridge/crm"
)

// Options configure a client. The zero value is usable.
type Options struct {
	// Base is the underlying client (its Transport is typically instrumented by the daemon).
	// Nil means a pooled transport from go-cleanhttp.
	Base *http.Client
	// Timeout bounds one attempt (default 15 s).
	Timeout time.Duration
	// RetryMax is the number of short in-process retries (default 2; negative disables).
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the backoff between attempts (default 200 ms, 2 s).
	RetryWaitMin, RetryWaitMax time.Duration
	// MaxRetryAfter is the longest Retry-After this layer sleeps (default 5 s); a longer one ends
	// the attempts and is left to the caller (see RetryAfter).
	MaxRetryAfter time.Duration
	// Logger receives one debug line per attempt, with secrets redacted. Nil disables it.
	Logger *slog.Logger
	// UserAgent is sent with every request (default "pbxbridge").
	UserAgent string
	// MaxResponseBody caps every response body (default DefaultMaxResponseBody, 8 MiB; zero or
	// negative means the default: there is no way to lift the cap).
	MaxResponseBody int64
}

// New returns a resty client configured as described in the package comment.
func New(o Options) *resty.Client {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.RetryMax == 0 {
		o.RetryMax = 2
	}
	if o.RetryMax < 0 {
		o.RetryMax = 0
	}
	if o.RetryWaitMin <= 0 {
		o.RetryWaitMin = 200 * time.Millisecond
	}
	if o.RetryWaitMax <= 0 {
		o.RetryWaitMax = 2 * time.Second
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = 5 * time.Second
	}
	if o.UserAgent == "" {
		o.UserAgent = "pbxbridge"
	}
	if o.MaxResponseBody <= 0 {
		o.MaxResponseBody = DefaultMaxResponseBody
	}
	base := o.Base
	if base == nil {
		base = &http.Client{Transport: cleanhttp.DefaultPooledTransport()}
	}
	inner := *base
	inner.Timeout = o.Timeout
	next := inner.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	inner.Transport = &limitTransport{next: next, max: o.MaxResponseBody}
	// The retrying client hands every redirect up to the client resty drives, which checks it
	// (checkRedirect): each hop is then one retryable request of its own.
	inner.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	rc := retryablehttp.NewClient()
	rc.HTTPClient = &inner
	rc.Logger = nil // (1) never the library logger: it prints URLs with tokens
	rc.RetryMax = o.RetryMax
	rc.RetryWaitMin = o.RetryWaitMin
	rc.RetryWaitMax = o.RetryWaitMax
	rc.ErrorHandler = passthrough               // (2)
	rc.CheckRetry = checkRetry(o.MaxRetryAfter) // (3), (4)
	rc.Backoff = backoff
	if o.Logger != nil {
		log := o.Logger
		rc.RequestLogHook = func(_ retryablehttp.Logger, r *http.Request, attempt int) {
			if !log.Enabled(r.Context(), slog.LevelDebug) {
				return // the redacted URL costs more than the disabled line
			}
			log.Debug("crm request", "method", r.Method, "url", Redact(r.URL.String()), "attempt", attempt+1)
		}
	}

	outer := rc.StandardClient()
	outer.CheckRedirect = checkRedirect
	c := resty.NewWithClient(outer)
	c.SetRetryCount(0) // (5)
	c.SetLogger(discard{})
	c.SetDisableWarn(true)
	c.SetHeader("User-Agent", o.UserAgent)
	return c
}

// passthrough is retryablehttp's PassthroughErrorHandler, except that a response that comes with
// an error (the context ended just as it arrived) is closed and dropped: net/http would log
// "RoundTripper returned a response & error" to the global logger and leave its body open.
func passthrough(resp *http.Response, err error, _ int) (*http.Response, error) {
	if err != nil && resp != nil {
		_ = resp.Body.Close()
		return nil, err
	}
	return resp, err
}

// checkRetry decides whether to try again.
func checkRetry(maxWait time.Duration) retryablehttp.CheckRetry {
	return func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			if err == nil && resp != nil && errors.Is(context.Cause(ctx), crm.ErrLiveStale) {
				// A live action became stale while its request was out: the answer arrived and
				// is the caller's to read (it says whether a card is now shown; see
				// crm.LiveHandler and bitrix24/api.Limiter).
				return false, nil
			}
			return false, ctx.Err()
		}
		if err != nil {
			if isPermanentTransportError(err) {
				return false, nil
			}
			if idempotent(ctx) {
				return true, nil
			}
			return notSent(err), nil
		}
		switch resp.StatusCode {
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			// A refusal: the server did nothing, so even a POST can be repeated, but only if
			// the wait it asks for is short.
			if d, ok := RetryAfter(resp); ok && d > maxWait {
				return false, nil
			}
			return true, nil
		case http.StatusBadGateway, http.StatusGatewayTimeout, http.StatusInternalServerError:
			safe := resp.Request != nil && (resp.Request.Method == http.MethodGet || resp.Request.Method == http.MethodHead)
			return safe || idempotent(ctx), nil
		}
		return false, nil
	}
}

// backoff is retryablehttp's exponential backoff with full jitter, honouring Retry-After.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := RetryAfter(resp); ok {
			return d
		}
	}
	d := retryablehttp.LinearJitterBackoff(minWait, maxWait, attempt+1, resp)
	return d
}

// RetryAfter parses the Retry-After header of a 429 or 503 response (seconds or HTTP date).
func RetryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	h := resp.Header.Get("Retry-After")
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		d := time.Until(t)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

type idempotentKey struct{}

// Idempotent marks requests made with ctx as safe to repeat after an ambiguous failure (a
// transport error after the request may have been sent, or a 500/502/504): reads, and writes the
// CRM de-duplicates. Unmarked requests are repeated after such a failure only when the response
// shows they were GET or HEAD; after a transport error only when marked.
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

func idempotent(ctx context.Context) bool {
	v, _ := ctx.Value(idempotentKey{}).(bool)
	return v
}

// notSent reports whether err certainly happened before the request reached the server.
func notSent(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var hdrErr tls.RecordHeaderError
	return errors.As(err, &hdrErr)
}

// isPermanentTransportError reports errors no retry can fix (bad certificates, bad URLs).
func isPermanentTransportError(err error) bool {
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return true
	}
	var unknownAuth x509.UnknownAuthorityError
	if errors.As(err, &unknownAuth) {
		return true
	}
	var hostErr x509.HostnameError
	return errors.As(err, &hostErr)
}

// discard is a resty logger that drops everything (resty would otherwise log to stderr).
type discard struct{}

func (discard) Errorf(string, ...any) {}
func (discard) Warnf(string, ...any)  {}
func (discard) Debugf(string, ...any) {}

// StatusError describes an unexpected HTTP status with a short, redacted excerpt of the body.
func StatusError(resp *resty.Response) error {
	body := resp.Body()
	if len(body) > 300 {
		body = body[:300]
	}
	return fmt.Errorf("http %d: %s", resp.StatusCode(), Redact(string(body)))
}
