package licensing

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// State is a connector instance's licence state (§3.6).
type State string

// States. Superseded and revoked tokens are file results (see FileStatus), not connector states.
const (
	StateNone     State = "none"     // no valid token for this connector
	StatePending  State = "pending"  // valid token whose term has not started yet
	StateTrial    State = "trial"    // trial term running
	StateActive   State = "active"   // paid, nfr or demo term running
	StateGrace    State = "grace"    // after end, up to grace_until (payment fewer than 7 days late): still on
	StateExpired  State = "expired"  // after grace_until: CRM actions off
	StateMismatch State = "mismatch" // host below min_match, or CRM account differs
)

// AllStates lists every State (the one-hot values of pbxbridge_license_state).
var AllStates = []State{StateNone, StatePending, StateTrial, StateActive, StateGrace, StateExpired, StateMismatch}

// On reports whether the state enables the connector's CRM actions.
func (s State) On() bool { return s == StateTrial || s == StateActive || s == StateGrace }

// SeatStatus is the tariff usage of a connector instance (§3.9). Seats are the mapped extensions
// registered for the instance; CRM users are reported against their limit but never suspended.
type SeatStatus struct {
	ExtensionsLimit *int       `json:"extensions_limit"` // nil: unlimited
	ExtensionsUsed  int        `json:"extensions_used"`
	CRMUsersLimit   *int       `json:"crm_users_limit"`
	CRMUsersUsed    int        `json:"crm_users_used"`
	OverLimit       bool       `json:"over_limit"`
	SuspendedExcess bool       `json:"suspended_excess"`
	Deadline        *time.Time `json:"overage_deadline,omitempty"` // when over_limit becomes suspended_excess
	Suspended       []string   `json:"suspended_extensions,omitempty"`
}

// instanceSpec is a registered connector instance as the evaluator sees it.
type instanceSpec struct {
	Name       string
	Type       string
	Extensions []string // unique, in seat order (priority list first, then ascending)
	CRMUsers   int
	Account    Account
	HasAccount bool
}

// candidate is a verified licence token that passed anti-rollback, with its host match.
type candidate struct {
	lic  *License
	host HostMatch
	file string
}

// connectorEval is the evaluation result for one instance.
type connectorEval struct {
	spec        *instanceSpec
	state       State
	reason      string
	selected    *candidate
	next        *candidate // a pending token of the same subscription (stacked renewal)
	provisional bool       // selected token is CRM-bound but the account is not known yet
	mismatch    Reason     // host_mismatch or crm_mismatch when state is mismatch
	mismatchKey string     // identifies the mismatch (for counting it once)
	seats       SeatStatus
	allowedExt  map[string]bool // nil: every extension allowed (when on)
}

type evalResult struct {
	connectors map[string]*connectorEval
	overSince  map[string]time.Time
	nextChange time.Time // next instant the result can change without any input changing
}

