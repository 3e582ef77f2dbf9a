package amocrm

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/recordings"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

const (
	testRedirect  = "https://pbx.example.com/crm/amo/oauth/callback"
	testRecSecret = "recordings-secret-0123456789"
)

// TestMain lets 8 tests run at once: they wait on HTTP round trips to the fake and on the
// adapter's rate limiter and batch window, not on the CPU.
func TestMain(m *testing.M) {
	testkit.SetParallel(8)
	os.Exit(m.Run())
}

// env is one adapter talking to a fresh fake through a real HTTP server.
type env struct {
	t     *testing.T
	typ   string
	fake  *fakecrm.AmoCRM
	srv   *httptest.Server
	dir   string
	cfg   *Config
	reg   *prometheus.Registry
	store *memStore
	rec   *recordings.Server
	orig  *recordingOriginator
	a     *Adapter
	now   func() time.Time
	// renewed counts the adapter's crm.Params.AuthRenewed calls.
	renewed atomic.Int32
}

type envOpt struct {
	fake      fakecrm.AmoOptions
	mutate    func(*Config)
	noAuth    bool // do not authorise
	longLived bool
	now       func() time.Time
}

func newEnv(t *testing.T, typ string, o envOpt) *env {
	t.Helper()
	o.fake.Flavor = typ
	if o.now != nil {
		o.fake.Now = o.now
	}
	e := &env{t: t, typ: typ, fake: fakecrm.NewAmoDemo(o.fake), dir: t.TempDir(), store: newMemStore(), orig: &recordingOriginator{}, now: o.now}
	if e.now == nil {
		e.now = time.Now
	}
	e.srv = httptest.NewServer(e.fake)
	t.Cleanup(e.srv.Close)
	cfg := NewConfig(typ)
	cfg.Subdomain = "romashka"
	cfg.BaseURL = e.srv.URL
	cfg.AuthorizeURL = e.srv.URL + "/oauth"
	cfg.Auth.ClientID = fakecrm.DemoClientID
	cfg.Auth.ClientSecret = configs.NewSecret(fakecrm.DemoClientSecret)
	cfg.Auth.RedirectURI = testRedirect
	cfg.Users = map[string]int64{"101": 504141, "102": 504142, "103": 504143}
	cfg.DefaultUser = 504143
	cfg.Batch.Window = 20 * time.Millisecond
	cfg.ClickToCall.AcceptJWT = true
	if o.longLived {
		cfg.Auth = AuthConfig{LongLivedToken: configs.NewSecret(fakecrm.DemoLongLivedToken), ProactiveRefresh: cfg.Auth.ProactiveRefresh}
		cfg.ClickToCall.AcceptJWT = false
	}
	if o.mutate != nil {
		o.mutate(cfg)
	}
	e.cfg = cfg
	if !o.noAuth && !o.longLived {
		code := e.fake.IssueCode("romashka")
		if _, err := ExchangeCodeWith(context.Background(), cfg, e.dir, code, ExchangeOptions{Type: typ, Now: e.now}); err != nil {
			t.Fatalf("exchanging the code: %v", err)
		}
		// `pbxbridge crm auth` runs minutes before the daemon: its requests are not the
		// adapter's to count.
		e.fake.ResetRateLimit()
	}
	recDir := "/var/spool/asterisk/monitor" // links only: the files need not exist here
	rs, err := recordings.New(recordings.Config{Dir: recDir, PublicURL: "https://pbx.example.com/rec/", Secret: configs.NewSecret(testRecSecret)}, recordings.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.rec = rs
	e.a = e.open()
	return e
}

// open builds a new adapter over the env's state directory and call store (a daemon restart).
func (e *env) open() *Adapter {
	e.t.Helper()
	// A new adapter's limiter starts empty; the fake forgets what the previous one sent rather
	// than the test waiting a second.
	e.fake.ResetRateLimit()
	e.reg = prometheus.NewRegistry()
	a, err := New(crm.Params{Name: "amo", Type: e.typ, Config: e.cfg, StateDir: e.dir, Metrics: e.reg, Calls: e.store,
		Recordings: e.rec, Originator: e.orig, Now: e.now, RouteURL: "https://pbx.example.com/crm/amo",
		AuthRenewed: func() { e.renewed.Add(1) }})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

func (e *env) state() fakecrm.AmoAccountState {
	e.t.Helper()
	return e.fake.State().Accounts[0]
}

func (e *env) deliver(rec *call.Record) {
	e.t.Helper()
	if err := e.a.Deliver(context.Background(), rec); err != nil {
		e.t.Fatalf("deliver %s: %v", rec.Key(), err)
	}
}

// answered is an answered inbound call from the demo's known customer to 101.
func answered(i int) *call.Record {
	start := time.Date(2026, 11, 22, 0, 3, 2, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	ans := start.Add(2 * time.Second)
	return &call.Record{CallID: fmt.Sprintf("1795305782.%d", i), PBX: "office", Direction: call.Inbound,
		Customer: "+79001234567", Line: "+74951112233", StartedAt: start, AnsweredAt: &ans, EndedAt: start.Add(5 * time.Second),
		Disposition: call.Answered, AnsweredBy: "101", Rang: []string{"101"}, RingSeconds: 2, TalkSeconds: 3,
		Legs: []call.Leg{{Ext: "101", AnsweredAt: &ans, TalkSeconds: 3}}}
}

// meta is the part of a transcript's .meta.json the records are built from.
type meta struct {
	Calls []struct {
		Linkedid   string   `json:"linkedid"`
		Direction  string   `json:"direction"`
		Caller     string   `json:"caller"`
		Called     string   `json:"called"`
		DID        string   `json:"did"`
		AnsweredBy []string `json:"answered_by"`
		Outcome    string   `json:"outcome"`
		Start      float64  `json:"start"`
		End        float64  `json:"end"`
		TalkS      float64  `json:"talk_s"`
		Recordings []string `json:"recordings"`
		Dials      []struct {
			To string `json:"to"`
		} `json:"dials"`
	} `json:"calls"`
}

func unix(f float64) time.Time {
	s, frac := math.Modf(f)
	return time.Unix(int64(s), int64(frac*1e9)).UTC()
}

// e164 normalises the lab's Russian numbers by hand (8XXXXXXXXXX and 7XXXXXXXXXX → +7…).
func e164(n string) string {
	switch {
	case len(n) == 11 && (n[0] == '8' || n[0] == '7'):
		return "+7" + n[1:]
	}
	return n
}

// recordFromMeta builds the Record of a transcript's single call from what really happened
// (its .meta.json), as the call model is specified to: customer in E.164, the DID as the line,
// talk time rounded, the extension that answered, the recording.
func recordFromMeta(t *testing.T, scenario string, rang ...string) *call.Record {
	t.Helper()
	b, err := transcripts.Meta(scenario)
	if err != nil {
		t.Fatal(err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	c := m.Calls[0]
	r := &call.Record{CallID: c.Linkedid, PBX: "lab", Direction: call.Direction(c.Direction), StartedAt: unix(c.Start),
		EndedAt: unix(c.End), TalkSeconds: int(math.Round(c.TalkS)), Rang: rang}
	if len(c.Recordings) > 0 {
		r.Recording = c.Recordings[0]
	}
	switch r.Direction {
	case call.Inbound:
		r.Customer, r.Line = e164(c.Caller), c.DID
		if len(c.AnsweredBy) > 0 {
			r.AnsweredBy = c.AnsweredBy[0]
		}
	case call.Outbound:
		r.Customer, r.Line = e164(c.Called), ""
		r.AnsweredBy = c.Caller // the extension that placed it talked to the customer
	}
	switch {
	case len(c.AnsweredBy) > 0:
		r.Disposition = call.Answered
		at := r.EndedAt.Add(-time.Duration(r.TalkSeconds) * time.Second)
		r.AnsweredAt = &at
		r.Legs = []call.Leg{{Ext: r.AnsweredBy, AnsweredAt: &at, TalkSeconds: r.TalkSeconds}}
	case c.Outcome == "not answered: BUSY":
		r.Disposition, r.HangupCause = call.Busy, 17
		if r.Direction == call.Outbound {
			r.Line, r.AnsweredBy = c.Caller, "" // nobody talked; the caller id is the extension
		}
	default:
		r.Disposition, r.HangupCause = call.NoAnswer, 19
	}
	return r
}

// recordingOriginator is the PBX side of click-to-call in tests: it records requests and
// answers with the configured error.
type recordingOriginator struct {
	mu   sync.Mutex
	reqs []asterisk.OriginateRequest
	err  error
}

func (o *recordingOriginator) Originate(_ context.Context, req asterisk.OriginateRequest) (asterisk.OriginateResult, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reqs = append(o.reqs, req)
	if o.err != nil {
		return asterisk.OriginateResult{}, o.err
	}
	return asterisk.OriginateResult{Uniqueid: "1795305900.1"}, nil
}

func (o *recordingOriginator) requests() []asterisk.OriginateRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]asterisk.OriginateRequest(nil), o.reqs...)
}

func tokenFileOf(t *testing.T, dir string) tokenFile {
	t.Helper()
	tf, ok, err := loadTokenFile(filepath.Join(dir, tokenFileName))
	if err != nil || !ok {
		t.Fatalf("token file: %v (exists %v)", err, ok)
	}
	return tf
}

func count(reqs map[string]int, key string) int { return reqs[key] }

var _ http.Handler = (*fakecrm.AmoCRM)(nil)
