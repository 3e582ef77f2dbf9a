// Package issuer is the vendor side of pbxbridge licensing: signing keys, the calendar arithmetic
// of terms, and issuing, renewing, transferring and revoking tokens. It is used by
// cmd/pbxbridge-issuer and by tests; it is never linked into the daemon.
//
// All business arithmetic happens here (docs/licensing-design.md §3.1): the daemon only compares the signed
// dates. Every token issued here passes the daemon's own Verifier before it is written.
package issuer

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/internal/paseto"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// Connectors returns the connector types the vendor issues licences for, with their binding kinds.
// It must agree with what the daemon's CRM registry declares licensable: the daemon rejects a
// licence for a type it does not list, and checks the CRM binding by the kind it declares.
func Connectors() licensing.Connectors {
	return licensing.MustConnectors(
		licensing.ConnectorType{Name: "bitrix24", Binding: licensing.BindingDomain},
		licensing.ConnectorType{Name: "amocrm", Binding: licensing.BindingAccount},
		licensing.ConnectorType{Name: "kommo", Binding: licensing.BindingAccount},
	)
}

// catalogue is env.Connectors, or Connectors() when the environment sets none.
func catalogue(env *Env) licensing.Connectors {
	if env != nil && env.Connectors.Len() > 0 {
		return env.Connectors
	}
	return Connectors()
}

// SigningKey is a private key with its keyring metadata.
type SigningKey struct {
	Key     keyring.Key
	Scope   string
	private ed25519.PrivateKey
}

// secretFile is the JSON form of a .key file.
type secretFile struct {
	KID       string         `json:"kid"`
	Secret    string         `json:"secret"` // k4.secret PASERK
	Scope     string         `json:"scope"`
	Types     []keyring.Type `json:"types"`
	NotBefore time.Time      `json:"not_before"`
	NotAfter  *time.Time     `json:"not_after,omitempty"`
}

// GenerateKey creates a new Ed25519 key of the given scope whose issuance window is
// [notBefore, notAfter] (notAfter zero: open-ended).
func GenerateKey(scope string, notBefore, notAfter time.Time) (*SigningKey, error) {
	types, err := keyring.ScopeTypes(scope)
	if err != nil {
		return nil, err
	}
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return newSigningKey(sk, pk, scope, types, notBefore, notAfter)
}

func newSigningKey(sk ed25519.PrivateKey, pk ed25519.PublicKey, scope string, types []keyring.Type, nb, na time.Time) (*SigningKey, error) {
	kid, err := paseto.PID(pk)
	if err != nil {
		return nil, err
	}
	k := keyring.Key{KID: kid, Public: pk, Types: types, NotBefore: nb.UTC(), Status: keyring.StatusActive}
	if !na.IsZero() {
		k.NotAfter = na.UTC()
	}
	if _, err := keyring.New(k); err != nil {
		return nil, err
	}
	return &SigningKey{Key: k, Scope: scope, private: sk}, nil
}

// Keyring returns a keyring holding only this key (for tests and for verifying what it signs).
func (k *SigningKey) Keyring() *keyring.Keyring {
	kr, err := keyring.New(k.Key)
	if err != nil {
		panic(err) // validated in newSigningKey
	}
	return kr
}

// WriteFiles writes DIR/<kid>.key (mode 0600) and DIR/<kid>.pub and returns their paths.
// Existing files are never overwritten.
func (k *SigningKey) WriteFiles(dir string) (keyPath, pubPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	sec, err := paseto.EncodeSecret(k.private)
	if err != nil {
		return "", "", err
	}
	sf := secretFile{KID: k.Key.KID, Secret: sec, Scope: k.Scope, Types: k.Key.Types, NotBefore: k.Key.NotBefore}
	if !k.Key.NotAfter.IsZero() {
		na := k.Key.NotAfter
		sf.NotAfter = &na
	}
	sj, err := json.MarshalIndent(sf, "", "  ") //nolint:gosec // G117: this is the private key file, written 0600 by design
	if err != nil {
		return "", "", err
	}
	pj, err := keyring.MarshalPub(k.Key, k.Scope)
	if err != nil {
		return "", "", err
	}
	keyPath = filepath.Join(dir, k.Key.KID+".key")
	pubPath = filepath.Join(dir, k.Key.KID+".pub")
	if err := writeNew(keyPath, append(sj, '\n'), 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pj, 0o644); err != nil {
		return "", "", err
	}
	return keyPath, pubPath, nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadKey reads a .key file written by WriteFiles.
func LoadKey(path string) (*SigningKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sf secretFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sk, err := paseto.DecodeSecret(sf.Secret)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var na time.Time
	if sf.NotAfter != nil {
		na = *sf.NotAfter
	}
	k, err := newSigningKey(sk, sk.Public().(ed25519.PublicKey), sf.Scope, sf.Types, sf.NotBefore, na)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if k.Key.KID != sf.KID {
		return nil, fmt.Errorf("%s: kid %s does not match the key (%s)", path, sf.KID, k.Key.KID)
	}
	return k, nil
}

// Sign signs claims as they are and returns the token. It does not check them; Issue does.
func (k *SigningKey) Sign(c licensing.Claims) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return "", err
	}
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	footer, err := json.Marshal(struct {
		KID string `json:"kid"`
	}{k.Key.KID})
	if err != nil {
		return "", err
	}
	return paseto.Sign(k.private, payload, footer, []byte(licensing.ImplicitAssertion))
}

// Issue signs c and verifies the result with the daemon's own verifier against this key and
// Connectors(), so a token that the daemon would reject is never handed out. It returns the
// verified licence and the armoured file content.
func (k *SigningKey) Issue(c licensing.Claims) (*licensing.License, []byte, error) {
	if c.V == 0 {
		c.V = licensing.SchemaVersion
	}
	if c.Iss == "" {
		c.Iss = licensing.Issuer
	}
	if !k.Key.Allows(c.Typ) {
		return nil, nil, fmt.Errorf("key %s (scope %s) may not sign %s tokens", k.Key.KID, k.Scope, c.Typ)
	}
	tok, err := k.Sign(c)
	if err != nil {
		return nil, nil, err
	}
	v := licensing.Verifier{Keyring: k.Keyring(), Connectors: Connectors(), AllowDemo: true}
	l, err := v.VerifyToken(tok)
	if err != nil {
		return nil, nil, fmt.Errorf("the issued token does not verify: %w", err)
	}
	return l, licensing.Armour(tok, licensing.Comments(l)...), nil
}

// ErrNoTerm means neither months nor days were given.
var ErrNoTerm = errors.New("give the term in --months (or --days for a trial)")
