package licensing_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/issuer"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

func TestVerifyValid(t *testing.T) {
	keys := newKeys(t)
	c := paidClaims("L-2026-000123", 4, "2026-01-15", "2026-02-14", "2026-02-20", "Europe/Moscow")
	c.Seats = &licensing.Seats{CRMUsers: intPtr(25), Extensions: intPtr(40)}
	c.Overage = &licensing.Overage{Ratio: 0.1, Hours: 72}
	c.CRM = &licensing.CRMBinding{Bitrix24Domain: "romashka.bitrix24.ru", MemberID: "abc"}
	c.Env = []byte(`{"asterisk":">=18","arch":["amd64"]}`)
	c.Crit = []string{"crm", "seats"}
	l, err := keys.verifier().VerifyFile(sign(t, keys.paid, c))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, l.Claims()); diff != "" {
		t.Fatalf("claims differ (-signed +verified):\n%s", diff)
	}
	if l.KID() != keys.paid.Key.KID || l.LID() != "L-2026-000123" || l.Rev() != 4 || l.Location().String() != "Europe/Moscow" {
		t.Fatalf("accessors: %s %s %d %s", l.KID(), l.LID(), l.Rev(), l.Location())
	}
	// The returned claims are a copy.
	cc := l.Claims()
	*cc.Seats.Extensions = 1
	if *l.Claims().Seats.Extensions != 40 {
		t.Fatal("License is not immutable")
	}
}

// TestEveryBitFlipRejected flips every bit of an armoured licence file outside its comment lines
// (armour, payload, signature, footer): every variant is rejected.
func TestEveryBitFlipRejected(t *testing.T) {
	keys := newKeys(t)
	file := sign(t, keys.paid, paidClaims("L-1", 1, "2026-01-15", "2026-02-14", "2026-02-20", "UTC"))
	v := keys.verifier()
	if _, err := v.VerifyFile(file); err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(file, []byte(licensing.ArmourBegin))
	flips := 0
	for i := start; i < len(file); i++ {
		for bit := range 8 {
			file[i] ^= 1 << bit
			l, err := v.VerifyFile(file)
			if err == nil || l != nil {
				t.Fatalf("byte %d bit %d flipped: accepted (l=%v, err=%v)", i, bit, l != nil, err)
			}
			file[i] ^= 1 << bit
			flips++
		}
	}
	t.Logf("%d single-bit flips rejected", flips)
}

