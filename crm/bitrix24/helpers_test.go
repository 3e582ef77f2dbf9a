package bitrix24

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// TestMain lets 8 tests run at once: they wait on HTTP round trips to the fake portal and on
// the adapter's retry and rate-limit timers, not on the CPU.
func TestMain(m *testing.M) {
	testkit.SetParallel(8)
	os.Exit(m.Run())
}

// newCallStore opens a real outbox database in a temporary directory and returns the call
// state of connector "b24" (what the daemon gives the adapter).
func newCallStore(tb testing.TB) crm.CallStore {
	tb.Helper()
	st, err := outbox.Open(context.Background(), filepath.Join(tb.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st.CallState("b24")
}

// dirRecordings serves recordings from a directory (recording paths are mapped by base name).
type dirRecordings struct {
	dir     string
	baseURL string
}

func (d dirRecordings) URL(path string) string {
	if d.baseURL == "" {
		return ""
	}
	return d.baseURL + "/" + filepath.Base(path)
}

func (d dirRecordings) Open(path string) (crm.Recording, error) {
	f, err := os.Open(filepath.Join(d.dir, filepath.Base(path)))
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &fileRecording{File: f, size: st.Size()}, nil
}

type fileRecording struct {
	*os.File
	size int64
}

func (f *fileRecording) Size() int64  { return f.size }
func (f *fileRecording) Name() string { return filepath.Base(f.File.Name()) }

// writeWAV writes a recording of n bytes (a RIFF header and silence).
func writeWAV(tb testing.TB, dir, name string, n int) {
	tb.Helper()
	b := make([]byte, n)
	copy(b, "RIFF\x00\x00\x00\x00WAVEfmt ")
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// originator records click-to-call requests; err is returned when set.
type originator struct {
	mu   sync.Mutex
	reqs []asterisk.OriginateRequest
	err  error
}

func newOriginator() *originator { return &originator{} }

func (o *originator) Originate(_ context.Context, r asterisk.OriginateRequest) (asterisk.OriginateResult, error) {
	o.mu.Lock()
	o.reqs = append(o.reqs, r)
	err := o.err
	o.mu.Unlock()
	if err != nil {
		return asterisk.OriginateResult{}, err
	}
	return asterisk.OriginateResult{Uniqueid: "1795305929.121"}, nil
}

func (o *originator) requests() []asterisk.OriginateRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]asterisk.OriginateRequest(nil), o.reqs...)
}

// env is an adapter wired to a fake portal.
type env struct {
	t     testing.TB
	fake  *fakecrm.Bitrix24
	a     *Adapter
	store crm.CallStore
	recs  string // recordings directory
	orig  *originator
	reg   *prometheus.Registry
	state string
	srv   *httptest.Server // serves the adapter's routes under /crm/b24

	originates int // originate requests returned by originated so far
}

type envOpt func(*crm.Params, *Config)

func testConfig(f *fakecrm.Bitrix24) *Config {
	c := NewConfig()
	c.PortalURL = f.URL()
	c.OAuthURL = f.URL()
	c.Auth.ClientID = f.ClientID()
	c.Auth.ClientSecret = configs.NewSecret(f.ClientSecret())
	c.Users.DefaultUserID = 1
	c.Lines = []LineConfig{{Number: "+74951112233", Name: "Main"}, {Number: "+74951112244", Name: "Ring group"}, {Number: "+74951112200", Name: "Sales queue"}}
	c.Timezone = "Europe/Moscow"
	c.RateLimit.RPS = 1000 // tests that measure the limit set it themselves
	c.RateLimit.Burst = 1000
	return c
}

