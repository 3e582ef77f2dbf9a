package recordings

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
)

const testSecret = "0123456789abcdef-test-secret"

type fixture struct {
	dir     string
	outside string
	srv     *Server
	http    *httptest.Server
	reg     *prometheus.Registry
	now     time.Time
	content []byte
}

func newFixture(t *testing.T, expiry time.Duration) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{dir: filepath.Join(root, "monitor"), outside: filepath.Join(root, "secret"), reg: prometheus.NewRegistry()}
	f.now = time.Date(2026, 11, 22, 0, 3, 8, 0, time.UTC)
	for _, d := range []string{f.dir, filepath.Join(f.dir, "2026", "11"), f.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.content = make([]byte, 47404)
	for i := range f.content {
		f.content[i] = byte(i * 7)
	}
	write(t, filepath.Join(f.dir, "in-74951112233-79001234567-20261122-000302-1795305782.1.wav"), f.content)
	write(t, filepath.Join(f.dir, "2026", "11", "out 89001234567 #1.wav"), []byte("nested"))
	write(t, filepath.Join(f.outside, "passwd"), []byte("root:x:0:0"))
	if err := os.Symlink(filepath.Join(f.outside, "passwd"), filepath.Join(f.dir, "escape.wav")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("2026/11/out 89001234567 #1.wav", filepath.Join(f.dir, "inside.wav")); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Dir: f.dir, PublicURL: "https://pbx.example.com/rec/", Secret: configs.NewSecret(testSecret), Expiry: expiry},
		Options{Now: func() time.Time { return f.now }, Metrics: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	mux := http.NewServeMux()
	mux.Handle(srv.Pattern(), srv)
	f.http = httptest.NewServer(mux)
	t.Cleanup(f.http.Close)
	return f
}

func write(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// local rewrites a public link onto the test server.
func (f *fixture) local(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "pbx.example.com" {
		t.Fatalf("link %s is not on the public base URL", link)
	}
	return f.http.URL + u.RequestURI()
}

func get(t *testing.T, rawURL string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func TestSignedLinkStreamsWithRanges(t *testing.T) {
	f := newFixture(t, 0)
	link := f.srv.URL(filepath.Join(f.dir, "in-74951112233-79001234567-20261122-000302-1795305782.1.wav"))
	if !strings.HasPrefix(link, "https://pbx.example.com/rec/in-74951112233-79001234567-20261122-000302-1795305782.1.wav?sig=") {
		t.Fatalf("link %s", link)
	}
	code, hdr, body := get(t, f.local(t, link), nil)
	if code != http.StatusOK || !bytes.Equal(body, f.content) {
		t.Fatalf("GET: %d, %d bytes", code, len(body))
	}
	if ct := hdr.Get("Content-Type"); ct != "audio/wav" {
		t.Fatalf("content type %q", ct)
	}
	if hdr.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("no Accept-Ranges: %v", hdr)
	}
	code, hdr, body = get(t, f.local(t, link), map[string]string{"Range": "bytes=1000-1999"})
	if code != http.StatusPartialContent || !bytes.Equal(body, f.content[1000:2000]) {
		t.Fatalf("range: %d, %d bytes", code, len(body))
	}
	if cr := hdr.Get("Content-Range"); cr != "bytes 1000-1999/47404" {
		t.Fatalf("Content-Range %q", cr)
	}
	code, _, body = get(t, f.local(t, link), map[string]string{"Range": "bytes=-100"})
	if code != http.StatusPartialContent || !bytes.Equal(body, f.content[len(f.content)-100:]) {
		t.Fatalf("suffix range: %d, %d bytes", code, len(body))
	}

	// Nested paths with spaces and '#' are escaped and round-trip.
	nested := f.srv.URL("2026/11/out 89001234567 #1.wav")
	if code, _, body := get(t, f.local(t, nested), nil); code != http.StatusOK || string(body) != "nested" {
		t.Fatalf("nested: %d %q (link %s)", code, body, nested)
	}
	// A symlink that stays inside the directory is followed.
	if code, _, body := get(t, f.local(t, f.srv.URL("inside.wav")), nil); code != http.StatusOK || string(body) != "nested" {
		t.Fatalf("inside symlink: %d %q", code, body)
	}
	if n := testutil.ToFloat64(f.srv.reqs.WithLabelValues("ok")); n != 5 {
		t.Fatalf("ok requests counted %v, want 5", n)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, 0)
	good := f.srv.URL("in-74951112233-79001234567-20261122-000302-1795305782.1.wav")
	u, _ := url.Parse(good)
	sig := u.Query().Get("sig")
	tampered := []byte(sig)
	if tampered[3] == 'A' {
		tampered[3] = 'B'
	} else {
		tampered[3] = 'A'
	}
	otherSig := url.Values{"sig": {string(tampered)}}.Encode()
	cases := map[string]string{
		"tampered signature":       f.http.URL + u.Path + "?" + otherSig,
		"no signature":             f.http.URL + u.Path,
		"signature of another":     f.http.URL + "/rec/inside.wav?sig=" + sig,
		"extra parameter":          f.http.URL + u.Path + "?sig=" + sig + "&x=1",
		"duplicated signature":     f.http.URL + u.Path + "?sig=" + sig + "&sig=" + sig,
		"encoded traversal":        f.http.URL + "/rec/..%2fsecret%2fpasswd?sig=" + sig,
		"traversal with dots":      f.http.URL + "/rec/2026/../../secret/passwd?sig=" + sig,
		"missing file":             f.local(t, f.srv.URL("missing.wav")),
		"directory":                f.local(t, f.srv.URL("2026")),
		"symlink out of the root":  f.local(t, f.srv.URL("escape.wav")),
		"expired-looking exp only": f.http.URL + u.Path + "?exp=1&sig=" + sig,
	}
	for name, link := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, body := get(t, link, nil)
			if code != http.StatusNotFound {
				t.Fatalf("%s: status %d, body %q", link, code, body)
			}
			if bytes.Contains(body, []byte("root:")) {
				t.Fatal("leaked a file outside the root")
			}
		})
	}
	// Paths outside the directory get no link at all.
	for _, p := range []string{"", "/etc/passwd", filepath.Join(f.outside, "passwd"), "../secret/passwd", f.dir} {
		if l := f.srv.URL(p); l != "" {
			t.Errorf("URL(%q) = %s, want no link", p, l)
		}
	}
	// POST is refused.
	resp, err := http.Post(f.local(t, good), "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if n := testutil.ToFloat64(f.srv.reqs.WithLabelValues("bad_signature")); n < 3 {
		t.Fatalf("bad_signature counted %v", n)
	}
}

