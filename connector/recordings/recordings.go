// Package recordings serves call recordings to CRM users' browsers and opens them for upload.
//
// amoCRM and Kommo show a call's `link` as a player in the user's browser, so the daemon serves the
// recordings directory over HTTP(S) at a public base URL (config `recordings:`). Every link is
// signed: URL(path) returns
//
//	{public_url}/{path relative to dir}?exp={unix seconds}&f=mp3&sig={base64url HMAC-SHA256}
//
// where the HMAC key is the configured secret and the message is
// "v1\n{relative path}\n{exp}\n{format}" (exp is empty when links do not expire; format is "mp3"
// when the link asks for the recording converted to mp3, else empty). With `mp3: true` and ffmpeg
// or lame installed, .wav recordings are linked as mp3: converted on first play (one conversion
// at a time per file, fed through stdin from the traversal-checked file) and cached in cache_dir;
// a failed conversion serves the original. The Server is an http.Handler the daemon mounts at
// Pattern(); a request is answered only when its signature is valid, its expiry is in the
// future and the path names a regular file inside dir. Every refusal is a plain 404 (no oracle
// for probing), counted by reason in pbxbridge_recordings_requests_total. Paths are opened with
// os.OpenInRoot, so neither "..", absolute paths nor symlinks that lead outside dir are followed.
// Range requests, If-Modified-Since and HEAD are served by http.ServeContent.
//
// Open gives adapters that upload recordings (Bitrix24) the same traversal-safe access.
//
// A Server is safe for concurrent use; it holds no open files between requests.
package recordings

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
)

// Config is the `recordings:` block of the daemon's configuration.
type Config struct {
	// Dir is the directory Asterisk writes recordings to; only files below it are served.
	Dir string `yaml:"dir"`
	// PublicURL is the externally reachable base URL of the recordings endpoint, e.g.
	// https://pbx.example.com/rec/ ; its path is where the daemon mounts the handler.
	PublicURL string `yaml:"public_url"`
	// Secret signs the links (HMAC-SHA256); at least 16 characters. Usually set from the
	// environment (PBXBRIDGE_RECORDINGS_SECRET).
	Secret configs.Secret `yaml:"secret"`
	// Expiry is how long a link stays valid (default DefaultExpiry, 7 days); 0 means links never
	// expire. A link is a bearer credential for a customer's voice, so it expires by default;
	// amoCRM keeps the link in the call's history, where an expired link stops playing (the
	// recording stays on the PBX).
	Expiry time.Duration `yaml:"expiry"`
	// MP3 links .wav recordings as mp3, converted on first play with ffmpeg or lame when one of
	// them is installed (cached in CacheDir); without a converter the .wav is linked.
	MP3 bool `yaml:"mp3"`
	// CacheDir keeps converted files (default: Options.CacheDir, the daemon's state directory).
	CacheDir string `yaml:"cache_dir"`
}

// DefaultExpiry is how long a signed recording link stays valid unless configured.
const DefaultExpiry = 7 * 24 * time.Hour

// DefaultConfig returns the defaults applied before the file is decoded.
func DefaultConfig() Config {
	return Config{Dir: "/var/spool/asterisk/monitor", Expiry: DefaultExpiry}
}

// MinSecretLen is the shortest accepted signing secret.
const MinSecretLen = 16