// newEnv builds an adapter on fake f, authorised with tokens the fake issued (written to the
// state directory as an installation would leave them).
func newEnv(tb testing.TB, f *fakecrm.Bitrix24, opts ...envOpt) *env {
	tb.Helper()
	e := &env{t: tb, fake: f, store: newCallStore(tb), recs: tb.TempDir(), orig: newOriginator(), reg: prometheus.NewRegistry(), state: tb.TempDir()}
	cfg := testConfig(f)
	var handler atomic.Pointer[http.ServeMux]
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := handler.Load(); h != nil {
			h.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	tb.Cleanup(e.srv.Close)
	p := crm.Params{
		Name: "b24", Type: Type, Config: cfg, Metrics: e.reg, StateDir: e.state, Calls: e.store,
		Originator: e.orig, Recordings: dirRecordings{dir: e.recs}, RouteURL: e.srv.URL + "/crm/b24",
		Logger: slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(&p, cfg)
	}
	keep := p.Type == "keep-tokens"
	p.Type = Type
	if cfg.Auth.Mode == AuthOAuth && p.StateDir != "" && !keep {
		tok := f.IssueTokens()
		err := api.TokenFile{Path: filepath.Join(p.StateDir, tokenFile)}.Save(&api.Tokens{
			AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Domain: tok.Domain, MemberID: tok.MemberID,
			Scope: tok.Scope, ApplicationToken: tok.ApplicationToken, ClientEndpoint: tok.ClientEndpoint,
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	a, err := New(p)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	e.a = a
	mux := http.NewServeMux()
	for _, r := range a.Routes() {
		method, path, _ := strings.Cut(r.Pattern, " ")
		mux.Handle(method+" /crm/b24"+path, r.Handler)
	}
	handler.Store(mux)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return e
}

// withoutTokens gives the adapter an empty state directory (<state>/none): never installed.
func withoutTokens() envOpt {
	return func(p *crm.Params, _ *Config) {
		p.StateDir = filepath.Join(p.StateDir, "none")
		if err := os.Mkdir(p.StateDir, 0o700); err != nil {
			panic(err)
		}
		p.Type = "keep-tokens"
	}
}

// answeredInbound is an answered inbound call of ext from a known customer, recorded.
func answeredInbound(e *env, id, ext string) *call.Record {
	start := time.Date(2026, 11, 22, 0, 3, 2, 0, time.UTC)
	ans := start.Add(2 * time.Second)
	end := ans.Add(3 * time.Second)
	name := "in-" + strings.ReplaceAll(id, ".", "-") + ".wav"
	writeWAV(e.t, e.recs, name, 47404)
	return &call.Record{
		CallID: id, PBX: "pbx1", Direction: call.Inbound, Customer: "+79001234567", Line: "+74951112233",
		StartedAt: start, AnsweredAt: &ans, EndedAt: end, Disposition: call.Answered,
		AnsweredBy: ext, Rang: []string{ext}, RingSeconds: 2, TalkSeconds: 3,
		Legs:      []call.Leg{{Ext: ext, AnsweredAt: &ans, EndedAt: &end, TalkSeconds: 3}},
		Recording: "/var/spool/asterisk/monitor/" + name,
	}
}

func (e *env) deliver(rec *call.Record) {
	e.t.Helper()
	if err := e.a.Deliver(context.Background(), rec); err != nil {
		e.t.Fatalf("deliver %s: %v", rec.Key(), err)
	}
}

func (e *env) live(ev call.Live) {
	e.t.Helper()
	if err := e.a.Live(context.Background(), &ev); err != nil {
		e.t.Fatalf("live %s %s: %v", ev.Kind, ev.Ext, err)
	}
}

// callByExt returns the fake's calls with an EXTERNAL_CALL_ID.
func callsByExt(s fakecrm.B24State, ext string) []fakecrm.B24Call {
	var out []fakecrm.B24Call
	for _, c := range s.Calls {
		if c.ExternalCallID == ext {
			out = append(out, c)
		}
	}
	return out
}

func onlyCall(t *testing.T, s fakecrm.B24State, ext string) fakecrm.B24Call {
	t.Helper()
	cs := callsByExt(s, ext)
	if len(cs) != 1 {
		t.Fatalf("%d calls with EXTERNAL_CALL_ID %s in the fake, want 1: %+v", len(cs), ext, cs)
	}
	return cs[0]
}

func mustf(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(format, args...)
	}
}

func decodeJSON(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}

// httpDo sends a request with a context (tests never use the context-less helpers).
func httpDo(tb testing.TB, method, u, contentType string, body io.Reader) *http.Response {
	tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, u, body)
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	return resp
}

func postForm(tb testing.TB, u string, form url.Values) *http.Response {
	tb.Helper()
	return httpDo(tb, http.MethodPost, u, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
}
