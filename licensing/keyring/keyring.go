// Package keyring holds the Ed25519 public keys pbxbridge trusts for licence tokens.
//
// The release keyring is compiled into the binary (release.go) and pinned by a test on its
// SHA-256 digest, so a key can only change through a reviewed release. Verification keys never
// come from a file, the environment or the licence itself, with one exception: a binary built with
// the `devkeys` build tag also trusts the *.pub files in the directory named by the environment
// variable PBXBRIDGE_DEV_KEYRING (see Default). Without the tag that variable is ignored.
//
// Every key carries the token types it may sign (scopes), an issuance window that a token's `iat`
// must fall into, and a status: retired keys still verify what they signed, revoked keys verify
// nothing. A Keyring is immutable and safe for concurrent use.
package keyring

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing/internal/paseto"
)

// Type is a token type (the `typ` claim). A key's scopes are the types it may sign.
type Type string

// Token types.
const (
	TypePaid       Type = "paid"
	TypeNFR        Type = "nfr"
	TypeTrial      Type = "trial"
	TypeRevocation Type = "revocation"
	TypeDemo       Type = "demo"
)

// Scope names accepted by ScopeTypes (the issuer's `key gen --scope`).
const (
	ScopePaid       = "paid" // signs paid and nfr tokens
	ScopeTrial      = "trial"
	ScopeRevocation = "revocation"
	ScopeDemo       = "demo" // signs demo tokens, valid only for CRM accounts under .invalid
)

// ScopeTypes maps a scope name to the token types a key of that scope may sign.
func ScopeTypes(scope string) ([]Type, error) {
	switch scope {
	case ScopePaid:
		return []Type{TypePaid, TypeNFR}, nil
	case ScopeTrial:
		return []Type{TypeTrial}, nil
	case ScopeRevocation:
		return []Type{TypeRevocation}, nil
	case ScopeDemo:
		return []Type{TypeDemo}, nil
	}
	return nil, fmt.Errorf("unknown scope %q (want paid, trial, revocation or demo)", scope)
}

// Status of a key.
type Status string

// Key statuses.
const (
	StatusActive  Status = "active"  // signs and verifies
	StatusRetired Status = "retired" // no new issuance; verifies tokens whose iat is in its window
	StatusRevoked Status = "revoked" // verifies nothing
)

// Key is one trusted public key.
type Key struct {
	KID       string            // PASERK k4.pid of Public
	Public    ed25519.PublicKey // 32 bytes
	Types     []Type            // token types this key may sign
	NotBefore time.Time         // earliest allowed iat (inclusive)
	NotAfter  time.Time         // latest allowed iat (inclusive); zero means open-ended
	Status    Status
	Dev       bool // loaded from PBXBRIDGE_DEV_KEYRING in a devkeys build; never in a release keyring
}

// Allows reports whether the key may sign a token of type typ.
func (k Key) Allows(typ Type) bool { return slices.Contains(k.Types, typ) }

// InWindow reports whether iat falls inside the key's issuance window.
func (k Key) InWindow(iat time.Time) bool {
	if iat.Before(k.NotBefore) {
		return false
	}
	return k.NotAfter.IsZero() || !iat.After(k.NotAfter)
}

func (k Key) validate() error {
	if len(k.Public) != ed25519.PublicKeySize {
		return fmt.Errorf("key %s: public key is %d bytes", k.KID, len(k.Public))
	}
	pid, err := paseto.PID(k.Public)
	if err != nil {
		return fmt.Errorf("key %s: %w", k.KID, err)
	}
	if pid != k.KID {
		return fmt.Errorf("key %s: kid does not match the public key (computed %s)", k.KID, pid)
	}
	if len(k.Types) == 0 {
		return fmt.Errorf("key %s: no scopes", k.KID)
	}
	for _, t := range k.Types {
		switch t {
		case TypePaid, TypeNFR, TypeTrial, TypeRevocation, TypeDemo:
		default:
			return fmt.Errorf("key %s: unknown type %q", k.KID, t)
		}
	}
	switch k.Status {
	case StatusActive, StatusRetired, StatusRevoked:
	default:
		return fmt.Errorf("key %s: unknown status %q", k.KID, k.Status)
	}
	if !k.NotAfter.IsZero() && k.NotAfter.Before(k.NotBefore) {
		return fmt.Errorf("key %s: not_after before not_before", k.KID)
	}
	return nil
}

// Keyring is an immutable set of keys indexed by kid.
type Keyring struct {
	keys map[string]Key
}

