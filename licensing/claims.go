package licensing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// Wire constants of schema v1.
const (
	SchemaVersion     = 1
	Issuer            = "pbxbridge"            // the `iss` every token must carry
	ImplicitAssertion = "pbxbridge-license:v1" // PASETO implicit assertion (never transmitted)
)

// Sanity caps checked by the verifier (§3.4 step 7).
const (
	MaxTrialDays  = 14 // a trial term is at most 14 days, start and end included
	MaxGraceDays  = 31 // grace_until - end
	maxHosts      = 4
	maxStrLen     = 256
	maxJSONDepth  = 8
	maxListLength = 1024
)

// Claims is the payload of a licence or revocation token (schema v1, docs/licensing-design.md §3.2).
type Claims struct {
	V           int             `json:"v"`
	Iss         string          `json:"iss"`
	LID         string          `json:"lid,omitempty"`
	Rev         int             `json:"rev,omitempty"`
	IAT         time.Time       `json:"iat"`
	Typ         keyring.Type    `json:"typ"`
	Sub         string          `json:"sub,omitempty"`
	Licensee    string          `json:"licensee,omitempty"`
	Connector   string          `json:"connector,omitempty"`
	CRM         *CRMBinding     `json:"crm,omitempty"`
	Seats       *Seats          `json:"seats,omitempty"`
	Overage     *Overage        `json:"overage,omitempty"`
	Term        *Term           `json:"term,omitempty"`
	GraceUntil  *Date           `json:"grace_until,omitempty"`
	Hosts       []HostBinding   `json:"hosts,omitempty"`
	MinMatch    int             `json:"min_match,omitempty"`
	MinStable   int             `json:"min_stable,omitempty"`
	MinVersion  string          `json:"min_version,omitempty"`
	Env         json.RawMessage `json:"env,omitempty"` // advisory ("recommended environment"), never enforced
	Crit        []string        `json:"crit,omitempty"`
	Seq         int64           `json:"seq,omitempty"`          // revocation tokens
	Revoked     []Revoked       `json:"revoked,omitempty"`      // revocation tokens
	RevokedKIDs []string        `json:"revoked_kids,omitempty"` // revocation tokens
}

// CRMBinding binds a licence to one CRM account (§3.8). Which fields apply depends on the
// connector type's Binding: BindingDomain types (Bitrix24) use the portal domain and, where
// available, member_id; BindingAccount types (amoCRM, Kommo) use the account id and/or subdomain.
type CRMBinding struct {
	Bitrix24Domain string `json:"bitrix24_domain,omitempty"`
	MemberID       string `json:"member_id,omitempty"`
	AccountID      int64  `json:"account_id,omitempty"`
	Subdomain      string `json:"subdomain,omitempty"`
}

// Seats are tariff limits; a nil field is unlimited.
type Seats struct {
	CRMUsers   *int `json:"crm_users"`
	Extensions *int `json:"extensions"`
}

// Overage is the tolerated excess over the seat limit before suspension (§3.9).
type Overage struct {
	Ratio float64 `json:"ratio"`
	Hours int     `json:"hours"`
}

// Term is an inclusive calendar term in the zone TZ.
type Term struct {
	Start Date   `json:"start"`
	End   Date   `json:"end"`
	TZ    string `json:"tz"`
}

// HostBinding is one bound host: HMAC'd factors (see Fingerprint) under fingerprint version FPV.
type HostBinding struct {
	FPV int               `json:"fpv"`
	F   map[string]string `json:"f"`
}

// Revoked revokes every token of LID whose rev is at most RevLE.
type Revoked struct {
	LID   string `json:"lid"`
	RevLE int    `json:"rev_le"`
}

// knownCrit lists the restrictive claims this daemon understands and may see in `crit`.
var knownCrit = []string{"crm", "seats", "overage", "hosts", "min_version"}

