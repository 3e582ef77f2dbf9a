// Package call holds the call record: the contract between the call model that builds it, the
// outbox that stores it and every CRM adapter that delivers it. Record is one finished external
// call (one Asterisk Linkedid); Live is an event while a call is in progress. The JSON form of
// Record is the schema `pbxbridge replay` prints and the outbox stores (docs/call-record.md).
//
// The package imports only the standard library, so every layer can use it.
package call

import (
	"fmt"
	"strings"
	"time"
)

// Direction of a call as seen from the PBX.
type Direction string

// Directions.
const (
	Inbound  Direction = "inbound"  // external → internal
	Outbound Direction = "outbound" // internal → external
	Internal Direction = "internal" // extension → extension; not sent to CRMs by default
)

// Disposition is the outcome of a call.
type Disposition string

// Dispositions.
const (
	Answered Disposition = "answered"
	NoAnswer Disposition = "no_answer"
	Busy     Disposition = "busy"
	Failed   Disposition = "failed" // congestion, unavailable, invalid number
)

// Record is one finished external call (one Asterisk Linkedid): the core contract between the
// call model, the outbox and every CRM adapter. Its JSON form is the schema of docs/design.md §4,
// printed by `pbxbridge replay` and stored in the outbox; the fields after Recording are
// documented optional extensions (omitted when empty).
type Record struct {
	CallID      string      `json:"call_id"` // the call's Linkedid
	Direction   Direction   `json:"direction"`
	Customer    string      `json:"customer"` // external party, E.164 when it parses
	Line        string      `json:"line"`     // DID (inbound) or outbound line / caller id
	StartedAt   time.Time   `json:"started_at"`
	AnsweredAt  *time.Time  `json:"answered_at"` // null when nobody answered
	EndedAt     time.Time   `json:"ended_at"`
	Disposition Disposition `json:"disposition"`
	AnsweredBy  string      `json:"answered_by"` // extension that first talked to the customer
	Rang        []string    `json:"rang"`        // every extension that rang, in order of first ring
	RingSeconds int         `json:"ring_seconds"`
	TalkSeconds int         `json:"talk_seconds"`
	Legs        []Leg       `json:"legs"`      // every extension that talked, in order
	Transfers   []Transfer  `json:"transfers"` // blind and attended transfers, in order
	Recording   string      `json:"recording"` // recording file path, "" when none

	// PBX is the name of the source (config pbx[].name); part of the idempotency key.
	PBX string `json:"pbx,omitempty"`
	// HangupCause is the Q.850 cause of the customer's channel.
	HangupCause int `json:"hangup_cause,omitempty"`
	// Flags are documented markers such as "ivr_abandoned", "queue", "pickup",
	// "click_to_call", "flushed" (finished by shutdown or maximum age, not by a hangup),
	// "resynced" (finished from a post-reconnect snapshot), "ended_unseen" (finished from the
	// open-calls ledger after a crash), "recovered_from_cdr" (built from the PBX's CDR).
	Flags []string `json:"flags,omitempty"`
	// OriginateID is the click-to-call correlation id (__PBXBRIDGE_ORIGINATE_ID) when present.
	OriginateID string `json:"originate_id,omitempty"`
	// CallerExt is the extension that placed an outbound or internal call (for click-to-call:
	// the agent whose phone rang first); it says whose call it was when nobody answered.
	CallerExt string `json:"caller_ext,omitempty"`
	// Trunk is the trunk the call used, as its channel name without the unique suffix (e.g.
	// "PJSIP/provider"); used by connector routing filters.
	Trunk string `json:"trunk,omitempty"`
	// Vars are the channel variables the PBX's config lists (pbx[].calls.variables) that the
	// call set, each with its first non-empty value: what the dialplan learnt about the call
	// (a deal number entered in the IVR, a campaign), for hooks (docs/hooks.md).
	Vars map[string]string `json:"vars,omitempty"`
}

// Key is the record's idempotency key, unique across the PBXs of one daemon.
func (r *Record) Key() string {
	if r.PBX == "" {
		return r.CallID
	}
	return r.PBX + "/" + r.CallID
}