// New validates keys (kid must be the PASERK pid of the public key) and builds a keyring.
// Duplicate kids are an error.
func New(keys ...Key) (*Keyring, error) {
	kr := &Keyring{keys: make(map[string]Key, len(keys))}
	for _, k := range keys {
		if err := k.validate(); err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		if _, dup := kr.keys[k.KID]; dup {
			return nil, fmt.Errorf("keyring: duplicate kid %s", k.KID)
		}
		k.Public = slices.Clone(k.Public)
		k.Types = slices.Clone(k.Types)
		kr.keys[k.KID] = k
	}
	return kr, nil
}

// Lookup returns the key with the given kid.
func (kr *Keyring) Lookup(kid string) (Key, bool) {
	if kr == nil {
		return Key{}, false
	}
	k, ok := kr.keys[kid]
	return k, ok
}

// Keys returns all keys sorted by kid.
func (kr *Keyring) Keys() []Key {
	if kr == nil {
		return nil
	}
	out := make([]Key, 0, len(kr.keys))
	for _, k := range kr.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KID < out[j].KID })
	return out
}

// Digest is the hex SHA-256 of a canonical text form of the keyring (one line per key, sorted by
// kid: kid, hex public key, types, window, status, dev flag). The release test pins it.
func (kr *Keyring) Digest() string {
	var b bytes.Buffer
	for _, k := range kr.Keys() {
		types := make([]string, len(k.Types))
		for i, t := range k.Types {
			types[i] = string(t)
		}
		fmt.Fprintf(&b, "%s %s %s %s %s %s %t\n", k.KID, hex.EncodeToString(k.Public),
			strings.Join(types, ","), fmtTime(k.NotBefore), fmtTime(k.NotAfter), k.Status, k.Dev)
	}
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:])
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// Merge returns a keyring with the keys of kr plus extra. A kid present in both is an error.
func (kr *Keyring) Merge(extra ...Key) (*Keyring, error) {
	return New(append(kr.Keys(), extra...)...)
}

// DevKeyringEnv names the directory of *.pub files trusted by devkeys builds.
const DevKeyringEnv = "PBXBRIDGE_DEV_KEYRING"

// Default returns the keyring the binaries use: the compiled release keyring and, only in a build
// with the `devkeys` tag, the *.pub keys of the directory in $PBXBRIDGE_DEV_KEYRING (marked Dev).
// In a build without the tag the variable is ignored.
func Default() (*Keyring, error) {
	rel := Release()
	if !DevBuild {
		return rel, nil
	}
	dir := os.Getenv(DevKeyringEnv)
	if dir == "" {
		return rel, nil
	}
	keys, err := LoadPubDir(dir)
	if err != nil {
		return nil, fmt.Errorf("keyring: %s: %w", DevKeyringEnv, err)
	}
	for i := range keys {
		keys[i].Dev = true
	}
	return rel.Merge(keys...)
}

// PubFile is the JSON form of a .pub key file, written by `pbxbridge-issuer key gen`.
type PubFile struct {
	KID       string     `json:"kid"`
	Public    string     `json:"public"` // k4.public PASERK
	Scope     string     `json:"scope"`
	Types     []Type     `json:"types"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
	Status    Status     `json:"status"`
}

// MarshalPub renders a key as a .pub file.
func MarshalPub(k Key, scope string) ([]byte, error) {
	pub, err := paseto.EncodePublic(k.Public)
	if err != nil {
		return nil, err
	}
	pf := PubFile{KID: k.KID, Public: pub, Scope: scope, Types: k.Types, NotBefore: k.NotBefore.UTC(), Status: k.Status}
	if !k.NotAfter.IsZero() {
		na := k.NotAfter.UTC()
		pf.NotAfter = &na
	}
	out, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ParsePub parses and validates a .pub file.
func ParsePub(data []byte) (Key, error) {
	if len(data) > 4096 {
		return Key{}, errors.New("pub file larger than 4 KiB")
	}
	var pf PubFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pf); err != nil {
		return Key{}, fmt.Errorf("decoding pub file: %w", err)
	}
	pk, err := paseto.DecodePublic(pf.Public)
	if err != nil {
		return Key{}, err
	}
	k := Key{KID: pf.KID, Public: pk, Types: pf.Types, NotBefore: pf.NotBefore, Status: pf.Status}
	if pf.NotAfter != nil {
		k.NotAfter = *pf.NotAfter
	}
	if _, err := New(k); err != nil {
		return Key{}, err
	}
	return k, nil
}

// LoadPubDir reads every *.pub file of dir.
func LoadPubDir(dir string) ([]Key, error) {
	fsys := os.DirFS(dir)
	names, err := fs.Glob(fsys, "*.pub")
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		if _, err := fs.Stat(fsys, "."); err != nil {
			return nil, err
		}
	}
	sort.Strings(names)
	var keys []Key
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		k, err := ParsePub(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
