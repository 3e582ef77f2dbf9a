package callmodel

import (
	"maps"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pbxbridge/pbxbridge/crm/call"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// Output receives what a Builder produces. Both methods are called synchronously from Apply and
// Flush, in event order, and must not call back into the Builder.
type Output interface {
	// Live receives a live event. The pointer is only valid during the call (the Builder reuses
	// it); copy the value to keep it.
	Live(*call.Live)
	// Record receives a finished call. Ownership passes to the receiver.
	Record(*call.Record)
}

// Builder turns the normalised events of one PBX into live events and finished Records. It is
// not safe for concurrent use: one goroutine feeds it (the PBX source's consumer). It allocates
// only when channels, calls, bridges and records come and go, not per event.
type Builder struct {
	opts Options
	out  Output

	chans   map[string]*channel // by Uniqueid; dead channels stay until their call is finished
	calls   map[string]*ongoing // open and closing calls by id (Linkedid)
	alias   map[string]*ongoing // ids of calls merged into another call
	bridges map[string]*bridge
	locals  map[string]*channel  // Local channel half waiting for its other half, by base name
	closing []*ongoing           // calls waiting FinishDelay, in closing order
	flushed map[string]time.Time // ids of calls finished by Flush while channels may live on

	live    call.Live
	queue   []*channel // traversal scratch
	found   []string   // traversal scratch
	markGen uint32

	// Resync after a lost PBX connection.
	gen          uint32
	disconnected bool
	discAt       time.Time
	resyncing    bool
	snapDialled  []*channel // extension channels a snapshot created while being dialled
}

// NewBuilder returns a Builder that reports to out.
func NewBuilder(opts Options, out Output) *Builder {
	return &Builder{
		opts:    opts,
		out:     out,
		chans:   make(map[string]*channel),
		calls:   make(map[string]*ongoing),
		alias:   make(map[string]*ongoing),
		bridges: make(map[string]*bridge),
		locals:  make(map[string]*channel),
		flushed: make(map[string]time.Time),
	}
}

// MaxCallAge is Options.MaxCallAge: the age at which Flush(now, false) finishes a call (0: never).
func (b *Builder) MaxCallAge() time.Duration { return b.opts.MaxCallAge }

// Open returns the number of calls not yet finished (open, or closed and waiting FinishDelay).
func (b *Builder) Open() int { return len(b.calls) }

// Has reports whether the call with this id (Record.CallID: its Linkedid, or an id merged into
// another call) is known and not yet finished.
func (b *Builder) Has(id string) bool {
	if _, ok := b.calls[id]; ok {
		return true
	}
	_, ok := b.alias[id]
	return ok
}

// Knows reports whether id belongs to a call the model has not finished: its id (Linkedid), an
// id merged into it, or the Uniqueid of one of its channels. Recovering calls from the CDR asks
// it of every row's uniqueid and linkedid, so that a call still in progress (whose first rows
// may already be written) is never recovered.
func (b *Builder) Knows(id string) bool {
	if id == "" {
		return false
	}
	return b.Has(id) || b.chans[id] != nil
}

// ChannelNames returns the names of the channels of the calls the model has not finished
// (those still up and those already hung up), in no particular order.
func (b *Builder) ChannelNames() []string {
	out := make([]string, 0, len(b.chans))
	for _, ch := range b.chans {
		out = append(out, ch.name)
	}
	return out
}

// OldestStart returns the start of the oldest call the model has not finished, or the zero
// time when it has none.
func (b *Builder) OldestStart() time.Time {
	var t time.Time
	for _, c := range b.calls {
		if !c.created.IsZero() && (t.IsZero() || c.created.Before(t)) {
			t = c.created
		}
	}
	return t
}

// NextFinish returns when the earliest call waiting FinishDelay is due (Flush finishes it from
// then on), or the zero time when none waits.
func (b *Builder) NextFinish() time.Time {
	var t time.Time
	for _, c := range b.closing {
		if c.state == callClosing && (t.IsZero() || c.deadline.Before(t)) {
			t = c.deadline
		}
	}
	return t
}

// Apply feeds one event. Events must come in the order the PBX sent them. Events about channels
// the Builder never saw created are ignored (no phantom calls), except snapshots.
func (b *Builder) Apply(ev *asterisk.Event) {
	if ev == nil {
		return
	}
	t := ev.Time
	if len(b.closing) > 0 {
		b.finishDue(t, false)
	}
	switch ev.Type {
	case asterisk.TypeNewChannel:
		b.newChannel(ev)
		return
	case asterisk.TypeDisconnected:
		b.onDisconnected(ev)
		return
	case asterisk.TypeConnected:
		if ev.Resync || b.disconnected {
			b.gen++
			b.resyncing = true
		}
		return
	case asterisk.TypeSnapshot:
		b.snapshot(ev)
		return
	case asterisk.TypeSnapshotEnd:
		b.snapshotEnd(ev)
		return
	case asterisk.TypeCdr:
		if ch := b.chans[ev.Chan.Uniqueid]; ch != nil && ev.Recording != "" && ch.call.cdrRecording == "" {
			ch.call.cdrRecording = ev.Recording
		}
		return
	case asterisk.TypeDialBegin:
		b.dialBegin(ev)
		return
	case asterisk.TypeDialEnd:
		b.dialEnd(ev)
		return
	case asterisk.TypeLocalBridge:
		one, two := b.alive(ev.Chan.Uniqueid), b.alive(ev.Peer.Uniqueid)
		if one != nil && two != nil && one.pair == nil && two.pair == nil {
			b.pairLocal(one, two, t)
		}
		return
	case asterisk.TypeBridgeCreate:
		if ev.BridgeID != "" {
			b.bridgeFor(ev.BridgeID, ev.BridgeType)
		}
		return
	case asterisk.TypeBridgeDestroy:
		if br := b.bridges[ev.BridgeID]; br != nil && len(br.members) == 0 {
			delete(b.bridges, ev.BridgeID)
		}
		return
	case asterisk.TypeBlindTransfer, asterisk.TypeAttendedTransfer:
		b.transferEvent(ev)
		return
	case asterisk.TypePickup:
		if ch := b.alive(ev.Peer.Uniqueid); ch != nil {
			ch.call.flags |= flagPickup
		}
		if ch := b.alive(ev.Chan.Uniqueid); ch != nil {
			ch.call.flags |= flagPickup
		}
		return
	case asterisk.TypeCel, asterisk.TypeOriginateResponse, asterisk.TypeUnknown, asterisk.TypeBridgeMerge,
		asterisk.TypeLocalOptimizeBegin, asterisk.TypeLocalOptimizeEnd, asterisk.TypeUserEvent:
		// BridgeMerge moves channels with their own BridgeLeave/BridgeEnter events (and not
		// all of them: the transferer stays behind), so it needs no handling of its own.
		// LocalOptimizationEnd reports "Success: No" even when the swap worked: the model
		// follows the BridgeEnter/Hangup events instead.
		return
	}

	ch := b.touch(ev)
	if ch == nil {
		return
	}
	c := ch.call
	switch ev.Type {
	case asterisk.TypeNewState:
		ch.state = ev.Chan.State
	case asterisk.TypeNewExten:
		b.newExten(ch, ev)
	case asterisk.TypeVarSet:
		b.varSet(c, ev.Variable, ev.Value)
	case asterisk.TypeHangup:
		b.hangup(ch, t, ev.Cause)
		return
	case asterisk.TypeBridgeEnter:
		b.bridgeEnter(ch, ev)
		if p := b.alive(ev.Peer.Uniqueid); p != nil { // Asterisk 11 "Bridge: Link" names both
			b.bridgeEnter(p, ev)
		}
	case asterisk.TypeBridgeLeave:
		b.bridgeLeave(ch, ev.BridgeID, t)
		if p := b.alive(ev.Peer.Uniqueid); p != nil {
			b.bridgeLeave(p, ev.BridgeID, t)
		}
	case asterisk.TypeRename:
		if ev.Peer.Name != "" && ev.Peer.Name != ch.name {
			b.rename(ch, ev.Peer.Name, t)
		}
	case asterisk.TypeMixMonitorStart:
		if ev.Recording != "" && c.recording == "" {
			c.recording = ev.Recording
		}
	case asterisk.TypeQueueCallerJoin:
		c.flags |= flagQueue
	}
	if len(ev.Vars) > 0 && ev.Type != asterisk.TypeBridgeEnter {
		for _, name := range b.opts.OriginateIDVariables {
			if v := ev.Vars[name]; v != "" && ch.call.originateID == "" {
				ch.call.originateID = v
			}
		}
		for _, name := range b.opts.DIDVariables {
			if v := ev.Vars[name]; v != "" && ch.call.did == "" {
				ch.call.did = v
			}
		}
		for _, name := range b.opts.CallVariables {
			if v := ev.Vars[name]; v != "" {
				ch.call.setVar(name, v)
			}
		}
	}
}

// alive returns the live channel with this uniqueid, or nil.
func (b *Builder) alive(id string) *channel {
	if id == "" {
		return nil
	}
	ch := b.chans[id]
	if ch == nil || ch.dead {
		return nil
	}
	return ch
}

// touch finds the event's channel and applies what every channel event carries: the caller
// ID, the Linkedid (which changes when Asterisk bridges calls together) and the resync mark.
func (b *Builder) touch(ev *asterisk.Event) *channel {
	ch := b.alive(ev.Chan.Uniqueid)
	if ch == nil {
		return nil
	}
	b.updateCID(ch, ev.Chan.CallerIDNum)
	ch.seen = b.gen
	if l := ev.Chan.Linkedid; l != "" && l != ch.call.id {
		if other := b.resolve(l); other != nil && other != ch.call {
			b.merge(other, ch.call, ev.Time)
		}
	}
	if ev.Time.After(ch.call.lastEvent) {
		ch.call.lastEvent = ev.Time
	}
	return ch
}

func (b *Builder) updateCID(ch *channel, cid string) {
	if cid == "" || cid == ch.cid {
		return
	}
	ch.cid = cid
	if ch.firstCID == "" {
		ch.firstCID = cid
	}
}

func (b *Builder) resolve(id string) *ongoing {
	if c := b.calls[id]; c != nil {
		return c
	}
	return b.alias[id]
}

func (b *Builder) newChannel(ev *asterisk.Event) {
	id := ev.Chan.Uniqueid
	if id == "" || b.chans[id] != nil {
		return
	}
	created := ev.Time
	if !ev.Chan.Created.IsZero() {
		created = ev.Chan.Created
	}
	ch := b.addChannel(ev.Chan, ev.PBX, created, ev.Time)
	if ch == nil {
		return
	}
	if ev.Chan.State != asterisk.StateDown {
		ch.dir = dirIncoming
	}
	for _, name := range b.opts.OriginateIDVariables {
		if v := ev.Vars[name]; v != "" && ch.call.originateID == "" {
			ch.call.originateID = v
		}
	}
	for _, name := range b.opts.CallVariables {
		if v := ev.Vars[name]; v != "" {
			ch.call.setVar(name, v)
		}
	}
}

// addChannel creates a channel, puts it into its call (by Linkedid, by its Local partner, or a
// new call) and pairs Local halves. It returns nil for a channel of a call already flushed: that
// call has its record, and a second one with the same id would collide in the outbox.
func (b *Builder) addChannel(info asterisk.Channel, pbx string, created, now time.Time) *channel {
	if _, gone := b.flushed[info.Linkedid]; gone && info.Linkedid != "" {
		return nil
	}
	ch := &channel{
		id:      info.Uniqueid,
		name:    info.Name,
		created: created,
		state:   info.State,
		context: info.Context,
		exten:   info.Exten,
		seen:    b.gen,
	}
	b.updateCID(ch, info.CallerIDNum)
	ch.localBase, ch.local = localBase(ch.name)

	var c *ongoing
	if info.Linkedid != "" {
		c = b.resolve(info.Linkedid)
		if c == nil {
			c = b.newCall(info.Linkedid, pbx, created)
		}
	} else if ch.local {
		if other := b.locals[ch.localBase]; other != nil && !other.dead {
			c = other.call
		}
	}
	if c == nil {
		c = b.newCall(ch.id, pbx, created)
	}
	if c.state == callClosing {
		c.state = callOpen
	}
	ch.call = c
	c.chans = append(c.chans, ch)
	c.alive++
	if now.After(c.lastEvent) {
		c.lastEvent = now
	}
	b.chans[ch.id] = ch
	if ch.local {
		if other := b.locals[ch.localBase]; other != nil && other != ch && !other.dead {
			delete(b.locals, ch.localBase)
			b.pairLocal(other, ch, now)
		} else {
			b.locals[ch.localBase] = ch
		}
	}
	return ch
}

// newCall returns the call with this id, creating it if there is none: a call id is never
// reused while its call is open or closing (its record and map entry would be lost).
func (b *Builder) newCall(id, pbx string, created time.Time) *ongoing {
	if c := b.resolve(id); c != nil {
		return c
	}
	c := &ongoing{id: id, pbx: pbx, created: created}
	b.calls[id] = c
	return c
}

// localBase splits "Local/101@phones-0000000a;1" into its pair name and reports whether the
// channel is a Local half.
func localBase(name string) (string, bool) {
	if !strings.HasPrefix(name, "Local/") || len(name) < 3 {
		return "", false
	}
	if n := len(name); name[n-2] == ';' && (name[n-1] == '1' || name[n-1] == '2') {
		return name[:n-2], true
	}
	return "", true
}

func (b *Builder) pairLocal(one, two *channel, t time.Time) {
	one.pair, two.pair = two, one
	if one.call != two.call {
		b.merge(one.call, two.call, t)
	}
	b.recompute(one.call, t)
}

// merge folds the younger of two calls into the older one, as Asterisk does with linkedids
// when it bridges channels or dials from one call into another.
func (b *Builder) merge(x, y *ongoing, t time.Time) {
	if x == y || x.state == callDone || y.state == callDone {
		return
	}
	older, younger := x, y
	if y.olderThan(x) {
		older, younger = y, x
	}
	if younger.liveSent {
		// Whoever showed a card for the younger call id: that call is now part of another.
		b.emit(younger, call.LiveHangup, "", "", t)
	}
	for _, ch := range younger.chans {
		ch.call = older
	}
	older.chans = append(older.chans, younger.chans...)
	older.alive += younger.alive
	for _, e := range younger.rang {
		if !older.hasRang(e) {
			older.rang = append(older.rang, e)
		}
	}
	older.flags |= younger.flags
	if older.recording == "" {
		older.recording = younger.recording
	}
	if older.cdrRecording == "" {
		older.cdrRecording = younger.cdrRecording
	}
	if older.originateID == "" {
		older.originateID = younger.originateID
	}
	if older.did == "" {
		older.did = younger.did
	}
	for k, v := range younger.vars {
		older.setVar(k, v)
	}
	if older.firstCause == 0 {
		older.firstCause = younger.firstCause
	}
	if older.trunkAnswer.IsZero() || (!younger.trunkAnswer.IsZero() && younger.trunkAnswer.Before(older.trunkAnswer)) {
		older.trunkAnswer = younger.trunkAnswer
	}
	if younger.lastEvent.After(older.lastEvent) {
		older.lastEvent = younger.lastEvent
	}
	if younger.endAt.After(older.endAt) {
		older.endAt = younger.endAt
	}
	if !older.pending.valid {
		older.pending = younger.pending
	}
	older.liveSent = older.liveSent || younger.liveSent
	if older.state == callClosing && older.alive > 0 {
		older.state = callOpen
	}
	delete(b.calls, younger.id)
	b.alias[younger.id] = older
	for _, a := range younger.aliases {
		b.alias[a] = older
	}
	older.aliases = append(older.aliases, younger.id)
	older.aliases = append(older.aliases, younger.aliases...)
	younger.state = callDone
	b.recompute(older, t)
	// An extension of the younger call that still rings announced it under the younger call's
	// id, which is gone now: announce it again under the call it belongs to. Without Linkedid
	// (ARI) a queue member's own Dial can come before app_queue's Dial of the member Local
	// channel, so the phone rings in a call of its own until that Dial merges it into the
	// customer's call; its card must still show for the customer's call.
	for _, ch := range younger.chans {
		if ch.ringing && !ch.dead && ch.call == older {
			b.emit(older, call.LiveRinging, ch.ext, "", t)
		}
	}
	if younger.outCard != "" && older.outCard == "" && older.state == callOpen {
		b.ringOutbound(older, t)
	}
}

func (b *Builder) newExten(ch *channel, ev *asterisk.Event) {
	app := ev.Application
	if ch.dir == dirUnknown && app != "" && !strings.HasPrefix(app, "AppDial") {
		ch.dir = dirIncoming
	}
	switch app {
	case "Queue":
		ch.call.flags |= flagQueue
	case "VoiceMail":
		ch.call.flags |= flagVoicemail
	case "Pickup", "PickupChan":
		ch.call.flags |= flagPickup
	}
}

func (b *Builder) varSet(c *ongoing, name, value string) {
	if value == "" {
		return
	}
	name = strings.TrimLeft(name, "_")
	if name == "MIXMONITOR_FILENAME" {
		if c.recording == "" {
			c.recording = value
		}
		return
	}
	for _, v := range b.opts.OriginateIDVariables {
		if v == name {
			if c.originateID == "" {
				c.originateID = value
			}
			return
		}
	}
	for _, v := range b.opts.DIDVariables {
		if v == name {
			if c.did == "" {
				c.did = value
			}
			return
		}
	}
	for _, v := range b.opts.CallVariables {
		if v == name {
			c.setVar(name, value)
			return
		}
	}
}

// maxVarLen bounds a channel variable's value kept in a record (Record.Vars).
const maxVarLen = 256

// setVar keeps the first non-empty value of a listed channel variable.
func (c *ongoing) setVar(name, value string) {
	if value == "" || c.vars[name] != "" {
		return
	}
	if len(value) > maxVarLen {
		value = value[:maxVarLen]
		for !utf8.ValidString(value) && value != "" {
			value = value[:len(value)-1]
		}
	}
	if c.vars == nil {
		c.vars = map[string]string{}
	}
	c.vars[name] = value
}

func (b *Builder) rename(ch *channel, name string, t time.Time) {
	if ch.local {
		if b.locals[ch.localBase] == ch {
			delete(b.locals, ch.localBase)
		}
	}
	ch.name = name
	ch.localBase, ch.local = localBase(name)
	ch.settled = false
	b.recompute(ch.call, t)
}

func (b *Builder) dialBegin(ev *asterisk.Event) {
	dest := b.alive(ev.Peer.Uniqueid)
	if dest == nil {
		return
	}
	t := ev.Time
	dest.seen = b.gen
	b.updateCID(dest, ev.Peer.CallerIDNum)
	dest.dir = dirOutgoing
	dest.dialString = ev.DialString
	dest.connAtDial = ev.Peer.ConnectedNum
	dest.dialStatus, dest.dialDone = "", false
	dest.settled = false
	if caller := b.alive(ev.Chan.Uniqueid); caller != nil {
		caller.seen = b.gen
		b.updateCID(caller, ev.Chan.CallerIDNum)
		if caller.dir == dirUnknown {
			caller.dir = dirIncoming
		}
		if caller.call != dest.call {
			b.merge(caller.call, dest.call, t)
		}
	}
	c := dest.call
	if t.After(c.lastEvent) {
		c.lastEvent = t
	}
	b.classify(dest)
	switch {
	case dest.kind == kindExt && !dest.byCID:
		if !c.hasRang(dest.ext) {
			c.rang = append(c.rang, dest.ext)
		}
		if !dest.ringing {
			b.ringExt(dest, t)
		}
	case dest.kind == kindTrunk:
		b.ringOutbound(c, t)
	}
}

// ringExt announces that the extension channel ch started ringing, unless it is the agent's
// own phone of a click-to-call (or callback) that has not dialled the customer yet: that ring
// has no customer to show, and the agent gets the call's one card when the customer's leg
// starts ringing (ringOutbound). A suppressed ring is not marked ringing, so it never gets a
// LiveStopRinging either.
func (b *Builder) ringExt(ch *channel, t time.Time) {
	c := ch.call
	if d := b.describe(c); d.dir == call.Outbound && d.customer == "" && c.originateID != "" {
		return
	}
	ch.ringing = true
	b.emit(c, call.LiveRinging, ch.ext, "", t)
}

// ringOutbound announces an outbound call to the extension that placed it when its external
// (trunk) leg starts being dialled: LiveRinging with Ext = the calling extension (the agent of a
// click-to-call) and Customer = the dialled number, once per call, whatever further trunks a
// failover dials. The call's LiveAnswered (Ext = the same extension) follows when the customer
// answers and LiveHangup at the end; no LiveStopRinging is sent for it (the caller keeps the
// call until it ends). Nothing is announced for an inbound call dialling out (follow-me, FMC),
// for a call whose caller is not a known extension, or when the dialled number is unknown.
func (b *Builder) ringOutbound(c *ongoing, t time.Time) {
	if c.outCard != "" || len(c.legs) > 0 {
		return
	}
	d := b.describe(c)
	if d.dir != call.Outbound || d.customer == "" || d.callerExt == nil || d.callerExt.ext == "" {
		return
	}
	c.outCard = d.callerExt.ext
	b.emit(c, call.LiveRinging, c.outCard, "", t)
}

func (b *Builder) dialEnd(ev *asterisk.Event) {
	dest := b.alive(ev.Peer.Uniqueid)
	if dest == nil {
		return
	}
	t := ev.Time
	dest.seen = b.gen
	dest.dialStatus = ev.DialStatus
	dest.dialDone = true
	c := dest.call
	if t.After(c.lastEvent) {
		c.lastEvent = t
	}
	if dest.ringing {
		dest.ringing = false
		if ev.DialStatus != "ANSWER" {
			b.emit(c, call.LiveStopRinging, dest.ext, "", t)
		}
	}
	if ev.DialStatus == "ANSWER" {
		b.classify(dest)
		if dest.kind == kindTrunk && c.trunkAnswer.IsZero() {
			c.trunkAnswer = t
		}
	}
}

func (b *Builder) bridgeFor(id, typ string) *bridge {
	br := b.bridges[id]
	if br == nil {
		br = &bridge{id: id, typ: typ}
		b.bridges[id] = br
	} else if br.typ == "" {
		br.typ = typ
	}
	return br
}

func (b *Builder) bridgeEnter(ch *channel, ev *asterisk.Event) {
	if ev.BridgeID == "" {
		return
	}
	t := ev.Time
	br := b.bridgeFor(ev.BridgeID, ev.BridgeType)
	if swap := ev.Vars["SwapUniqueid"]; swap != "" {
		if sw := b.chans[swap]; sw != nil && sw.bridge == br {
			br.remove(sw)
			sw.bridge = nil
		}
	}
	if ch.bridge == br {
		return
	}
	if old := ch.bridge; old != nil {
		old.remove(ch)
		b.dropIfEmpty(old)
		b.recomputeMembers(old, t)
	}
	br.members = append(br.members, ch)
	ch.bridge = br
	// A channel in a bridge is answered: it was not only dialled.
	if ch.dir == dirUnknown {
		ch.dir = dirIncoming
	}
	if br.mergeable() {
		for i := 0; i < len(br.members); i++ {
			if m := br.members[i]; m.call != ch.call {
				b.merge(m.call, ch.call, t)
			}
		}
	}
	b.recompute(ch.call, t)
	b.recomputeMembers(br, t)
}

func (b *Builder) bridgeLeave(ch *channel, id string, t time.Time) {
	br := ch.bridge
	if br == nil || (id != "" && br.id != id) {
		return
	}
	br.remove(ch)
	ch.bridge = nil
	b.dropIfEmpty(br)
	b.recompute(ch.call, t)
	b.recomputeMembers(br, t)
}

func (b *Builder) dropIfEmpty(br *bridge) {
	if len(br.members) == 0 && b.bridges[br.id] == br {
		delete(b.bridges, br.id)
	}
}

// recomputeMembers recomputes the calls of a bridge's remaining members (only calls that differ
// from each other; usually there is one).
func (b *Builder) recomputeMembers(br *bridge, t time.Time) {
	var last *ongoing
	for _, m := range br.members {
		if m.call != last {
			b.recompute(m.call, t)
			last = m.call
		}
	}
}

func (b *Builder) hangup(ch *channel, t time.Time, cause int) {
	if ch.dead {
		return
	}
	c := ch.call
	ch.dead = true
	ch.hangup = t
	ch.cause = cause
	if cause != 0 && c.firstCause == 0 {
		c.firstCause = cause
	}
	if ch.ringing {
		ch.ringing = false
		b.emit(c, call.LiveStopRinging, ch.ext, "", t)
	}
	if ch.local && b.locals[ch.localBase] == ch {
		delete(b.locals, ch.localBase)
	}
	br := ch.bridge
	if br != nil {
		br.remove(ch)
		ch.bridge = nil
		b.dropIfEmpty(br)
	}
	c.alive--
	if t.After(c.endAt) {
		c.endAt = t
	}
	if t.After(c.lastEvent) {
		c.lastEvent = t
	}
	b.recompute(c, t)
	if br != nil {
		b.recomputeMembers(br, t)
	}
	if c.alive <= 0 && c.state == callOpen {
		b.close(c, t)
	}
}

// close handles a call whose channels are all gone.
func (b *Builder) close(c *ongoing, t time.Time) {
	if b.opts.FinishDelay <= 0 {
		b.finish(c, c.endAt, 0)
		return
	}
	c.state = callClosing
	c.deadline = c.endAt.Add(b.opts.FinishDelay)
	b.closing = append(b.closing, c)
}

// finishDue finishes closing calls whose FinishDelay has passed at t (all of them when all).
func (b *Builder) finishDue(t time.Time, all bool) {
	n := 0
	for _, c := range b.closing {
		switch {
		case c.state != callClosing:
			// reopened or merged away
		case all || !c.deadline.After(t):
			b.finish(c, c.endAt, 0)
		default:
			b.closing[n] = c
			n++
		}
	}
	for i := n; i < len(b.closing); i++ {
		b.closing[i] = nil
	}
	b.closing = b.closing[:n]
}

// Flush finishes calls that cannot be expected to end by themselves: with all set (shutdown)
// every open call, ended at now; otherwise calls older than MaxCallAge, ended at their last
// event. Both are flagged "flushed". Calls waiting FinishDelay are finished normally when due
// (all of them when all is set). Records come out ordered by start time.
func (b *Builder) Flush(now time.Time, all bool) {
	b.finishDue(now, all)
	keep := b.opts.MaxCallAge
	if keep <= 0 {
		keep = DefaultMaxCallAge
	}
	for id, at := range b.flushed {
		if now.Sub(at) > keep {
			delete(b.flushed, id)
		}
	}
	var due []*ongoing
	for _, c := range b.calls {
		if c.state != callOpen {
			continue
		}
		if all || (b.opts.MaxCallAge > 0 && now.Sub(c.created) > b.opts.MaxCallAge) {
			due = append(due, c)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].created.Equal(due[j].created) {
			return due[i].created.Before(due[j].created)
		}
		return compareUniqueid(due[i].id, due[j].id) < 0
	})
	for _, c := range due {
		end := c.lastEvent
		if all && now.After(end) {
			end = now
		}
		if c.endAt.After(end) {
			end = c.endAt
		}
		b.finish(c, end, flagFlushed)
		if !all {
			// Its channels may still be alive; their later calls' channels are not a new call.
			b.flushed[c.id] = now
			for _, a := range c.aliases {
				b.flushed[a] = now
			}
		}
	}
}

