package httpclient

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// DefaultMaxResponseBody is the default cap on a CRM response body.
const DefaultMaxResponseBody = 8 << 20

// BodyTooLargeError is returned by the Read of a response body longer than the client's cap
// (Options.MaxResponseBody). The body is not read further: at most Limit+1 bytes are read from
// the connection, and from the decompressed stream of a gzip body.
type BodyTooLargeError struct {
	Limit int64
}

func (e *BodyTooLargeError) Error() string { return "response body over " + size(e.Limit) }

// size renders n in the largest binary unit that divides it.
func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// limitTransport caps every response body. A body resty would gunzip itself (Content-Encoding:
// gzip that the transport below did not decode) is decoded here, so that the cap also bounds the
// decompressed size.
type limitTransport struct {
	next http.RoundTripper
	max  int64
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp == nil || resp.Body == nil {
		return resp, err
	}
	if resp.ContentLength > t.max {
		// Announced as too long: fail at the first Read without reading anything.
		_ = resp.Body.Close()
		resp.Body = &limitedBody{err: &BodyTooLargeError{Limit: t.max}, rc: http.NoBody}
		return resp, nil
	}
	body := newLimitedBody(resp.Body, t.max)
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") && !resp.Uncompressed && resp.ContentLength != 0 {
		body = newLimitedBody(&gunzipBody{raw: body}, t.max)
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		resp.Uncompressed = true
	}
	resp.Body = body
	return resp, nil
}

// limitedBody reads at most n+1 bytes from rc and fails with a *BodyTooLargeError after n.
type limitedBody struct {
	rc    io.ReadCloser
	n     int64 // bytes still allowed
	limit int64
	err   error // sticky
}

func newLimitedBody(rc io.ReadCloser, limit int64) *limitedBody {
	return &limitedBody{rc: rc, n: limit, limit: limit}
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.n+1 {
		p = p[:b.n+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) <= b.n {
		b.n -= int64(n)
		b.err = err
		return n, err
	}
	n = int(b.n)
	b.n = 0
	b.err = &BodyTooLargeError{Limit: b.limit}
	return n, b.err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// gunzipBody decodes a gzip body; the header is read at the first Read, not in RoundTrip.
type gunzipBody struct {
	raw io.ReadCloser
	zr  *gzip.Reader
	err error
}

func (g *gunzipBody) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.zr == nil {
		zr, err := gzip.NewReader(g.raw)
		if err != nil {
			var tl *BodyTooLargeError
			if !errors.Is(err, io.EOF) && !errors.As(err, &tl) {
				err = fmt.Errorf("decoding gzip response: %w", err)
			}
			g.err = err
			return 0, err
		}
		g.zr = zr
	}
	n, err := g.zr.Read(p)
	if err != nil {
		g.err = err
	}
	return n, err
}

func (g *gunzipBody) Close() error { return g.raw.Close() }
