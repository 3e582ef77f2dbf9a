package ami

import (
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// eventTypes maps AMI event names to normalised types.
var eventTypes = map[string]asterisk.Type{
	"Newchannel":             asterisk.TypeNewChannel,
	"Newstate":               asterisk.TypeNewState,
	"NewCallerid":            asterisk.TypeNewCallerID,
	"NewConnectedLine":       asterisk.TypeNewConnectedLine,
	"Newexten":               asterisk.TypeNewExten,
	"VarSet":                 asterisk.TypeVarSet,
	"HangupRequest":          asterisk.TypeHangupRequest,
	"SoftHangupRequest":      asterisk.TypeHangupRequest,
	"Hangup":                 asterisk.TypeHangup,
	"DialBegin":              asterisk.TypeDialBegin,
	"DialState":              asterisk.TypeDialState,
	"DialEnd":                asterisk.TypeDialEnd,
	"BridgeCreate":           asterisk.TypeBridgeCreate,
	"BridgeEnter":            asterisk.TypeBridgeEnter,
	"BridgeLeave":            asterisk.TypeBridgeLeave,
	"BridgeDestroy":          asterisk.TypeBridgeDestroy,
	"BridgeMerge":            asterisk.TypeBridgeMerge,
	"LocalBridge":            asterisk.TypeLocalBridge,
	"LocalOptimizationBegin": asterisk.TypeLocalOptimizeBegin,
	"LocalOptimizationEnd":   asterisk.TypeLocalOptimizeEnd,
	"BlindTransfer":          asterisk.TypeBlindTransfer,
	"AttendedTransfer":       asterisk.TypeAttendedTransfer,
	"Pickup":                 asterisk.TypePickup,
	"QueueCallerJoin":        asterisk.TypeQueueCallerJoin,
	"QueueCallerLeave":       asterisk.TypeQueueCallerLeave,
	"QueueCallerAbandon":     asterisk.TypeQueueCallerAbandon,
	"AgentCalled":            asterisk.TypeAgentCalled,
	"AgentConnect":           asterisk.TypeAgentConnect,
	"AgentComplete":          asterisk.TypeAgentComplete,
	"AgentRingNoAnswer":      asterisk.TypeAgentRingNoAnswer,
	"AgentDump":              asterisk.TypeAgentDump,
	"Hold":                   asterisk.TypeHold,
	"Unhold":                 asterisk.TypeUnhold,
	"MixMonitorStart":        asterisk.TypeMixMonitorStart,
	"MixMonitorStop":         asterisk.TypeMixMonitorStop,
	"Cdr":                    asterisk.TypeCdr,
	"CEL":                    asterisk.TypeCel,
	"OriginateResponse":      asterisk.TypeOriginateResponse,
	"UserEvent":              asterisk.TypeUserEvent,
	"CoreShowChannel":        asterisk.TypeSnapshot,
	// Asterisk 11/12 names still sent by old PBXs.
	"Dial":       asterisk.TypeDialBegin, // SubEvent: Begin/End, handled below
	"Bridge":     asterisk.TypeBridgeEnter,
	"Masquerade": asterisk.TypeUnknown,
}

// ToEvent translates one AMI event frame into a normalised event. recv is when the frame was
// read; it is used when the frame has no Timestamp header (Asterisk's default). ok is false for
// frames that are not events (responses). Unknown events come back with TypeUnknown and their
// Name set, so they can be counted.
func ToEvent(f *Frame, pbx string, recv time.Time) (ev asterisk.Event, ok bool) {
	name := f.Event()
	if name == "" {
		return ev, false
	}
	ev.Name = name
	ev.PBX = pbx
	ev.Type = eventTypes[name]
	ev.Time = frameTime(f, recv)

	switch ev.Type {
	case asterisk.TypeUnknown:
		return ev, true
	case asterisk.TypeLocalBridge, asterisk.TypeLocalOptimizeBegin, asterisk.TypeLocalOptimizeEnd:
		ev.Chan = readChannel(f, "LocalOne")
		ev.Peer = readChannel(f, "LocalTwo")
		if ev.Type == asterisk.TypeLocalOptimizeBegin {
			// The channel that will replace the Local pair.
			ev.Vars = map[string]string{
				"SourceChannel":  f.Get("SourceChannel"),
				"SourceUniqueid": f.Get("SourceUniqueid"),
				"DestUniqueId":   f.Get("DestUniqueId"),
				"Id":             f.Get("Id"),
			}
		}
		if ev.Type == asterisk.TypeLocalOptimizeEnd {
			ev.Vars = map[string]string{"Success": f.Get("Success"), "Id": f.Get("Id")}
		}
		return ev, true
	case asterisk.TypeBlindTransfer:
		ev.Chan = readChannel(f, "Transferer")
		ev.Peer = readChannel(f, "Transferee")
		ev.BridgeID = f.Get("BridgeUniqueid")
		ev.Transfer = &asterisk.Transfer{
			Kind:       "blind",
			Result:     f.Get("Result"),
			External:   f.Get("IsExternal") == "Yes",
			Exten:      f.Get("Extension"),
			Context:    f.Get("Context"),
			Transferer: ev.Chan,
		}
		return ev, true
	case asterisk.TypeAttendedTransfer:
		ev.Chan = readChannel(f, "OrigTransferer")
		ev.Peer = readChannel(f, "Transferee")
		ev.BridgeID = f.Get("OrigBridgeUniqueid")
		ev.ToBridgeID = f.Get("SecondBridgeUniqueid")
		ev.Transfer = &asterisk.Transfer{
			Kind:         "attended",
			Result:       f.Get("Result"),
			External:     f.Get("IsExternal") == "Yes",
			DestType:     f.Get("DestType"),
			Transferer:   ev.Chan,
			Second:       readChannel(f, "SecondTransferer"),
			Target:       readChannel(f, "TransferTarget"),
			DestBridgeID: f.Get("DestBridgeUniqueid"),
		}
		return ev, true
	case asterisk.TypeBridgeMerge:
		ev.BridgeID = f.Get("FromBridgeUniqueid")
		ev.ToBridgeID = f.Get("ToBridgeUniqueid")
		return ev, true
	case asterisk.TypePickup:
		ev.Chan = readChannel(f, "")
		ev.Peer = readChannel(f, "Target")
		return ev, true
	case asterisk.TypeCdr:
		ev.Chan = asterisk.Channel{
			Name:     f.Get("Channel"),
			Uniqueid: f.Get("UniqueID"),
			Context:  f.Get("DestinationContext"),
			Exten:    f.Get("Destination"),
		}
		ev.Application = f.Get("LastApplication")
		ev.AppData = f.Get("LastData")
		ev.Recording = f.Get("RecordingFile")
		ev.Cdr = make(map[string]string, len(f.Fields))
		for _, fl := range f.Fields {
			switch fl.Key {
			case "Event", "Privilege", "Timestamp":
			default:
				ev.Cdr[fl.Key] = fl.Value
			}
		}
		return ev, true
	case asterisk.TypeCel:
		ev.Chan = asterisk.Channel{
			Name:         f.Get("Channel"),
			Uniqueid:     f.Get("UniqueID"),
			Linkedid:     f.Get("LinkedID"),
			CallerIDNum:  cleanNum(f.Get("CallerIDnum")),
			CallerIDName: cleanNum(f.Get("CallerIDname")),
			Context:      f.Get("Context"),
			Exten:        f.Get("Exten"),
		}
		ev.Application = f.Get("Application")
		ev.AppData = f.Get("AppData")
		ev.Vars = map[string]string{
			"EventName": f.Get("EventName"),
			"Peer":      f.Get("Peer"),
			"Extra":     f.Get("Extra"),
		}
		return ev, true
	}

	ev.Chan = readChannel(f, "")
	switch ev.Type {
	case asterisk.TypeNewExten:
		ev.Application = f.Get("Application")
		ev.AppData = f.Get("AppData")
		if ext := f.Get("Extension"); ext != "" && ev.Chan.Exten == "" {
			ev.Chan.Exten = ext
		}
	case asterisk.TypeVarSet:
		ev.Variable = f.Get("Variable")
		ev.Value = f.Get("Value")
	case asterisk.TypeHangup, asterisk.TypeHangupRequest:
		ev.Cause = atoi(f.Get("Cause"))
		ev.CauseText = f.Get("Cause-txt")
	case asterisk.TypeDialBegin, asterisk.TypeDialState, asterisk.TypeDialEnd:
		if name == "Dial" { // Asterisk 11: one event with SubEvent Begin/End
			if strings.EqualFold(f.Get("SubEvent"), "End") {
				ev.Type = asterisk.TypeDialEnd
			}
			ev.Peer = readChannel(f, "Destination")
			if ev.Peer.Name == "" {
				ev.Peer.Name = f.Get("Destination")
				ev.Peer.Uniqueid = f.Get("DestUniqueID")
			}
		} else {
			ev.Peer = readChannel(f, "Dest")
		}
		ev.DialString = f.Get("DialString")
		ev.DialStatus = f.Get("DialStatus")
		ev.Forward = f.Get("Forward")
	case asterisk.TypeBridgeCreate, asterisk.TypeBridgeEnter, asterisk.TypeBridgeLeave,
		asterisk.TypeBridgeDestroy:
		ev.BridgeID = f.Get("BridgeUniqueid")
		ev.BridgeType = f.Get("BridgeType")
		if sw := f.Get("SwapUniqueid"); sw != "" {
			ev.Vars = map[string]string{"SwapUniqueid": sw}
		}
	case asterisk.TypeQueueCallerJoin, asterisk.TypeQueueCallerLeave, asterisk.TypeQueueCallerAbandon,
		asterisk.TypeAgentCalled, asterisk.TypeAgentConnect, asterisk.TypeAgentComplete,
		asterisk.TypeAgentRingNoAnswer, asterisk.TypeAgentDump:
		ev.Peer = readChannel(f, "Dest")
		ev.Queue = f.Get("Queue")
		ev.Interface = f.Get("Interface")
		ev.Member = f.Get("MemberName")
		ev.HoldTime = atoi(f.Get("HoldTime"))
		ev.TalkTime = atoi(f.Get("TalkTime"))
		ev.Reason = f.Get("Reason")
	case asterisk.TypeMixMonitorStart, asterisk.TypeMixMonitorStop:
		// Asterisk does not put the file name in these events; it is in the MIXMONITOR_FILENAME
		// VarSet and in the Cdr's RecordingFile.
		ev.Recording = f.Get("File")
	case asterisk.TypeOriginateResponse:
		ev.ActionID = f.Get("ActionID")
		ev.Response = f.Get("Response")
		ev.Reason = f.Get("Reason")
	case asterisk.TypeUserEvent:
		ev.Vars = make(map[string]string, len(f.Fields))
		for _, fl := range f.Fields {
			ev.Vars[fl.Key] = fl.Value
		}
	case asterisk.TypeSnapshot:
		ev.BridgeID = f.Get("BridgeId")
		ev.Application = f.Get("Application")
		ev.AppData = f.Get("ApplicationData")
	}
	// ChanVariable(...) headers (manager.conf channelvars) for any channel event.
	for _, fl := range f.Fields {
		if strings.HasPrefix(fl.Key, "ChanVariable") {
			if ev.Vars == nil {
				ev.Vars = map[string]string{}
			}
			name, val := chanVariable(fl)
			ev.Vars[name] = val
		}
	}
	return ev, true
}

// chanVariable decodes "ChanVariable(Local/...): NAME=value" (Asterisk ≥ 12) or
// "ChanVariable: NAME=value".
func chanVariable(fl Field) (name, value string) {
	name, value, found := strings.Cut(fl.Value, "=")
	if !found {
		return fl.Value, ""
	}
	return name, value
}

// readChannel reads the channel headers with the given prefix ("", "Dest", "Transferee"...).
func readChannel(f *Frame, p string) asterisk.Channel {
	return asterisk.Channel{
		Name:          f.Get(p + "Channel"),
		Uniqueid:      f.Get(p + "Uniqueid"),
		Linkedid:      f.Get(p + "Linkedid"),
		State:         asterisk.ChannelState(atoi(f.Get(p + "ChannelState"))),
		CallerIDNum:   cleanNum(f.Get(p + "CallerIDNum")),
		CallerIDName:  cleanNum(f.Get(p + "CallerIDName")),
		ConnectedNum:  cleanNum(f.Get(p + "ConnectedLineNum")),
		ConnectedName: cleanNum(f.Get(p + "ConnectedLineName")),
		Context:       f.Get(p + "Context"),
		Exten:         f.Get(p + "Exten"),
		Priority:      atoi(f.Get(p + "Priority")),
		AccountCode:   f.Get(p + "AccountCode"),
	}
}

// cleanNum maps Asterisk's placeholders for "no number" to "".
func cleanNum(s string) string {
	if s == "<unknown>" || s == "<Unknown>" {
		return ""
	}
	return s
}

// frameTime returns the frame's Timestamp (seconds.micros since the epoch) or recv.
func frameTime(f *Frame, recv time.Time) time.Time {
	ts := f.Get("Timestamp")
	if ts == "" {
		return recv
	}
	sec, frac, _ := strings.Cut(ts, ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || s <= 0 {
		return recv
	}
	var ns int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		n, err := strconv.ParseInt(frac, 10, 64)
		if err == nil {
			for i := len(frac); i < 9; i++ {
				n *= 10
			}
			ns = n
		}
	}
	return time.Unix(s, ns).UTC()
}

// atoi parses a decimal integer, returning 0 for anything else.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}