// Validate reports every problem of the block; paths are relative to `recordings`.
func (c *Config) Validate() []error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, &crm.FieldError{Path: "dir", Msg: "is required"})
	} else if !filepath.IsAbs(c.Dir) {
		errs = append(errs, &crm.FieldError{Path: "dir", Msg: fmt.Sprintf("must be an absolute path, got %q", c.Dir)})
	}
	links := c.PublicURL != "" || c.Secret.IsSet()
	if !links {
		// Local mode: recordings are uploaded (Bitrix24) but not linked.
	} else if c.PublicURL == "" {
		errs = append(errs, &crm.FieldError{Path: "public_url", Msg: "is required for recording links (the URL CRM users' browsers reach the recordings at, e.g. https://pbx.example.com/rec/)"})
	} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, &crm.FieldError{Path: "public_url", Msg: fmt.Sprintf("must be an absolute http(s) URL, got %q", c.PublicURL)})
	} else if u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, &crm.FieldError{Path: "public_url", Msg: "must not have a query or fragment"})
	}
	if links && len(c.Secret.Value()) < MinSecretLen {
		errs = append(errs, &crm.FieldError{Path: "secret", Msg: fmt.Sprintf("must be at least %d characters (set PBXBRIDGE_RECORDINGS_SECRET)", MinSecretLen)})
	}
	if c.CacheDir != "" && !filepath.IsAbs(c.CacheDir) {
		errs = append(errs, &crm.FieldError{Path: "cache_dir", Msg: fmt.Sprintf("must be an absolute path, got %q", c.CacheDir)})
	}
	if c.Expiry < 0 {
		errs = append(errs, &crm.FieldError{Path: "expiry", Msg: "must not be negative (0 = links never expire)"})
	}
	return errs
}

// Options are the runtime dependencies of a Server.
type Options struct {
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Metrics registers pbxbridge_recordings_requests_total (nil: not registered).
	Metrics prometheus.Registerer
	// Logger receives one debug line per refused request (nil: discarded).
	Logger *slog.Logger
	// CacheDir is where converted mp3 files go when the config names none.
	CacheDir string
	// Converter turns a recording (read from src) into an mp3 file at dst. Nil means ffmpeg or
	// lame from PATH when Config.MP3 is set (see FindConverter).
	Converter Converter
}

// Converter converts audio read from src into an mp3 file written at dst.
type Converter func(ctx context.Context, src io.Reader, dst string) error

// FindConverter returns a Converter using ffmpeg or, failing that, lame from PATH, and its name;
// nil when neither is installed.
func FindConverter() (Converter, string) {
	if p, err := exec.LookPath("ffmpeg"); err == nil {
		return func(ctx context.Context, src io.Reader, dst string) error {
			return run(ctx, src, p, "-nostdin", "-loglevel", "error", "-y", "-i", "pipe:0", "-codec:a", "libmp3lame", "-qscale:a", "6", "-f", "mp3", dst)
		}, "ffmpeg"
	}
	if p, err := exec.LookPath("lame"); err == nil {
		return func(ctx context.Context, src io.Reader, dst string) error {
			return run(ctx, src, p, "--quiet", "-V", "6", "-", dst)
		}, "lame"
	}
	return nil, ""
}

func run(ctx context.Context, stdin io.Reader, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...) //nolint:gosec // ffmpeg or lame from PATH with fixed arguments
	cmd.Stdin = stdin
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[:300]
		}
		return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, msg)
	}
	return nil
}

// Server signs recording links and serves them.
type Server struct {
	dir    string
	base   *url.URL
	prefix string // base.Path with a trailing slash
	key    []byte
	expiry time.Duration
	now    func() time.Time
	log    *slog.Logger
	reqs   *prometheus.CounterVec

	convert  Converter // nil: no mp3
	cacheDir string
	convMu   sync.Mutex
	inFlight map[string]*sync.Mutex
}

