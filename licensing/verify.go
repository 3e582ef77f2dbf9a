package licensing

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
	_ "time/tzdata" // token zones load from the embedded database, whatever the host has

	"github.com/pbxbridge/pbxbridge/licensing/internal/paseto"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// Reason classifies why a token was rejected; it is the `reason` label of
// pbxbridge_license_verify_errors_total.
type Reason string

// Rejection reasons.
const (
	ReasonBadFormat    Reason = "bad_format"
	ReasonUnknownKey   Reason = "unknown_key" // unknown or revoked kid, scope or issuance window violated
	ReasonBadSignature Reason = "bad_signature"
	ReasonSchema       Reason = "schema"
	ReasonSuperseded   Reason = "superseded"
	ReasonRevoked      Reason = "revoked"
	ReasonHostMismatch Reason = "host_mismatch"
	ReasonCRMMismatch  Reason = "crm_mismatch"
	// ReasonDemoOnly: a valid demo licence seen outside `pbxbridge demo` (Verifier.AllowDemo
	// false). Demo licences ship inside every binary; only the demo runner may honour them.
	ReasonDemoOnly Reason = "demo_only"
)

// DemoOnlyError is the error (under a *VerifyError with ReasonDemoOnly) for a demo licence
// verified without Verifier.AllowDemo. The token verified completely, so its connector and lid
// can be trusted and shown.
type DemoOnlyError struct {
	LID       string
	Connector string
}

func (e *DemoOnlyError) Error() string {
	return fmt.Sprintf("%s is a demo licence (%s): demo licences work only in `pbxbridge demo`", e.LID, e.Connector)
}

// VerifyError is the error of every verification step.
type VerifyError struct {
	Reason Reason
	Err    error
}

func (e *VerifyError) Error() string { return fmt.Sprintf("licence %s: %v", e.Reason, e.Err) }

func (e *VerifyError) Unwrap() error { return e.Err }

func reject(r Reason, format string, a ...any) error {
	return &VerifyError{Reason: r, Err: fmt.Errorf(format, a...)}
}

// ReasonOf returns the Reason of a verification error ("" if err is not one).
func ReasonOf(err error) Reason {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ""
}

// License is a verified token (§3.4 step 10). It is immutable: accessors return copies.
type License struct {
	claims  Claims
	token   string
	key     keyring.Key
	loc     *time.Location // nil for revocation tokens
	binding Binding        // the connector's binding kind ("" for revocation tokens)
	digest  string
}

// Claims returns a copy of the verified claims.
func (l *License) Claims() Claims {
	c := l.claims
	c.Hosts = slices.Clone(c.Hosts)
	for i := range c.Hosts {
		f := make(map[string]string, len(c.Hosts[i].F))
		for k, v := range c.Hosts[i].F {
			f[k] = v
		}
		c.Hosts[i].F = f
	}
	c.Crit = slices.Clone(c.Crit)
	c.Revoked = slices.Clone(c.Revoked)
	c.RevokedKIDs = slices.Clone(c.RevokedKIDs)
	c.Env = slices.Clone(c.Env)
	if c.CRM != nil {
		b := *c.CRM
		c.CRM = &b
	}
	if c.Seats != nil {
		c.Seats = &Seats{CRMUsers: cloneInt(c.Seats.CRMUsers), Extensions: cloneInt(c.Seats.Extensions)}
	}
	if c.Overage != nil {
		o := *c.Overage
		c.Overage = &o
	}
	if c.Term != nil {
		t := *c.Term
		c.Term = &t
	}
	if c.GraceUntil != nil {
		g := *c.GraceUntil
		c.GraceUntil = &g
	}
	return c
}

// Token returns the verified PASETO token.
func (l *License) Token() string { return l.token }

// Digest is the hex SHA-256 of the token (identifies a token across files).
func (l *License) Digest() string { return l.digest }

// KID is the key id that signed the token.
func (l *License) KID() string { return l.key.KID }

// DevKey reports whether the signing key came from a dev keyring.
func (l *License) DevKey() bool { return l.key.Dev }

// Type is the `typ` claim.
func (l *License) Type() keyring.Type { return l.claims.Typ }

// IsRevocation reports whether this is a revocation token.
func (l *License) IsRevocation() bool { return l.claims.Typ == keyring.TypeRevocation }

// LID is the licence id.
func (l *License) LID() string { return l.claims.LID }

// Rev is the licence revision.
func (l *License) Rev() int { return l.claims.Rev }

// Connector is the connector type the licence enables.
func (l *License) Connector() string { return l.claims.Connector }

// Binding is the binding kind of the licence's connector type, from the Connectors the verifier
// was given ("" for revocation tokens).
func (l *License) Binding() Binding { return l.binding }

// IAT is the issue time.
func (l *License) IAT() time.Time { return l.claims.IAT }

// Location is the zone of the term (nil for revocation tokens).
func (l *License) Location() *time.Location { return l.loc }

// Start is the first day of the term (zero for revocation tokens).
func (l *License) Start() Date {
	if l.claims.Term == nil {
		return Date{}
	}
	return l.claims.Term.Start
}

