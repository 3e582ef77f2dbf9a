package callmodel

import (
	"cmp"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/cdr"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// CDROptions is what FromCDR needs besides the call model's Options.
type CDROptions struct {
	// PBX is the name of the source (Record.PBX).
	PBX string
	// RecordingDir is the directory MixMonitor writes to (config recordings.dir). A CDR
	// recordingfile that is a bare file name (FreePBX's) lives in RecordingDir/YYYY/MM/DD/,
	// dated by the call's start in the PBX's time zone, as FreePBX files them; an absolute
	// path is kept as it is. Empty: the file name is reported as it is.
	RecordingDir string
}

// FromCDR builds the record of a call the daemon did not see, from the CDR rows of that call
// (cdr.Group; its ID is the call's Linkedid, so the record has the key a live record of the
// same call would have). It returns nil for the calls the live model would not report either:
// no extension or trunk recognised, or an internal call in which nobody else was dialled.
//
// It is pure and deterministic, like the rest of the package: the channels of the rows are
// recognised with opts exactly as the live model recognises them (a channel that is some row's
// dstchannel was dialled; one that is only party A placed a call or came in), and the record
// follows the conventions of the live model (package doc, "Record conventions") with what a CDR
// can tell:
//
//   - direction, customer (normalised), caller_ext, trunk and rang: as live. rang lists the
//     extension devices that were some row's dstchannel, in order of those rows' start.
//   - legs and answered_at/answered_by: the extensions reachable from the customer's channel
//     over answered rows (party A to party B, from the row's answer to its end) and Local
//     channel pairs, second by second, looking through plumbing as live. A dialled Local
//     channel counts as answered from its other half's answer (a queue member's phone, not the
//     queue); a channel that is at the same time party B of an extension's own row (the
//     consultation call of an attended transfer) does not connect the customer meanwhile.
//   - transfers: inferred as live when another extension connects after one's leg ended;
//     attended when the first extension's device placed a call of its own in between (the
//     consultation), at the new leg's start; otherwise blind, at the end of the first leg.
//   - started_at, ended_at, answered_at and every leg time are whole seconds (the CDR's
//     resolution, truncated); ring and talk seconds are computed from them.
//   - disposition: answered when an extension talked (outbound: the trunk answered); otherwise
//     from the dispositions of the rows that dialled an extension (inbound, internal) or a
//     trunk (outbound), with the live model's precedence (NO ANSWER, then BUSY, then FAILED and
//     CONGESTION as failed).
//   - line: the row's did column (FreePBX) when it is a number; else, inbound, the dst of the
//     trunk's first row when that row ended in a trunk context (a dialplan that dials from the
//     DID's own extension); else empty. Outbound: FreePBX's outbound_cnum unless it is an
//     extension number.
//   - recording: the first recordingfile (FreePBX), placed by CDROptions.RecordingDir; only
//     for answered calls unless Options.UnansweredRecordings.
//   - flags: recovered_from_cdr always; queue, voicemail and pickup from the rows' lastapp;
//     ivr_abandoned as live. hangup_cause is 0 (no layout has it); originate_id is empty (the
//     CDR does not carry the click-to-call id), so click_to_call is never set.
func FromCDR(opts *Options, c *cdr.Call, co CDROptions) *call.Record {
	if c == nil || len(c.Rows) == 0 {
		return nil
	}
	rows := slices.Clone(c.Rows)
	slices.SortStableFunc(rows, compareRows)
	b := &Builder{opts: *opts}
	g := newCDRGraph(b, rows)
	on := &ongoing{id: c.ID, pbx: co.PBX, created: rows[0].Start, chans: g.order}
	for i := range rows {
		r := &rows[i]
		if on.did == "" && isNumber(r.DID) {
			on.did = r.DID
		}
		switch r.LastApp {
		case "Queue":
			on.flags |= flagQueue
		case "VoiceMail":
			on.flags |= flagVoicemail
		case "Pickup", "PickupChan":
			on.flags |= flagPickup
		}
		if on.cdrRecording == "" && r.RecordingFile != "" {
			on.cdrRecording = recordingPath(co.RecordingDir, r.RecordingFile, r.Start)
		}
	}
	on.rang = g.rang()
	end := rows[0].End
	for i := range rows {
		if rows[i].End.After(end) {
			end = rows[i].End
		}
	}

	d := b.describe(on)
	g.legs(on, d)
	g.transferKinds(on)
	if d.dir == call.Outbound && d.outTrunk != nil {
		if t := g.answeredAt(d.outTrunk); !t.IsZero() {
			switch {
			case t.Before(on.created):
				t = on.created
			case t.After(end):
				t = end
			}
			on.trunkAnswer = t
		}
	}
	rec := b.record(on, end)
	if rec == nil {
		return nil
	}
	rec.Flags = append(rec.Flags, call.FlagRecoveredFromCDR)
	return rec
}

// compareRows orders a call's rows by start, then the sequence column (when the layout has
// it), then the creation counter of party B (two Dials of one ring group start in the same
// second), then uniqueid.
func compareRows(a, b cdr.Row) int {
	if c := a.Start.Compare(b.Start); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Sequence, b.Sequence); c != 0 {
		return c
	}
	if c := cmp.Compare(chanCounter(a.DstChannel), chanCounter(b.DstChannel)); c != 0 {
		return c
	}
	return compareUniqueid(a.UniqueID, b.UniqueID)
}

