package paseto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	gopaseto "aidanwoods.dev/go-paseto"
)

type vectorFile struct {
	Tests []struct {
		Name       string  `json:"name"`
		ExpectFail bool    `json:"expect-fail"`
		PublicKey  string  `json:"public-key"`
		SecretKey  string  `json:"secret-key"`
		Token      string  `json:"token"`
		Payload    *string `json:"payload"`
		Footer     string  `json:"footer"`
		Implicit   string  `json:"implicit-assertion"`
	} `json:"tests"`
}

func loadVectors(t *testing.T) vectorFile {
	t.Helper()
	data, err := os.ReadFile("testdata/v4.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(data, &vf); err != nil {
		t.Fatal(err)
	}
	return vf
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOfficialVectors runs every official v4 vector: the v4.public ones must sign to the exact
// token and verify to the exact payload/footer; every expect-fail vector must be rejected.
func TestOfficialVectors(t *testing.T) {
	vf := loadVectors(t)
	var refPK ed25519.PublicKey
	ran := 0
	for _, v := range vf.Tests {
		if v.PublicKey != "" {
			refPK = mustHex(t, v.PublicKey)
		}
	}
	for _, v := range vf.Tests {
		t.Run(v.Name, func(t *testing.T) {
			pk := refPK
			if v.PublicKey != "" {
				pk = mustHex(t, v.PublicKey)
			}
			if v.ExpectFail {
				m, f, err := Verify(pk, v.Token, []byte(v.Implicit))
				if err == nil || m != nil || f != nil {
					t.Fatalf("expect-fail vector accepted: m=%q f=%q err=%v", m, f, err)
				}
				ran++
				return
			}
			if !strings.HasPrefix(v.Token, Header) {
				t.Skip("v4.local vector: not a mode this package implements")
			}
			sk := ed25519.PrivateKey(mustHex(t, v.SecretKey))
			tok, err := Sign(sk, []byte(*v.Payload), []byte(v.Footer), []byte(v.Implicit))
			if err != nil {
				t.Fatal(err)
			}
			if tok != v.Token {
				t.Fatalf("Sign:\n got %s\nwant %s", tok, v.Token)
			}
			m, f, err := Verify(pk, v.Token, []byte(v.Implicit))
			if err != nil {
				t.Fatal(err)
			}
			if string(m) != *v.Payload || string(f) != v.Footer {
				t.Fatalf("Verify = %q, %q", m, f)
			}
			if _, _, err := Verify(pk, v.Token, []byte("other-assertion")); !errors.Is(err, ErrSignature) {
				t.Fatalf("wrong implicit assertion: err = %v, want ErrSignature", err)
			}
			ran++
		})
	}
	if ran < 3+5 {
		t.Fatalf("only %d vectors exercised", ran)
	}
}

func TestPIDVectors(t *testing.T) {
	data, err := os.ReadFile("testdata/k4.pid.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf struct {
		Tests []struct {
			Name       string  `json:"name"`
			ExpectFail bool    `json:"expect-fail"`
			Key        string  `json:"key"`
			PASERK     *string `json:"paserk"`
		} `json:"tests"`
	}
	if err := json.Unmarshal(data, &vf); err != nil {
		t.Fatal(err)
	}
	for _, v := range vf.Tests {
		t.Run(v.Name, func(t *testing.T) {
			got, err := PID(mustHex(t, v.Key))
			if v.PASERK == nil {
				if err == nil {
					t.Fatalf("PID accepted a bad key: %s", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != *v.PASERK {
				t.Fatalf("PID = %s, want %s", got, *v.PASERK)
			}
		})
	}
}

// TestCrossCheckGoPaseto proves interoperability with an independent implementation in both
// directions, including footer and implicit assertion.
func TestCrossCheckGoPaseto(t *testing.T) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	implicit := []byte("pbxbridge-license:v1")
	footer := []byte(`{"kid":"k4.pid.x"}`)
	payload := []byte(`{"exp":"2099-01-01T00:00:00Z","sub":"c1"}`)

	tok, err := Sign(sk, payload, footer, implicit)
	if err != nil {
		t.Fatal(err)
	}
	gpk, err := gopaseto.NewV4AsymmetricPublicKeyFromEd25519(pk)
	if err != nil {
		t.Fatal(err)
	}
	parser := gopaseto.NewParserWithoutExpiryCheck()
	got, err := parser.ParseV4Public(gpk, tok, implicit)
	if err != nil {
		t.Fatalf("go-paseto rejects our token: %v", err)
	}
	if !bytes.Equal(got.Footer(), footer) {
		t.Fatalf("go-paseto footer = %q", got.Footer())
	}

	gsk, err := gopaseto.NewV4AsymmetricSecretKeyFromEd25519(sk)
	if err != nil {
		t.Fatal(err)
	}
	gt := gopaseto.NewToken()
	gt.SetString("sub", "c2")
	gt.SetFooter(footer)
	theirs := gt.V4Sign(gsk, implicit)
	m, f, err := Verify(pk, theirs, implicit)
	if err != nil {
		t.Fatalf("we reject go-paseto's token: %v", err)
	}
	if !bytes.Equal(f, footer) || !bytes.Contains(m, []byte(`"sub":"c2"`)) {
		t.Fatalf("decoded m=%q f=%q", m, f)
	}
}

// TestEveryBitFlipRejected flips each bit of the payload, the signature and the footer, and each
// bit of the encoded token text.
func TestEveryBitFlipRejected(t *testing.T) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	implicit := []byte("pbxbridge-license:v1")
	m := []byte(`{"v":1,"lid":"L-1","rev":4}`)
	f := []byte(`{"kid":"k4.pid.abc"}`)
	sig := ed25519.Sign(sk, PAE([]byte(Header), m, f, implicit))

	assemble := func(m, sig, f []byte) string {
		return Header + b64.EncodeToString(append(append([]byte{}, m...), sig...)) + "." + b64.EncodeToString(f)
	}
	if _, _, err := Verify(pk, assemble(m, sig, f), implicit); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	for name, part := range map[string][]byte{"payload": m, "signature": sig, "footer": f} {
		for i := range len(part) * 8 {
			part[i/8] ^= 1 << (i % 8)
			if got, _, err := Verify(pk, assemble(m, sig, f), implicit); err == nil || got != nil {
				t.Fatalf("%s bit %d flipped: accepted", name, i)
			}
			part[i/8] ^= 1 << (i % 8)
		}
	}
	tok := []byte(assemble(m, sig, f))
	for i := range len(tok) * 8 {
		tok[i/8] ^= 1 << (i % 8)
		if _, _, err := Verify(pk, string(tok), implicit); err == nil {
			t.Fatalf("token text bit %d flipped: accepted %q", i, tok)
		}
		tok[i/8] ^= 1 << (i % 8)
	}
}

func TestSplitRejects(t *testing.T) {
	pk, sk, _ := ed25519.GenerateKey(rand.Reader)
	good, err := Sign(sk, []byte("{}"), []byte("f"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"empty":             "",
		"v4.local":          strings.Replace(good, "v4.public.", "v4.local.", 1),
		"V4.PUBLIC":         strings.Replace(good, "v4.public.", "V4.PUBLIC.", 1),
		"v2.public":         strings.Replace(good, "v4.public.", "v2.public.", 1),
		"padding":           good + "=",
		"newline in body":   good[:20] + "\n" + good[20:],
		"std alphabet":      strings.Replace(good, good[12:13], "+", 1),
		"extra segment":     good + ".eA",
		"empty footer":      strings.SplitN(good, ".", 4)[0] + "." + strings.SplitN(good, ".", 4)[1] + "." + strings.SplitN(good, ".", 4)[2] + ".",
		"too short":         Header + b64.EncodeToString(make([]byte, 63)),
		"trailing bits set": Header + b64.EncodeToString(make([]byte, 64))[:85] + "B",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if m, f, err := Verify(pk, tok, nil); err == nil || m != nil || f != nil {
				t.Fatalf("accepted %q", tok)
			}
		})
	}
}

func TestPASERKRoundTrip(t *testing.T) {
	pk, sk, _ := ed25519.GenerateKey(rand.Reader)
	ps, err := EncodePublic(pk)
	if err != nil {
		t.Fatal(err)
	}
	pk2, err := DecodePublic(ps)
	if err != nil || !pk.Equal(pk2) {
		t.Fatalf("DecodePublic(%s) = %x, %v", ps, pk2, err)
	}
	ss, err := EncodeSecret(sk)
	if err != nil {
		t.Fatal(err)
	}
	sk2, err := DecodeSecret(ss)
	if err != nil || !sk.Equal(sk2) {
		t.Fatalf("DecodeSecret: %v", err)
	}
	// A secret whose public half was swapped must be refused.
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	bad := append(append([]byte{}, sk[:32]...), other...)
	if _, err := DecodeSecret(SecretPrefix + b64.EncodeToString(bad)); !errors.Is(err, ErrKey) {
		t.Fatalf("mismatched secret: err = %v", err)
	}
	if _, err := DecodePublic("k4.secret." + ps[len(PublicPrefix):]); !errors.Is(err, ErrKey) {
		t.Fatalf("wrong prefix: err = %v", err)
	}
	if _, err := DecodePublic("k3.public." + ps[len(PublicPrefix):]); !errors.Is(err, ErrKey) {
		t.Fatalf("wrong version: err = %v", err)
	}
}
