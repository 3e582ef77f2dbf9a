package httpclient

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
)

// countingClient is a real client whose connections count the bytes they read.
func countingClient(read *atomic.Int64) *http.Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, read: read}, nil
		},
	}
	return &http.Client{Transport: tr}
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// endless streams a body that never ends, until the client goes away.
func endless(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	chunk := bytes.Repeat([]byte(`{"ID":"1","NAME":"x"},`), 1500)
	_, _ = w.Write([]byte(`{"result":[`))
	for r.Context().Err() == nil {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// TestEndlessBodyCapped: an endless answer fails with "response body over N" after reading the
// cap, and memory stays bounded. Not parallel: it measures the process's allocations.
func TestEndlessBodyCapped(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(endless))
	defer srv.Close()
	for _, tc := range []struct {
		max  int64
		want string
	}{
		{0, "response body over 8 MiB"},
		{1 << 20, "response body over 1 MiB"},
		{1000, "response body over 1000 bytes"},
	} {
		var read atomic.Int64
		o := fastOptions()
		o.Base = countingClient(&read)
		o.MaxResponseBody = tc.max
		c := New(o)
		limit := tc.max
		if limit == 0 {
			limit = DefaultMaxResponseBody
		}

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		resp, err := c.R().SetContext(context.Background()).SetBody(`{}`).Post(srv.URL)
		runtime.ReadMemStats(&after)

		var tooLarge *BodyTooLargeError
		if !errors.As(err, &tooLarge) || tooLarge.Limit != limit || err.Error() != tc.want {
			t.Fatalf("cap %d: err = %v, want %q", tc.max, err, tc.want)
		}
		if resp == nil || resp.StatusCode() != http.StatusOK {
			t.Errorf("cap %d: the response (status) should still reach the caller", tc.max)
		}
		// What the transport read ahead of the body reader: headers, one bufio buffer, one chunk
		// header; never the rest of the endless stream.
		if got := read.Load(); got > limit+64<<10 {
			t.Errorf("cap %d: %d bytes read from the connection", tc.max, got)
		}
		// Reading the capped body into memory costs a few times the cap (io.ReadAll grows its
		// buffer by doubling; about 2.5 times, 5 under -race); an uncapped read would take
		// everything the server sends until the timeout.
		alloc := after.TotalAlloc - before.TotalAlloc
		if alloc > uint64(8*limit+16<<20) {
			t.Errorf("cap %d: %d bytes allocated", tc.max, alloc)
		}
		t.Logf("cap %d: %d bytes read from the connection, %d bytes allocated", limit, read.Load(), alloc)
	}
}

// TestContentLengthOverCap: an answer that announces a body over the cap fails before any of it
// is read.
func TestContentLengthOverCap(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(200<<20))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 64<<10))
		<-r.Context().Done() // never sends the rest
	}))
	defer srv.Close()
	var read atomic.Int64
	o := fastOptions()
	o.Base = countingClient(&read)
	_, err := New(o).R().SetContext(context.Background()).Get(srv.URL)
	var tooLarge *BodyTooLargeError
	if !errors.As(err, &tooLarge) || err.Error() != "response body over 8 MiB" {
		t.Fatalf("err = %v", err)
	}
	if got := read.Load(); got > 64<<10+4096 {
		t.Errorf("%d bytes read from the connection", got)
	}
}

// TestBodyCapBoundary: a body of exactly the cap is read whole, one byte more fails, with and
// without Content-Length.
func TestBodyCapBoundary(t *testing.T) {
	t.Parallel()
	const limit = 4096
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		body := bytes.Repeat([]byte("a"), n)
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(body)
			return
		}
		for i := range body { // one byte per flush: no Content-Length, chunked
			_, _ = w.Write(body[i : i+1])
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	o := fastOptions()
	o.MaxResponseBody = limit
	c := New(o)
	for _, chunked := range []string{"", "1"} {
		for _, n := range []int{0, limit - 1, limit, limit + 1} {
			resp, err := c.R().SetContext(context.Background()).
				SetQueryParams(map[string]string{"n": strconv.Itoa(n), "chunked": chunked}).Get(srv.URL)
			var tooLarge *BodyTooLargeError
			switch {
			case n <= limit && (err != nil || len(resp.Body()) != n):
				t.Errorf("chunked=%q n=%d: err %v, %d bytes", chunked, n, err, len(resp.Body()))
			case n > limit && !errors.As(err, &tooLarge):
				t.Errorf("chunked=%q n=%d: err %v, want *BodyTooLargeError", chunked, n, err)
			}
		}
	}
}

// TestGzipBombCapped: a small gzip answer that decompresses to 64 MiB fails at the cap, whether
// the transport decodes it (it asked for gzip) or resty would (the caller asked for gzip).
func TestGzipBombCapped(t *testing.T) {
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 64 {
		_, _ = zw.Write(zeros)
	}
	_ = zw.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(bomb.Len()))
		_, _ = w.Write(bomb.Bytes())
	}))
	defer srv.Close()
	o := fastOptions()
	o.MaxResponseBody = 1 << 20
	c := New(o)
	for _, explicit := range []bool{false, true} {
		req := c.R().SetContext(context.Background())
		if explicit {
			req.SetHeader("Accept-Encoding", "gzip")
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := req.Get(srv.URL)
		runtime.ReadMemStats(&after)
		var tooLarge *BodyTooLargeError
		if !errors.As(err, &tooLarge) {
			t.Errorf("explicit Accept-Encoding %v: err = %v, want *BodyTooLargeError", explicit, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
			t.Errorf("explicit Accept-Encoding %v: %d bytes allocated", explicit, alloc)
		}
	}
}

// TestGzipBodyDecoded: a gzip answer under the cap arrives decoded, whoever asked for gzip.
func TestGzipBodyDecoded(t *testing.T) {
	t.Parallel()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`{"result":true}`))
	_ = zw.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(gz.Bytes())
	}))
	defer srv.Close()
	c := New(fastOptions())
	for _, explicit := range []bool{false, true} {
		req := c.R().SetContext(context.Background())
		if explicit {
			req.SetHeader("Accept-Encoding", "gzip")
		}
		resp, err := req.Get(srv.URL)
		if err != nil || string(resp.Body()) != `{"result":true}` {
			t.Errorf("explicit %v: %q %v", explicit, resp.Body(), err)
		}
	}
}

func TestLimitedBodyReadsAtMostCapPlusOne(t *testing.T) {
	t.Parallel()
	src := &countingReader{r: bytes.NewReader(make([]byte, 1<<20))}
	b := newLimitedBody(io.NopCloser(src), 1000)
	data, err := io.ReadAll(b)
	var tooLarge *BodyTooLargeError
	if !errors.As(err, &tooLarge) || len(data) != 1000 {
		t.Fatalf("%d bytes, %v", len(data), err)
	}
	if src.n != 1001 {
		t.Fatalf("read %d bytes from the source, want 1001", src.n)
	}
	if _, err := b.Read(make([]byte, 10)); !errors.As(err, &tooLarge) {
		t.Fatalf("the error is not sticky: %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