// New builds a Server from a validated config.
func New(cfg Config, o Options) (*Server, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("recordings: %w", errors.Join(errs...))
	}
	base, err := url.Parse(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("recordings: public_url: %w", err)
	}
	prefix := base.Path
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	base.Path = prefix
	base.RawPath = ""
	s := &Server{
		dir:    filepath.Clean(cfg.Dir),
		base:   base,
		prefix: prefix,
		key:    []byte(cfg.Secret.Value()),
		expiry: cfg.Expiry,
		now:    o.Now,
		log:    o.Logger,
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "recordings", Name: "requests_total",
			Help: "Recording requests by result (ok, bad_path, bad_signature, expired, not_found, method).",
		}, []string{"result"}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.MP3 {
		s.cacheDir = cfg.CacheDir
		if s.cacheDir == "" && o.CacheDir != "" {
			s.cacheDir = filepath.Join(o.CacheDir, "recordings-mp3")
		}
		s.convert = o.Converter
		name := "custom"
		if s.convert == nil {
			s.convert, name = FindConverter()
		}
		switch {
		case s.convert == nil:
			s.log.Warn("recordings: mp3 is on but neither ffmpeg nor lame is installed: linking the original files")
		case s.cacheDir == "":
			s.log.Warn("recordings: mp3 is on but there is no cache_dir: linking the original files")
			s.convert = nil
		default:
			if err := os.MkdirAll(s.cacheDir, 0o750); err != nil {
				return nil, fmt.Errorf("recordings: cache_dir: %w", err)
			}
			s.log.Info("recordings: converting to mp3 on first play", "converter", name, "cache", s.cacheDir)
		}
		s.inFlight = map[string]*sync.Mutex{}
	}
	if o.Metrics != nil {
		if err := o.Metrics.Register(s.reqs); err != nil {
			return nil, fmt.Errorf("recordings: registering metrics: %w", err)
		}
	}
	return s, nil
}

// Pattern is the net/http ServeMux pattern the daemon mounts the Server at ("GET /rec/"); GET
// patterns also match HEAD.
func (s *Server) Pattern() string { return "GET " + s.prefix }

// Links reports whether the server signs links (public_url and secret configured); without
// them it only opens recordings for upload (local mode) and its handler must not be mounted.
func (s *Server) Links() bool { return len(s.key) > 0 }

// relPath turns a recording path from a Record (absolute, or relative to dir) into the clean
// slash-separated path below dir, or reports that it is outside dir.
func (s *Server) relPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	if filepath.IsAbs(p) {
		r, err := filepath.Rel(s.dir, filepath.Clean(p))
		if err != nil {
			return "", fmt.Errorf("path %q: %w", p, err)
		}
		p = r
	}
	rel := filepath.ToSlash(filepath.Clean(p))
	if err := checkRel(rel); err != nil {
		return "", fmt.Errorf("path %q is not inside the recordings directory %s: %w", p, s.dir, err)
	}
	return rel, nil
}

// URL returns a signed link to the recording at path, or "" when path is empty or not inside
// the recordings directory. The file need not exist yet.
func (s *Server) URL(p string) string {
	if !s.Links() {
		return ""
	}
	rel, err := s.relPath(p)
	if err != nil {
		return ""
	}
	exp := ""
	if s.expiry > 0 {
		exp = strconv.FormatInt(s.now().Add(s.expiry).Unix(), 10)
	}
	format := ""
	if s.convert != nil && strings.EqualFold(path.Ext(rel), ".wav") {
		format = "mp3"
	}
	u := *s.base
	segs := strings.Split(rel, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	u.RawPath = s.prefix + strings.Join(segs, "/")
	u.Path = s.prefix + rel
	q := url.Values{}
	if exp != "" {
		q.Set("exp", exp)
	}
	if format != "" {
		q.Set("f", format)
	}
	q.Set("sig", base64.RawURLEncoding.EncodeToString(s.sign(rel, exp, format)))
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Server) sign(rel, exp, format string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("v1\n" + rel + "\n" + exp + "\n" + format))
	return m.Sum(nil)
}

// Open opens the recording at path (absolute, or relative to dir) for upload. It refuses paths
// outside the recordings directory, including through symlinks, and anything but regular files.
func (s *Server) Open(p string) (crm.Recording, error) {
	rel, err := s.relPath(p)
	if err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	f, fi, err := s.open(rel)
	if err != nil {
		return nil, fmt.Errorf("recordings: opening %s: %w", rel, err)
	}
	return &recording{File: f, size: fi.Size(), name: path.Base(rel)}, nil
}