// claimNames is every JSON member name of the schema, at any depth. A key that differs from one
// of them only by case (in Unicode simple folding, as encoding/json matches) is rejected.
var claimNames = []string{
	"v", "iss", "lid", "rev", "iat", "typ", "sub", "licensee", "connector", "crm", "seats", "overage",
	"term", "grace_until", "hosts", "min_match", "min_stable", "min_version", "env", "crit", "seq",
	"revoked", "revoked_kids",
	"bitrix24_domain", "member_id", "account_id", "subdomain",
	"crm_users", "extensions", "ratio", "hours", "start", "end", "tz", "fpv", "f", "rev_le",
	FactorMachineID, FactorInstallID, FactorDMI, FactorRootFS, FactorMAC,
}

// headerLike are JOSE-style header fields: a payload carrying one is a confused or malicious
// token (§3.15: "a token with alg-like fields -> reject").
var headerLike = []string{"alg", "enc", "kid", "jwk", "jku", "x5u", "x5c", "x5t", "cty", "zip", "purpose", "version"}

// decodeClaims decodes a verified payload strictly: valid UTF-8, one JSON object, no duplicate or
// case-variant member names at any depth, bounded depth, nothing after the object.
func decodeClaims(payload []byte) (*Claims, error) {
	if err := checkStrictJSON(payload, slices.Concat(claimNames, headerLike)); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		return nil, fmt.Errorf("decoding claims: %w", err)
	}
	for _, k := range headerLike {
		if _, ok := top[k]; ok {
			return nil, fmt.Errorf("claim %q looks like an envelope header; the algorithm and key are fixed by the format", k)
		}
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decoding claims: %w", err)
	}
	return &c, nil
}

// checkStrictJSON validates the token structure of data. known are member names whose case
// variants are forbidden.
func checkStrictJSON(data []byte, known []string) error {
	if !utf8.Valid(data) {
		return errors.New("payload is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("json: top level is not an object")
	}
	if err := walkObject(dec, known, 1); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("json: data after the top-level object")
	}
	return nil
}