// chanCounter returns the hexadecimal creation counter Asterisk appends to a channel name
// ("PJSIP/101-0000002a" → 42, "Local/101@phones-0000000c;1" → 12), or -1.
func chanCounter(name string) int64 {
	if n := len(name); n > 2 && name[n-2] == ';' {
		name = name[:n-2]
	}
	i := strings.LastIndexByte(name, '-')
	if i < 0 || i == len(name)-1 || len(name)-i-1 > 15 {
		return -1
	}
	v, err := strconv.ParseInt(name[i+1:], 16, 64)
	if err != nil {
		return -1
	}
	return v
}

// recordingPath places a CDR recordingfile (see CDROptions.RecordingDir).
func recordingPath(dir, file string, start time.Time) string {
	if dir == "" || filepath.IsAbs(file) {
		return file
	}
	if strings.ContainsRune(file, '/') {
		return filepath.Join(dir, file)
	}
	return filepath.Join(dir, start.Format("2006/01/02"), file)
}

// cdrStatus maps a CDR disposition to the DialStatus the live model reads.
func cdrStatus(disposition string) string {
	switch disposition {
	case cdr.DispositionAnswered:
		return "ANSWER"
	case cdr.DispositionBusy:
		return "BUSY"
	case cdr.DispositionFailed:
		return "CHANUNAVAIL"
	case cdr.DispositionCongestion:
		return "CONGESTION"
	}
	return "NOANSWER"
}

// cdrGraph is the topology of a call's rows: its channels (as the live model's channel
// records, so that they are recognised the same way) and the rows between them.
type cdrGraph struct {
	b     *Builder
	rows  []cdr.Row
	order []*channel          // in order of first appearance
	chans map[string]*channel // by name
	index map[*channel]int    // position in order
}