func (s *Server) open(rel string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenInRoot(s.dir, filepath.FromSlash(rel))
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file", rel)
	}
	return f, fi, nil
}

type recording struct {
	*os.File
	size int64
	name string
}

func (r *recording) Size() int64  { return r.size }
func (r *recording) Name() string { return r.name }

// Request is a parsed recording request.
type Request struct {
	Rel string // clean, slash-separated path below the recordings directory
	Exp string // expiry in Unix seconds as sent ("" when the link does not expire)
	Fmt string // "mp3" to get the recording converted, "" for the file as it is
	Sig []byte // the HMAC-SHA256 from the link (32 bytes)
}

// errBadRequest is returned by ParseRequest for anything that is not a well-formed link.
var errBadRequest = errors.New("malformed recording link")

// ParseRequest parses the path (unescaped, as in url.URL.Path) and raw query of a request for a
// link under prefix. It checks the form only (path inside the root, one exp and one sig of the
// right shape); the signature and expiry are checked by the Server.
func ParseRequest(prefix, urlPath, rawQuery string) (Request, error) {
	if !strings.HasPrefix(urlPath, prefix) {
		return Request{}, fmt.Errorf("%w: path outside %s", errBadRequest, prefix)
	}
	rel := urlPath[len(prefix):]
	if err := checkRel(rel); err != nil {
		return Request{}, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return Request{}, fmt.Errorf("%w: query: %w", errBadRequest, err)
	}
	for k, v := range q {
		if (k != "exp" && k != "sig" && k != "f") || len(v) != 1 {
			return Request{}, fmt.Errorf("%w: unexpected query parameter %q", errBadRequest, k)
		}
	}
	r := Request{Rel: rel, Exp: q.Get("exp"), Fmt: q.Get("f")}
	if _, ok := q["f"]; ok && r.Fmt != "mp3" {
		return Request{}, fmt.Errorf("%w: unknown format", errBadRequest)
	}
	if r.Exp != "" {
		if n, err := strconv.ParseInt(r.Exp, 10, 64); err != nil || n <= 0 || strconv.FormatInt(n, 10) != r.Exp {
			return Request{}, fmt.Errorf("%w: bad exp", errBadRequest)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(q.Get("sig"))
	if err != nil || len(sig) != sha256.Size {
		return Request{}, fmt.Errorf("%w: bad sig", errBadRequest)
	}
	r.Sig = sig
	return r, nil
}

// checkRel accepts only clean, relative, slash-separated paths without "..", NUL, backslashes
// or control characters.
func checkRel(rel string) error {
	switch {
	case rel == "" || rel == ".":
		return errors.New("empty path")
	case len(rel) > 1024:
		return errors.New("path too long")
	case !utf8.ValidString(rel):
		return errors.New("path is not UTF-8")
	case strings.HasPrefix(rel, "/"):
		return errors.New("absolute path")
	case path.Clean(rel) != rel:
		return errors.New("path is not clean")
	}
	for _, r := range rel {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return errors.New("control character or backslash in path")
		}
	}
	for _, seg := range strings.Split(rel, "/") {
		if seg == ".." || seg == "." {
			return errors.New("relative path element")
		}
	}
	return nil
}

// ServeHTTP serves a signed recording link; anything else gets 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.refuse(w, r, "method", nil)
		return
	}
	req, err := ParseRequest(s.prefix, r.URL.Path, r.URL.RawQuery)
	if err != nil {
		s.refuse(w, r, "bad_path", err)
		return
	}
	if !hmac.Equal(req.Sig, s.sign(req.Rel, req.Exp, req.Fmt)) {
		s.refuse(w, r, "bad_signature", nil)
		return
	}
	if req.Exp != "" {
		n, _ := strconv.ParseInt(req.Exp, 10, 64) // checked by ParseRequest
		if !s.now().Before(time.Unix(n, 0)) {
			s.refuse(w, r, "expired", nil)
			return
		}
	}
	f, fi, err := s.open(req.Rel)
	if err != nil {
		s.refuse(w, r, "not_found", err)
		return
	}
	defer f.Close()
	name, content, mod := path.Base(req.Rel), io.ReadSeeker(f), fi.ModTime()
	if req.Fmt == "mp3" && s.convert != nil {
		if mp3, mfi, err := s.mp3(r.Context(), req.Rel, f, fi); err != nil {
			s.reqs.WithLabelValues("convert_failed").Inc()
			s.log.Warn("recordings: mp3 conversion failed, serving the original", "path", req.Rel, "err", err)
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				s.refuse(w, r, "not_found", err)
				return
			}
		} else {
			defer mp3.Close()
			name, content, mod = strings.TrimSuffix(name, path.Ext(name))+".mp3", mp3, mfi.ModTime()
		}
	}
	s.reqs.WithLabelValues("ok").Inc()
	h := w.Header()
	if ct := contentType(name); ct != "" {
		h.Set("Content-Type", ct)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "private, max-age=3600")
	h.Set("Content-Disposition", "inline")
	http.ServeContent(w, r, name, mod, content)
}

