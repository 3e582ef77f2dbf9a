package licensing_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/licensing"
)

func TestNewConnectors(t *testing.T) {
	t.Parallel()
	if testConnectors.String() != "amocrm, bitrix24, kommo" || testConnectors.Len() != 3 {
		t.Fatalf("set: %s", testConnectors)
	}
	if k, ok := testConnectors.Binding(b24); !ok || k != licensing.BindingDomain || !testConnectors.Known(kommo) || testConnectors.Known("fake") {
		t.Fatal("lookups")
	}
	names := []string{}
	for _, ct := range testConnectors.Types() {
		names = append(names, ct.Name)
	}
	if !slices.Equal(names, []string{"amocrm", "bitrix24", "kommo"}) {
		t.Fatalf("types %v", names)
	}
	var zero licensing.Connectors
	if zero.Known(b24) || zero.Len() != 0 || zero.String() != "none" {
		t.Fatal("zero value")
	}
	for name, types := range map[string][]licensing.ConnectorType{
		"bad name":  {{Name: "Bitrix24", Binding: licensing.BindingDomain}},
		"empty":     {{Name: "", Binding: licensing.BindingDomain}},
		"long":      {{Name: strings.Repeat("a", 65), Binding: licensing.BindingDomain}},
		"binding":   {{Name: "x", Binding: "portal"}},
		"no kind":   {{Name: "x"}},
		"duplicate": {{Name: "x", Binding: licensing.BindingDomain}, {Name: "x", Binding: licensing.BindingAccount}},
	} {
		if _, err := licensing.NewConnectors(types...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestConnectorsAreInputs: which types a licence may name, and how its CRM binding is checked and
// matched, come from the Connectors given, not from names compiled into the package.
func TestConnectorsAreInputs(t *testing.T) {
	t.Parallel()
	keys := newKeys(t)
	megaplan := paidClaims("L-MP", 1, "2026-01-01", "2026-12-31", "2027-01-06", "UTC")
	megaplan.Connector = "megaplan"
	megaplan.CRM = &licensing.CRMBinding{AccountID: 77}
	file := sign(t, keys.paid, megaplan)

	// Unknown to the default test set: rejected as a schema error naming the set.
	_, err := keys.verifier().VerifyFile(file)
	if licensing.ReasonOf(err) != licensing.ReasonSchema || !strings.Contains(err.Error(), `unknown connector "megaplan"`) {
		t.Fatalf("unknown type: %v", err)
	}
	// The zero value licenses nothing, but revocation lists still verify.
	zero := &licensing.Verifier{Keyring: keys.kr}
	if _, err := zero.VerifyFile(sign(t, keys.paid, paidClaims("L-1", 1, "2026-01-01", "2026-01-31", "2026-02-06", "UTC"))); licensing.ReasonOf(err) != licensing.ReasonSchema {
		t.Fatalf("zero set: %v", err)
	}
	rev := licensing.Claims{V: 1, Iss: licensing.Issuer, IAT: megaplan.IAT, Typ: "revocation", Seq: 1}
	if _, err := zero.VerifyFile(sign(t, keys.revocation, rev)); err != nil {
		t.Fatalf("revocation list with the zero set: %v", err)
	}

	// Declared as an account-bound type: verifies, and binds by account id.
	withMP := licensing.MustConnectors(append(testConnectors.Types(),
		licensing.ConnectorType{Name: "megaplan", Binding: licensing.BindingAccount})...)
	l, err := (&licensing.Verifier{Keyring: keys.kr, Connectors: withMP}).VerifyFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if l.Binding() != licensing.BindingAccount || !licensing.AccountMatches(l, licensing.Account{AccountID: 77}) ||
		licensing.AccountMatches(l, licensing.Account{AccountID: 78}) {
		t.Fatal("account binding")
	}
	// Declared as domain-bound, the same token's binding has the wrong shape.
	asDomain := licensing.MustConnectors(licensing.ConnectorType{Name: "megaplan", Binding: licensing.BindingDomain})
	if _, err := (&licensing.Verifier{Keyring: keys.kr, Connectors: asDomain}).VerifyFile(file); licensing.ReasonOf(err) != licensing.ReasonSchema {
		t.Fatalf("domain-kind megaplan: %v", err)
	}

	// The Service takes the set from Options: it registers and gates the new type.
	e := newEnv(t, keys, inZone(t, "UTC", "2026-06-01 12:00:00"), func(o *licensing.Options) { o.Connectors = withMP })
	e.write("mp.lic", file)
	e.reload()
	e.register("mp", "megaplan")
	must(t, e.svc.SetAccount("mp", licensing.Account{AccountID: 77}))
	if !e.svc.Allowed("mp") {
		t.Fatalf("megaplan: %+v", e.conn("mp"))
	}
	if e.svc.Connectors().Len() != 4 {
		t.Fatal("Service.Connectors")
	}
	// A type outside the set cannot be registered (it needs no licence: the daemon leaves it free).
	err = e.svc.Register(licensing.Instance{Name: "f", Type: "fake"})
	if err == nil || !strings.Contains(err.Error(), "needs no licence") {
		t.Fatalf("register fake: %v", err)
	}
}

// TestRequestBindingShape: an activation request's CRM binding must fit the type's binding kind.
func TestRequestBindingShape(t *testing.T) {
	t.Parallel()
	fp := licensing.FingerprintOf(licensing.RawFactors(hostA))
	if _, err := licensing.NewRequest(testConnectors, amoType, "", fp, &licensing.CRMBinding{Bitrix24Domain: "x.bitrix24.ru"}, windowStart); err == nil {
		t.Fatal("a domain binding for amocrm accepted")
	}
	if _, err := licensing.NewRequest(testConnectors, b24, "", fp, &licensing.CRMBinding{Bitrix24Domain: "x.bitrix24.ru", MemberID: "m"}, windowStart); err != nil {
		t.Fatal(err)
	}
	if _, err := licensing.NewRequest(licensing.Connectors{}, b24, "", fp, nil, windowStart); err == nil {
		t.Fatal("the zero set accepted a request")
	}
}

func TestBindingOf(t *testing.T) {
	t.Parallel()
	a := licensing.Account{Domain: "x.bitrix24.ru", MemberID: "m", AccountID: 5, Subdomain: "s"}
	if b := licensing.BindingOf(licensing.BindingDomain, a); b == nil || *b != (licensing.CRMBinding{Bitrix24Domain: "x.bitrix24.ru", MemberID: "m"}) {
		t.Fatalf("domain: %+v", b)
	}
	if b := licensing.BindingOf(licensing.BindingAccount, a); b == nil || *b != (licensing.CRMBinding{AccountID: 5, Subdomain: "s"}) {
		t.Fatalf("account: %+v", b)
	}
	if licensing.BindingOf(licensing.BindingDomain, licensing.Account{AccountID: 5}) != nil || licensing.BindingOf(licensing.BindingAccount, licensing.Account{}) != nil {
		t.Fatal("no binding expected")
	}
}