// End is the last day of the paid term (inclusive; zero for revocation tokens).
func (l *License) End() Date {
	if l.claims.Term == nil {
		return Date{}
	}
	return l.claims.Term.End
}

// GraceUntil is the last day of the late-payment extension.
func (l *License) GraceUntil() Date {
	if l.claims.GraceUntil == nil {
		return Date{}
	}
	return *l.claims.GraceUntil
}

// TermEndTime is the first instant after End in the token's zone.
func (l *License) TermEndTime() time.Time { return l.End().AddDays(1).Start(l.loc) }

// GraceEndTime is the first instant after GraceUntil in the token's zone.
func (l *License) GraceEndTime() time.Time { return l.GraceUntil().AddDays(1).Start(l.loc) }

// Phase of a licence at an instant.
type Phase string

// Phases.
const (
	PhasePending Phase = "pending" // before start
	PhaseCurrent Phase = "current" // start <= today <= end
	PhaseGrace   Phase = "grace"   // end < today <= grace_until
	PhaseExpired Phase = "expired" // today > grace_until
)

// PhaseAt returns the phase at instant n, comparing dates in the token's zone.
func (l *License) PhaseAt(n time.Time) Phase {
	today := DateOf(n.In(l.loc))
	switch {
	case today.Before(l.Start()):
		return PhasePending
	case !today.After(l.End()):
		return PhaseCurrent
	case !today.After(l.GraceUntil()):
		return PhaseGrace
	}
	return PhaseExpired
}

// MatchHost compares the licence's host binding with fp.
func (l *License) MatchHost(fp Fingerprint) HostMatch {
	return matchHosts(l.claims.Hosts, l.claims.MinMatch, l.claims.MinStable, fp)
}

// Verifier runs the strict pipeline of §3.4, steps 1 to 7. It is pure and safe for concurrent use.
type Verifier struct {
	Keyring *keyring.Keyring
	// Connectors are the licensable connector types; a licence for any other type is rejected
	// (ReasonSchema). The zero value rejects every licence (revocation lists still verify).
	Connectors Connectors
	// AllowDemo accepts demo licences. False (the default, and the only right value outside
	// `pbxbridge demo` and the vendor's issuer) rejects them with ReasonDemoOnly and a
	// *DemoOnlyError: the demo licences ship inside every binary and must never unlock a
	// connector of a real daemon, whatever account it claims to reach.
	AllowDemo bool
	// Version is this daemon's version, checked against min_version; empty skips the check.
	Version string
}

// VerifyFile verifies a .lic file (armoured or bare token).
func (v *Verifier) VerifyFile(data []byte) (*License, error) {
	tok, err := Unarmour(data)
	if err != nil {
		return nil, &VerifyError{Reason: ReasonBadFormat, Err: err}
	}
	return v.VerifyToken(tok)
}

// VerifyToken verifies one token. It returns a License or an error, never both.
func (v *Verifier) VerifyToken(tok string) (*License, error) {
	if len(tok) > MaxTokenSize {
		return nil, reject(ReasonBadFormat, "token larger than %d bytes", MaxTokenSize)
	}
	parts, err := paseto.Split(tok)
	if err != nil {
		return nil, &VerifyError{Reason: ReasonBadFormat, Err: err}
	}
	if len(parts.Message) < 2 {
		return nil, reject(ReasonBadFormat, "payload too short")
	}
	kid, err := parseFooter(parts.Footer)
	if err != nil {
		return nil, &VerifyError{Reason: ReasonBadFormat, Err: err}
	}
	key, ok := v.Keyring.Lookup(kid)
	if !ok {
		return nil, reject(ReasonUnknownKey, "key %s is not in the keyring", kid)
	}
	if key.Status == keyring.StatusRevoked {
		return nil, reject(ReasonUnknownKey, "key %s is revoked", kid)
	}
	payload, _, err := paseto.Verify(key.Public, tok, []byte(ImplicitAssertion))
	if err != nil {
		if errors.Is(err, paseto.ErrSignature) {
			return nil, &VerifyError{Reason: ReasonBadSignature, Err: err}
		}
		return nil, &VerifyError{Reason: ReasonBadFormat, Err: err}
	}
	// Only now are the claims looked at.
	c, err := decodeClaims(payload)
	if err != nil {
		return nil, &VerifyError{Reason: ReasonSchema, Err: err}
	}
	switch {
	case c.V != SchemaVersion:
		return nil, reject(ReasonSchema, "unknown schema version v=%d", c.V)
	case !knownType(c.Typ):
		return nil, reject(ReasonSchema, "unknown typ %q", c.Typ)
	case c.IAT.IsZero():
		return nil, reject(ReasonSchema, "iat missing")
	case !key.Allows(c.Typ):
		return nil, reject(ReasonUnknownKey, "key %s may not sign %s tokens", kid, c.Typ)
	case !key.InWindow(c.IAT):
		return nil, reject(ReasonUnknownKey, "iat %s is outside the issuance window of key %s", c.IAT.UTC().Format(time.RFC3339), kid)
	}
	loc, kind, err := validateClaims(c, v.Version, v.Connectors)
	if err != nil {
		return nil, &VerifyError{Reason: ReasonSchema, Err: err}
	}
	if c.Typ == keyring.TypeDemo && !v.AllowDemo {
		return nil, &VerifyError{Reason: ReasonDemoOnly, Err: &DemoOnlyError{LID: c.LID, Connector: c.Connector}}
	}
	sum := sha256.Sum256([]byte(tok))
	return &License{claims: *c, token: tok, key: key, loc: loc, binding: kind, digest: hex.EncodeToString(sum[:])}, nil
}

