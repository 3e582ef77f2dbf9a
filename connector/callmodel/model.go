package callmodel

import (
	"maps"
	"regexp"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/call"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// classify decides what a channel is (see Options). The result is cached once it can no longer
// change: a caller ID arriving later (NewCallerid after Newchannel) or the channel turning out
// to be dialled can still change an unsettled answer.
func (b *Builder) classify(ch *channel) {
	if ch.settled {
		return
	}
	ch.kind, ch.ext, ch.byCID = kindPlumbing, "", false
	o := &b.opts
	settled := ch.dir != dirUnknown

	// 1. Incoming channel in a trunk context.
	if !ch.local && ch.dir != dirOutgoing && matchAny(o.TrunkContexts, ch.context) {
		if ch.dir == dirIncoming {
			b.trunkOrFMC(ch, ch.firstCID)
			ch.settled = ch.firstCID != "" || len(o.FMC) == 0
			return
		}
		settled = false // might still turn out to be dialled
	}
	// 2. Device of a known extension.
	for _, re := range o.Extensions {
		g := re.SubexpIndex("ext")
		if g < 0 {
			continue
		}
		if m := re.FindStringSubmatch(ch.name); m != nil && m[g] != "" {
			ch.kind, ch.ext = kindExt, m[g]
			ch.settled = settled || !matchAny(o.TrunkContexts, ch.context)
			return
		}
	}
	// 3. Trunk by name.
	if matchAny(o.Trunks, ch.name) {
		num := ch.firstCID
		if ch.dir == dirOutgoing {
			num = dialNumber(ch.dialString)
		}
		b.trunkOrFMC(ch, num)
		ch.settled = settled && (num != "" || len(o.FMC) == 0)
		return
	}
	// 4. Calling identity by caller ID.
	for _, re := range o.Extensions {
		if re.SubexpIndex("ext") >= 0 || !re.MatchString(ch.name) {
			continue
		}
		if ch.cid != "" && o.ExtensionNumber.MatchString(ch.cid) {
			ch.kind, ch.ext, ch.byCID = kindExt, ch.cid, true
		}
		ch.settled = settled && ch.cid != ""
		return
	}
	// 5. A phone with a non-numeric name, recognised by its context and caller ID.
	if !ch.local && ch.dir == dirIncoming && matchAny(o.InternalContexts, ch.context) {
		if ch.cid != "" && o.ExtensionNumber.MatchString(ch.cid) {
			ch.kind, ch.ext, ch.byCID = kindExt, ch.cid, true
		}
		ch.settled = ch.cid != ""
		return
	}
	// 6. Plumbing.
	ch.settled = settled || ch.local
}

func (b *Builder) trunkOrFMC(ch *channel, num string) {
	ch.kind = kindTrunk
	if num != "" && len(b.opts.FMC) > 0 {
		if ext := b.opts.FMC[b.opts.normalize(num)]; ext != "" {
			ch.kind, ch.ext = kindExt, ext
		}
	}
}

func matchAny(list []*regexp.Regexp, s string) bool {
	for _, re := range list {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// dialNumber extracts the dialled number from a Dial string: "89001234567@provider",
// "provider/+79001234567", "provider/sip:+79001234567@host:5060", "g0/89001234567",
// "101@phones/n". It returns the first token that is a number (3+ digits, optional "+").
func dialNumber(ds string) string {
	for ds != "" {
		i := strings.IndexAny(ds, "/@:,;&")
		tok := ds
		if i >= 0 {
			tok, ds = ds[:i], ds[i+1:]
		} else {
			ds = ""
		}
		if isNumber(tok) && len(strings.TrimPrefix(tok, "+")) >= 3 {
			return tok
		}
	}
	return ""
}

// trunkName is a trunk channel's name without its unique suffix: "PJSIP/provider-0000002a" →
// "PJSIP/provider", "IAX2/telco-4321" → "IAX2/telco", "DAHDI/i1/89001234567-1" →
// "DAHDI/i1/89001234567", "Local/+74951112233@from-pstn-0000001c;2" →
// "Local/+74951112233@from-pstn".
func trunkName(name string) string {
	if n := len(name); n > 2 && name[n-2] == ';' {
		name = name[:n-2]
	}
	if i := strings.LastIndexByte(name, '-'); i > strings.IndexByte(name, '/') && i > 0 {
		name = name[:i]
	}
	return name
}

// isNumber reports whether s is digits with an optional leading "+".
func isNumber(s string) bool {
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// description is what the model currently knows about a call's parties.
type description struct {
	dir       call.Direction // "" when the call has no recognised party
	inTrunk   *channel       // inbound: the incoming trunk channel (the customer)
	outTrunk  *channel       // outbound: the trunk channel that answered, else the last one dialled
	callerExt *channel       // the first extension channel of the call
	customer  string
	line      string
}

func (b *Builder) describe(c *ongoing) description {
	var d description
	for _, ch := range c.chans {
		b.classify(ch)
		switch ch.kind {
		case kindTrunk:
			switch ch.dir {
			case dirOutgoing:
				if d.outTrunk == nil || ch.dialStatus == "ANSWER" || d.outTrunk.dialStatus != "ANSWER" {
					d.outTrunk = ch
				}
			case dirIncoming:
				if d.inTrunk == nil {
					d.inTrunk = ch
				}
			}
		case kindExt:
			if d.callerExt == nil {
				d.callerExt = ch
			}
		}
	}
	o := &b.opts
	switch {
	case d.inTrunk != nil:
		d.dir = call.Inbound
		d.customer = o.normalize(d.inTrunk.firstCID)
		line := ""
		switch {
		case isNumber(c.did):
			line = c.did
		case isNumber(d.inTrunk.exten):
			line = d.inTrunk.exten
		}
		d.line = o.normalize(line)
	case d.outTrunk != nil:
		d.dir = call.Outbound
		num := dialNumber(d.outTrunk.dialString)
		if num == "" && isNumber(d.outTrunk.exten) {
			num = d.outTrunk.exten
		}
		if num == "" && d.callerExt != nil && isNumber(d.callerExt.exten) {
			num = d.callerExt.exten
		}
		d.customer = o.normalize(num)
		if conn := d.outTrunk.connAtDial; conn != "" && !o.ExtensionNumber.MatchString(conn) {
			d.line = o.normalize(conn)
		}
	case d.callerExt != nil:
		d.dir = call.Internal
		if c.originateID != "" {
			d.dir = call.Outbound // click-to-call still ringing the agent: the customer is not dialled yet
		}
		ce := d.callerExt
		if len(c.rang) == 0 && len(c.legs) == 0 && ce.dir == dirIncoming && o.ExternalNumber.MatchString(ce.exten) &&
			!o.ExtensionNumber.MatchString(ce.exten) {
			// Dialled an external number that never reached a trunk (no route, rejected).
			d.dir = call.Outbound
			d.customer = o.normalize(ce.exten)
		}
	}
	return d
}

// recompute works out which extensions are connected to the call's customer now and opens,
// resumes and closes legs accordingly.
func (b *Builder) recompute(c *ongoing, t time.Time) {
	if c.state != callOpen {
		return
	}
	d := b.describe(c)
	b.found = b.found[:0]
	switch d.dir {
	case call.Inbound:
		b.reach(d.inTrunk, "")
	case call.Outbound:
		for _, ch := range c.chans {
			if ch.kind == kindTrunk && ch.dir == dirOutgoing && !ch.dead {
				b.reach(ch, "")
			}
		}
	case call.Internal:
		if d.callerExt != nil {
			b.reach(d.callerExt, d.callerExt.ext)
		}
	}
	connected := b.found

	for i := range c.legs {
		if c.legs[i].open && !contains(connected, c.legs[i].ext) {
			c.legs[i].open = false
			c.legs[i].ended = t
		}
	}
	for _, ext := range connected {
		if c.openLeg(ext) {
			continue
		}
		if n := len(c.legs); n > 0 && c.legs[n-1].ext == ext && !c.legs[n-1].open {
			// The same extension again with nobody in between: hold, Local optimisation,
			// a bridge swap. Same leg.
			c.legs[n-1].open = true
			c.legs[n-1].ended = time.Time{}
			continue
		}
		othersOpen := false
		prev := -1
		for i := len(c.legs) - 1; i >= 0; i-- {
			if c.legs[i].ext == ext {
				continue
			}
			if c.legs[i].open {
				othersOpen = true
			} else if prev < 0 {
				prev = i
			}
		}
		c.legs = append(c.legs, leg{ext: ext, answered: t, open: true})
		for _, ch := range c.chans {
			if ch.ringing && ch.ext == ext {
				ch.ringing = false // answered (a DialEnd may be missing or still to come)
			}
		}
		b.emit(c, call.LiveAnswered, ext, "", t)
		switch {
		case c.pending.valid:
			p := c.pending
			c.pending = pendingXfer{}
			from := p.from
			if from == "" && prev >= 0 {
				from = c.legs[prev].ext
			}
			if from != ext {
				c.transfers = append(c.transfers, xfer{Transfer: call.Transfer{Kind: p.kind, From: from, To: ext, At: p.at}, made: t})
				b.emit(c, call.LiveTransferred, ext, from, p.at)
			}
		case prev >= 0 && !othersOpen:
			from := c.legs[prev].ext
			c.transfers = append(c.transfers, xfer{
				Transfer: call.Transfer{Kind: "blind", From: from, To: ext, At: c.legs[prev].ended},
				inferred: true, made: t,
			})
			b.emit(c, call.LiveTransferred, ext, from, t)
		}
	}
}

func (c *ongoing) openLeg(ext string) bool {
	for i := range c.legs {
		if c.legs[i].open && c.legs[i].ext == ext {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// reach walks from start through Local pairs and bridges, looking through plumbing channels,
// and appends to b.found every extension it reaches (other than self).
func (b *Builder) reach(start *channel, self string) {
	if start == nil || start.dead {
		return
	}
	b.markGen++
	if b.markGen == 0 {
		for _, ch := range b.chans {
			ch.mark = 0
		}
		b.markGen = 1
	}
	gen := b.markGen
	start.mark = gen
	q := append(b.queue[:0], start)
	visit := func(n *channel) {
		if n == nil || n.dead || n.mark == gen {
			return
		}
		n.mark = gen
		b.classify(n)
		switch n.kind {
		case kindExt:
			if n.ext != self && !contains(b.found, n.ext) {
				b.found = append(b.found, n.ext)
			}
		case kindTrunk:
			// another external party: not an extension, and not looked through
		default:
			q = append(q, n)
		}
	}
	for i := 0; i < len(q); i++ {
		ch := q[i]
		visit(ch.pair)
		if br := ch.bridge; br != nil {
			for _, m := range br.members {
				visit(m)
			}
		}
	}
	for i := range q {
		q[i] = nil
	}
	b.queue = q[:0]
}

// transferEvent records a BlindTransfer or AttendedTransfer. The new extension is known only
// when it talks to the customer, so the transfer is completed by recompute; an attended
// transfer usually arrives just after the bridge merge that already connected the target, and
// then upgrades the transfer recompute inferred.
func (b *Builder) transferEvent(ev *asterisk.Event) {
	if ev.Transfer == nil || (ev.Transfer.Result != "" && ev.Transfer.Result != "Success") {
		return
	}
	c := (*ongoing)(nil)
	if ch := b.alive(ev.Peer.Uniqueid); ch != nil {
		c = ch.call
	} else if ch := b.alive(ev.Chan.Uniqueid); ch != nil {
		c = ch.call
	}
	if c == nil || c.state != callOpen {
		return
	}
	t := ev.Time
	from := ""
	if tr := b.chans[ev.Chan.Uniqueid]; tr != nil {
		b.classify(tr)
		if tr.kind == kindExt {
			from = tr.ext
		}
	}
	if from == "" && len(c.legs) > 0 {
		from = c.legs[len(c.legs)-1].ext
	}
	if n := len(c.transfers); n > 0 {
		last := &c.transfers[n-1]
		if last.inferred && !last.made.After(t) && t.Sub(last.made) <= time.Second && (from == "" || last.From == from) {
			last.Kind = ev.Transfer.Kind
			last.At = t
			last.inferred = false
			return
		}
	}
	to := ""
	if ev.Transfer.Kind == "blind" {
		// What was dialled; replaced by the extension that answers, if one does.
		to = ev.Transfer.Exten
	}
	c.pending = pendingXfer{kind: ev.Transfer.Kind, from: from, to: to, at: t, valid: true}
}

// record summarises a finished call, or returns nil for calls that are not worth a record (no
// extension or trunk recognised; an internal call in which nobody else was dialled).
func (b *Builder) record(c *ongoing, end time.Time) *call.Record {
	d := b.describe(c)
	if d.dir == "" {
		return nil
	}
	if d.dir == call.Internal && len(c.rang) == 0 && len(c.legs) == 0 {
		return nil
	}
	r := &call.Record{
		CallID:      c.id,
		Direction:   d.dir,
		Customer:    d.customer,
		Line:        d.line,
		StartedAt:   c.created,
		EndedAt:     end,
		Rang:        append([]string{}, c.rang...),
		Legs:        make([]call.Leg, 0, len(c.legs)),
		Transfers:   make([]call.Transfer, 0, len(c.transfers)+1),
		PBX:         c.pbx,
		OriginateID: c.originateID,
	}
	if len(c.vars) > 0 {
		r.Vars = maps.Clone(c.vars)
	}
	if end.Before(r.StartedAt) {
		r.EndedAt = r.StartedAt
	}
	for _, l := range c.legs {
		a, e := l.answered, l.ended
		r.Legs = append(r.Legs, call.Leg{Ext: l.ext, AnsweredAt: &a, EndedAt: &e, TalkSeconds: seconds(e.Sub(a))})
	}
	for _, x := range c.transfers {
		r.Transfers = append(r.Transfers, x.Transfer)
	}
	if p := c.pending; p.valid {
		r.Transfers = append(r.Transfers, call.Transfer{Kind: p.kind, From: p.from, To: p.to, At: p.at})
	}
	if d.callerExt != nil && d.dir != call.Inbound {
		r.CallerExt = d.callerExt.ext
	}
	switch {
	case d.dir == call.Inbound && d.inTrunk != nil:
		r.Trunk = trunkName(d.inTrunk.name)
	case d.dir == call.Outbound && d.outTrunk != nil:
		r.Trunk = trunkName(d.outTrunk.name)
	}

	switch {
	case len(c.legs) > 0:
		a := c.legs[0].answered
		r.AnsweredAt = &a
		r.AnsweredBy = c.legs[0].ext
	case d.dir == call.Outbound && !c.trunkAnswer.IsZero():
		a := c.trunkAnswer
		r.AnsweredAt = &a
		r.AnsweredBy = r.CallerExt
	}
	if r.AnsweredAt != nil {
		r.Disposition = call.Answered
		r.RingSeconds = seconds(r.AnsweredAt.Sub(r.StartedAt))
		r.TalkSeconds = seconds(r.EndedAt.Sub(*r.AnsweredAt))
	} else {
		r.Disposition = b.unanswered(c, d)
		r.RingSeconds = seconds(r.EndedAt.Sub(r.StartedAt))
	}

	var cust *channel
	switch d.dir {
	case call.Inbound:
		cust = d.inTrunk
	case call.Outbound:
		cust = d.outTrunk
		if cust == nil {
			cust = d.callerExt
		}
	default:
		cust = d.callerExt
	}
	if cust != nil {
		r.HangupCause = cust.cause
	}
	if r.HangupCause == 0 {
		r.HangupCause = c.firstCause
	}

	rec := c.recording
	if rec == "" {
		rec = c.cdrRecording
	}
	if r.Disposition == call.Answered || b.opts.UnansweredRecordings {
		r.Recording = rec
	}

	flags := c.flags
	if d.dir == call.Inbound && len(c.rang) == 0 && len(c.legs) == 0 {
		flags |= flagIVRAbandoned
	}
	if c.originateID != "" {
		flags |= flagClickToCall
	}
	for i, name := range flagNames {
		if flags&(1<<i) != 0 {
			r.Flags = append(r.Flags, name)
		}
	}
	return r
}

// unanswered decides the disposition of a call nobody answered from the dials it made: to
// extensions (inbound, internal) or to trunks (outbound). Any dial that rang out or was
// cancelled makes it no_answer; otherwise busy if one was busy; otherwise failed (congestion,
// unavailable, invalid number). A call that dialled nothing is no_answer (abandoned in the IVR)
// or, outbound, failed (no route).
func (b *Builder) unanswered(c *ongoing, d description) call.Disposition {
	var noAnswer, busy, failed bool
	for _, ch := range c.chans {
		if ch.dir != dirOutgoing {
			continue
		}
		switch {
		case d.dir == call.Outbound && ch.kind == kindTrunk:
		case d.dir != call.Outbound && ch.kind == kindExt && !ch.byCID:
		default:
			continue
		}
		switch ch.dialStatus {
		case "BUSY":
			busy = true
		case "CONGESTION", "CHANUNAVAIL", "INVALIDARGS", "DONTCALL", "TORTURE":
			failed = true
		default: // NOANSWER, CANCEL, ANSWER without a conversation, or no DialEnd at all
			noAnswer = true
		}
	}
	switch {
	case noAnswer:
		return call.NoAnswer
	case busy:
		return call.Busy
	case failed:
		return call.Failed
	case d.dir == call.Outbound:
		return call.Failed
	}
	return call.NoAnswer
}

// seconds rounds a duration to whole seconds (half up), never negative.
func seconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + 500*time.Millisecond) / time.Second)
}