// mp3 returns the cached mp3 of a recording, converting it first if needed (once at a time per
// file). The cache key covers the path, size and modification time, so a rewritten recording is
// converted again.
func (s *Server) mp3(ctx context.Context, rel string, src *os.File, fi fs.FileInfo) (*os.File, fs.FileInfo, error) {
	sum := sha256.Sum256([]byte(rel + "\x00" + strconv.FormatInt(fi.Size(), 10) + "\x00" + strconv.FormatInt(fi.ModTime().UnixNano(), 10)))
	key := hex.EncodeToString(sum[:16])
	dst := filepath.Join(s.cacheDir, key+".mp3")
	s.convMu.Lock()
	mu := s.inFlight[key]
	if mu == nil {
		mu = &sync.Mutex{}
		s.inFlight[key] = mu
	}
	s.convMu.Unlock()
	mu.Lock()
	defer func() {
		mu.Unlock()
		s.convMu.Lock()
		delete(s.inFlight, key)
		s.convMu.Unlock()
	}()
	if f, err := os.Open(dst); err == nil {
		if cfi, err := f.Stat(); err == nil {
			return f, cfi, nil
		}
		f.Close()
	}
	tmp, err := os.CreateTemp(s.cacheDir, "."+key+".*.mp3")
	if err != nil {
		return nil, nil, err
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer func() { _ = os.Remove(tmpName) }()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := s.convert(cctx, src, tmpName); err != nil {
		return nil, nil, err
	}
	if cfi, err := os.Stat(tmpName); err != nil {
		return nil, nil, fmt.Errorf("the converter's output: %w", err)
	} else if cfi.Size() == 0 {
		return nil, nil, errors.New("the converter wrote nothing")
	}
	if err := os.Rename(tmpName, dst); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(dst)
	if err != nil {
		return nil, nil, err
	}
	cfi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, cfi, nil
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, reason string, err error) {
	s.reqs.WithLabelValues(reason).Inc()
	s.log.Debug("recording request refused", "reason", reason, "path", r.URL.Path, "err", err)
	http.NotFound(w, r)
}

func contentType(name string) string {
	switch strings.ToLower(path.Ext(name)) {
	case ".wav":
		return "audio/wav"
	case ".mp3":
		return "audio/mpeg"
	case ".ogg", ".oga":
		return "audio/ogg"
	case ".gsm":
		return "audio/x-gsm"
	}
	return ""
}

var (
	_ crm.Recordings = (*Server)(nil)
	_ http.Handler   = (*Server)(nil)
)
