// Package ari is pbxbridge's own Asterisk REST Interface client; this file translates ARI
// websocket event messages into normalised asterisk.Events for the call model.
//
// ARI describes the same calls as AMI with fewer facts, and the model copes with the
// difference:
//
//   - no Linkedid: channels are grouped into calls by the model from Dial events, Local
//     channel names (";1"/";2") and bridges (Asterisk's own linkedid rule: a basic bridge takes
//     the oldest call), which yields the same call ids as AMI's Linkedid;
//   - no LocalBridge, LocalOptimization*, Queue*/Agent*, Pickup, MixMonitor or Cdr events: Local
//     pairs come from channel names, queues from the Queue() dialplan application
//     (ChannelDialplan), recordings from the MIXMONITOR_FILENAME variable (ChannelVarset),
//     call pickups from the Pickup()/PickupChan() applications (a pickup done another way,
//     e.g. by a phone's BLF key handled in the SIP stack, is seen only through its bridging);
//   - timestamps have millisecond precision and are taken a little earlier than AMI's.
//
// ToEvent is a pure function: safe for concurrent use, no I/O.
package ari

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// MaxMessageSize is the largest ARI message ToEvent accepts.
const MaxMessageSize = 1 << 20

// ErrTooLarge is returned for messages over MaxMessageSize.
var ErrTooLarge = errors.New("ari: message too large")

type party struct {
	Name   string `json:"name"`
	Number string `json:"number"`
}

type dialplan struct {
	Context  string `json:"context"`
	Exten    string `json:"exten"`
	Priority int    `json:"priority"`
	AppName  string `json:"app_name"`
	AppData  string `json:"app_data"`
}

type channelJSON struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	State        string            `json:"state"`
	Caller       party             `json:"caller"`
	Connected    party             `json:"connected"`
	AccountCode  string            `json:"accountcode"`
	Dialplan     dialplan          `json:"dialplan"`
	CreationTime string            `json:"creationtime"`
	ChannelVars  map[string]string `json:"channelvars"`
}

type bridgeJSON struct {
	ID          string `json:"id"`
	Technology  string `json:"technology"`
	BridgeType  string `json:"bridge_type"`
	BridgeClass string `json:"bridge_class"`
}

// message is the union of the ARI event fields the normaliser reads.
type message struct {
	Type      string       `json:"type"`
	Timestamp string       `json:"timestamp"`
	Channel   *channelJSON `json:"channel"`
	Bridge    *bridgeJSON  `json:"bridge"`

	// Dial
	Caller     *channelJSON `json:"caller"`
	Peer       *channelJSON `json:"peer"`
	DialStatus string       `json:"dialstatus"`
	DialString string       `json:"dialstring"`
	Forward    string       `json:"forward"`

	// ChannelVarset
	Variable string `json:"variable"`
	Value    string `json:"value"`

	// ChannelDestroyed, ChannelHangupRequest
	Cause    int    `json:"cause"`
	CauseTxt string `json:"cause_txt"`

	// ChannelDialplan
	DialplanApp     string `json:"dialplan_app"`
	DialplanAppData string `json:"dialplan_app_data"`

	// BridgeMerged
	BridgeFrom *bridgeJSON `json:"bridge_from"`

	// BridgeBlindTransfer, BridgeAttendedTransfer
	Result                    string       `json:"result"`
	IsExternal                bool         `json:"is_external"`
	Exten                     string       `json:"exten"`
	Context                   string       `json:"context"`
	Transferee                *channelJSON `json:"transferee"`
	TransfererFirstLeg        *channelJSON `json:"transferer_first_leg"`
	TransfererSecondLeg       *channelJSON `json:"transferer_second_leg"`
	TransferTarget            *channelJSON `json:"transfer_target"`
	TransfererFirstLegBridge  *bridgeJSON  `json:"transferer_first_leg_bridge"`
	TransfererSecondLegBridge *bridgeJSON  `json:"transferer_second_leg_bridge"`
	DestinationType           string       `json:"destination_type"`
	DestinationBridge         string       `json:"destination_bridge"`

	// ChannelUserevent
	EventName string                     `json:"eventname"`
	UserEvent map[string]json.RawMessage `json:"userevent"`
}

