// Package asterisk holds what every PBX transport and the call model share: the normalised
// Event that AMI and ARI frames are translated into, the Source and Originator interfaces, and
// phone-number helpers.
//
// Transports (asterisk/ami, asterisk/ari) only translate wire frames into Events; they never
// interpret calls. The call model (connector/callmodel) consumes Events and never sees wire
// frames. An AMI event and the ARI event that describes the same fact map to the same Type with
// the same fields filled, so the model works unchanged on either transport.
package asterisk

import "time"

// Type is the kind of a normalised event. The zero value is TypeUnknown.
type Type uint8

// Event types. The comment names the AMI event and the ARI event each one is made from.
const (
	TypeUnknown Type = iota // an event the model does not use (kept only for counting)

	TypeNewChannel       // AMI Newchannel / ARI ChannelCreated
	TypeNewState         // AMI Newstate / ARI ChannelStateChange
	TypeNewCallerID      // AMI NewCallerid / ARI ChannelCallerId
	TypeNewConnectedLine // AMI NewConnectedLine / ARI ChannelConnectedLine
	TypeNewExten         // AMI Newexten / ARI ChannelDialplan
	TypeVarSet           // AMI VarSet / ARI ChannelVarset
	TypeHangupRequest    // AMI HangupRequest, SoftHangupRequest / ARI ChannelHangupRequest
	TypeHangup           // AMI Hangup / ARI ChannelDestroyed

	TypeDialBegin // AMI DialBegin / ARI Dial without dialstatus
	TypeDialState // AMI DialState / ARI Dial with a progress status (RINGING, PROGRESS...)
	TypeDialEnd   // AMI DialEnd / ARI Dial with a final dialstatus

	TypeBridgeCreate  // AMI BridgeCreate / ARI BridgeCreated
	TypeBridgeEnter   // AMI BridgeEnter / ARI ChannelEnteredBridge
	TypeBridgeLeave   // AMI BridgeLeave / ARI ChannelLeftBridge
	TypeBridgeDestroy // AMI BridgeDestroy / ARI BridgeDestroyed
	TypeBridgeMerge   // AMI BridgeMerge / ARI BridgeMerged

	TypeLocalBridge        // AMI LocalBridge (the two halves of a Local channel)
	TypeLocalOptimizeBegin // AMI LocalOptimizationBegin
	TypeLocalOptimizeEnd   // AMI LocalOptimizationEnd

	TypeBlindTransfer    // AMI BlindTransfer / ARI BridgeBlindTransfer
	TypeAttendedTransfer // AMI AttendedTransfer / ARI BridgeAttendedTransfer
	TypePickup           // AMI Pickup

	TypeQueueCallerJoin    // AMI QueueCallerJoin
	TypeQueueCallerLeave   // AMI QueueCallerLeave
	TypeQueueCallerAbandon // AMI QueueCallerAbandon
	TypeAgentCalled        // AMI AgentCalled
	TypeAgentConnect       // AMI AgentConnect
	TypeAgentComplete      // AMI AgentComplete
	TypeAgentRingNoAnswer  // AMI AgentRingNoAnswer
	TypeAgentDump          // AMI AgentDump

	TypeHold   // AMI Hold / ARI ChannelHold
	TypeUnhold // AMI Unhold / ARI ChannelUnhold

	TypeMixMonitorStart // AMI MixMonitorStart
	TypeMixMonitorStop  // AMI MixMonitorStop

	TypeCdr // AMI Cdr
	TypeCel // AMI CEL

	TypeOriginateResponse // AMI OriginateResponse
	TypeUserEvent         // AMI UserEvent / ARI ChannelUserevent
	TypeRename            // AMI Rename: Chan is the channel under its old name, Peer.Name the new name

	// Transport events: produced by a Source itself, not by Asterisk.

	// TypeConnected: the source (re)connected and logged in. Resync is true after a reconnect;
	// the source then emits one TypeSnapshot per channel Asterisk still has, then TypeSnapshotEnd.
	TypeConnected
	// TypeDisconnected: the connection was lost at Time; events may have been missed since.
	TypeDisconnected
	// TypeSnapshot: one channel that exists now (AMI CoreShowChannel / ARI channel list entry).
	TypeSnapshot
	// TypeSnapshotEnd: the snapshot is complete; channels not in it are gone.
	TypeSnapshotEnd

	typeCount
)

var typeNames = [...]string{
	TypeUnknown:            "unknown",
	TypeNewChannel:         "new_channel",
	TypeNewState:           "new_state",
	TypeNewCallerID:        "new_callerid",
	TypeNewConnectedLine:   "new_connected_line",
	TypeNewExten:           "new_exten",
	TypeVarSet:             "var_set",
	TypeHangupRequest:      "hangup_request",
	TypeHangup:             "hangup",
	TypeDialBegin:          "dial_begin",
	TypeDialState:          "dial_state",
	TypeDialEnd:            "dial_end",
	TypeBridgeCreate:       "bridge_create",
	TypeBridgeEnter:        "bridge_enter",
	TypeBridgeLeave:        "bridge_leave",
	TypeBridgeDestroy:      "bridge_destroy",
	TypeBridgeMerge:        "bridge_merge",
	TypeLocalBridge:        "local_bridge",
	TypeLocalOptimizeBegin: "local_optimize_begin",
	TypeLocalOptimizeEnd:   "local_optimize_end",
	TypeBlindTransfer:      "blind_transfer",
	TypeAttendedTransfer:   "attended_transfer",
	TypePickup:             "pickup",
	TypeQueueCallerJoin:    "queue_caller_join",
	TypeQueueCallerLeave:   "queue_caller_leave",
	TypeQueueCallerAbandon: "queue_caller_abandon",
	TypeAgentCalled:        "agent_called",
	TypeAgentConnect:       "agent_connect",
	TypeAgentComplete:      "agent_complete",
	TypeAgentRingNoAnswer:  "agent_ring_no_answer",
	TypeAgentDump:          "agent_dump",
	TypeHold:               "hold",
	TypeUnhold:             "unhold",
	TypeMixMonitorStart:    "mixmonitor_start",
	TypeMixMonitorStop:     "mixmonitor_stop",
	TypeCdr:                "cdr",
	TypeCel:                "cel",
	TypeOriginateResponse:  "originate_response",
	TypeUserEvent:          "user_event",
	TypeRename:             "rename",
	TypeConnected:          "connected",
	TypeDisconnected:       "disconnected",
	TypeSnapshot:           "snapshot",
	TypeSnapshotEnd:        "snapshot_end",
}

