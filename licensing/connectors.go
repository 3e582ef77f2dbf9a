package licensing

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Binding is how the licences of a connector type bind to a CRM account (§3.8).
type Binding string

// Binding kinds.
const (
	// BindingDomain: the account is a portal domain, optionally with a member id (Bitrix24 and
	// alike). A licence's binding carries crm.bitrix24_domain (a wire name older than this type,
	// kept so that issued tokens stay valid) and optionally crm.member_id; the adapter reports
	// Account.Domain and, where its API gives it, Account.MemberID.
	BindingDomain Binding = "domain"
	// BindingAccount: the account is a numeric account id and/or a subdomain (amoCRM, Kommo and
	// alike). A licence's binding carries crm.account_id and/or crm.subdomain; the adapter
	// reports Account.AccountID and Account.Subdomain.
	BindingAccount Binding = "account"
)

// ConnectorType declares one connector type that needs a licence.
type ConnectorType struct {
	// Name is the connector type as written in the configuration (`type:`), e.g. "bitrix24":
	// lower-case letters, digits and '_', starting with a letter, at most 64 bytes.
	Name string
	// Binding is how its licences bind to a CRM account.
	Binding Binding
}

// Connectors is the set of connector types licences may enable, each with its binding kind. The
// daemon builds it from the CRM registry (each factory declares whether its type needs a licence
// and how its account binds) and hands it to the Service (Options.Connectors), to verifiers
// (Verifier.Connectors) and to the licence CLI (licensecli.Env.Connectors); this package knows no
// connector type by itself.
//
// A Connectors value is immutable and safe for concurrent use. The zero value is the empty set:
// every licence token is then rejected as being for an unknown connector (revocation lists,
// which name no connector, still verify).
type Connectors struct {
	m map[string]Binding
}

var connectorName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// ValidConnectorName reports whether s has the syntax of a connector type name.
func ValidConnectorName(s string) bool { return len(s) <= 64 && connectorName.MatchString(s) }

// NewConnectors builds a set. It fails on an invalid name, an unknown binding kind or a name
// given twice.
func NewConnectors(types ...ConnectorType) (Connectors, error) {
	m := make(map[string]Binding, len(types))
	for i, t := range types {
		if !ValidConnectorName(t.Name) {
			return Connectors{}, fmt.Errorf("licensing: connector type [%d]: invalid name %q (want [a-z][a-z0-9_]*, at most 64 bytes)", i, t.Name)
		}
		if t.Binding != BindingDomain && t.Binding != BindingAccount {
			return Connectors{}, fmt.Errorf("licensing: connector type %s: unknown binding %q (want %q or %q)", t.Name, t.Binding, BindingDomain, BindingAccount)
		}
		if _, dup := m[t.Name]; dup {
			return Connectors{}, fmt.Errorf("licensing: connector type %s: given twice", t.Name)
		}
		m[t.Name] = t.Binding
	}
	return Connectors{m: m}, nil
}

// MustConnectors is NewConnectors for fixed tables (tests, the demo); it panics on an error.
func MustConnectors(types ...ConnectorType) Connectors {
	c, err := NewConnectors(types...)
	if err != nil {
		panic(err)
	}
	return c
}

// Known reports whether typ is a licensable connector type.
func (c Connectors) Known(typ string) bool {
	_, ok := c.m[typ]
	return ok
}

// Binding returns the binding kind of typ.
func (c Connectors) Binding(typ string) (Binding, bool) {
	b, ok := c.m[typ]
	return b, ok
}

// Len is the number of types.
func (c Connectors) Len() int { return len(c.m) }

// Types lists the types, sorted by name.
func (c Connectors) Types() []ConnectorType {
	out := make([]ConnectorType, 0, len(c.m))
	for n, b := range c.m {
		out = append(out, ConnectorType{Name: n, Binding: b})
	}
	slices.SortFunc(out, func(a, b ConnectorType) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// String lists the type names for messages: "amocrm, bitrix24, kommo" or "none".
func (c Connectors) String() string {
	if len(c.m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(c.m))
	for _, t := range c.Types() {
		names = append(names, t.Name)
	}
	return strings.Join(names, ", ")
}

// unknownConnector is the error for a connector type outside the set.
func (c Connectors) unknownConnector(typ string) error {
	return fmt.Errorf("unknown connector %q (licensable here: %s)", typ, c)
}

// checkBinding checks the shape of a CRM binding for a connector of binding kind k.
func checkBinding(k Binding, connector string, b *CRMBinding) error {
	if b == nil {
		return nil
	}
	for _, s := range []string{b.Bitrix24Domain, b.MemberID, b.Subdomain} {
		if len(s) > maxStrLen {
			return errors.New("crm binding value too long")
		}
	}
	switch k {
	case BindingDomain:
		if b.Bitrix24Domain == "" || b.AccountID != 0 || b.Subdomain != "" {
			return fmt.Errorf("crm: a %s binding needs bitrix24_domain (and optionally member_id), no account_id/subdomain", connector)
		}
	case BindingAccount:
		if b.Bitrix24Domain != "" || b.MemberID != "" || (b.AccountID == 0 && b.Subdomain == "") {
			return fmt.Errorf("crm: a %s binding needs account_id and/or subdomain only", connector)
		}
		if b.AccountID < 0 {
			return errors.New("crm: negative account_id")
		}
	default:
		return fmt.Errorf("crm: connector %s has no binding kind", connector)
	}
	return nil
}