var eventTypes = map[string]asterisk.Type{
	"ChannelCreated":         asterisk.TypeNewChannel,
	"ChannelStateChange":     asterisk.TypeNewState,
	"ChannelCallerId":        asterisk.TypeNewCallerID,
	"ChannelConnectedLine":   asterisk.TypeNewConnectedLine,
	"ChannelDialplan":        asterisk.TypeNewExten,
	"ChannelVarset":          asterisk.TypeVarSet,
	"ChannelHangupRequest":   asterisk.TypeHangupRequest,
	"ChannelDestroyed":       asterisk.TypeHangup,
	"Dial":                   asterisk.TypeDialBegin, // refined by dialstatus
	"BridgeCreated":          asterisk.TypeBridgeCreate,
	"ChannelEnteredBridge":   asterisk.TypeBridgeEnter,
	"ChannelLeftBridge":      asterisk.TypeBridgeLeave,
	"BridgeDestroyed":        asterisk.TypeBridgeDestroy,
	"BridgeMerged":           asterisk.TypeBridgeMerge,
	"BridgeBlindTransfer":    asterisk.TypeBlindTransfer,
	"BridgeAttendedTransfer": asterisk.TypeAttendedTransfer,
	"ChannelHold":            asterisk.TypeHold,
	"ChannelUnhold":          asterisk.TypeUnhold,
	"ChannelUserevent":       asterisk.TypeUserEvent,
}

// ToEvent translates one ARI websocket message into a normalised event. recv is used when the
// message has no usable timestamp. ok is false for messages that are not events (no "type").
// Event types the model does not use come back as TypeUnknown with Name set. A message that is
// not valid JSON, or whose fields have the wrong JSON types, returns an error.
func ToEvent(msg []byte, pbx string, recv time.Time) (ev asterisk.Event, ok bool, err error) {
	if len(msg) > MaxMessageSize {
		return ev, false, ErrTooLarge
	}
	var m message
	if err := json.Unmarshal(msg, &m); err != nil {
		return ev, false, fmt.Errorf("ari: decoding event: %w", err)
	}
	if m.Type == "" {
		return ev, false, nil
	}
	ev.Name = m.Type
	ev.PBX = pbx
	ev.Time = parseTime(m.Timestamp, recv)
	ev.Type = eventTypes[m.Type]
	if ev.Type == asterisk.TypeUnknown {
		return ev, true, nil
	}
	if m.Channel != nil {
		ev.Chan = toChannel(m.Channel)
	}
	if m.Bridge != nil {
		ev.BridgeID = m.Bridge.ID
		ev.BridgeType = bridgeType(m.Bridge)
	}
	switch ev.Type {
	case asterisk.TypeNewExten:
		ev.Application = m.DialplanApp
		ev.AppData = m.DialplanAppData
	case asterisk.TypeVarSet:
		ev.Variable = m.Variable
		ev.Value = m.Value
	case asterisk.TypeHangup, asterisk.TypeHangupRequest:
		ev.Cause = m.Cause
		ev.CauseText = m.CauseTxt
	case asterisk.TypeDialBegin:
		if m.Caller != nil {
			ev.Chan = toChannel(m.Caller)
		}
		if m.Peer == nil {
			return ev, false, errors.New("ari: Dial event without peer")
		}
		ev.Peer = toChannel(m.Peer)
		ev.DialString = m.DialString
		ev.DialStatus = m.DialStatus
		ev.Forward = m.Forward
		switch m.DialStatus {
		case "":
		case "RINGING", "PROGRESS", "PROCEEDING", "EARLY":
			ev.Type = asterisk.TypeDialState
		default:
			ev.Type = asterisk.TypeDialEnd
		}
	case asterisk.TypeBridgeMerge:
		// ARI: "bridge" is where the channels went, "bridge_from" where they came from.
		ev.ToBridgeID = ev.BridgeID
		ev.BridgeID = ""
		if m.BridgeFrom != nil {
			ev.BridgeID = m.BridgeFrom.ID
		}
	case asterisk.TypeBlindTransfer:
		if m.Transferee != nil {
			ev.Peer = toChannel(m.Transferee)
		}
		ev.Transfer = &asterisk.Transfer{
			Kind:       "blind",
			Result:     m.Result,
			External:   m.IsExternal,
			Exten:      m.Exten,
			Context:    m.Context,
			Transferer: ev.Chan,
		}
	case asterisk.TypeAttendedTransfer:
		if m.TransfererFirstLeg != nil {
			ev.Chan = toChannel(m.TransfererFirstLeg)
		}
		if m.Transferee != nil {
			ev.Peer = toChannel(m.Transferee)
		}
		if m.TransfererFirstLegBridge != nil {
			ev.BridgeID = m.TransfererFirstLegBridge.ID
		}
		if m.TransfererSecondLegBridge != nil {
			ev.ToBridgeID = m.TransfererSecondLegBridge.ID
		}
		tr := &asterisk.Transfer{
			Kind:         "attended",
			Result:       m.Result,
			External:     m.IsExternal,
			DestType:     m.DestinationType,
			Transferer:   ev.Chan,
			DestBridgeID: m.DestinationBridge,
		}
		if m.TransfererSecondLeg != nil {
			tr.Second = toChannel(m.TransfererSecondLeg)
		}
		if m.TransferTarget != nil {
			tr.Target = toChannel(m.TransferTarget)
		}
		ev.Transfer = tr
	case asterisk.TypeUserEvent:
		ev.Vars = make(map[string]string, len(m.UserEvent)+1)
		ev.Vars["UserEvent"] = m.EventName
		for k, raw := range m.UserEvent {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				ev.Vars[k] = s
			} else {
				ev.Vars[k] = string(raw)
			}
		}
	}
	if m.Channel != nil && len(m.Channel.ChannelVars) > 0 && ev.Vars == nil {
		ev.Vars = m.Channel.ChannelVars
	}
	return ev, true, nil
}