func TestExpiry(t *testing.T) {
	f := newFixture(t, time.Hour)
	link := f.local(t, f.srv.URL("inside.wav"))
	if !strings.Contains(link, "exp=") {
		t.Fatalf("link without expiry: %s", link)
	}
	if code, _, _ := get(t, link, nil); code != http.StatusOK {
		t.Fatalf("fresh link: %d", code)
	}
	f.now = f.now.Add(59 * time.Minute)
	if code, _, _ := get(t, link, nil); code != http.StatusOK {
		t.Fatalf("link after 59 min: %d", code)
	}
	f.now = f.now.Add(time.Minute)
	if code, _, _ := get(t, link, nil); code != http.StatusNotFound {
		t.Fatalf("expired link: %d", code)
	}
	// Moving the expiry forward breaks the signature.
	later := strings.Replace(link, "exp=", "exp=9", 1)
	if code, _, _ := get(t, later, nil); code != http.StatusNotFound {
		t.Fatalf("extended link: %d", code)
	}
	if n := testutil.ToFloat64(f.srv.reqs.WithLabelValues("expired")); n != 1 {
		t.Fatalf("expired counted %v", n)
	}
}

func TestOpen(t *testing.T) {
	f := newFixture(t, 0)
	r, err := f.srv.Open(filepath.Join(f.dir, "in-74951112233-79001234567-20261122-000302-1795305782.1.wav"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	_ = r.Close()
	if err != nil || !bytes.Equal(b, f.content) || r.Size() != int64(len(f.content)) || r.Name() != "in-74951112233-79001234567-20261122-000302-1795305782.1.wav" {
		t.Fatalf("open: %v, %d bytes, size %d, name %q", err, len(b), r.Size(), r.Name())
	}
	for _, p := range []string{"escape.wav", filepath.Join(f.outside, "passwd"), "../secret/passwd", "2026", "missing.wav"} {
		if r, err := f.srv.Open(p); err == nil {
			_ = r.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Config{Dir: "/var/spool/asterisk/monitor", PublicURL: "https://pbx.example.com/rec/", Secret: configs.NewSecret(testSecret)}
	if errs := good.Validate(); len(errs) != 0 {
		t.Fatalf("good config: %v", errs)
	}
	bad := Config{Dir: "monitor", PublicURL: "ftp://x/rec?a=1", Secret: configs.NewSecret("short"), Expiry: -time.Second}
	errs := bad.Validate()
	want := map[string]bool{"dir": true, "public_url": true, "secret": true, "expiry": true}
	for _, err := range errs {
		var fe *crm.FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("%v is not a FieldError", err)
		}
		delete(want, fe.Path)
	}
	if len(want) != 0 {
		t.Fatalf("missing errors for %v in %v", want, errs)
	}
	if _, err := New(bad, Options{}); err == nil {
		t.Fatal("New accepted a bad config")
	}
	if d := DefaultConfig(); d.Dir != "/var/spool/asterisk/monitor" {
		t.Fatalf("default dir %q", d.Dir)
	}
	// A link is a bearer credential for a customer's voice: it expires unless configured not to.
	if d := DefaultConfig(); d.Expiry != 7*24*time.Hour {
		t.Fatalf("default expiry %v, want 7 days", d.Expiry)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add("/rec/", "/rec/a.wav", "sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("/rec/", "/rec/2026/11/x.wav", "exp=1795309388&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("/rec/", "/rec/../etc/passwd", "sig=x")
	f.Add("/rec/", "/rec//a.wav", "sig=%zz")
	f.Add("/", "/a\\b.wav", "exp=-1&sig=")
	f.Fuzz(func(t *testing.T, prefix, p, q string) {
		r, err := ParseRequest(prefix, p, q)
		if err != nil {
			return
		}
		if strings.Contains("/"+r.Rel+"/", "/../") || strings.HasPrefix(r.Rel, "/") || strings.ContainsRune(r.Rel, 0) {
			t.Fatalf("accepted unsafe path %q", r.Rel)
		}
		if len(r.Sig) != 32 {
			t.Fatalf("accepted a %d-byte signature", len(r.Sig))
		}
		if filepath.IsAbs(r.Rel) || !filepath.IsLocal(filepath.FromSlash(r.Rel)) {
			t.Fatalf("path %q is not local", r.Rel)
		}
	})
}

func TestMP3Conversion(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "monitor")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "a.wav"), []byte("RIFF....WAVEfmt wav-bytes"))
	var calls atomic.Int32
	var fail atomic.Bool
	conv := func(_ context.Context, src io.Reader, dst string) error {
		calls.Add(1)
		if fail.Load() {
			return errors.New("no codec")
		}
		b, err := io.ReadAll(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, append([]byte("ID3 converted:"), b...), 0o600)
	}
	srv, err := New(Config{Dir: dir, PublicURL: "https://pbx.example.com/rec/", Secret: configs.NewSecret(testSecret), MP3: true},
		Options{CacheDir: filepath.Join(root, "state"), Converter: conv, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(srv.Pattern(), srv)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	link := srv.URL("a.wav")
	if !strings.Contains(link, "f=mp3") {
		t.Fatalf("link %s", link)
	}
	u, _ := url.Parse(link)
	local := hs.URL + u.RequestURI()
	want := "ID3 converted:RIFF....WAVEfmt wav-bytes"
	for range 2 {
		code, hdr, body := get(t, local, nil)
		if code != http.StatusOK || string(body) != want || hdr.Get("Content-Type") != "audio/mpeg" {
			t.Fatalf("mp3: %d %q %v", code, body, hdr)
		}
	}
	if code, _, body := get(t, local, map[string]string{"Range": "bytes=0-2"}); code != http.StatusPartialContent || string(body) != "ID3" {
		t.Fatalf("mp3 range: %d %q", code, body)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("converted %d times, want once (cached)", n)
	}
	// Dropping f=mp3 breaks the signature.
	q := u.Query()
	q.Del("f")
	if code, _, _ := get(t, hs.URL+u.Path+"?"+q.Encode(), nil); code != http.StatusNotFound {
		t.Fatalf("link without its format: %d", code)
	}
	// A rewritten recording is converted again; a failed conversion serves the original.
	fail.Store(true)
	write(t, filepath.Join(dir, "a.wav"), []byte("RIFF....WAVEfmt new-bytes"))
	if err := os.Chtimes(filepath.Join(dir, "a.wav"), time.Now().Add(time.Hour), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, hdr, body := get(t, local, nil)
	if code != http.StatusOK || string(body) != "RIFF....WAVEfmt new-bytes" || hdr.Get("Content-Type") != "audio/wav" {
		t.Fatalf("fallback: %d %q %v", code, body, hdr)
	}
	if n := testutil.ToFloat64(srv.reqs.WithLabelValues("convert_failed")); n != 1 {
		t.Fatalf("convert_failed = %v", n)
	}
}

func TestNoConverterLinksTheOriginal(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if c, name := FindConverter(); c != nil {
		t.Fatalf("found %s in an empty PATH", name)
	}
	srv, err := New(Config{Dir: "/var/spool/asterisk/monitor", PublicURL: "https://pbx.example.com/rec/", Secret: configs.NewSecret(testSecret), MP3: true},
		Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if l := srv.URL("a.wav"); strings.Contains(l, "f=mp3") || l == "" {
		t.Fatalf("link %s", l)
	}
}