// String returns the snake_case name of t, used in metrics labels and logs.
func (t Type) String() string {
	if t < typeCount && int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "unknown"
}

// ChannelState is Asterisk's channel state (AMI ChannelState, ARI state names).
type ChannelState uint8

// Channel states, numbered as AMI numbers them.
const (
	StateDown ChannelState = iota
	StateReserved
	StateOffHook
	StateDialing
	StateRing
	StateRinging
	StateUp
	StateBusy
	StateDialingOffhook
	StatePrering
)

// Channel describes one channel as an event saw it. Fields an event does not carry are empty.
type Channel struct {
	Name          string // e.g. PJSIP/101-00000002, Local/101@phones-00000001;1
	Uniqueid      string
	Linkedid      string
	State         ChannelState
	CallerIDNum   string // "<unknown>" and "" are normalised to ""
	CallerIDName  string
	ConnectedNum  string
	ConnectedName string
	Context       string
	Exten         string
	Priority      int
	AccountCode   string
	// Created is when the channel was created, when the event says so (snapshots: AMI
	// CoreShowChannel Duration, ARI creationtime); zero otherwise.
	Created time.Time
}

// Event is one normalised PBX event. It is a plain value: safe to copy, never mutated by the
// model. Only the fields meaningful for Type are set; the comments say which types use them.
type Event struct {
	Type Type
	Name string    // the wire name (AMI "Event:" value or ARI "type"), for logs and counters
	Time time.Time // Asterisk's timestamp when the frame has one, else when it was received
	PBX  string    // name of the Source that produced it (config pbx[].name)

	// Chan is the event's own channel (AMI Channel* headers, ARI "channel"). For
	// DialBegin/DialEnd it is the caller side, which is empty for an Originate's own dial.
	Chan Channel
	// Peer is the other channel an event names: the dialled channel (Dest*), LocalBridge's
	// LocalTwo, a transfer's transferee, AgentCalled's DestChannel, Pickup's target.
	Peer Channel

	Application string // Newexten, Cdr LastApplication
	AppData     string

	DialString string // DialBegin
	DialStatus string // DialEnd, DialState: ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION, CHANUNAVAIL...
	Forward    string // DialEnd/DialState: call forward target when present

	BridgeID   string // Bridge*, transfers (the bridge the transferer was in)
	BridgeType string
	// ToBridgeID is the second bridge of BridgeMerge (the one merged into BridgeID) and the
	// destination bridge of an attended transfer.
	ToBridgeID string

	Cause     int    // Hangup, HangupRequest: Q.850 cause code
	CauseText string // Hangup: cause text

	Variable string // VarSet: variable name; CEL: the CEL event name (CHAN_START, ANSWER...)
	Value    string // VarSet: value; CEL: Extra

	Queue     string // Queue*, Agent*
	Interface string // Agent*: member interface, e.g. Local/101@internal/n, PJSIP/101
	Member    string // Agent*: member name
	HoldTime  int    // AgentConnect: seconds the caller waited
	TalkTime  int    // AgentComplete: seconds
	Reason    string // AgentComplete reason (caller/agent/transfer), OriginateResponse Reason code

	// Transfer details (BlindTransfer, AttendedTransfer).
	Transfer *Transfer

	// Recording is the file of MixMonitorStart/Stop (if present) or a Cdr's RecordingFile.
	Recording string

	// Originate correlation (OriginateResponse): the ActionID and the result.
	ActionID string
	Response string // "Success" or "Failure"

	// Cdr carries the fields of a Cdr event (Disposition, BillableSeconds, Destination...).
	Cdr map[string]string
	// Vars holds extra key/values: ChanVariable headers (manager.conf channelvars) and ARI
	// channelvars, UserEvent fields, BridgeEnter's SwapUniqueid, CoreShowChannel's Duration,
	// LocalOptimization* details.
	Vars map[string]string

	// Resync is set on TypeConnected when a snapshot follows (AMI: after every login, the first
	// one included; ARI: after a reconnect).
	Resync bool
}

// Transfer describes a blind or attended transfer.
type Transfer struct {
	Kind     string // "blind" or "attended"
	Result   string // Success, Fail, Invalid, Not Permitted
	External bool   // IsExternal: requested through AMI/ARI rather than by a phone feature code
	Exten    string // blind: the extension transferred to
	Context  string // blind: its context
	DestType string // attended: Bridge, App, Link, Threeway, Fail
	// Transferer is the channel that requested the transfer (attended: OrigTransferer).
	Transferer Channel
	// Second is the attended transfer's SecondTransferer channel (the consultation leg).
	Second Channel
	// Target is the attended transfer's TransferTarget channel when present.
	Target Channel
	// DestBridgeID is the bridge the transferee lands in (attended, DestType Bridge).
	DestBridgeID string
}
