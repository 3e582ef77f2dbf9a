package httpclient

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// maxRedirects bounds the redirects followed for one request.
const maxRedirects = 5

// RedirectError is a redirect the client refused to follow. Every CRM request carries a
// credential (an Authorization header, a token in the body or the query, a webhook secret in the
// path) or call data, so the client follows a redirect only to the origin it was sent to (the
// same scheme, host and port), or from http to https on the same host with default ports, and
// only when the method and body stay the same. Go's client would resend a 307/308 body, token
// included, to any host, and turn a POST answered 301/302/303 into a GET without its body.
type RedirectError struct {
	Status int    // the 3xx status of the answer
	Method string // the method of the request that was redirected
	From   string // origin the request went to: scheme://host:port
	To     string // origin of the Location: scheme://host:port
	// Reason is one of the Redirect* constants.
	Reason string
}

// Reasons of a RedirectError.
const (
	RedirectOtherHost = "other host"
	RedirectMethod    = "method change"
	RedirectTooMany   = "too many redirects"
)

func (e *RedirectError) Error() string {
	switch e.Reason {
	case RedirectMethod:
		return fmt.Sprintf("redirected (http %d) to %s; a %s would be resent as GET without its body, not following (use the final URL in the configuration)",
			e.Status, e.To, e.Method)
	case RedirectTooMany:
		return fmt.Sprintf("redirected (http %d) to %s: stopped after %d redirects", e.Status, e.To, maxRedirects)
	}
	return fmt.Sprintf("redirected (http %d) to other host %s; not following with credentials", e.Status, e.To)
}

// checkRedirect is the CheckRedirect of the client resty drives.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 {
		return nil
	}
	first, prev := via[0], via[len(via)-1]
	e := &RedirectError{Method: prev.Method, From: origin(first.URL), To: origin(req.URL)}
	if req.Response != nil {
		e.Status = req.Response.StatusCode
	}
	switch {
	case !sameOrigin(first.URL, req.URL):
		e.Reason = RedirectOtherHost
	case req.Method != prev.Method || (prev.Body != nil && prev.Body != http.NoBody && req.Body == nil):
		e.Reason = RedirectMethod
	case len(via) > maxRedirects:
		e.Reason = RedirectTooMany
	default:
		return nil
	}
	return e
}

// sameOrigin reports whether a redirect from a to b stays on a's origin. An upgrade from http to
// https on the same host and default ports counts as the same origin.
func sameOrigin(a, b *url.URL) bool {
	if !strings.EqualFold(a.Hostname(), b.Hostname()) {
		return false
	}
	as, bs := strings.ToLower(a.Scheme), strings.ToLower(b.Scheme)
	ap, bp := port(a), port(b)
	if as == bs {
		return ap == bp
	}
	return as == "http" && bs == "https" && ap == "80" && bp == "443"
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// origin renders scheme://host:port, without user info, path or query (they may carry secrets).
func origin(u *url.URL) string {
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(u.Hostname(), port(u))
}
