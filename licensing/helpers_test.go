package licensing_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/internal/paseto"
	"github.com/pbxbridge/pbxbridge/licensing/issuer"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// testKeys is a dev keyring generated for one test: one key per scope, issuance window
// 2020..2100.
type testKeys struct {
	paid, trial, revocation, demo *issuer.SigningKey
	kr                            *keyring.Keyring
}

var (
	windowStart = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	windowEnd   = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

func newKeys(tb testing.TB) testKeys {
	tb.Helper()
	gen := func(scope string) *issuer.SigningKey {
		k, err := issuer.GenerateKey(scope, windowStart, windowEnd)
		if err != nil {
			tb.Fatal(err)
		}
		return k
	}
	tk := testKeys{paid: gen(keyring.ScopePaid), trial: gen(keyring.ScopeTrial), revocation: gen(keyring.ScopeRevocation), demo: gen(keyring.ScopeDemo)}
	kr, err := keyring.New(tk.paid.Key, tk.trial.Key, tk.revocation.Key, tk.demo.Key)
	if err != nil {
		tb.Fatal(err)
	}
	tk.kr = kr
	return tk
}

// verifier accepts demo licences too, so their own checks (the .invalid binding) can be tested.
func (tk testKeys) verifier() *licensing.Verifier {
	return &licensing.Verifier{Keyring: tk.kr, Connectors: testConnectors, AllowDemo: true}
}

// The connector types of the tests, as the daemon's CRM registry declares them.
const (
	b24     = "bitrix24"
	amoType = "amocrm"
	kommo   = "kommo"
)

var testConnectors = licensing.MustConnectors(
	licensing.ConnectorType{Name: b24, Binding: licensing.BindingDomain},
	licensing.ConnectorType{Name: amoType, Binding: licensing.BindingAccount},
	licensing.ConnectorType{Name: kommo, Binding: licensing.BindingAccount},
)

func date(s string) licensing.Date { return licensing.MustDate(s) }

func datePtr(s string) *licensing.Date { d := date(s); return &d }

func intPtr(n int) *int { return &n }

// paidClaims is a valid paid bitrix24 licence for start..end, grace until graceUntil, in tz.
func paidClaims(lid string, rev int, start, end, grace, tz string) licensing.Claims {
	return licensing.Claims{
		V: 1, Iss: licensing.Issuer, LID: lid, Rev: rev, IAT: time.Date(2026, 1, 10, 9, 12, 0, 0, time.UTC),
		Typ: keyring.TypePaid, Sub: "cust-1", Licensee: "ООО Ромашка", Connector: b24,
		Term: &licensing.Term{Start: date(start), End: date(end), TZ: tz}, GraceUntil: datePtr(grace),
	}
}

// sign signs claims without any check (so tests can produce invalid tokens) and armours them.
func sign(tb testing.TB, k *issuer.SigningKey, c licensing.Claims) []byte {
	tb.Helper()
	tok, err := k.Sign(c)
	if err != nil {
		tb.Fatal(err)
	}
	return licensing.Armour(tok, "test licence")
}

// signRaw signs an arbitrary payload and footer with the key's private half.
func signRaw(tb testing.TB, sk ed25519.PrivateKey, payload, footer []byte, implicit string) []byte {
	tb.Helper()
	tok, err := paseto.Sign(sk, payload, footer, []byte(implicit))
	if err != nil {
		tb.Fatal(err)
	}
	return licensing.Armour(tok)
}

// rawKey is a paid-scope key whose private half the test holds, for hand-made payloads.
func rawKey(tb testing.TB) (keyring.Key, ed25519.PrivateKey) {
	tb.Helper()
	pk, sk, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	kid, err := paseto.PID(pk)
	if err != nil {
		tb.Fatal(err)
	}
	return keyring.Key{KID: kid, Public: pk, Types: []keyring.Type{keyring.TypePaid, keyring.TypeNFR},
		NotBefore: windowStart, NotAfter: windowEnd, Status: keyring.StatusActive}, sk
}

// fakeClock is a settable wall clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// staticHost is a HostSource with fixed raw factors.
type staticHost licensing.RawFactors

func (h staticHost) ReadFactors(context.Context) (licensing.RawFactors, error) {
	out := licensing.RawFactors{}
	for k, v := range h {
		out[k] = v
	}
	return out, nil
}

var hostA = staticHost{
	licensing.FactorMachineID: "3d1219c7c4c5404aaa1f6d2a48adfda4",
	licensing.FactorInstallID: "9f0c2b7e1d3a4c5b8e6f7a9b0c1d2e3f",
	licensing.FactorDMI:       "4c4c4544-0051-3010-8052-b4c04f4d4a32",
	licensing.FactorRootFS:    "0b5a1f1e-2c7d-4e8a-9b3c-5d6e7f8a9b0c",
	licensing.FactorMAC:       "52:54:00:12:34:56",
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is a Service under test with its directories, clock and log.
type env struct {
	t     testing.TB
	keys  testKeys
	dir   string
	state string
	clock *fakeClock
	logs  *syncBuffer
	svc   *licensing.Service
}

func newEnv(tb testing.TB, keys testKeys, now time.Time, opts ...func(*licensing.Options)) *env {
	tb.Helper()
	e := &env{t: tb, keys: keys, dir: filepath.Join(tb.TempDir(), "licenses.d"), state: tb.TempDir(),
		clock: &fakeClock{now: now}, logs: &syncBuffer{}}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	e.svc = e.start(opts...)
	return e
}

// start builds a Service over the env's directories (a "daemon start").
func (e *env) start(opts ...func(*licensing.Options)) *licensing.Service {
	e.t.Helper()
	o := licensing.Options{
		StateDir:   e.state,
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:      e.clock.Now,
		Keyring:    e.keys.kr,
		Host:       hostA,
		Connectors: testConnectors,
	}
	for _, f := range opts {
		f(&o)
	}
	svc, err := licensing.New(context.Background(), licensing.Config{Dir: e.dir}, o)
	if err != nil {
		e.t.Fatal(err)
	}
	return svc
}

func (e *env) write(name string, data []byte) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, name), data, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) reload() {
	e.t.Helper()
	if err := e.svc.Reload(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) at(t time.Time) {
	e.clock.Set(t)
	e.reload()
}

func (e *env) conn(name string) licensing.ConnectorStatus {
	e.t.Helper()
	cs, ok := e.svc.Status().Connector(name)
	if !ok {
		e.t.Fatalf("connector %s not in status", name)
	}
	return cs
}

func (e *env) register(name, typ string, exts ...string) {
	e.t.Helper()
	if err := e.svc.Register(licensing.Instance{Name: name, Type: typ, Extensions: exts}); err != nil {
		e.t.Fatal(err)
	}
}

// moscow returns the instant of local wall time in Europe/Moscow.
func inZone(tb testing.TB, tz, s string) time.Time {
	tb.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04:05", s, loc)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func writeTree(tb testing.TB, root, p, content string) {
	tb.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

func symlinkTree(tb testing.TB, root, p, target string) {
	tb.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		tb.Fatal(err)
	}
}