// evaluate assigns tokens to instances and derives states at the effective time now. Each
// subscription (lid) serves at most one instance. Instances whose CRM account is known are served
// first, then the others, each group by name. demoOnly maps a connector type to the lid of a demo
// licence that was refused (Options.AllowDemo false), to explain instances left without a licence.
func evaluate(now time.Time, cands []*candidate, specs []*instanceSpec, overSince map[string]time.Time, demoOnly map[string]string) evalResult {
	res := evalResult{connectors: map[string]*connectorEval{}, overSince: map[string]time.Time{}}
	order := slices.Clone(specs)
	sort.SliceStable(order, func(i, j int) bool {
		if order[i].HasAccount != order[j].HasAccount {
			return order[i].HasAccount
		}
		return order[i].Name < order[j].Name
	})
	claimed := map[string]bool{} // lid -> taken
	for _, sp := range order {
		ce := &connectorEval{spec: sp, state: StateNone}
		res.connectors[sp.Name] = ce
		var eligible []*candidate
		for _, c := range cands {
			l := c.lic
			if l.Connector() != sp.Type || claimed[l.LID()] || !c.host.OK {
				continue
			}
			b := l.claims.CRM
			switch {
			case b == nil:
			case sp.HasAccount:
				if !matchAccount(b, l.binding, sp.Account) {
					continue
				}
			case l.Type() == keyring.TypeDemo:
				continue // a demo licence needs the verified .invalid account first
			}
			eligible = append(eligible, c)
		}
		sel := pick(now, eligible)
		if sel == nil {
			continue
		}
		claimed[sel.lic.LID()] = true
		ce.selected = sel
		ce.provisional = sel.lic.claims.CRM != nil && !sp.HasAccount
		switch sel.lic.PhaseAt(now) {
		case PhasePending:
			ce.state = StatePending
			ce.reason = fmt.Sprintf("term starts %s", sel.lic.Start())
		case PhaseCurrent:
			ce.state = StateActive
			if sel.lic.Type() == keyring.TypeTrial {
				ce.state = StateTrial
			}
		case PhaseGrace:
			ce.state = StateGrace
			ce.reason = fmt.Sprintf("term ended %s; payment is late; CRM actions stop after %s", sel.lic.End(), sel.lic.GraceUntil())
		case PhaseExpired:
			ce.state = StateExpired
			ce.reason = fmt.Sprintf("grace ended %s", sel.lic.GraceUntil())
		}
		if ce.provisional && ce.state.On() {
			ce.reason = "CRM account not verified yet (checked once the connector has authenticated)"
		}
		for _, c := range eligible {
			if c != sel && c.lic.LID() == sel.lic.LID() && c.lic.PhaseAt(now) == PhasePending &&
				(ce.next == nil || c.lic.Start().Before(ce.next.lic.Start())) {
				ce.next = c
			}
		}
	}
	// Explain instances left without a token.
	for _, sp := range order {
		ce := res.connectors[sp.Name]
		if ce.selected != nil {
			continue
		}
		for _, c := range cands {
			l := c.lic
			if l.Connector() != sp.Type || claimed[l.LID()] {
				continue
			}
			switch {
			case !c.host.OK:
				ce.state, ce.mismatch, ce.mismatchKey = StateMismatch, ReasonHostMismatch, l.Digest()
				ce.reason = fmt.Sprintf("%s: host matches %d of %d factors (%d of %d hardware-tied); differing %v, missing %v",
					l.LID(), c.host.Matched, c.host.Required, c.host.StableMatched, c.host.StableRequired, c.host.Failing, c.host.Missing)
			case sp.HasAccount && !matchAccount(l.claims.CRM, l.binding, sp.Account):
				ce.state, ce.mismatch, ce.mismatchKey = StateMismatch, ReasonCRMMismatch, l.Digest()+"|"+sp.Account.String()
				ce.reason = fmt.Sprintf("%s is bound to CRM account %s; the connector reports %s", l.LID(), l.claims.CRM, sp.Account)
			case !sp.HasAccount && l.Type() == keyring.TypeDemo && ce.state != StateMismatch:
				ce.reason = "waiting for the connector to report its CRM account (a demo licence is checked against it)"
			}
		}
		if lid, ok := demoOnly[sp.Type]; ok && ce.state == StateNone && ce.reason == "" {
			ce.reason = fmt.Sprintf("%s is a demo licence: demo licences work only in `pbxbridge demo`", lid)
		}
	}
	// Seats.
	for _, sp := range order {
		ce := res.connectors[sp.Name]
		if ce.selected == nil {
			continue
		}
		applySeats(now, ce, overSince, res.overSince)
	}
	res.nextChange = nextChange(now, cands, res.connectors)
	return res
}

// pick selects the token for an instance: among tokens covering now (current or grace), paid/nfr
// beat demo beat trial, a running term beats grace, then the latest grace_until, then the highest
// rev, then the lid; else the earliest pending token; else the most recently expired one.
func pick(now time.Time, cands []*candidate) *candidate {
	var covering, pending, expired []*candidate
	for _, c := range cands {
		switch c.lic.PhaseAt(now) {
		case PhaseCurrent, PhaseGrace:
			covering = append(covering, c)
		case PhasePending:
			pending = append(pending, c)
		case PhaseExpired:
			expired = append(expired, c)
		}
	}
	if len(covering) > 0 {
		return slices.MinFunc(covering, func(a, b *candidate) int {
			return cmp.Or(
				-cmp.Compare(typeRank(a.lic.Type()), typeRank(b.lic.Type())),
				-cmp.Compare(phaseRank(a.lic.PhaseAt(now)), phaseRank(b.lic.PhaseAt(now))),
				-a.lic.GraceUntil().Compare(b.lic.GraceUntil()),
				-cmp.Compare(a.lic.Rev(), b.lic.Rev()),
				cmp.Compare(a.lic.LID(), b.lic.LID()),
				cmp.Compare(a.lic.Digest(), b.lic.Digest()),
			)
		})
	}
	if len(pending) > 0 {
		return slices.MinFunc(pending, func(a, b *candidate) int {
			return cmp.Or(a.lic.Start().Compare(b.lic.Start()), -cmp.Compare(typeRank(a.lic.Type()), typeRank(b.lic.Type())),
				cmp.Compare(a.lic.LID(), b.lic.LID()), cmp.Compare(a.lic.Digest(), b.lic.Digest()))
		})
	}
	if len(expired) > 0 {
		return slices.MinFunc(expired, func(a, b *candidate) int {
			return cmp.Or(-a.lic.GraceUntil().Compare(b.lic.GraceUntil()), cmp.Compare(a.lic.LID(), b.lic.LID()),
				cmp.Compare(a.lic.Digest(), b.lic.Digest()))
		})
	}
	return nil
}