// finish emits the call's Record and forgets the call.
func (b *Builder) finish(c *ongoing, end time.Time, flag uint16) {
	if c.state == callDone {
		return
	}
	c.flags |= flag
	for i := range c.legs {
		if c.legs[i].open {
			c.legs[i].open = false
			c.legs[i].ended = end
		}
	}
	for _, ch := range c.chans {
		if ch.ringing {
			ch.ringing = false
			b.emit(c, call.LiveStopRinging, ch.ext, "", end)
		}
	}
	if c.liveSent {
		b.emit(c, call.LiveHangup, "", "", end)
	}
	rec := b.record(c, end)
	for _, ch := range c.chans {
		if b.chans[ch.id] == ch {
			delete(b.chans, ch.id)
		}
		if ch.bridge != nil {
			br := ch.bridge
			br.remove(ch)
			ch.bridge = nil
			b.dropIfEmpty(br)
		}
		if ch.local && b.locals[ch.localBase] == ch {
			delete(b.locals, ch.localBase)
		}
		ch.pair = nil
		if !ch.dead {
			ch.dead = true
			ch.hangup = end
		}
	}
	delete(b.calls, c.id)
	for _, a := range c.aliases {
		if b.alias[a] == c {
			delete(b.alias, a)
		}
	}
	c.state = callDone
	if rec != nil {
		b.out.Record(rec)
	}
}

// emit sends a live event about c.
func (b *Builder) emit(c *ongoing, kind call.LiveKind, ext, from string, at time.Time) {
	d := b.describe(c)
	if d.dir == "" {
		d.dir = call.Internal
	}
	b.live = call.Live{
		Kind:        kind,
		CallID:      c.id,
		PBX:         c.pbx,
		Direction:   d.dir,
		Customer:    d.customer,
		Line:        d.line,
		Ext:         ext,
		From:        from,
		At:          at,
		StartedAt:   c.created,
		OriginateID: c.originateID,
	}
	if len(c.vars) > 0 {
		b.live.Vars = maps.Clone(c.vars)
	}
	c.liveSent = true
	b.out.Live(&b.live)
}