func newCDRGraph(b *Builder, rows []cdr.Row) *cdrGraph {
	g := &cdrGraph{b: b, rows: rows, chans: map[string]*channel{}, index: map[*channel]int{}}
	get := func(name string) *channel {
		ch := g.chans[name]
		if ch == nil {
			ch = &channel{name: name}
			ch.localBase, ch.local = localBase(name)
			g.chans[name] = ch
			g.index[ch] = len(g.order)
			g.order = append(g.order, ch)
		}
		return ch
	}
	partyA := map[*channel]bool{}
	for i := range rows {
		r := &rows[i]
		if r.Channel == "" {
			continue
		}
		a := get(r.Channel)
		if !partyA[a] {
			// Party A: its first row says where it started and who it was.
			partyA[a] = true
			a.id, a.created, a.context, a.exten = r.UniqueID, r.Start, r.DContext, r.Dst
		}
		_, num := cdr.ParseCallerID(r.CLID)
		if num == "" {
			num = r.Src
		}
		if num != "" && a.firstCID == "" {
			a.firstCID, a.cid = num, num
		}
		if r.DstChannel == "" {
			continue
		}
		bch := get(r.DstChannel)
		if bch.created.IsZero() {
			bch.created = r.Start
		}
		bch.dir = dirOutgoing
		if !bch.dialDone || r.Disposition == cdr.DispositionAnswered && bch.dialStatus != "ANSWER" {
			bch.dialString, bch.dialStatus, bch.dialDone = r.LastData, cdrStatus(r.Disposition), true
			// The caller ID presented to the far end (FreePBX's outbound_cnum): the line of
			// an outbound call.
			bch.connAtDial = r.OutboundCNum
		}
	}
	for _, ch := range g.order {
		if ch.dir == dirUnknown {
			ch.dir = dirIncoming // never dialled: it came in, or placed the call
		}
		// Local halves pair up by name.
		if ch.local && ch.localBase != "" && ch.pair == nil {
			for _, sfx := range [2]string{";1", ";2"} {
				if o := g.chans[ch.localBase+sfx]; o != nil && o != ch {
					ch.pair, o.pair = o, ch
				}
			}
		}
	}
	for _, ch := range g.order {
		b.classify(ch)
		if ch.kind == kindTrunk && ch.dir == dirIncoming && !matchAny(b.opts.TrunkContexts, ch.context) {
			// Where the trunk's first row ended is not the number it was called on.
			ch.exten = ""
		}
	}
	return g
}

// answeredAt returns when a dialled channel answered: from the rows of its Local partner (the
// half that ran the dialplan and was answered when the far end picked up), or, without one,
// the first answered row that dialled it (the caller's answer time: for a caller that was
// already up, the start of that row).
func (g *cdrGraph) answeredAt(ch *channel) time.Time {
	var t time.Time
	if p := ch.pair; p != nil {
		for i := range g.rows {
			r := &g.rows[i]
			if r.Channel == p.name && !r.Answer.IsZero() && (t.IsZero() || r.Answer.Before(t)) {
				t = r.Answer
			}
		}
		if !t.IsZero() {
			return t
		}
	}
	for i := range g.rows {
		r := &g.rows[i]
		if r.DstChannel == ch.name && r.Answered() && !r.Answer.IsZero() && (t.IsZero() || r.Answer.Before(t)) {
			t = r.Answer
		}
	}
	return t
}

// rang lists the extensions dialled (extension devices that were a row's dstchannel), in
// order of those rows.
func (g *cdrGraph) rang() []string {
	var out []string
	for i := range g.rows {
		r := &g.rows[i]
		if r.DstChannel == "" {
			continue
		}
		ch := g.chans[r.DstChannel]
		if ch != nil && ch.kind == kindExt && !ch.byCID && !slices.Contains(out, ch.ext) {
			out = append(out, ch.ext)
		}
	}
	return out
}

// edge is an answered row: its two channels are connected during [from, to).
type edge struct {
	a, b     *channel
	from, to time.Time
	// held: intervals during which b was party B of an extension's own row (a consultation
	// call), when this edge does not connect.
	held [][2]time.Time
}

