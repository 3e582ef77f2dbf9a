package licensing

import (
	"fmt"
	"strings"
)

// Account is the CRM account a connector instance reports once it has authenticated with its CRM
// (§3.8). Adapters of BindingDomain types (Bitrix24) fill Domain (portal domain, e.g.
// "romashka.bitrix24.ru") and, where the API gives it, MemberID. Adapters of BindingAccount types
// (amoCRM, Kommo) fill AccountID and Subdomain (GET /api/v4/account).
type Account struct {
	Domain    string `json:"domain,omitempty"`
	MemberID  string `json:"member_id,omitempty"`
	AccountID int64  `json:"account_id,omitempty"`
	Subdomain string `json:"subdomain,omitempty"`
}

// IsZero reports whether no identity is known.
func (a Account) IsZero() bool { return a == Account{} }

func (a Account) String() string {
	var parts []string
	if a.Domain != "" {
		parts = append(parts, "domain "+a.Domain)
	}
	if a.MemberID != "" {
		parts = append(parts, "member_id "+a.MemberID)
	}
	if a.AccountID != 0 {
		parts = append(parts, fmt.Sprintf("account_id %d", a.AccountID))
	}
	if a.Subdomain != "" {
		parts = append(parts, "subdomain "+a.Subdomain)
	}
	if len(parts) == 0 {
		return "unknown account"
	}
	return strings.Join(parts, ", ")
}

func (b *CRMBinding) String() string {
	if b == nil {
		return "any account"
	}
	return Account{Domain: b.Bitrix24Domain, MemberID: b.MemberID, AccountID: b.AccountID, Subdomain: b.Subdomain}.String()
}

// matchAccount reports whether a binding accepts the account. A nil binding accepts any account.
// BindingDomain: the domain must match; member_id must match when both sides have it.
// BindingAccount: every field the binding sets must match.
func matchAccount(b *CRMBinding, kind Binding, a Account) bool {
	if b == nil {
		return true
	}
	if kind == BindingDomain {
		if normHost(b.Bitrix24Domain) != normHost(a.Domain) || a.Domain == "" {
			return false
		}
		return b.MemberID == "" || a.MemberID == "" || b.MemberID == a.MemberID
	}
	if b.AccountID != 0 && b.AccountID != a.AccountID {
		return false
	}
	if b.Subdomain != "" && normHost(b.Subdomain) != normHost(a.Subdomain) {
		return false
	}
	return true
}

// AccountMatches reports whether l's CRM binding accepts the account (always true when l is not
// CRM-bound).
func AccountMatches(l *License, a Account) bool { return matchAccount(l.claims.CRM, l.binding, a) }

// BindingOf converts an account to the binding a licence for it would carry under kind.
func BindingOf(kind Binding, a Account) *CRMBinding {
	switch {
	case a.IsZero():
		return nil
	case kind == BindingDomain && a.Domain != "":
		return &CRMBinding{Bitrix24Domain: a.Domain, MemberID: a.MemberID}
	case kind == BindingAccount && (a.AccountID != 0 || a.Subdomain != ""):
		return &CRMBinding{AccountID: a.AccountID, Subdomain: a.Subdomain}
	}
	return nil
}