// Summary is the record in one line of plain words (the call model's decision, for timelines
// and `pbxbridge calls show`).
func (r *Record) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s call", r.Direction)
	if r.Customer != "" {
		fmt.Fprintf(&b, " with %s", r.Customer)
	}
	if r.Line != "" {
		fmt.Fprintf(&b, " on line %s", r.Line)
	}
	switch r.Disposition {
	case Answered:
		fmt.Fprintf(&b, ": answered by %s", r.AnsweredBy)
	default:
		fmt.Fprintf(&b, ": %s", strings.ReplaceAll(string(r.Disposition), "_", " "))
	}
	if len(r.Rang) > 0 {
		fmt.Fprintf(&b, "; rang %s", strings.Join(r.Rang, ", "))
	}
	if len(r.Transfers) > 0 {
		for _, t := range r.Transfers {
			fmt.Fprintf(&b, "; %s transfer %s→%s", t.Kind, t.From, t.To)
		}
	}
	fmt.Fprintf(&b, "; ring %ds, talk %ds", r.RingSeconds, r.TalkSeconds)
	if r.HangupCause != 0 {
		fmt.Fprintf(&b, "; hangup cause %d", r.HangupCause)
	}
	if len(r.Flags) > 0 {
		fmt.Fprintf(&b, "; %s", strings.Join(r.Flags, ", "))
	}
	return b.String()
}

// HasFlag reports whether the record carries flag f.
func (r *Record) HasFlag(f string) bool {
	for _, x := range r.Flags {
		if x == f {
			return true
		}
	}
	return false
}

// Leg is one extension's part of a call.
type Leg struct {
	Ext         string     `json:"ext"`
	AnsweredAt  *time.Time `json:"answered_at"`
	EndedAt     *time.Time `json:"ended_at"`
	TalkSeconds int        `json:"talk_seconds"`
}

// Transfer is one transfer of the call from one extension to another.
type Transfer struct {
	Kind string    `json:"kind"` // "blind" or "attended"
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

// LiveKind is the kind of a live event.
type LiveKind string

// Live event kinds.
const (
	// LiveRinging: an extension started ringing for the call.
	LiveRinging LiveKind = "ringing"
	// LiveAnswered: an extension answered (talks to the customer).
	LiveAnswered LiveKind = "answered"
	// LiveStopRinging: an extension stopped ringing without answering (another answered, the
	// caller hung up, ring timeout).
	LiveStopRinging LiveKind = "stop_ringing"
	// LiveHangup: the call ended (the finished Record follows).
	LiveHangup LiveKind = "hangup"
	// LiveTransferred: the call moved from one extension to another.
	LiveTransferred LiveKind = "transferred"
)

// Live is a best-effort event while a call is in progress; it drives incoming-call cards.
type Live struct {
	Kind      LiveKind  `json:"kind"`
	CallID    string    `json:"call_id"`
	PBX       string    `json:"pbx,omitempty"`
	Direction Direction `json:"direction"`
	Customer  string    `json:"customer"`
	Line      string    `json:"line"`
	Ext       string    `json:"ext,omitempty"`  // the extension this event is about
	From      string    `json:"from,omitempty"` // LiveTransferred: previous extension
	At        time.Time `json:"at"`
	StartedAt time.Time `json:"started_at"`
	// OriginateID is set for click-to-call calls.
	OriginateID string `json:"originate_id,omitempty"`
	// Vars are the listed channel variables set so far (Record.Vars).
	Vars map[string]string `json:"vars,omitempty"`
}

// Key is the idempotency key of the call this event belongs to (same as Record.Key).
func (l *Live) Key() string {
	if l.PBX == "" {
		return l.CallID
	}
	return l.PBX + "/" + l.CallID
}

// Flag names as they appear in Record.Flags.
const (
	FlagIVRAbandoned = "ivr_abandoned" // inbound, no extension was ever dialled
	FlagQueue        = "queue"         // the call went through app_queue
	FlagPickup       = "pickup"        // an extension picked up a call ringing elsewhere
	FlagVoicemail    = "voicemail"     // the call reached VoiceMail()
	FlagClickToCall  = "click_to_call" // carries an originate id variable
	FlagFlushed      = "flushed"       // finished by Flush (shutdown or maximum age), not by hangup
	FlagResynced     = "resynced"      // the call spanned a lost PBX connection; finished or continued from the snapshot
	// FlagEndedUnseen: the call was open when the daemon stopped (crash, kill) and had ended by
	// the time it came back; the record is what the daemon knew, ended at its last sign of life.
	FlagEndedUnseen = "ended_unseen"
	// FlagRecoveredFromCDR: the daemon never saw the call (it began and ended while the daemon
	// or its PBX connection was down); the record was built afterwards from the PBX's Call
	// Detail Records, which tell less than the live events (docs/operations.md): times to the
	// second, no hangup cause, the DID and recording only where the CDR layout has them.
	FlagRecoveredFromCDR = "recovered_from_cdr"
)