// TestPipelineRejects covers §3.4 and §3.15: every malformed or out-of-policy token is rejected
// with the right reason and never with partial data.
func TestPipelineRejects(t *testing.T) {
	keys := newKeys(t)
	rk, rsk := rawKey(t)
	kr, err := keys.kr.Merge(rk)
	if err != nil {
		t.Fatal(err)
	}
	v := &licensing.Verifier{Keyring: kr, Connectors: testConnectors}
	footer := []byte(`{"kid":"` + rk.KID + `"}`)
	good := string(mustJSON(t, paidClaims("L-1", 1, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")))
	raw := func(payload string) []byte {
		return signRaw(t, rsk, []byte(payload), footer, licensing.ImplicitAssertion)
	}
	mod := func(f func(*licensing.Claims)) []byte {
		c := paidClaims("L-1", 1, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")
		f(&c)
		return raw(string(mustJSON(t, c)))
	}
	if _, err := v.VerifyFile(raw(good)); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	type tc struct {
		file []byte
		want licensing.Reason
	}
	cases := map[string]tc{
		"empty":                 {[]byte(""), licensing.ReasonBadFormat},
		"comments only":         {[]byte("# hello\n"), licensing.ReasonBadFormat},
		"v4.local":              {[]byte(strings.Replace(string(raw(good)), "v4.public.", "v4.local.", 1)), licensing.ReasonBadFormat},
		"no END":                {bytes.TrimSuffix(raw(good), []byte(licensing.ArmourEnd+"\n")), licensing.ReasonBadFormat},
		"two BEGIN":             {append([]byte(licensing.ArmourBegin+"\n"), raw(good)...), licensing.ReasonBadFormat},
		"data after END":        {append(raw(good), []byte("v4\n")...), licensing.ReasonBadFormat},
		"comment inside":        {[]byte(strings.Replace(string(raw(good)), licensing.ArmourBegin+"\n", licensing.ArmourBegin+"\n# x\n", 1)), licensing.ReasonBadFormat},
		"file over 64 KiB":      {append(raw(good), bytes.Repeat([]byte("#\n"), 33<<10)...), licensing.ReasonBadFormat},
		"token over 16 KiB":     {raw(`{"pad":"` + strings.Repeat("x", 13<<10) + `"}`), licensing.ReasonBadFormat},
		"no footer":             {signRaw(t, rsk, []byte(good), nil, licensing.ImplicitAssertion), licensing.ReasonBadFormat},
		"extra footer key":      {signRaw(t, rsk, []byte(good), []byte(`{"kid":"`+rk.KID+`","alg":"none"}`), licensing.ImplicitAssertion), licensing.ReasonBadFormat},
		"nested footer":         {signRaw(t, rsk, []byte(good), []byte(`{"kid":{"id":"`+rk.KID+`"}}`), licensing.ImplicitAssertion), licensing.ReasonBadFormat},
		"footer case variant":   {signRaw(t, rsk, []byte(good), []byte(`{"KID":"`+rk.KID+`"}`), licensing.ImplicitAssertion), licensing.ReasonBadFormat},
		"footer duplicate kid":  {signRaw(t, rsk, []byte(good), []byte(`{"kid":"x","kid":"`+rk.KID+`"}`), licensing.ImplicitAssertion), licensing.ReasonBadFormat},
		"footer over 512 B":     {signRaw(t, rsk, []byte(good), []byte(`{"kid":"`+rk.KID+strings.Repeat(" ", 500)+`"}`), licensing.ImplicitAssertion), licensing.ReasonBadFormat},
		"unknown kid":           {signRaw(t, rsk, []byte(good), []byte(`{"kid":"k4.pid.unknown"}`), licensing.ImplicitAssertion), licensing.ReasonUnknownKey},
		"other kid's signature": {signRaw(t, rsk, []byte(good), []byte(`{"kid":"`+keys.paid.Key.KID+`"}`), licensing.ImplicitAssertion), licensing.ReasonBadSignature},
		"other assertion":       {signRaw(t, rsk, []byte(good), footer, "acc-license:v1"), licensing.ReasonBadSignature},
		"duplicate claim":       {raw(strings.Replace(good, `"rev":1`, `"rev":1,"rev":9`, 1)), licensing.ReasonSchema},
		"case-variant claim":    {raw(strings.Replace(good, `"rev":1`, `"rev":1,"Rev":9`, 1)), licensing.ReasonSchema},
		"lone case variant":     {raw(strings.Replace(good, `"rev":1`, `"REV":1`, 1)), licensing.ReasonSchema},
		"unicode fold variant":  {raw(strings.Replace(good, `"sub":`, `"ſub":`, 1)), licensing.ReasonSchema},
		"nested duplicate":      {raw(strings.Replace(good, `"tz":"UTC"`, `"tz":"UTC","tz":"Asia/Tokyo"`, 1)), licensing.ReasonSchema},
		"alg-like field":        {raw(strings.Replace(good, `"rev":1`, `"rev":1,"alg":"none"`, 1)), licensing.ReasonSchema},
		"kid in payload":        {raw(strings.Replace(good, `"rev":1`, `"rev":1,"kid":"x"`, 1)), licensing.ReasonSchema},
		"not an object":         {raw(`[1,2]`), licensing.ReasonSchema},
		"trailing data":         {raw(good + `{}`), licensing.ReasonSchema},
		"invalid UTF-8":         {raw(strings.Replace(good, "Ромашка", "\xff\xfe", 1)), licensing.ReasonSchema},
		"too deep":              {raw(`{"env":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}`), licensing.ReasonSchema},
		"unknown v":             {mod(func(c *licensing.Claims) { c.V = 2 }), licensing.ReasonSchema},
		"unknown crit":          {mod(func(c *licensing.Claims) { c.Crit = []string{"updates_until"} }), licensing.ReasonSchema},
		"wrong iss":             {mod(func(c *licensing.Claims) { c.Iss = "vendor" }), licensing.ReasonSchema},
		"unknown typ":           {mod(func(c *licensing.Claims) { c.Typ = "enterprise" }), licensing.ReasonSchema},
		"unknown connector":     {mod(func(c *licensing.Claims) { c.Connector = "salesforce" }), licensing.ReasonSchema},
		"no iat":                {mod(func(c *licensing.Claims) { c.IAT = time.Time{} }), licensing.ReasonSchema},
		"rev 0":                 {mod(func(c *licensing.Claims) { c.Rev = 0 }), licensing.ReasonSchema},
		"bad lid":               {mod(func(c *licensing.Claims) { c.LID = "../x" }), licensing.ReasonSchema},
		"start after end":       {mod(func(c *licensing.Claims) { c.Term.Start = date("2026-02-15") }), licensing.ReasonSchema},
		"grace before end":      {mod(func(c *licensing.Claims) { c.GraceUntil = datePtr("2026-02-13") }), licensing.ReasonSchema},
		"grace over 31 days":    {mod(func(c *licensing.Claims) { c.GraceUntil = datePtr("2026-03-18") }), licensing.ReasonSchema},
		"tz unknown":            {mod(func(c *licensing.Claims) { c.Term.TZ = "Mars/Olympus" }), licensing.ReasonSchema},
		"tz Local":              {mod(func(c *licensing.Claims) { c.Term.TZ = "Local" }), licensing.ReasonSchema},
		"no term":               {mod(func(c *licensing.Claims) { c.Term = nil }), licensing.ReasonSchema},
		"bad date":              {raw(strings.Replace(good, `"2026-02-14"`, `"2026-2-14"`, 1)), licensing.ReasonSchema},
		"rev as string":         {raw(strings.Replace(good, `"rev":1`, `"rev":"1"`, 1)), licensing.ReasonSchema},
		"rev as float":          {raw(strings.Replace(good, `"rev":1`, `"rev":1.0`, 1)), licensing.ReasonSchema},
		"negative seats":        {mod(func(c *licensing.Claims) { c.Seats = &licensing.Seats{Extensions: intPtr(-1)} }), licensing.ReasonSchema},
		"overage ratio 2":       {mod(func(c *licensing.Claims) { c.Overage = &licensing.Overage{Ratio: 2} }), licensing.ReasonSchema},
		"amo fields on b24":     {mod(func(c *licensing.Claims) { c.CRM = &licensing.CRMBinding{AccountID: 5} }), licensing.ReasonSchema},
		"unknown host factor": {mod(func(c *licensing.Claims) {
			c.Hosts = []licensing.HostBinding{{FPV: 1, F: map[string]string{"cpu": "x"}}}
		}), licensing.ReasonSchema},
		"unknown fpv": {mod(func(c *licensing.Claims) {
			c.Hosts = []licensing.HostBinding{{FPV: 2, F: map[string]string{"mid": "x"}}}
		}), licensing.ReasonSchema},
		"revocation claims in licence": {mod(func(c *licensing.Claims) { c.Seq = 3 }), licensing.ReasonSchema},
		"min_version too new":          {mod(func(c *licensing.Claims) { c.MinVersion = "99.0.0" }), licensing.ReasonSchema},
		"iat before key window":        {mod(func(c *licensing.Claims) { c.IAT = windowStart.Add(-time.Hour) }), licensing.ReasonUnknownKey},
		"iat after key window":         {mod(func(c *licensing.Claims) { c.IAT = windowEnd.Add(time.Hour) }), licensing.ReasonUnknownKey},
		"paid key signs trial":         {mod(func(c *licensing.Claims) { c.Typ = keyring.TypeTrial; c.GraceUntil = &c.Term.End }), licensing.ReasonUnknownKey},
		"paid key signs demo": {mod(func(c *licensing.Claims) {
			c.Typ = keyring.TypeDemo
			c.CRM = &licensing.CRMBinding{Bitrix24Domain: "demo.invalid"}
		}), licensing.ReasonUnknownKey},
	}
	v.Version = "1.2.3"
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			l, err := v.VerifyFile(c.file)
			if l != nil || err == nil {
				t.Fatalf("accepted (l=%v err=%v)", l != nil, err)
			}
			if got := licensing.ReasonOf(err); got != c.want {
				t.Fatalf("reason %q, want %q (%v)", got, c.want, err)
			}
		})
	}
}

func TestRevokedKeyVerifiesNothing(t *testing.T) {
	keys := newKeys(t)
	file := sign(t, keys.paid, paidClaims("L-1", 1, "2026-01-15", "2026-02-14", "2026-02-20", "UTC"))
	k := keys.paid.Key
	k.Status = keyring.StatusRevoked
	kr, err := keyring.New(k)
	if err != nil {
		t.Fatal(err)
	}
	_, err = (&licensing.Verifier{Keyring: kr, Connectors: testConnectors}).VerifyFile(file)
	if licensing.ReasonOf(err) != licensing.ReasonUnknownKey {
		t.Fatalf("revoked key: %v", err)
	}
	k.Status = keyring.StatusRetired
	kr, _ = keyring.New(k)
	if _, err := (&licensing.Verifier{Keyring: kr, Connectors: testConnectors}).VerifyFile(file); err != nil {
		t.Fatalf("retired key must still verify what it signed: %v", err)
	}
}

// TestScopes: a trial key cannot mint paid licences; trials are capped at 14 days, with no grace;
// demo tokens must be bound to .invalid accounts.
func TestScopes(t *testing.T) {
	keys := newKeys(t)
	v := keys.verifier()
	trial := func(start, end, grace string) licensing.Claims {
		c := paidClaims("T-1", 1, start, end, grace, "UTC")
		c.Typ = keyring.TypeTrial
		return c
	}
	cases := []struct {
		name string
		key  *issuer.SigningKey
		c    licensing.Claims
		ok   bool
	}{
		{"trial 14 days", keys.trial, trial("2026-03-01", "2026-03-14", "2026-03-14"), true},
		{"trial 15 days", keys.trial, trial("2026-03-01", "2026-03-15", "2026-03-15"), false},
		{"trial with grace", keys.trial, trial("2026-03-01", "2026-03-10", "2026-03-12"), false},
		{"trial key signs paid", keys.trial, paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", "UTC"), false},
		{"trial key signs revocation", keys.trial, licensing.Claims{V: 1, Iss: licensing.Issuer, Typ: keyring.TypeRevocation, IAT: time.Now(), Seq: 1}, false},
		{"paid key signs nfr", keys.paid, func() licensing.Claims {
			c := paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", "UTC")
			c.Typ = keyring.TypeNFR
			return c
		}(), true},
		{"demo .invalid", keys.demo, demoClaims("bitrix24", &licensing.CRMBinding{Bitrix24Domain: "demo-bitrix24.invalid"}), true},
		{"demo .invalid subdomain", keys.demo, demoClaims("amocrm", &licensing.CRMBinding{Subdomain: "demo-amocrm.invalid"}), true},
		{"demo real portal", keys.demo, demoClaims("bitrix24", &licensing.CRMBinding{Bitrix24Domain: "romashka.bitrix24.ru"}), false},
		{"demo invalid-looking", keys.demo, demoClaims("bitrix24", &licensing.CRMBinding{Bitrix24Domain: "x.invalid.ru"}), false},
		{"demo account id only", keys.demo, demoClaims("kommo", &licensing.CRMBinding{AccountID: 42}), false},
		{"demo unbound", keys.demo, demoClaims("kommo", nil), false},
		{"demo key signs paid", keys.demo, paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", "UTC"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := v.VerifyFile(sign(t, c.key, c.c))
			if c.ok != (err == nil) || (l == nil) == c.ok {
				t.Fatalf("ok=%v, got l=%v err=%v", c.ok, l != nil, err)
			}
		})
	}
}

func demoClaims(connector string, crm *licensing.CRMBinding) licensing.Claims {
	c := paidClaims("DEMO-"+connector, 1, "2026-11-01", "2099-12-31", "2099-12-31", "UTC")
	c.Typ = keyring.TypeDemo
	c.Connector = connector
	c.CRM = crm
	return c
}

func TestRollbackChecks(t *testing.T) {
	keys := newKeys(t)
	v := keys.verifier()
	l4, err := v.VerifyFile(sign(t, keys.paid, paidClaims("L-9", 4, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")))
	if err != nil {
		t.Fatal(err)
	}
	l3, err := v.VerifyFile(sign(t, keys.paid, paidClaims("L-9", 3, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")))
	if err != nil {
		t.Fatal(err)
	}
	mem := &licensing.Memory{Revs: map[string]int{"L-9": 4}, Revoked: map[string]int{}}
	if err := licensing.CheckRollback(l4, mem); err != nil {
		t.Fatal(err)
	}
	if r := licensing.ReasonOf(licensing.CheckRollback(l3, mem)); r != licensing.ReasonSuperseded {
		t.Fatalf("rev 3 after rev 4: %q", r)
	}
	mem.Revoked["L-9"] = 4
	if r := licensing.ReasonOf(licensing.CheckRollback(l4, mem)); r != licensing.ReasonRevoked {
		t.Fatalf("revoked rev 4: %q", r)
	}
	mem.Revoked = map[string]int{}
	mem.RevokedKIDs = []string{keys.paid.Key.KID}
	if r := licensing.ReasonOf(licensing.CheckRollback(l4, mem)); r != licensing.ReasonRevoked {
		t.Fatalf("revoked kid: %q", r)
	}
	// Verify with host and rollback options: never a partial result.
	l, err := v.Verify(sign(t, keys.paid, paidClaims("L-9", 3, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")),
		licensing.VerifyOptions{Rollback: &licensing.Memory{Revs: map[string]int{"L-9": 5}}})
	var ve *licensing.VerifyError
	if l != nil || !errors.As(err, &ve) || ve.Reason != licensing.ReasonSuperseded {
		t.Fatalf("Verify: l=%v err=%v", l != nil, err)
	}
}

func TestHostBinding(t *testing.T) {
	keys := newKeys(t)
	v := keys.verifier()
	fpA := licensing.FingerprintOf(licensing.RawFactors(hostA))
	bound := func(minMatch, minStable int) *licensing.License {
		c := paidClaims("L-H", 1, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")
		c.Hosts = []licensing.HostBinding{{FPV: 1, F: fpA.Factors}}
		c.MinMatch, c.MinStable = minMatch, minStable
		l, err := v.VerifyFile(sign(t, keys.paid, c))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	with := func(changes map[string]string) licensing.Fingerprint {
		raw := licensing.RawFactors{}
		for k, val := range hostA {
			raw[k] = val
		}
		for k, val := range changes {
			if val == "" {
				delete(raw, k)
			} else {
				raw[k] = val
			}
		}
		return licensing.FingerprintOf(raw)
	}
	l := bound(3, 1)
	cases := []struct {
		name string
		fp   licensing.Fingerprint
		ok   bool
	}{
		{"same host (reboot)", fpA, true},
		{"NIC replaced", with(map[string]string{licensing.FactorMAC: "52:54:00:ff:ff:ff"}), true},
		{"disk copy on other hardware", with(map[string]string{licensing.FactorMAC: "aa:bb:cc:dd:ee:ff", licensing.FactorDMI: "other-uuid"}), false},
		{"reinstall on same hardware", with(map[string]string{licensing.FactorMachineID: "new", licensing.FactorInstallID: "new", licensing.FactorRootFS: "new"}), false},
		{"unprivileged (no dmi)", with(map[string]string{licensing.FactorDMI: ""}), true},
		{"other host", licensing.FingerprintOf(licensing.RawFactors{licensing.FactorMachineID: "x", licensing.FactorMAC: "y"}), false},
	}
	for _, c := range cases {
		m := l.MatchHost(c.fp)
		if m.OK != c.ok || !m.Bound {
			t.Errorf("%s: OK=%v (matched %d/%d, stable %d/%d, failing %v, missing %v), want %v", c.name, m.OK,
				m.Matched, m.Required, m.StableMatched, m.StableRequired, m.Failing, m.Missing, c.ok)
		}
	}
	// Defaults when min_match is absent: 3 of n and one stable factor.
	if m := bound(0, 0).MatchHost(with(map[string]string{licensing.FactorMAC: "x", licensing.FactorDMI: "y"})); m.OK || m.Required != 3 || m.StableRequired != 1 {
		t.Errorf("defaults: %+v", m)
	}
	unbound, err := v.VerifyFile(sign(t, keys.paid, paidClaims("L-U", 1, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")))
	if err != nil {
		t.Fatal(err)
	}
	if m := unbound.MatchHost(licensing.Fingerprint{}); !m.OK || m.Bound {
		t.Errorf("unbound licence: %+v", m)
	}
	// Through Verify: host mismatch is a rejection with its reason.
	c := paidClaims("L-H", 1, "2026-01-15", "2026-02-14", "2026-02-20", "UTC")
	c.Hosts = []licensing.HostBinding{{FPV: 1, F: fpA.Factors}}
	other := licensing.FingerprintOf(licensing.RawFactors{licensing.FactorMachineID: "x"})
	if _, err := v.Verify(sign(t, keys.paid, c), licensing.VerifyOptions{Host: &other}); licensing.ReasonOf(err) != licensing.ReasonHostMismatch {
		t.Fatalf("Verify with other host: %v", err)
	}
}

func TestSystemHostFactors(t *testing.T) {
	root := t.TempDir()
	state := t.TempDir()
	files := map[string]string{
		"/etc/machine-id":                   "3d1219c7c4c5404aaa1f6d2a48adfda4\n",
		"/sys/class/dmi/id/product_uuid":    "4C4C4544-0051-3010-8052-B4C04F4D4A32\n",
		"/proc/self/mountinfo":              "22 27 0:21 / /proc rw - proc proc rw\n27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
		"/proc/net/route":                   "Iface\tDestination\tGateway\nens3\t00000000\t010200C0\n",
		"/sys/class/net/ens3/address":       "52:54:00:12:34:56\n",
		"/sys/class/net/ens3/device/vendor": "0x1af4\n",
		"/sys/class/net/lo/address":         "00:00:00:00:00:00\n",
	}
	for p, content := range files {
		writeTree(t, root, p, content)
	}
	symlinkTree(t, root, "/dev/disk/by-uuid/0B5A1F1E-2C7D", "../../sda1")
	symlinkTree(t, root, "/dev/disk/by-uuid/1111-2222", "../../sdb1")
	id, err := licensing.EnsureInstallID(state)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := licensing.EnsureInstallID(state)
	if err != nil || id2 != id {
		t.Fatalf("install id not stable: %s %s %v", id, id2, err)
	}
	raw, err := licensing.SystemHost{Root: root, StateDir: state}.ReadFactors(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := licensing.RawFactors{
		licensing.FactorMachineID: "3d1219c7c4c5404aaa1f6d2a48adfda4",
		licensing.FactorDMI:       "4c4c4544-0051-3010-8052-b4c04f4d4a32",
		licensing.FactorInstallID: id,
		licensing.FactorRootFS:    "0b5a1f1e-2c7d",
		licensing.FactorMAC:       "52:54:00:12:34:56",
	}
	if diff := cmp.Diff(want, raw); diff != "" {
		t.Fatalf("factors (-want +got):\n%s", diff)
	}
	// An empty root (container without these files) yields no factors and no error.
	raw, err = licensing.SystemHost{Root: t.TempDir()}.ReadFactors(t.Context())
	if err != nil || len(raw) != 0 {
		t.Fatalf("empty system: %v %v", raw, err)
	}
	// Fingerprints never contain raw values.
	fp := licensing.FingerprintOf(want)
	for name, v := range fp.Factors {
		if strings.Contains(v, want[name]) || len(v) != 22 {
			t.Errorf("factor %s not hashed: %s", name, v)
		}
	}
}

func TestRequestCode(t *testing.T) {
	fp := licensing.FingerprintOf(licensing.RawFactors(hostA))
	req, err := licensing.NewRequest(testConnectors, "amocrm", "1.2.3", fp, &licensing.CRMBinding{AccountID: 31234567, Subdomain: "romashka"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, err := licensing.EncodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range hostA {
		if strings.Contains(code, secret) {
			t.Fatal("request code contains a raw host factor")
		}
	}
	wrapped := code[:30] + "\n  " + code[30:]
	got, err := licensing.DecodeRequest(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(req, got); diff != "" {
		t.Fatalf("round trip:\n%s", diff)
	}
	bad := []byte(code)
	bad[20] ^= 1
	if _, err := licensing.DecodeRequest(string(bad)); err == nil {
		t.Fatal("corrupted code accepted")
	}
	if _, err := licensing.NewRequest(testConnectors, "salesforce", "", fp, nil, time.Now()); err == nil {
		t.Fatal("unknown connector accepted")
	}
}

func ExampleVerifier_VerifyFile() {
	k, err := issuer.GenerateKey(keyring.ScopePaid, windowStart, windowEnd)
	if err != nil {
		fmt.Println(err)
		return
	}
	c := paidClaims("L-2026-000123", 1, "2026-01-15", "2026-02-14", "2026-02-20", "Europe/Moscow")
	tok, _ := k.Sign(c)
	v := &licensing.Verifier{Keyring: k.Keyring(), Connectors: testConnectors}
	l, err := v.VerifyFile(licensing.Armour(tok, "comments are not trusted"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(l.LID(), l.Connector(), l.PhaseAt(time.Date(2026, 2, 16, 12, 0, 0, 0, time.UTC)))
	// Output: L-2026-000123 bitrix24 grace
}