// Snapshot turns one channel object of ARI's channel list (GET /channels) into a TypeSnapshot
// event; bridgeID is the bridge the channel is in ("" when none), from the bridge list.
func Snapshot(channel []byte, bridgeID, pbx string, recv time.Time) (asterisk.Event, error) {
	if len(channel) > MaxMessageSize {
		return asterisk.Event{}, ErrTooLarge
	}
	var c channelJSON
	if err := json.Unmarshal(channel, &c); err != nil {
		return asterisk.Event{}, fmt.Errorf("ari: decoding channel: %w", err)
	}
	ev := asterisk.Event{Type: asterisk.TypeSnapshot, Name: "ChannelSnapshot", PBX: pbx, Time: recv}
	ev.Chan = toChannel(&c)
	ev.Chan.Created = parseTime(c.CreationTime, time.Time{})
	ev.BridgeID = bridgeID
	ev.Application = c.Dialplan.AppName
	ev.AppData = c.Dialplan.AppData
	return ev, nil
}

func toChannel(c *channelJSON) asterisk.Channel {
	return asterisk.Channel{
		Name:          c.Name,
		Uniqueid:      c.ID,
		State:         channelState(c.State),
		CallerIDNum:   cleanNum(c.Caller.Number),
		CallerIDName:  cleanNum(c.Caller.Name),
		ConnectedNum:  cleanNum(c.Connected.Number),
		ConnectedName: cleanNum(c.Connected.Name),
		Context:       c.Dialplan.Context,
		Exten:         c.Dialplan.Exten,
		Priority:      c.Dialplan.Priority,
		AccountCode:   c.AccountCode,
	}
}

func bridgeType(b *bridgeJSON) string {
	if b.BridgeClass != "" {
		return b.BridgeClass
	}
	return b.BridgeType
}

var channelStates = map[string]asterisk.ChannelState{
	"Down":            asterisk.StateDown,
	"Rsrvd":           asterisk.StateReserved,
	"Rsrved":          asterisk.StateReserved,
	"OffHook":         asterisk.StateOffHook,
	"Dialing":         asterisk.StateDialing,
	"Ring":            asterisk.StateRing,
	"Ringing":         asterisk.StateRinging,
	"Up":              asterisk.StateUp,
	"Busy":            asterisk.StateBusy,
	"Dialing Offhook": asterisk.StateDialingOffhook,
	"Pre-ring":        asterisk.StatePrering,
}

func channelState(s string) asterisk.ChannelState { return channelStates[s] }

func cleanNum(s string) string {
	if s == "<unknown>" || s == "<Unknown>" {
		return ""
	}
	return s
}

// ARI timestamps look like "2026-11-22T00:03:02.933+0000".
// The fraction is optional when parsing with ".999999999".
var timeLayouts = []string{
	"2006-01-02T15:04:05.999999999-0700",
	time.RFC3339Nano,
}

func parseTime(s string, def time.Time) time.Time {
	if s == "" {
		return def
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC()
		}
	}
	return def
}
