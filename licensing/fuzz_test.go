package licensing_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/internal/paseto"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the committed fuzz seed corpus in testdata/fuzz")

// fuzzKey is a fixed key (seed = SHA-256 of a constant) so the committed corpus holds tokens that
// really verify, and the fuzzer can reach the claims decoder.
func fuzzKey(tb testing.TB) (ed25519.PrivateKey, *keyring.Keyring) {
	tb.Helper()
	seed := sha256.Sum256([]byte("pbxbridge licensing fuzz key"))
	sk := ed25519.NewKeyFromSeed(seed[:])
	pk := sk.Public().(ed25519.PublicKey)
	kid, err := paseto.PID(pk)
	if err != nil {
		tb.Fatal(err)
	}
	kr, err := keyring.New(keyring.Key{KID: kid, Public: pk, Status: keyring.StatusActive, NotBefore: windowStart,
		Types: []keyring.Type{keyring.TypePaid, keyring.TypeNFR, keyring.TypeTrial, keyring.TypeRevocation, keyring.TypeDemo}})
	if err != nil {
		tb.Fatal(err)
	}
	return sk, kr
}

// seedFiles are the corpus: valid licences of every shape and near-misses.
func seedFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	sk, kr := fuzzKey(tb)
	kid := kr.Keys()[0].KID
	footer := []byte(`{"kid":"` + kid + `"}`)
	signed := func(payload string) []byte {
		tok, err := paseto.Sign(sk, []byte(payload), footer, []byte(licensing.ImplicitAssertion))
		if err != nil {
			tb.Fatal(err)
		}
		return licensing.Armour(tok, "connector=bitrix24 licensee=\"ООО Ромашка\"")
	}
	full := `{"v":1,"iss":"pbxbridge","lid":"L-2025-000123","rev":4,"iat":"2025-01-10T09:12:00Z","typ":"paid","sub":"cust-8812",` +
		`"licensee":"ООО Ромашка","connector":"bitrix24","crm":{"bitrix24_domain":"romashka.bitrix24.ru","member_id":"m1"},` +
		`"seats":{"crm_users":25,"extensions":40},"overage":{"ratio":0.1,"hours":72},` +
		`"term":{"start":"2025-01-15","end":"2025-02-14","tz":"Europe/Moscow"},"grace_until":"2025-02-20",` +
		`"hosts":[{"fpv":1,"f":{"mid":"AAAAAAAAAAAAAAAAAAAAAA","mac":"BBBBBBBBBBBBBBBBBBBBBB","dmi":"CCCCCCCCCCCCCCCCCCCCCC"}}],` +
		`"min_match":2,"min_stable":1,"min_version":"1.0.0","env":{"asterisk":">=18"},"crit":["crm","seats"]}`
	trial := `{"v":1,"iss":"pbxbridge","lid":"T-1","rev":1,"iat":"2025-01-10T09:12:00Z","typ":"trial","sub":"c","connector":"kommo",` +
		`"crm":{"account_id":31234567,"subdomain":"romashka"},"term":{"start":"2025-03-01","end":"2025-03-14","tz":"UTC"},"grace_until":"2025-03-14"}`
	demo := `{"v":1,"iss":"pbxbridge","lid":"DEMO","rev":1,"iat":"2025-01-10T09:12:00Z","typ":"demo","sub":"demo","connector":"amocrm",` +
		`"crm":{"subdomain":"demo-amocrm.invalid"},"term":{"start":"2025-01-01","end":"2099-12-31","tz":"UTC"},"grace_until":"2099-12-31"}`
	revocation := `{"v":1,"iss":"pbxbridge","iat":"2025-01-10T09:12:00Z","typ":"revocation","seq":3,` +
		`"revoked":[{"lid":"L-2025-000123","rev_le":3}],"revoked_kids":["k4.pid.xxxx"]}`
	tok, err := licensing.Unarmour(signed(full))
	if err != nil {
		tb.Fatal(err)
	}
	return map[string][]byte{
		"valid-full":       signed(full),
		"valid-trial":      signed(trial),
		"valid-demo":       signed(demo),
		"valid-revocation": signed(revocation),
		"bare-token":       []byte(tok + "\n"),
		"duplicate-key":    signed(strings.Replace(full, `"rev":4`, `"rev":4,"rev":5`, 1)),
		"case-variant":     signed(strings.Replace(full, `"rev":4`, `"Rev":4`, 1)),
		"unknown-v":        signed(strings.Replace(full, `"v":1`, `"v":2`, 1)),
		"deep-env":         signed(strings.Replace(full, `{"asterisk":">=18"}`, `[[[[[[[[[[1]]]]]]]]]]`, 1)),
		"no-footer":        licensing.Armour(strings.SplitN(tok, ".", 4)[0] + "." + strings.SplitN(tok, ".", 4)[1] + "." + strings.SplitN(tok, ".", 4)[2]),
		"garbage":          []byte("-----BEGIN PBXBRIDGE LICENSE-----\nv4.public.%%%\n-----END PBXBRIDGE LICENSE-----\n"),
		"empty":            {},
	}
}