// legs computes the legs and inferred transfers of on by sweeping the row intervals (see
// FromCDR).
func (g *cdrGraph) legs(on *ongoing, d description) {
	var edges []*edge
	for i := range g.rows {
		r := &g.rows[i]
		if r.DstChannel == "" || r.Channel == "" || !r.Answered() || r.Answer.IsZero() {
			continue
		}
		e := &edge{a: g.chans[r.Channel], b: g.chans[r.DstChannel], from: r.Answer, to: r.End}
		if up := g.answeredAt(e.b); up.After(e.from) {
			e.from = up
		}
		if r.Start.After(e.from) { // a row answered before it began: damaged, take its start
			e.from = r.Start
		}
		if !e.to.After(e.from) {
			continue
		}
		for j := range g.rows {
			q := &g.rows[j]
			if j == i || q.DstChannel != r.DstChannel || q.Channel == r.Channel {
				continue
			}
			if qa := g.chans[q.Channel]; qa.kind == kindExt && q.End.After(q.Start) {
				e.held = append(e.held, [2]time.Time{q.Start, q.End})
			}
		}
		edges = append(edges, e)
	}
	var starts []*channel
	self := ""
	switch d.dir {
	case call.Inbound:
		starts = append(starts, d.inTrunk)
	case call.Outbound:
		for _, ch := range g.order {
			if ch.kind == kindTrunk && ch.dir == dirOutgoing {
				starts = append(starts, ch)
			}
		}
	case call.Internal:
		if d.callerExt != nil {
			starts, self = append(starts, d.callerExt), d.callerExt.ext
		}
	}
	if len(starts) == 0 || len(edges) == 0 {
		return
	}
	var cuts []time.Time
	for _, e := range edges {
		cuts = append(cuts, e.from, e.to)
		for _, h := range e.held {
			cuts = append(cuts, h[0], h[1])
		}
	}
	slices.SortFunc(cuts, func(a, b time.Time) int { return a.Compare(b) })
	cuts = slices.CompactFunc(cuts, func(a, b time.Time) bool { return a.Equal(b) })
	adj := map[*channel][]*channel{}
	for _, t := range cuts {
		clear(adj)
		for _, e := range edges {
			if t.Before(e.from) || !t.Before(e.to) || e.heldAt(t) {
				continue
			}
			adj[e.a] = append(adj[e.a], e.b)
			adj[e.b] = append(adj[e.b], e.a)
		}
		// The last cut is the end of the last edge: nobody is connected from then on.
		on.connect(g.reach(starts, self, adj), t)
	}
}

func (e *edge) heldAt(t time.Time) bool {
	for _, h := range e.held {
		if !t.Before(h[0]) && t.Before(h[1]) {
			return true
		}
	}
	return false
}

// reach walks from starts over the edges active now and Local pairs, looking through plumbing
// as the live model does, and returns the extensions it reaches (other than self) in order.
func (g *cdrGraph) reach(starts []*channel, self string, adj map[*channel][]*channel) []string {
	var found []string
	seen := map[*channel]bool{}
	var q []*channel
	for _, s := range starts {
		if s != nil && !seen[s] {
			seen[s] = true
			q = append(q, s)
		}
	}
	visit := func(n *channel) {
		if n == nil || seen[n] {
			return
		}
		seen[n] = true
		switch n.kind {
		case kindExt:
			if n.ext != self && !slices.Contains(found, n.ext) {
				found = append(found, n.ext)
			}
		case kindTrunk:
		default:
			q = append(q, n)
		}
	}
	for i := 0; i < len(q); i++ {
		ch := q[i]
		visit(ch.pair)
		for _, n := range adj[ch] {
			visit(n)
		}
	}
	return found
}

// connect applies the extensions connected to the customer from t on to the legs, as recompute
// does for the live model: legs of extensions no longer connected end, an extension connected
// again with nobody in between resumes its leg, and another extension connecting after a leg
// ended is a transfer (blind, at the end of that leg, until transferKinds says otherwise).
func (c *ongoing) connect(connected []string, t time.Time) {
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
			c.legs[n-1].open = true
			c.legs[n-1].ended = time.Time{}
			continue
		}
		othersOpen, prev := false, -1
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
		if prev >= 0 && !othersOpen {
			c.transfers = append(c.transfers, xfer{
				Transfer: call.Transfer{Kind: "blind", From: c.legs[prev].ext, To: ext, At: c.legs[prev].ended},
				inferred: true, made: t,
			})
		}
	}
}

// transferKinds makes a transfer attended when the transferring extension's device placed a
// call of its own (the consultation) between its leg's start and the new leg's start; the
// transfer then happened when the new leg started (the consultation completed).
func (g *cdrGraph) transferKinds(on *ongoing) {
	for k := range on.transfers {
		x := &on.transfers[k]
		var since time.Time
		for _, l := range on.legs {
			if l.ext == x.From && !l.answered.After(x.At) {
				since = l.answered
			}
		}
		for i := range g.rows {
			r := &g.rows[i]
			if r.DstChannel == "" || r.Start.Before(since) || r.Start.After(x.made) {
				continue
			}
			if a := g.chans[r.Channel]; a != nil && a.kind == kindExt && a.ext == x.From {
				x.Kind, x.At = "attended", x.made
				break
			}
		}
	}
}
