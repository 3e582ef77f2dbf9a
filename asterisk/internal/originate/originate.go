// Package originate holds the click-to-call request checks and option checks that the AMI and
// ARI sources share; what differs between them (how the extension is prechecked, how the call
// is placed, which variable names and values the protocol accepts) stays in asterisk/ami and
// asterisk/ari.
package originate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Precheck modes of both transports' OriginateOptions.Precheck.
const (
	PrecheckExtensionState = "extension_state"
	PrecheckNone           = "none"
)

// Variable is the inherited channel variable that carries OriginateRequest.ID, so the call
// model can tie the resulting call to the CRM request.
const Variable = "__PBXBRIDGE_ORIGINATE_ID"

// CheckVariable refuses a variable name or value the transport cannot carry.
type CheckVariable func(name, value string) error

// Request is a click-to-call request checked by Check.
type Request struct {
	Ext, Num string // the trimmed extension and number
	// Where prefixes the errors of this request: "<kind>: click-to-call <ext> → <num>".
	Where string
}

// Check trims and checks the request's extension (an asterisk.ErrExtensionUnknown error when it
// cannot be one) and number (digits, +, * and # only); kind prefixes the errors.
func Check(kind string, req asterisk.OriginateRequest) (Request, error) {
	ext := strings.TrimSpace(req.Extension)
	num := strings.TrimSpace(req.Number)
	if !ValidDialToken(ext, true, "*#_.-") {
		return Request{}, fmt.Errorf("%s: click-to-call: extension %q: %w", kind, transport.Truncate(ext, 40), asterisk.ErrExtensionUnknown)
	}
	if !ValidDialToken(num, false, "+*#") {
		return Request{}, fmt.Errorf("%s: click-to-call %s: number %q is not dialable (digits, +, * and # only)", kind, ext, transport.Truncate(num, 40))
	}
	return Request{Ext: ext, Num: num, Where: fmt.Sprintf("%s: click-to-call %s → %s", kind, ext, num)}, nil
}

// Bound returns how long the agent's phone rings (timeout, or ringTimeout when it is not
// positive) and ctx bounded by that plus 15 s when ctx has no deadline.
func Bound(ctx context.Context, timeout, ringTimeout time.Duration) (context.Context, context.CancelFunc, time.Duration) {
	if timeout <= 0 {
		timeout = ringTimeout
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}, timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+15*time.Second)
	return ctx, cancel, timeout
}

// CallerID renders the caller id template: "{name}" is name (the number when name is empty)
// without what would break the "name" <num> syntax, "{number}" num, "{ext}" ext.
func CallerID(template, name, num, ext string) string {
	if name == "" {
		name = num
	}
	return strings.NewReplacer("{name}", sanitizeCallerName(name), "{number}", num, "{ext}", ext).Replace(template)
}

// Variables merges the configured variables, the request's own (they win on a clash) and the
// request ID (as Variable, when set), checking every one with check in name order.
func Variables(configured, requested map[string]string, id string, check CheckVariable) (map[string]string, error) {
	all := make(map[string]string, len(configured)+len(requested)+1)
	for k, v := range configured {
		all[k] = v
	}
	for k, v := range requested {
		all[k] = v
	}
	if id != "" {
		all[Variable] = id
	}
	for _, k := range SortedNames(all) {
		if err := check(k, all[k]); err != nil {
			return nil, err
		}
	}
	return all, nil
}

// SortedNames returns the names of vars, sorted.
func SortedNames(vars map[string]string) []string {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// SetDefaults fills the option fields both transports have when they are zero: the agent's
// channel "PJSIP/{ext}", the customer leg's context "from-internal" and priority 1, the caller
// id `"{name}" <{ext}>`, a 30 s ring and PrecheckExtensionState.
func SetDefaults(channel, dialContext *string, priority *int, callerID *string, ringTimeout *time.Duration, precheck *string) {
	for _, d := range [...]struct {
		p *string
		v string
	}{{channel, "PJSIP/{ext}"}, {dialContext, "from-internal"}, {callerID, `"{name}" <{ext}>`}, {precheck, PrecheckExtensionState}} {
		if *d.p == "" {
			*d.p = d.v
		}
	}
	if *priority <= 0 {
		*priority = 1
	}
	if *ringTimeout <= 0 {
		*ringTimeout = 30 * time.Second
	}
}

// Options are the option values both transports check alike.
type Options struct {
	Kind     string // "ami" or "ari": the prefix of the errors
	Channel  string // the agent's channel template: must contain "{ext}"
	Precheck string // PrecheckExtensionState or PrecheckNone
	// Texts are (name, value) pairs that must not contain a line break or NUL.
	Texts     [][2]string
	Variables map[string]string
	Check     CheckVariable
}

// Validate reports option errors that no retry can fix.
func (o Options) Validate() error {
	if !strings.Contains(o.Channel, "{ext}") {
		return fmt.Errorf("%s: originate channel template %q has no {ext}", o.Kind, o.Channel)
	}
	for _, kv := range o.Texts {
		if strings.ContainsAny(kv[1], "\r\n\x00") {
			return fmt.Errorf("%s: originate %s contains a line break or NUL", o.Kind, kv[0])
		}
	}
	switch o.Precheck {
	case PrecheckExtensionState, PrecheckNone:
	default:
		return fmt.Errorf("%s: originate precheck %q: want %q or %q", o.Kind, o.Precheck, PrecheckExtensionState, PrecheckNone)
	}
	for _, k := range SortedNames(o.Variables) {
		if err := o.Check(k, o.Variables[k]); err != nil {
			return fmt.Errorf("%s: originate: %w", o.Kind, err)
		}
	}
	return nil
}

// ValidDialToken reports whether s is non-empty, at most 64 bytes, and made of digits, ASCII
// letters when letters is set, and the given extra characters.
func ValidDialToken(s string, letters bool, extra string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
		case letters && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'):
		case strings.ContainsRune(extra, r):
		default:
			return false
		}
	}
	return true
}

// sanitizeCallerName removes what would break the caller id's "name" <num> syntax and cuts it
// to 80 bytes.
func sanitizeCallerName(s string) string {
	s = strings.Map(func(r rune) rune {
		switch r {
		case '"', '<', '>', '\r', '\n', 0:
			return -1
		}
		return r
	}, s)
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