// FuzzVerifyFile fuzzes the whole file pipeline: never a panic, never a licence together with an
// error, every error typed with a reason, and an accepted licence survives re-armouring and every
// accessor.
func FuzzVerifyFile(f *testing.F) {
	_, kr := fuzzKey(f)
	v := &licensing.Verifier{Keyring: kr, Connectors: testConnectors, AllowDemo: true, Version: "1.0.0"}
	fp := licensing.FingerprintOf(licensing.RawFactors(hostA))
	for _, data := range seedFiles(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := v.VerifyFile(data)
		if (l == nil) == (err == nil) {
			t.Fatalf("partial result: l=%v err=%v", l != nil, err)
		}
		if err != nil {
			if licensing.ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		for _, at := range []time.Time{time.Unix(0, 0), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)} {
			if !l.IsRevocation() {
				_ = l.PhaseAt(at)
				_ = l.TermEndTime()
				_ = l.GraceEndTime()
			}
		}
		_ = l.MatchHost(fp)
		_ = licensing.InfoOf(l)
		_ = licensing.FileName(l)
		again, err := v.VerifyFile(licensing.Armour(l.Token(), licensing.Comments(l)...))
		if err != nil || again.Digest() != l.Digest() {
			t.Fatalf("re-armoured licence does not verify: %v", err)
		}
	})
}

func requestSeeds(tb testing.TB) map[string]string {
	tb.Helper()
	fp := licensing.FingerprintOf(licensing.RawFactors(hostA))
	req, err := licensing.NewRequest(testConnectors, "bitrix24", "1.0.0", fp, &licensing.CRMBinding{Bitrix24Domain: "x.bitrix24.ru"}, time.Unix(1_760_000_000, 0))
	if err != nil {
		tb.Fatal(err)
	}
	code, err := licensing.EncodeRequest(req)
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]string{"valid": code, "wrapped": code[:40] + "\n  " + code[40:], "empty-object": "pbxreq1.e30.00000000", "empty": ""}
}

// FuzzDecodeRequest fuzzes the activation request parser.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range requestSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := licensing.DecodeRequest(s)
		if err != nil {
			return
		}
		again, err := licensing.EncodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := licensing.DecodeRequest(again); err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
	})
}

// TestSeedCorpus checks the seeds behave as named and, with -update-corpus, rewrites the
// committed corpus in testdata/fuzz/FuzzVerifyFile.
func TestSeedCorpus(t *testing.T) {
	_, kr := fuzzKey(t)
	v := &licensing.Verifier{Keyring: kr, Connectors: testConnectors, AllowDemo: true, Version: "1.0.0"}
	for name, data := range seedFiles(t) {
		_, err := v.VerifyFile(data)
		if strings.HasPrefix(name, "valid-") || name == "bare-token" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		} else if err == nil {
			t.Errorf("%s accepted", name)
		}
		if *updateCorpus {
			dir := filepath.Join("testdata", "fuzz", "FuzzVerifyFile")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if *updateCorpus {
		dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRequest")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, code := range requestSeeds(t) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\nstring(%q)\n", code)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
