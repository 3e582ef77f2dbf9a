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
	"Rename":                 asterisk.TypeRename,
	// Asterisk 1.8/11 names still sent by old PBXs (best effort: their Dial End carries no
	// destination and their events no Linkedid).
	"Dial":        asterisk.TypeDialBegin, // SubEvent: Begin/End, handled below
	"Bridge":      asterisk.TypeBridgeEnter,
	"Newcallerid": asterisk.TypeNewCallerID,
	"Masquerade":  asterisk.TypeUnknown,
}

// The normaliser reads a frame's fields in one pass into slots (one per header it knows), so
// that a header costs one map lookup however many times the event needs it.

// Channel header prefixes and suffixes: slot = prefix*numSuffixes + suffix.
const (
	pNone = iota
	pDest
	pLocalOne
	pLocalTwo
	pTransferer
	pTransferee
	pOrigTransferer
	pSecondTransferer
	pTransferTarget
	pTarget
	numPrefixes
)

var prefixNames = [numPrefixes]string{"", "Dest", "LocalOne", "LocalTwo", "Transferer", "Transferee",
	"OrigTransferer", "SecondTransferer", "TransferTarget", "Target"}

const (
	sChannel = iota
	sChannelState
	sCallerIDNum
	sCallerIDName
	sConnectedLineNum
	sConnectedLineName
	sContext
	sExten
	sPriority
	sUniqueid
	sLinkedid
	sAccountCode
	numSuffixes
)

var suffixNames = [numSuffixes]string{"Channel", "ChannelState", "CallerIDNum", "CallerIDName",
	"ConnectedLineNum", "ConnectedLineName", "Context", "Exten", "Priority", "Uniqueid", "Linkedid",
	"AccountCode"}

// Other headers.
const (
	kTimestamp = numPrefixes*numSuffixes + iota
	kApplication
	kAppData
	kExtension
	kVariable
	kValue
	kCause
	kCauseTxt
	kDialString
	kDialStatus
	kForward
	kSubEvent
	kDestination
	kBridgeUniqueid
	kBridgeType
	kSwapUniqueid
	kFromBridgeUniqueid
	kToBridgeUniqueid
	kOrigBridgeUniqueid
	kSecondBridgeUniqueid
	kDestBridgeUniqueid
	kDestType
	kResult
	kIsExternal
	kQueue
	kInterface
	kMemberName
	kHoldTime
	kTalkTime
	kReason
	kFile
	kActionID
	kResponse
	kBridgestate
	kChannel1
	kChannel2
	kUniqueid1
	kUniqueid2
	kCallerID1
	kCallerID2
	kOldname
	kNewname
	kBridgeID
	kApplicationData
	kDuration
	kRecordingFile
	kLastApplication
	kLastData
	kDestinationContext
	kSourceChannel
	kSourceUniqueid
	kDestUniqueID
	kID
	kSuccess
	kEventName
	kPeer
	kExtra
	numKeys
)

var keySlots = func() map[string]uint16 {
	m := map[string]uint16{
		"Timestamp": kTimestamp, "Application": kApplication, "AppData": kAppData, "Extension": kExtension,
		"Variable": kVariable, "Value": kValue, "Cause": kCause, "Cause-txt": kCauseTxt,
		"DialString": kDialString, "Dialstring": kDialString, "DialStatus": kDialStatus, "Forward": kForward,
		"SubEvent": kSubEvent, "Destination": kDestination, "BridgeUniqueid": kBridgeUniqueid,
		"BridgeType": kBridgeType, "SwapUniqueid": kSwapUniqueid, "FromBridgeUniqueid": kFromBridgeUniqueid,
		"ToBridgeUniqueid": kToBridgeUniqueid, "OrigBridgeUniqueid": kOrigBridgeUniqueid,
		"SecondBridgeUniqueid": kSecondBridgeUniqueid, "DestBridgeUniqueid": kDestBridgeUniqueid,
		"DestType": kDestType, "Result": kResult, "IsExternal": kIsExternal, "Queue": kQueue,
		"Interface": kInterface, "MemberName": kMemberName, "HoldTime": kHoldTime, "TalkTime": kTalkTime,
		"Reason": kReason, "File": kFile, "ActionID": kActionID, "Response": kResponse,
		"Bridgestate": kBridgestate, "Channel1": kChannel1, "Channel2": kChannel2, "Uniqueid1": kUniqueid1,
		"Uniqueid2": kUniqueid2, "CallerID1": kCallerID1, "CallerID2": kCallerID2, "Oldname": kOldname,
		"Newname": kNewname, "BridgeId": kBridgeID, "ApplicationData": kApplicationData,
		"Duration": kDuration, "RecordingFile": kRecordingFile, "LastApplication": kLastApplication,
		"LastData": kLastData, "DestinationContext": kDestinationContext, "SourceChannel": kSourceChannel,
		"SourceUniqueid": kSourceUniqueid, "DestUniqueId": kDestUniqueID, "Id": kID, "Success": kSuccess,
		"EventName": kEventName, "Peer": kPeer, "Extra": kExtra,
		// Spellings that differ between events (CEL, Cdr, Asterisk 11).
		"UniqueID": pNone*numSuffixes + sUniqueid, "LinkedID": pNone*numSuffixes + sLinkedid,
		"CallerIDnum": pNone*numSuffixes + sCallerIDNum, "CallerIDname": pNone*numSuffixes + sCallerIDName,
		"DestUniqueID": pDest*numSuffixes + sUniqueid,
	}
	for p, pn := range prefixNames {
		for s, sn := range suffixNames {
			m[pn+sn] = uint16(p*numSuffixes + s)
		}
	}
	return m
}()

