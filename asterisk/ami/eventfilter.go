package ami

import (
	"fmt"
	"slices"
	"strings"
)

// neededEvents are the AMI events pbxbridge reads, derived from what the call model
// (connector/callmodel Builder.Apply) and ToEvent use; see NeededEvents.
var neededEvents = [...]string{
	// Events whose type the call model acts on (Builder.Apply).
	"Newchannel", "Newstate", "Newexten", "VarSet", "Hangup",
	"DialBegin", "DialEnd",
	"BridgeCreate", "BridgeEnter", "BridgeLeave", "BridgeDestroy",
	"LocalBridge", "BlindTransfer", "AttendedTransfer", "Pickup", "Rename",
	"QueueCallerJoin", "MixMonitorStart", "Cdr",
	// asterisk11Events.
	"Dial", "Bridge",
	// What the connection needs besides: the answer to Originate (an event, so it is filtered,
	// unlike responses and the list events of CoreShowChannels, which Asterisk writes straight
	// to the session) and UserEvent markers.
	"OriginateResponse", "UserEvent",
}

// asterisk11Events are the Asterisk 1.8/11 spellings ToEvent maps onto needed events (Dial:
// DialBegin/DialEnd, Bridge: BridgeEnter/BridgeLeave). Only the legacy filter syntax names them:
// the Asterisk releases that have the advanced one never send them.
var asterisk11Events = []string{"Dial", "Bridge"}

// NeededEvents returns, sorted, the names of the AMI events pbxbridge uses: the ones the call
// model acts on, their Asterisk 11 spellings, OriginateResponse (click-to-call) and UserEvent.
// Everything else ToEvent knows is left out on purpose, because the model only takes from it
// what every channel event carries (caller ID, Linkedid, time), which the events kept carry too:
// CEL, NewCallerid, NewConnectedLine, HangupRequest, SoftHangupRequest, DialState, Hold, Unhold,
// MixMonitorStop, QueueCallerLeave, QueueCallerAbandon, the Agent* events, BridgeMerge,
// LocalOptimizationBegin/End, and every event ToEvent does not know (DeviceStateChange, RTCP,
// DTMF...). A change to what the model reads must extend this list; connector/replay's
// equivalence test replays every transcript with and without EventFilterLines and fails when a
// record differs.
//
// Action responses, FullyBooted at login and the list events of CoreShowChannels
// (CoreShowChannel, CoreShowChannelsComplete) are written straight to the session by Asterisk
// and never pass the manager.conf event filters, which apply only to the events Asterisk queues
// for every session (docs/asterisk.md), so they need no entry.
func NeededEvents() []string {
	out := slices.Clone(neededEvents[:])
	slices.Sort(out)
	return out
}

// FilterSyntax selects the manager.conf eventfilter syntax of EventFilterLines.
type FilterSyntax int

const (
	// LegacyFilter writes "eventfilter = <regex>" lines: POSIX extended regular expressions
	// matched against the whole event text. Every Asterisk version since 1.8 understands them.
	LegacyFilter FilterSyntax = iota
	// AdvancedFilter writes "eventfilter(action(include),name(<event>)...) =" lines, matched on
	// the event name's hash and on one header without scanning the event: cheaper for
	// Asterisk. Only recent Asterisk releases have them (docs/asterisk.md says which); an older
	// one ignores them as an unknown option and sends every event, as with no filter.
	AdvancedFilter
)

// EventFilterLines returns the manager.conf lines, for the AMI user's section, that make
// Asterisk send only NeededEvents, and VarSet events only for the channel variables vars
// (callmodel.Options.Variables: MIXMONITOR_FILENAME and the configured originate-id and DID
// variables; up to two leading underscores, the inheritance marks, are allowed on the wire).
// With vars nil every VarSet is sent; with vars empty (not nil) none is.
//
// Asterisk's include filters combine with OR: an event is sent when any line matches it. So VarSet is not in the first line's list, else every
// VarSet would pass; its own line admits it only for the variables read.
//
// It returns an error naming the variable when one is empty or holds a character other than
// ASCII letters, digits and '_' (such a name cannot be a dialplan variable the model reads,
// and could not be written into a regular expression in manager.conf safely).
func EventFilterLines(syntax FilterSyntax, vars []string) ([]string, error) {
	names := NeededEvents()
	var varNames []string
	if vars != nil {
		names = slices.DeleteFunc(names, func(n string) bool { return n == "VarSet" })
		for _, v := range vars {
			v = strings.TrimLeft(v, "_")
			if !isVarName(v) {
				return nil, fmt.Errorf("ami: event filter: variable %q: want letters, digits and '_' only", v)
			}
			if !slices.Contains(varNames, v) {
				varNames = append(varNames, v)
			}
		}
	}
	varRE := "_{0,2}(" + strings.Join(varNames, "|") + ")"
	switch syntax {
	case LegacyFilter:
		// Anchored at the start of the event (Asterisk writes "Event: <name>" first), so a
		// non-matching event is refused at its first bytes; [[:space:]] ends the name (the
		// '\r' of the line), so "Hangup" does not admit "HangupRequest".
		lines := []string{"eventfilter = ^Event: (" + strings.Join(names, "|") + ")[[:space:]]"}
		if len(varNames) > 0 {
			// POSIX '.' matches line ends (no REG_NEWLINE); the [[:space:]] before "Variable"
			// keeps "ChanVariable: NAME=..." from matching.
			lines = append(lines, "eventfilter = ^Event: VarSet[[:space:]].*[[:space:]]Variable: "+varRE+"[[:space:]]")
		}
		return lines, nil
	case AdvancedFilter:
		lines := make([]string, 0, len(names)+1)
		for _, n := range names {
			if !slices.Contains(asterisk11Events, n) { // releases with this syntax never send them
				lines = append(lines, "eventfilter(action(include),name("+n+")) =")
			}
		}
		if len(varNames) > 0 {
			// The header's value, without its line end, is matched.
			lines = append(lines, "eventfilter(action(include),name(VarSet),header(Variable),method(regex)) = ^"+varRE+"$")
		}
		return lines, nil
	}
	return nil, fmt.Errorf("ami: event filter: unknown syntax %d", syntax)
}

func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
		default:
			return false
		}
	}
	return true
}
