// Package paseto implements exactly one PASETO mode, v4.public (Ed25519 over PAE), and the
// PASERK k4 key serialisations pbxbridge needs (k4.public, k4.secret, k4.pid).
//
// It is deliberately small and strict: the version and purpose are fixed (the token never picks an
// algorithm), base64url must be raw (unpadded) and canonical, and every function returns an error
// instead of panicking on malformed input. Verify returns the payload and footer only after the
// signature has been checked; callers must not look at anything in an unverified token except
// through Split, whose results are explicitly untrusted.
//
// The implementation is checked against the official test vectors in testdata/ and cross-checked
// against aidanwoods.dev/go-paseto in the tests.
package paseto

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/blake2b"
)

// Header is the only token header this package accepts.
const Header = "v4.public."

// Errors returned by this package; match them with errors.Is.
var (
	// ErrFormat means the token is not a well-formed v4.public token.
	ErrFormat = errors.New("malformed v4.public token")
	// ErrSignature means the token is well-formed but the signature does not verify.
	ErrSignature = errors.New("bad signature")
	// ErrKey means a key or PASERK string is malformed.
	ErrKey = errors.New("malformed key")
)

var b64 = base64.RawURLEncoding.Strict()

// PAE is the PASETO pre-authentication encoding of pieces.
func PAE(pieces ...[]byte) []byte {
	n := 8
	for _, p := range pieces {
		n += 8 + len(p)
	}
	out := make([]byte, 0, n)
	out = appendLE64(out, uint64(len(pieces)))
	for _, p := range pieces {
		out = appendLE64(out, uint64(len(p)))
		out = append(out, p...)
	}
	return out
}

func appendLE64(b []byte, n uint64) []byte {
	return binary.LittleEndian.AppendUint64(b, n&^(1<<63))
}

// Sign returns the v4.public token for payload m, footer f (may be empty) and implicit
// assertion i, signed with the Ed25519 private key sk.
func Sign(sk ed25519.PrivateKey, m, f, i []byte) (string, error) {
	if len(sk) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("%w: private key is %d bytes, want %d", ErrKey, len(sk), ed25519.PrivateKeySize)
	}
	sig := ed25519.Sign(sk, PAE([]byte(Header), m, f, i))
	body := make([]byte, 0, len(m)+len(sig))
	body = append(append(body, m...), sig...)
	tok := Header + b64.EncodeToString(body)
	if len(f) > 0 {
		tok += "." + b64.EncodeToString(f)
	}
	return tok, nil
}

// Parts is a token split into its decoded parts. Nothing in it is authenticated.
type Parts struct {
	Message   []byte // the payload m
	Signature []byte // 64 bytes
	Footer    []byte // may be empty
}

// Split decodes a v4.public token without verifying it. The result is UNTRUSTED: use it only to
// read the footer's key id before Verify, or to display a token marked as unverified.
func Split(token string) (Parts, error) {
	if !strings.HasPrefix(token, Header) {
		return Parts{}, fmt.Errorf("%w: header is not %q", ErrFormat, Header)
	}
	rest := token[len(Header):]
	body, footer, hasFooter := strings.Cut(rest, ".")
	if strings.Contains(footer, ".") {
		return Parts{}, fmt.Errorf("%w: too many segments", ErrFormat)
	}
	if hasFooter && footer == "" {
		return Parts{}, fmt.Errorf("%w: empty footer segment", ErrFormat)
	}
	raw, err := decode(body)
	if err != nil {
		return Parts{}, fmt.Errorf("%w: payload: %w", ErrFormat, err)
	}
	if len(raw) < ed25519.SignatureSize {
		return Parts{}, fmt.Errorf("%w: %d bytes is too short for a signature", ErrFormat, len(raw))
	}
	p := Parts{
		Message:   raw[:len(raw)-ed25519.SignatureSize],
		Signature: raw[len(raw)-ed25519.SignatureSize:],
	}
	if hasFooter {
		if p.Footer, err = decode(footer); err != nil {
			return Parts{}, fmt.Errorf("%w: footer: %w", ErrFormat, err)
		}
	}
	return p, nil
}