// slotTable finds a header's slot faster than a map: open addressing over a power-of-two
// table, hashed on the key's length and three of its bytes (the keys are short ASCII words),
// every hit confirmed by comparing the key. Built once from keySlots; read-only afterwards.
type slotTable struct {
	keys  [slotTableSize]string
	slots [slotTableSize]uint16
}

const slotTableSize = 1024 // > 4 × len(keySlots), so probe sequences stay short

var slotLookup = func() *slotTable {
	t := new(slotTable)
	for k, slot := range keySlots {
		i := slotHash(k)
		for t.keys[i] != "" {
			i = (i + 1) & (slotTableSize - 1)
		}
		t.keys[i], t.slots[i] = k, slot
	}
	return t
}()

func slotHash(k string) uint {
	n := uint(len(k))
	if n == 0 {
		return 0
	}
	h := n*0x9E37 ^ uint(k[0])*0x2F ^ uint(k[n-1])*0x65B ^ uint(k[n/2])*0x1D3
	return (h ^ h>>7) & (slotTableSize - 1)
}

// lookup returns key's slot, false when ToEvent does not read that header.
func (t *slotTable) lookup(key string) (uint16, bool) {
	if key == "" {
		return 0, false
	}
	for i := slotHash(key); ; i = (i + 1) & (slotTableSize - 1) {
		switch t.keys[i] {
		case key:
			return t.slots[i], true
		case "":
			return 0, false
		}
	}
}

// fields holds one frame's known headers, first occurrence of each.
type fields [numKeys]string

func (v *fields) channel(p int) asterisk.Channel {
	b := p * numSuffixes
	return asterisk.Channel{
		Name:          v[b+sChannel],
		Uniqueid:      v[b+sUniqueid],
		Linkedid:      v[b+sLinkedid],
		State:         asterisk.ChannelState(atoi(v[b+sChannelState])),
		CallerIDNum:   cleanNum(v[b+sCallerIDNum]),
		CallerIDName:  cleanNum(v[b+sCallerIDName]),
		ConnectedNum:  cleanNum(v[b+sConnectedLineNum]),
		ConnectedName: cleanNum(v[b+sConnectedLineName]),
		Context:       v[b+sContext],
		Exten:         v[b+sExten],
		Priority:      atoi(v[b+sPriority]),
		AccountCode:   v[b+sAccountCode],
	}
}