// parseFooter accepts exactly {"kid":"<string>"}: a flat object with one member, at most 512 bytes.
func parseFooter(f []byte) (string, error) {
	if len(f) == 0 {
		return "", errors.New("footer missing (it must carry the kid)")
	}
	if len(f) > 512 {
		return "", fmt.Errorf("footer is %d bytes, limit 512", len(f))
	}
	if err := checkStrictJSON(f, []string{"kid"}); err != nil {
		return "", fmt.Errorf("footer: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(f))
	var kid string
	want := []func(json.Token) bool{
		func(t json.Token) bool { return t == json.Delim('{') },
		func(t json.Token) bool { return t == "kid" },
		func(t json.Token) bool { s, ok := t.(string); kid = s; return ok },
		func(t json.Token) bool { return t == json.Delim('}') },
	}
	for _, ok := range want {
		t, err := dec.Token()
		if err != nil || !ok(t) {
			return "", errors.New(`footer must be exactly {"kid":"k4.pid..."}`)
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("footer: data after the object")
	}
	if kid == "" || len(kid) > 64 {
		return "", errors.New("footer: bad kid")
	}
	return kid, nil
}

// RollbackState is the anti-rollback memory consulted in step 8.
type RollbackState interface {
	// MaxRev is the highest rev seen for lid (0 if none).
	MaxRev(lid string) int
	// RevokedRev is the highest revoked rev of lid (0 if none).
	RevokedRev(lid string) int
	// KIDRevoked reports whether a revocation token listed kid.
	KIDRevoked(kid string) bool
	// MaxSeq is the highest revocation seq applied.
	MaxSeq() int64
}

// CheckRollback is step 8: a licence with a lower rev than already seen is superseded, one listed
// by a revocation token is revoked; a revocation token with a lower seq is superseded.
func CheckRollback(l *License, st RollbackState) error {
	if st == nil {
		return nil
	}
	if l.IsRevocation() {
		if l.claims.Seq < st.MaxSeq() {
			return reject(ReasonSuperseded, "revocation list seq %d is older than %d", l.claims.Seq, st.MaxSeq())
		}
		return nil
	}
	if st.KIDRevoked(l.KID()) {
		return reject(ReasonRevoked, "signing key %s is revoked by a revocation list", l.KID())
	}
	if r := st.RevokedRev(l.LID()); r >= l.Rev() {
		return reject(ReasonRevoked, "%s rev %d is revoked (rev <= %d)", l.LID(), l.Rev(), r)
	}
	if m := st.MaxRev(l.LID()); l.Rev() < m {
		return reject(ReasonSuperseded, "%s rev %d is superseded by rev %d", l.LID(), l.Rev(), m)
	}
	return nil
}

// VerifyOptions are the optional later steps of Verify.
type VerifyOptions struct {
	Rollback RollbackState // nil skips step 8
	Host     *Fingerprint  // nil skips the host check of step 9
}

// Verify runs the whole pipeline on a file: steps 1-7, then anti-rollback and host binding as
// configured. The CRM account is checked later, when the connector has authenticated.
func (v *Verifier) Verify(data []byte, opts VerifyOptions) (*License, error) {
	l, err := v.VerifyFile(data)
	if err != nil {
		return nil, err
	}
	if err := CheckRollback(l, opts.Rollback); err != nil {
		return nil, err
	}
	if opts.Host != nil && !l.IsRevocation() {
		if m := l.MatchHost(*opts.Host); !m.OK {
			return nil, reject(ReasonHostMismatch, "host matches %d of %d factors (%d of %d hardware-tied); differing: %v, missing: %v",
				m.Matched, m.Required, m.StableMatched, m.StableRequired, m.Failing, m.Missing)
		}
	}
	return l, nil
}

// DecodeUnverified extracts the payload and the footer's kid from a .lic file WITHOUT checking the
// signature, for `license inspect` on a token that failed verification. Never base a decision on
// its result.
func DecodeUnverified(data []byte) (payload []byte, kid string, err error) {
	tok, err := Unarmour(data)
	if err != nil {
		return nil, "", err
	}
	parts, err := paseto.Split(tok)
	if err != nil {
		return nil, "", err
	}
	kid, err = parseFooter(parts.Footer)
	if err != nil {
		kid = ""
	}
	return parts.Message, kid, nil
}
