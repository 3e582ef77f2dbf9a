package ami

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/internal/originate"
	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Precheck modes of OriginateOptions.Precheck.
const (
	PrecheckExtensionState = originate.PrecheckExtensionState // ask ExtensionState before ringing (default)
	PrecheckNone           = originate.PrecheckNone           // PBXs without hints: rely on the Originate outcome
)

// OriginateVariable is the inherited channel variable that carries OriginateRequest.ID, so the
// call model can tie the resulting call to the CRM request.
const OriginateVariable = originate.Variable

// OriginateOptions configure click-to-call for one PBX: the agent's extension is rung first
// (Channel), and once the agent answers the call continues in Context at Exten = the customer's
// number, i.e. through the PBX's normal outbound routing.
type OriginateOptions struct {
	// Channel is the agent's channel; "{ext}" (and "{number}") are replaced. Default
	// "PJSIP/{ext}".
	// FreePBX: "Local/{ext}@from-internal" (follows the extension's settings: DND, follow-me);
	// chan_sip: "SIP/{ext}".
	Channel string
	// Context, Exten and Priority of the customer leg (default "from-internal", "{number}", 1);
	// "{number}" and "{ext}" are replaced in Exten (e.g. "9{number}" for an outbound prefix).
	Context  string
	Exten    string
	Priority int
	// StateContext is where ExtensionState finds the extension's hint (default: Context; plain
	// Asterisk often keeps hints in the phones' context, FreePBX in ext-local, reachable from
	// from-internal).
	StateContext string
	// CallerID shown on the agent's phone while it rings; "{name}", "{number}" and "{ext}" are
	// replaced. Default `"{name}" <{ext}>` with {name} = the request's CallerIDName, else the
	// customer's number: the agent sees whom they are about to call, and the outbound leg keeps
	// the extension's own caller id, so outbound caller-id rules apply as for a normal call.
	CallerID string
	// RingTimeout is how long the agent's phone rings when the request sets no Timeout
	// (default 30 s).
	RingTimeout time.Duration
	// Precheck is PrecheckExtensionState (default) or PrecheckNone.
	Precheck string
	// AllowInUse lets an agent whose extension is already in a call be rung (call waiting);
	// by default such an agent is reported busy.
	AllowInUse bool
	// Variables are set on every click-to-call in addition to the request's own.
	Variables map[string]string
}

func (o OriginateOptions) withDefaults() OriginateOptions {
	originate.SetDefaults(&o.Channel, &o.Context, &o.Priority, &o.CallerID, &o.RingTimeout, &o.Precheck)
	if o.Exten == "" {
		o.Exten = "{number}"
	}
	if o.StateContext == "" {
		o.StateContext = o.Context
	}
	return o
}

func (o *OriginateOptions) validate() error {
	return originate.Options{
		Kind: "ami", Channel: o.Channel, Precheck: o.Precheck, Variables: o.Variables, Check: checkVariable,
		Texts: [][2]string{{"channel", o.Channel}, {"context", o.Context}, {"exten", o.Exten},
			{"state context", o.StateContext}, {"caller id", o.CallerID}},
	}.Validate()
}

// OriginateResponse Reason codes (Asterisk's AST_CONTROL_* values) and what they mean for the agent
// leg of a click-to-call.
const (
	ReasonFailed     = 0 // the channel could not be created or dialled (unregistered, no route)
	ReasonHangup     = 1 // the agent's phone hung up / rejected
	ReasonRingTimout = 3 // rang out: no answer
	ReasonAnswered   = 4 // success
	ReasonBusy       = 5
	ReasonCongestion = 8
)

// Originate rings req.Extension and, once the agent answers, dials req.Number through
// OriginateOptions.Context (click-to-call). It returns when the PBX reported the outcome of the
// agent leg: after the agent answered, or with an error wrapping one of the asterisk sentinels
// when the cause is known (ErrExtensionUnknown, ErrExtensionBusy, ErrExtensionUnreachable,
// ErrNoAnswer, ErrNotConnected). If ctx has no deadline the wait is bounded by the ring timeout
// plus 15 s.
func (s *Source) Originate(ctx context.Context, req asterisk.OriginateRequest) (asterisk.OriginateResult, error) {
	o := &s.opts.Originate
	r, err := originate.Check("ami", req)
	if err != nil {
		return asterisk.OriginateResult{}, err
	}
	ext, num, where := r.Ext, r.Num, r.Where
	vars, err := s.originateVariables(req)
	if err != nil {
		return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, err)
	}
	conn := s.current()
	if conn == nil {
		return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, asterisk.ErrNotConnected)
	}
	ctx, cancel, timeout := originate.Bound(ctx, req.Timeout, o.RingTimeout)
	defer cancel()

	if o.Precheck == PrecheckExtensionState {
		st, err := conn.ExtensionState(ctx, ext, o.StateContext)
		if err != nil {
			return asterisk.OriginateResult{}, fmt.Errorf("%s: checking the extension: %w", where, connErr(err))
		}
		if err := stateError(st, o.AllowInUse); err != nil {
			return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, err)
		}
	}

	callerID := originate.CallerID(o.CallerID, req.CallerIDName, num, ext)
	subst := strings.NewReplacer("{number}", num, "{ext}", ext)
	res, err := conn.Originate(ctx, OriginateData{
		Channel:   subst.Replace(o.Channel),
		Context:   o.Context,
		Exten:     subst.Replace(o.Exten),
		Priority:  o.Priority,
		Timeout:   timeout,
		CallerID:  callerID,
		Variables: vars,
		Async:     true,
	})
	if err != nil {
		return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, originateError(err))
	}
	var uid string
	if n := len(res.Events); n > 0 {
		uid = res.Events[n-1].Get("Uniqueid")
		if uid == "<unknown>" {
			uid = ""
		}
	}
	return asterisk.OriginateResult{Uniqueid: uid}, nil
}