func walkValue(dec *json.Decoder, known []string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxJSONDepth {
		return errors.New("json: nested too deeply")
	}
	switch d {
	case '{':
		return walkObject(dec, known, depth+1)
	case '[':
		n := 0
		for dec.More() {
			if n++; n > maxListLength {
				return errors.New("json: array too long")
			}
			if err := walkValue(dec, known, depth+1); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return fmt.Errorf("json: unexpected %v", d)
}

func walkObject(dec *json.Decoder, known []string, depth int) error {
	seen := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("json: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("json: object key is not a string")
		}
		folded := foldKey(key)
		if prev, dup := seen[folded]; dup {
			if prev == key {
				return fmt.Errorf("json: duplicate key %q", key)
			}
			return fmt.Errorf("json: case-variant keys %q and %q", prev, key)
		}
		seen[folded] = key
		for _, k := range known {
			if key != k && strings.EqualFold(key, k) {
				return fmt.Errorf("json: key %q is a case variant of %q", key, k)
			}
		}
		if len(seen) > maxListLength {
			return errors.New("json: object too large")
		}
		if err := walkValue(dec, known, depth); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// foldKey maps every rune to the smallest rune of its Unicode simple-folding orbit, so keys that
// encoding/json would match case-insensitively fold to the same string.
func foldKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

func knownType(t keyring.Type) bool {
	switch t {
	case keyring.TypePaid, keyring.TypeNFR, keyring.TypeTrial, keyring.TypeRevocation, keyring.TypeDemo:
		return true
	}
	return false
}

// validateClaims performs the semantic checks of §3.4 step 7 that do not depend on the key, and
// returns the term's location and the connector's binding kind for licence tokens.
func validateClaims(c *Claims, version string, cs Connectors) (*time.Location, Binding, error) {
	if c.V != SchemaVersion {
		return nil, "", fmt.Errorf("unknown schema version v=%d", c.V)
	}
	if c.Iss != Issuer {
		return nil, "", fmt.Errorf("iss %q is not %q", c.Iss, Issuer)
	}
	if c.IAT.IsZero() {
		return nil, "", errors.New("iat missing")
	}
	for _, cr := range c.Crit {
		if !slices.Contains(knownCrit, cr) {
			return nil, "", fmt.Errorf("unknown critical extension %q", cr)
		}
	}
	if c.MinVersion != "" {
		if _, err := parseVersion(c.MinVersion); err != nil {
			return nil, "", fmt.Errorf("min_version: %w", err)
		}
		if version != "" {
			if v, err := parseVersion(version); err == nil && compareVersion(v, mustVersion(c.MinVersion)) < 0 {
				return nil, "", fmt.Errorf("requires pbxbridge %s or newer (this is %s)", c.MinVersion, version)
			}
		}
	}
	switch c.Typ {
	case keyring.TypeRevocation:
		return nil, "", validateRevocation(c)
	case keyring.TypePaid, keyring.TypeNFR, keyring.TypeTrial, keyring.TypeDemo:
		return validateLicence(c, cs)
	}
	return nil, "", fmt.Errorf("unknown typ %q", c.Typ)
}

func validateRevocation(c *Claims) error {
	if c.Seq < 1 {
		return errors.New("revocation token without seq")
	}
	if c.Connector != "" || c.Term != nil || c.GraceUntil != nil || c.CRM != nil || c.Seats != nil || len(c.Hosts) > 0 {
		return errors.New("revocation token carries licence claims")
	}
	for _, r := range c.Revoked {
		if err := checkLID(r.LID); err != nil {
			return fmt.Errorf("revoked: %w", err)
		}
		if r.RevLE < 1 {
			return fmt.Errorf("revoked %s: rev_le must be >= 1", r.LID)
		}
	}
	for _, k := range c.RevokedKIDs {
		if !strings.HasPrefix(k, "k4.pid.") || len(k) > 64 {
			return fmt.Errorf("revoked_kids: %q is not a k4.pid", k)
		}
	}
	return nil
}

func checkLID(lid string) error {
	if lid == "" || len(lid) > 64 {
		return fmt.Errorf("lid %q: want 1..64 characters", lid)
	}
	for _, r := range lid {
		if !isLIDRune(r) {
			return fmt.Errorf("lid %q: only A-Z a-z 0-9 - _ . allowed", lid)
		}
	}
	return nil
}

func isLIDRune(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}

func validateLicence(c *Claims, cs Connectors) (*time.Location, Binding, error) {
	if err := checkLID(c.LID); err != nil {
		return nil, "", err
	}
	if c.Rev < 1 {
		return nil, "", errors.New("rev must be >= 1")
	}
	if c.Sub == "" || len(c.Sub) > maxStrLen || len(c.Licensee) > maxStrLen {
		return nil, "", errors.New("sub must be 1..256 bytes and licensee at most 256")
	}
	kind, ok := cs.Binding(c.Connector)
	if !ok {
		return nil, "", cs.unknownConnector(c.Connector)
	}
	if c.Term == nil || c.Term.Start.IsZero() || c.Term.End.IsZero() || c.GraceUntil == nil {
		return nil, "", errors.New("term and grace_until are required")
	}
	if c.Seq != 0 || len(c.Revoked) > 0 || len(c.RevokedKIDs) > 0 {
		return nil, "", errors.New("licence token carries revocation claims")
	}
	loc, err := loadTZ(c.Term.TZ)
	if err != nil {
		return nil, "", err
	}
	t := c.Term
	if t.End.Before(t.Start) || c.GraceUntil.Before(t.End) {
		return nil, "", fmt.Errorf("want start <= end <= grace_until, got %s, %s, %s", t.Start, t.End, c.GraceUntil)
	}
	if t.Start.DaysUntil(*c.GraceUntil) > 366*120 {
		return nil, "", errors.New("term longer than 120 years")
	}
	if g := t.End.DaysUntil(*c.GraceUntil); g > MaxGraceDays {
		return nil, "", fmt.Errorf("grace of %d days exceeds %d", g, MaxGraceDays)
	}
	if c.Typ == keyring.TypeTrial {
		if n := t.Start.DaysUntil(t.End) + 1; n > MaxTrialDays {
			return nil, "", fmt.Errorf("trial of %d days exceeds %d", n, MaxTrialDays)
		}
		if *c.GraceUntil != t.End {
			return nil, "", errors.New("a trial has no grace")
		}
	}
	if err := validateCRM(c, kind); err != nil {
		return nil, "", err
	}
	if c.Seats != nil {
		for _, p := range []*int{c.Seats.CRMUsers, c.Seats.Extensions} {
			if p != nil && (*p < 0 || *p > 1_000_000) {
				return nil, "", errors.New("seats out of range")
			}
		}
	}
	if o := c.Overage; o != nil {
		if math.IsNaN(o.Ratio) || o.Ratio < 0 || o.Ratio > 1 || o.Hours < 0 || o.Hours > 24*31 {
			return nil, "", errors.New("overage out of range (ratio 0..1, hours 0..744)")
		}
	}
	if err := validateHosts(c); err != nil {
		return nil, "", err
	}
	return loc, kind, nil
}

func loadTZ(name string) (*time.Location, error) {
	if name == "" || name == "Local" || len(name) > 64 {
		return nil, fmt.Errorf("tz %q: want an IANA zone name", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("tz %q: %w", name, err)
	}
	return loc, nil
}

func validateCRM(c *Claims, kind Binding) error {
	b := c.CRM
	if b == nil {
		if c.Typ == keyring.TypeDemo {
			return errors.New("a demo licence must be bound to a CRM account under .invalid")
		}
		return nil
	}
	if err := checkBinding(kind, c.Connector, b); err != nil {
		return err
	}
	if c.Typ == keyring.TypeDemo {
		name := normHost(b.Bitrix24Domain + b.Subdomain)
		if !strings.HasSuffix(name, ".invalid") {
			return fmt.Errorf("a demo licence is valid only for CRM accounts under .invalid, not %q", name)
		}
	}
	return nil
}

func validateHosts(c *Claims) error {
	if len(c.Hosts) > maxHosts {
		return fmt.Errorf("more than %d hosts", maxHosts)
	}
	if len(c.Hosts) == 0 {
		if c.MinMatch != 0 || c.MinStable != 0 {
			return errors.New("min_match/min_stable without hosts")
		}
		return nil
	}
	if c.MinMatch < 0 || c.MinMatch > len(allFactors) || c.MinStable < 0 || c.MinStable > len(stableFactors) {
		return errors.New("min_match/min_stable out of range")
	}
	for i, h := range c.Hosts {
		if h.FPV != FingerprintVersion {
			return fmt.Errorf("hosts[%d]: unknown fingerprint version %d", i, h.FPV)
		}
		if len(h.F) == 0 {
			return fmt.Errorf("hosts[%d]: no factors", i)
		}
		for name, v := range h.F {
			if !slices.Contains(allFactors, name) {
				return fmt.Errorf("hosts[%d]: unknown factor %q", i, name)
			}
			if v == "" || len(v) > 64 {
				return fmt.Errorf("hosts[%d]: bad value for factor %q", i, name)
			}
		}
	}
	return nil
}

// normHost lower-cases a domain and drops a trailing dot.
func normHost(s string) string { return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".") }

// version handling for min_version: MAJOR.MINOR.PATCH with an optional leading v and ignored
// pre-release/build suffix.
type semver [3]int

func parseVersion(s string) (semver, error) {
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return semver{}, fmt.Errorf("version %q: want MAJOR.MINOR.PATCH", s)
	}
	var v semver
	for i, p := range parts {
		if p == "" || len(p) > 6 {
			return semver{}, fmt.Errorf("version %q: want MAJOR.MINOR.PATCH", s)
		}
		for _, r := range p {
			if r < '0' || r > '9' {
				return semver{}, fmt.Errorf("version %q: want MAJOR.MINOR.PATCH", s)
			}
			v[i] = v[i]*10 + int(r-'0')
		}
	}
	return v, nil
}

func mustVersion(s string) semver { v, _ := parseVersion(s); return v }

func compareVersion(a, b semver) int {
	for i := range a {
		if c := cmpInt(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}