func typeRank(t keyring.Type) int {
	switch t {
	case keyring.TypePaid, keyring.TypeNFR:
		return 3
	case keyring.TypeDemo:
		return 2
	}
	return 1
}

func phaseRank(p Phase) int {
	if p == PhaseCurrent {
		return 2
	}
	return 1
}

// applySeats computes over_limit / suspended_excess for an instance with a selected token.
func applySeats(now time.Time, ce *connectorEval, prevOver, newOver map[string]time.Time) {
	c := ce.selected.lic.claims
	sp := ce.spec
	ce.seats.ExtensionsUsed = len(sp.Extensions)
	ce.seats.CRMUsersUsed = sp.CRMUsers
	if c.Seats != nil {
		ce.seats.ExtensionsLimit = cloneInt(c.Seats.Extensions)
		ce.seats.CRMUsersLimit = cloneInt(c.Seats.CRMUsers)
	}
	if l := ce.seats.CRMUsersLimit; l != nil && sp.CRMUsers > *l {
		ce.seats.OverLimit = true
	}
	limit := ce.seats.ExtensionsLimit
	if limit == nil || len(sp.Extensions) <= *limit {
		return
	}
	var ratio float64
	var hours int
	if c.Overage != nil {
		ratio, hours = c.Overage.Ratio, c.Overage.Hours
	}
	since, ok := prevOver[sp.Name]
	if !ok || since.After(now) {
		since = now
	}
	newOver[sp.Name] = since
	deadline := since.Add(time.Duration(hours) * time.Hour)
	ceiling := int(math.Ceil(float64(*limit)*(1+ratio) - 1e-9))
	ce.seats.OverLimit = true
	if len(sp.Extensions) <= ceiling && now.Before(deadline) {
		ce.seats.Deadline = &deadline
		return
	}
	ce.seats.SuspendedExcess = true
	ce.allowedExt = make(map[string]bool, *limit)
	for i, e := range sp.Extensions {
		if i < *limit {
			ce.allowedExt[e] = true
		} else {
			ce.seats.Suspended = append(ce.seats.Suspended, e)
		}
	}
}

func cloneInt(p *int) *int {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// nextChange is the earliest instant after now at which a date boundary (midnight in a token's
// zone) or an overage deadline can change the result.
func nextChange(now time.Time, cands []*candidate, ces map[string]*connectorEval) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	seen := map[*time.Location]bool{}
	for _, c := range cands {
		loc := c.lic.Location()
		if loc == nil || seen[loc] {
			continue
		}
		seen[loc] = true
		consider(DateOf(now.In(loc)).AddDays(1).Start(loc))
	}
	for _, ce := range ces {
		if ce.seats.Deadline != nil {
			consider(*ce.seats.Deadline)
		}
	}
	return next
}

// seatOrder returns the unique extensions in seat order: the priority list first (only entries
// that are registered), then the rest ascending (numerically when both are numbers).
func seatOrder(exts, priority []string) []string {
	set := map[string]bool{}
	for _, e := range exts {
		if e = strings.TrimSpace(e); e != "" {
			set[e] = true
		}
	}
	out := make([]string, 0, len(set))
	for _, p := range priority {
		if set[p] {
			out = append(out, p)
			delete(set, p)
		}
	}
	rest := make([]string, 0, len(set))
	for e := range set {
		rest = append(rest, e)
	}
	sort.Slice(rest, func(i, j int) bool { return extLess(rest[i], rest[j]) })
	return append(out, rest...)
}

func extLess(a, b string) bool {
	na, nb := isDigits(a), isDigits(b)
	switch {
	case na && nb:
		ta, tb := strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(ta) != len(tb) {
			return len(ta) < len(tb)
		}
		if ta != tb {
			return ta < tb
		}
		return a < b
	case na != nb:
		return na
	}
	return a < b
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
