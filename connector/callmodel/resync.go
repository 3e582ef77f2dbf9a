package callmodel

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// onDisconnected: events may be missed from now on. Every open call is marked; the snapshot
// after the reconnect tells which of its channels are still there.
func (b *Builder) onDisconnected(ev *asterisk.Event) {
	if !b.disconnected {
		b.disconnected = true
		b.discAt = ev.Time
	}
	for _, c := range b.calls {
		if c.state == callOpen {
			c.flags |= flagResynced
		}
	}
}

// snapshot applies one channel the PBX reports as existing now. A channel the Builder does not
// know (created while the connection was down, or before the daemon started) is created with
// what the snapshot says; a known one gets its state and bridge updated.
func (b *Builder) snapshot(ev *asterisk.Event) {
	info := ev.Chan
	if info.Uniqueid == "" {
		return
	}
	t := ev.Time
	ch := b.chans[info.Uniqueid]
	if ch != nil && ch.dead {
		return
	}
	if ch == nil {
		created := info.Created
		if created.IsZero() {
			created = snapshotCreated(ev)
		}
		ch = b.addChannel(info, ev.PBX, created, t)
		if ch == nil {
			return
		}
		if b.resyncing {
			ch.call.flags |= flagResynced
		}
		if strings.HasPrefix(ev.Application, "AppDial") {
			ch.dir = dirOutgoing
			if ch.dialString == "" {
				ch.dialString = snapshotDialString(ch, info.CallerIDNum)
			}
			b.classify(ch)
			if ch.kind == kindExt && !ch.byCID {
				if !ch.call.hasRang(ch.ext) {
					ch.call.rang = append(ch.call.rang, ch.ext)
				}
				b.snapDialled = append(b.snapDialled, ch)
			}
		} else {
			ch.dir = dirIncoming
		}
	}
	ch.seen = b.gen
	if ev.Application == "Dial" {
		ch.dialApp = ev.AppData
	}
	ch.state = info.State
	b.updateCID(ch, info.CallerIDNum)
	if l := info.Linkedid; l != "" && l != ch.call.id {
		if other := b.resolve(l); other != nil && other != ch.call {
			b.merge(other, ch.call, t)
		}
	}
	switch {
	case ev.BridgeID != "" && (ch.bridge == nil || ch.bridge.id != ev.BridgeID):
		b.bridgeEnter(ch, &asterisk.Event{Type: asterisk.TypeBridgeEnter, Time: t, BridgeID: ev.BridgeID})
	case ev.BridgeID == "" && ch.bridge != nil:
		b.bridgeLeave(ch, ch.bridge.id, t)
	default:
		b.recompute(ch.call, t)
	}
}

// snapshotDialString is the dial string of a channel a snapshot shows dialled (AppDial) when its
// Dial was never seen (the daemon started or reconnected after it): the ApplicationData of the
// call's channel that runs Dial ("PJSIP/89001234567@provider,60"); when none does any more (the
// dialling Local channel was optimised away), the channel's own caller ID number, which
// Asterisk sets to the number dialled on an outgoing channel (DialBegin's DestCallerIDNum);
// else "". Snapshots list channels in creation order, so the dialling channel is already known.
func snapshotDialString(ch *channel, cid string) string {
	for _, o := range ch.call.chans {
		if o != ch && !o.dead && o.dialApp != "" {
			return o.dialApp
		}
	}
	if isNumber(cid) {
		return cid
	}
	return ""
}

// snapshotCreated derives a channel's creation time from CoreShowChannel's Duration
// ("HH:MM:SS"), else the event time.
func snapshotCreated(ev *asterisk.Event) time.Time {
	d := ev.Vars["Duration"]
	parts := strings.Split(d, ":")
	if len(parts) != 3 {
		return ev.Time
	}
	var secs int
	for _, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return ev.Time
		}
		secs = secs*60 + n
	}
	return ev.Time.Add(-time.Duration(secs) * time.Second)
}

// snapshotEnd: channels neither in the snapshot nor seen since the reconnect are gone; they are
// hung up as of the disconnect, which finishes calls that ended during the outage. A snapshot
// that failed (Vars["error"]: the PBX refused CoreShowChannels) proves nothing: the calls stay
// open, to end by their own hangups or by MaxCallAge.
func (b *Builder) snapshotEnd(ev *asterisk.Event) {
	if !b.resyncing {
		return
	}
	b.resyncing = false
	if ev.Vars["error"] != "" {
		b.disconnected = false
		b.ringSnapshotted(ev.Time)
		return
	}
	at := b.discAt
	if !b.disconnected || at.IsZero() {
		at = ev.Time
	}
	b.disconnected = false
	var gone []*channel
	for _, ch := range b.chans {
		if !ch.dead && ch.seen != b.gen {
			gone = append(gone, ch)
		}
	}
	sort.Slice(gone, func(i, j int) bool {
		if !gone[i].created.Equal(gone[j].created) {
			return gone[i].created.Before(gone[j].created)
		}
		return compareUniqueid(gone[i].id, gone[j].id) < 0
	})
	for _, ch := range gone {
		ch.call.flags |= flagResynced
		t := at
		if t.Before(ch.created) {
			t = ch.created
		}
		b.hangup(ch, t, 0)
	}
	for id, br := range b.bridges {
		if len(br.members) == 0 {
			delete(b.bridges, id)
		}
	}
	b.ringSnapshotted(ev.Time)
}

// ringSnapshotted emits the ringing live event, at t (the end of the snapshot), for every
// extension channel a snapshot created while it was being dialled (AppDial) that is still
// ringing: alive, not answered (a ringing state, in no bridge), its Dial not ended and no
// ringing event sent for it since. Its DialBegin was not applied: it came before the daemon
// connected, or after the login but before the snapshot made the channel known (events about
// unknown channels are ignored). Without this such a call would show no incoming-call card and
// leave no open-calls ledger row until it is answered, and none at all if it is not. The
// channel is marked ringing, so its DialEnd, hangup or the call's end stops the ringing as for
// a Dial seen live; it already counts as rang (snapshot).
//
// This is done at the end of the snapshot rather than by holding back the live events about
// unknown channels and re-applying them after it: CoreShowChannels lists a channel as it is
// when listed, after those events, so re-applying them would move the channel back (a DialBegin
// re-applied after a snapshot that shows the channel answered would emit ringing after answered
// and leave it ringing). At the end of the snapshot, every channel and the call's customer are
// known, whatever order the snapshot listed them in.
func (b *Builder) ringSnapshotted(t time.Time) {
	for i, ch := range b.snapDialled {
		b.snapDialled[i] = nil
		if ch.dead || ch.ringing || ch.dialDone || ch.bridge != nil || ch.call.state != callOpen ||
			!ringingState(ch.state) {
			continue
		}
		b.classify(ch)
		if ch.kind != kindExt || ch.byCID {
			continue
		}
		b.ringExt(ch, t)
	}
	b.snapDialled = b.snapDialled[:0]
}

// ringingState reports whether a dialled channel in this state has not answered (nor refused)
// yet: Down until the device reports ringing, then Ringing.
func ringingState(s asterisk.ChannelState) bool {
	switch s {
	case asterisk.StateDown, asterisk.StateDialing, asterisk.StateRing, asterisk.StateRinging, asterisk.StatePrering:
		return true
	}
	return false
}