// ToEvent translates one AMI event frame into a normalised event. recv is when the frame was
// read; it is used when the frame has no Timestamp header (Asterisk's default). ok is false for
// frames that are not events (responses). Unknown events come back with TypeUnknown and their
// Name set, so they can be counted. ToEvent never fails: missing or malformed headers leave
// fields empty (numbers 0).
func ToEvent(f *Frame, pbx string, recv time.Time) (ev asterisk.Event, ok bool) {
	name := f.Event()
	if name == "" {
		return ev, false
	}
	ev.Name = name
	ev.PBX = pbx
	ev.Type = eventTypes[name]
	if ev.Type == asterisk.TypeUnknown {
		ev.Time = frameTime(f.Get("Timestamp"), recv)
		return ev, true
	}
	var v fields
	chanVars := false
	for i := range f.Fields {
		fl := &f.Fields[i]
		if slot, known := slotLookup.lookup(fl.Key); known {
			if v[slot] == "" {
				v[slot] = fl.Value
			}
		} else if strings.HasPrefix(fl.Key, "ChanVariable") {
			chanVars = true
		}
	}
	ev.Time = frameTime(v[kTimestamp], recv)

	switch ev.Type {
	case asterisk.TypeLocalBridge, asterisk.TypeLocalOptimizeBegin, asterisk.TypeLocalOptimizeEnd:
		ev.Chan = v.channel(pLocalOne)
		ev.Peer = v.channel(pLocalTwo)
		if ev.Chan.Name == "" { // Asterisk 11: Channel1/Channel2, Uniqueid1/Uniqueid2
			ev.Chan = asterisk.Channel{Name: v[kChannel1], Uniqueid: v[kUniqueid1]}
			ev.Peer = asterisk.Channel{Name: v[kChannel2], Uniqueid: v[kUniqueid2]}
		}
		switch ev.Type {
		case asterisk.TypeLocalOptimizeBegin:
			// The channel that will replace the Local pair.
			ev.Vars = map[string]string{
				"SourceChannel":  v[kSourceChannel],
				"SourceUniqueid": v[kSourceUniqueid],
				"DestUniqueId":   v[kDestUniqueID],
				"Id":             v[kID],
			}
		case asterisk.TypeLocalOptimizeEnd:
			// Success is "No" even when the swap worked (Asterisk reports the move's result).
			ev.Vars = map[string]string{"Success": v[kSuccess], "Id": v[kID]}
		}
		return ev, true
	case asterisk.TypeBlindTransfer:
		ev.Chan = v.channel(pTransferer)
		ev.Peer = v.channel(pTransferee)
		ev.BridgeID = v[kBridgeUniqueid]
		ev.Transfer = &asterisk.Transfer{
			Kind:       "blind",
			Result:     v[kResult],
			External:   v[kIsExternal] == "Yes",
			Exten:      v[kExtension],
			Context:    v[pNone*numSuffixes+sContext],
			Transferer: ev.Chan,
		}
		return ev, true
	case asterisk.TypeAttendedTransfer:
		ev.Chan = v.channel(pOrigTransferer)
		ev.Peer = v.channel(pTransferee)
		ev.BridgeID = v[kOrigBridgeUniqueid]
		ev.ToBridgeID = v[kSecondBridgeUniqueid]
		ev.Transfer = &asterisk.Transfer{
			Kind:         "attended",
			Result:       v[kResult],
			External:     v[kIsExternal] == "Yes",
			DestType:     v[kDestType],
			Transferer:   ev.Chan,
			Second:       v.channel(pSecondTransferer),
			Target:       v.channel(pTransferTarget),
			DestBridgeID: v[kDestBridgeUniqueid],
		}
		return ev, true
	case asterisk.TypeBridgeMerge:
		ev.BridgeID = v[kFromBridgeUniqueid]
		ev.ToBridgeID = v[kToBridgeUniqueid]
		return ev, true
	case asterisk.TypeRename:
		// Asterisk 1.8/11: Channel (or Oldname), Newname, Uniqueid.
		ev.Chan = v.channel(pNone)
		if ev.Chan.Name == "" {
			ev.Chan.Name = v[kOldname]
		}
		ev.Peer.Name = v[kNewname]
		return ev, true
	case asterisk.TypePickup:
		ev.Chan = v.channel(pNone)
		ev.Peer = v.channel(pTarget)
		return ev, true
	case asterisk.TypeCdr:
		ev.Chan = asterisk.Channel{
			Name:     v[pNone*numSuffixes+sChannel],
			Uniqueid: v[pNone*numSuffixes+sUniqueid],
			Context:  v[kDestinationContext],
			Exten:    v[kDestination],
		}
		ev.Application = v[kLastApplication]
		ev.AppData = v[kLastData]
		ev.Recording = v[kRecordingFile]
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
		// Not used by the call model: only the channel identity and the CEL event name.
		ev.Chan = asterisk.Channel{
			Name:         v[pNone*numSuffixes+sChannel],
			Uniqueid:     v[pNone*numSuffixes+sUniqueid],
			Linkedid:     v[pNone*numSuffixes+sLinkedid],
			CallerIDNum:  cleanNum(v[pNone*numSuffixes+sCallerIDNum]),
			CallerIDName: cleanNum(v[pNone*numSuffixes+sCallerIDName]),
			Context:      v[pNone*numSuffixes+sContext],
			Exten:        v[pNone*numSuffixes+sExten],
		}
		ev.Application = v[kApplication]
		ev.AppData = v[kAppData]
		ev.Variable = v[kEventName] // the CEL event type (CHAN_START, ANSWER, ...)
		ev.Value = v[kExtra]
		return ev, true
	}

	ev.Chan = v.channel(pNone)
	switch ev.Type {
	case asterisk.TypeNewExten:
		ev.Application = v[kApplication]
		ev.AppData = v[kAppData]
		if ext := v[kExtension]; ext != "" && ev.Chan.Exten == "" {
			ev.Chan.Exten = ext
		}
	case asterisk.TypeVarSet:
		ev.Variable = v[kVariable]
		ev.Value = v[kValue]
	case asterisk.TypeHangup, asterisk.TypeHangupRequest:
		ev.Cause = atoi(v[kCause])
		ev.CauseText = v[kCauseTxt]
	case asterisk.TypeDialBegin, asterisk.TypeDialState, asterisk.TypeDialEnd:
		if name == "Dial" { // Asterisk 11: one event with SubEvent Begin/End
			if strings.EqualFold(v[kSubEvent], "End") {
				ev.Type = asterisk.TypeDialEnd
			}
			ev.Peer = v.channel(pDest)
			if ev.Peer.Name == "" {
				ev.Peer.Name = v[kDestination]
			}
		} else {
			ev.Peer = v.channel(pDest)
		}
		ev.DialString = v[kDialString]
		ev.DialStatus = v[kDialStatus]
		ev.Forward = v[kForward]
	case asterisk.TypeBridgeCreate, asterisk.TypeBridgeEnter, asterisk.TypeBridgeLeave,
		asterisk.TypeBridgeDestroy:
		if name == "Bridge" { // Asterisk 1.8/11: one event per two-party bridge, Link/Unlink
			ev.Chan = asterisk.Channel{Name: v[kChannel1], Uniqueid: v[kUniqueid1], CallerIDNum: cleanNum(v[kCallerID1])}
			ev.Peer = asterisk.Channel{Name: v[kChannel2], Uniqueid: v[kUniqueid2], CallerIDNum: cleanNum(v[kCallerID2])}
			ev.BridgeID = ev.Chan.Uniqueid + "|" + ev.Peer.Uniqueid
			if strings.EqualFold(v[kBridgestate], "Unlink") {
				ev.Type = asterisk.TypeBridgeLeave
			}
			return ev, true
		}
		ev.BridgeID = v[kBridgeUniqueid]
		ev.BridgeType = v[kBridgeType]
		if sw := v[kSwapUniqueid]; sw != "" {
			ev.Vars = map[string]string{"SwapUniqueid": sw}
		}
	case asterisk.TypeQueueCallerJoin, asterisk.TypeQueueCallerLeave, asterisk.TypeQueueCallerAbandon,
		asterisk.TypeAgentCalled, asterisk.TypeAgentConnect, asterisk.TypeAgentComplete,
		asterisk.TypeAgentRingNoAnswer, asterisk.TypeAgentDump:
		ev.Peer = v.channel(pDest)
		ev.Queue = v[kQueue]
		ev.Interface = v[kInterface]
		ev.Member = v[kMemberName]
		ev.HoldTime = atoi(v[kHoldTime])
		ev.TalkTime = atoi(v[kTalkTime])
		ev.Reason = v[kReason]
	case asterisk.TypeMixMonitorStart, asterisk.TypeMixMonitorStop:
		// Asterisk does not put the file name in these events; it is in the MIXMONITOR_FILENAME
		// VarSet and in the Cdr's RecordingFile.
		ev.Recording = v[kFile]
	case asterisk.TypeOriginateResponse:
		ev.ActionID = v[kActionID]
		ev.Response = v[kResponse]
		ev.Reason = v[kReason]
	case asterisk.TypeUserEvent:
		ev.Vars = make(map[string]string, len(f.Fields))
		for _, fl := range f.Fields {
			ev.Vars[fl.Key] = fl.Value
		}
	case asterisk.TypeSnapshot:
		ev.BridgeID = v[kBridgeID]
		ev.Application = v[kApplication]
		ev.AppData = v[kApplicationData]
		if d := v[kDuration]; d != "" {
			ev.Vars = map[string]string{"Duration": d}
			if secs, ok := hms(d); ok {
				ev.Chan.Created = ev.Time.Add(-time.Duration(secs) * time.Second)
			}
		}
	}
	// ChanVariable(...) headers (manager.conf channelvars) for any channel event.
	if chanVars {
		if ev.Vars == nil {
			ev.Vars = map[string]string{}
		}
		for _, fl := range f.Fields {
			if strings.HasPrefix(fl.Key, "ChanVariable") {
				name, val := chanVariable(fl)
				ev.Vars[name] = val
			}
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

// hms parses CoreShowChannel's Duration "HH:MM:SS".
func hms(s string) (int, bool) {
	h, rest, ok1 := strings.Cut(s, ":")
	m, sec, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return 0, false
	}
	total := 0
	for _, p := range []string{h, m, sec} {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 1<<20 {
			return 0, false
		}
		total = total*60 + n
	}
	return total, true
}

// cleanNum maps Asterisk's placeholders for "no number" to "".
func cleanNum(s string) string {
	if s == "<unknown>" || s == "<Unknown>" {
		return ""
	}
	return s
}

// frameTime parses a Timestamp header (seconds.micros since the epoch), or returns recv.
func frameTime(ts string, recv time.Time) time.Time {
	if ts == "" {
		return recv
	}
	sec, frac, _ := strings.Cut(ts, ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || s <= 0 || s > 1<<40 {
		return recv
	}
	var ns int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		n, err := strconv.ParseInt(frac, 10, 64)
		if err == nil && n >= 0 {
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
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}