// decode is strict raw base64url: only the URL alphabet (Go's decoder would silently skip CR and
// LF), no padding, and zero trailing bits.
func decode(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if !isB64URL(s[i]) {
			return nil, fmt.Errorf("invalid base64url character at offset %d", i)
		}
	}
	return b64.DecodeString(s)
}

func isB64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// Verify checks token against the Ed25519 public key pk and the implicit assertion i, and returns
// the payload and footer. It never returns data together with an error.
func Verify(pk ed25519.PublicKey, token string, i []byte) (m, f []byte, err error) {
	if len(pk) != ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("%w: public key is %d bytes, want %d", ErrKey, len(pk), ed25519.PublicKeySize)
	}
	p, err := Split(token)
	if err != nil {
		return nil, nil, err
	}
	if !ed25519.Verify(pk, PAE([]byte(Header), p.Message, p.Footer, i), p.Signature) {
		return nil, nil, ErrSignature
	}
	return p.Message, p.Footer, nil
}

// PASERK prefixes for version 4.
const (
	PublicPrefix = "k4.public."
	SecretPrefix = "k4.secret."
	PIDPrefix    = "k4.pid."
)

// EncodePublic returns the k4.public PASERK of pk.
func EncodePublic(pk ed25519.PublicKey) (string, error) {
	if len(pk) != ed25519.PublicKeySize {
		return "", fmt.Errorf("%w: public key is %d bytes, want %d", ErrKey, len(pk), ed25519.PublicKeySize)
	}
	return PublicPrefix + b64.EncodeToString(pk), nil
}

// DecodePublic parses a k4.public PASERK.
func DecodePublic(s string) (ed25519.PublicKey, error) {
	raw, err := decodePASERK(s, PublicPrefix, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(raw), nil
}

// EncodeSecret returns the k4.secret PASERK of sk (the 64-byte seed||public form).
func EncodeSecret(sk ed25519.PrivateKey) (string, error) {
	if len(sk) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("%w: private key is %d bytes, want %d", ErrKey, len(sk), ed25519.PrivateKeySize)
	}
	return SecretPrefix + b64.EncodeToString(sk), nil
}

// DecodeSecret parses a k4.secret PASERK and checks that its public half matches its seed.
func DecodeSecret(s string) (ed25519.PrivateKey, error) {
	raw, err := decodePASERK(s, SecretPrefix, ed25519.PrivateKeySize)
	if err != nil {
		return nil, err
	}
	sk := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
	if string(sk[ed25519.SeedSize:]) != string(raw[ed25519.SeedSize:]) {
		return nil, fmt.Errorf("%w: public half does not match the seed", ErrKey)
	}
	return sk, nil
}

func decodePASERK(s, prefix string, size int) ([]byte, error) {
	if !strings.HasPrefix(s, prefix) {
		return nil, fmt.Errorf("%w: want prefix %q", ErrKey, prefix)
	}
	raw, err := decode(s[len(prefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	if len(raw) != size {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrKey, len(raw), size)
	}
	return raw, nil
}

// PID returns the k4.pid PASERK identifier of pk: "k4.pid." || base64url(BLAKE2b-264("k4.pid." ||
// k4.public PASERK of pk)).
func PID(pk ed25519.PublicKey) (string, error) {
	pub, err := EncodePublic(pk)
	if err != nil {
		return "", err
	}
	h, err := blake2b.New(33, nil)
	if err != nil {
		return "", fmt.Errorf("paserk pid: %w", err)
	}
	h.Write([]byte(PIDPrefix))
	h.Write([]byte(pub))
	return PIDPrefix + b64.EncodeToString(h.Sum(nil)), nil
}