// originateVariables returns the Variable values: the request ID, the configured variables and
// the request's own, sorted by name (the request wins on a clash).
func (s *Source) originateVariables(req asterisk.OriginateRequest) ([]string, error) {
	all, err := originate.Variables(s.opts.Originate.Variables, req.Variables, req.ID, checkVariable)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(all))
	for _, k := range originate.SortedNames(all) {
		out = append(out, k+"="+all[k])
	}
	return out, nil
}

// checkVariable refuses names and values that AMI would split or that could inject headers.
func checkVariable(name, value string) error {
	if name == "" || strings.ContainsAny(name, "=,: \t\r\n\x00") {
		return fmt.Errorf("variable name %q is invalid", transport.Truncate(name, 40))
	}
	if strings.ContainsAny(value, ",\r\n\x00") {
		return fmt.Errorf("variable %s: value contains ',' or a line break (AMI splits Variable on commas)", name)
	}
	return nil
}

// stateError maps an ExtensionState answer to an asterisk sentinel, or nil when the agent can
// be rung.
func stateError(st ExtensionStatus, allowInUse bool) error {
	switch {
	case st.Status == ExtNoHint || st.Status == ExtRemoved || st.Status < 0:
		return fmt.Errorf("%w: the PBX has no hint for extension %s in context %s", asterisk.ErrExtensionUnknown, st.Exten, st.Context)
	case st.Status&ExtUnavailable != 0:
		return fmt.Errorf("%w: the phone of extension %s is not registered or not reachable", asterisk.ErrExtensionUnreachable, st.Exten)
	case st.Status&ExtBusy != 0:
		return fmt.Errorf("%w: extension %s is busy", asterisk.ErrExtensionBusy, st.Exten)
	case st.Status&(ExtRinging|ExtOnHold) != 0:
		return fmt.Errorf("%w: extension %s is %s", asterisk.ErrExtensionBusy, st.Exten, describeState(st))
	case st.Status&ExtInUse != 0 && !allowInUse:
		return fmt.Errorf("%w: extension %s is already in a call", asterisk.ErrExtensionBusy, st.Exten)
	}
	return nil
}

func describeState(st ExtensionStatus) string {
	if st.StatusText != "" {
		return strings.ToLower(st.StatusText)
	}
	return "state " + strconv.Itoa(st.Status)
}

// originateError maps the outcome of an Originate to an asterisk sentinel where the cause is
// known.
func originateError(err error) error {
	var re *ResponseError
	if !errors.As(err, &re) {
		return connErr(err)
	}
	if re.Frame == nil || re.Frame.Event() != "OriginateResponse" {
		// The action itself was refused (permission, bad channel name, no such context...).
		return err
	}
	reason, convErr := strconv.Atoi(strings.TrimSpace(re.Frame.Get("Reason")))
	if convErr != nil {
		reason = -1
	}
	switch reason {
	case ReasonRingTimout:
		return fmt.Errorf("%w (rang out)", asterisk.ErrNoAnswer)
	case ReasonHangup:
		return fmt.Errorf("%w (the phone rejected the call)", asterisk.ErrNoAnswer)
	case ReasonBusy:
		return fmt.Errorf("%w (the phone answered busy)", asterisk.ErrExtensionBusy)
	case ReasonCongestion:
		return fmt.Errorf("%w (congestion)", asterisk.ErrExtensionUnreachable)
	case ReasonFailed:
		return fmt.Errorf("%w (the PBX could not dial the extension's channel)", asterisk.ErrExtensionUnreachable)
	}
	return fmt.Errorf("the PBX reported originate failure, reason %s", re.Frame.Get("Reason"))
}

// connErr adds ErrNotConnected to errors that mean the connection is gone.
func connErr(err error) error {
	if errors.Is(err, ErrClosed) || errors.Is(err, ErrConnectionLost) {
		return fmt.Errorf("%w: %w", asterisk.ErrNotConnected, err)
	}
	return err
}
