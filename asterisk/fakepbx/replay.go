package fakepbx

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
)

// Call is one replay of a scenario in progress.
type Call struct {
	Scenario string
	in       *instance
}

// Done is closed when the replay has emitted its last event (or was stopped).
func (c *Call) Done() <-chan struct{} { return c.in.done }

// MapID returns the fresh id this replay uses for an id of the original transcript (a
// Uniqueid/Linkedid such as "1795305929.121", or a channel suffix such as "00000020"), or ""
// when the transcript has no such id. Tests use it to find a transcript's calls in the replay.
func (c *Call) MapID(orig string) string {
	if k, ok := c.in.sc.uidIndex[orig]; ok {
		return c.in.uids[k]
	}
	if k, ok := c.in.sc.chanIndex[orig]; ok {
		return c.in.chans[k]
	}
	return ""
}

// Position is how far the replay has got, in the transcript's own time (from its first event):
// every frame of the transcript before Position has been sent. It stands still during Pause.
func (c *Call) Position() time.Duration {
	in := c.in
	n := int(in.pos.Load())
	if n >= len(in.sc.frames) {
		return in.sc.duration
	}
	next := in.sc.frames[n].at
	if math.IsInf(in.speed, 1) {
		return next
	}
	ps := in.srv.pause.Load()
	now := time.Now()
	if ps.gate != nil {
		now = ps.at
	}
	elapsed := now.Sub(in.start) - (ps.total - in.pauseBase)
	return min(time.Duration(float64(elapsed)*in.speed), next)
}

// Start is the wall-clock time of the replay's first event.
func (c *Call) Start() time.Time { return c.in.start }

// Customers returns the customers' numbers of this replay in E.164, in the order their
// transcript's numbers first appear (Config.Customers may have replaced them; nil when the
// transcript has none).
func (c *Call) Customers() []string {
	out := slices.Clone(c.in.sc.customers)
	for i := range out {
		if r := c.in.customer(i); r != "" {
			out[i] = r
		}
	}
	return out
}

// instance is one replay: a scenario with its fresh ids and time base.
type instance struct {
	srv   *Server
	sc    *scenario
	start time.Time
	speed float64 // > 0; +Inf replays without delays
	freshIDs
	ext, num string
	cust     []string    // the customers' numbers in E.164 by segCust index (nil: the transcript's)
	actionID string      // OriginateResponse ActionID of an Originate replay
	vars     []ami.Field // Originate variables replacing the recorder's originate id
	pos      atomic.Int32
	done     chan struct{}
	call     *Call // the handle Play returns
	// pauseBase is the server's total pause time when the replay started: pauses after that
	// shift the replay's timeline (see Server.Pause).
	pauseBase time.Duration
}

func (s *Server) newInstance(sc *scenario, start time.Time) *instance {
	in := &instance{
		srv:   s,
		sc:    sc,
		start: start,
		speed: s.speed,
		done:  make(chan struct{}),
	}
	in.pauseBase = s.pause.Load().total
	in.call = &Call{Scenario: sc.name, in: in}
	in.freshIDs = s.newIDs(sc.uidOrder, sc.uidEpoch, sc.nChans, sc.nBridges,
		func(d time.Duration) int64 { return start.Add(in.scale(d)).Unix() })
	return in
}

// base is the wall-clock time of the replay's first event, shifted by the pauses since it started.
func (in *instance) base() time.Time {
	return in.start.Add(in.srv.pause.Load().total - in.pauseBase)
}

// scale converts a duration of the original recording into replay time.
func (in *instance) scale(d time.Duration) time.Duration {
	if math.IsInf(in.speed, 1) {
		return 0
	}
	return time.Duration(float64(d) / in.speed)
}

// run emits the scenario's frames at their (scaled) times.
func (in *instance) run(ctx context.Context) {
	s := in.srv
	var buf []byte
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for i := 0; i < len(in.sc.frames); {
		fr := &in.sc.frames[i]
		if s.excluded[fr.event] {
			i++
			continue
		}
		ps := s.pause.Load()
		if ps.gate != nil { // paused: time stands still for the calls
			select {
			case <-ps.gate:
				continue
			case <-ctx.Done():
				return
			}
		}
		due := in.start.Add(ps.total - in.pauseBase).Add(in.scale(fr.at))
		if wait := time.Until(due); wait > 200*time.Microsecond {
			timer.Reset(wait)
			select {
			case <-timer.C:
				continue // check for a pause that began meanwhile
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		ts := due
		if math.IsInf(in.speed, 1) {
			ts = time.Now()
		}
		buf = buf[:0]
		if fr.origVar && in.vars != nil {
			for _, v := range in.vars {
				buf = in.render(buf, fr, ts, v.Key, v.Value)
			}
		} else {
			buf = in.render(buf, fr, ts, "", "")
		}
		if s.cfg.Mutate != nil {
			buf = s.cfg.Mutate(buf)
		}
		ok, clients, at := s.emitCall(in, int32(i+1), buf, fr.classes)
		if !ok {
			continue // a pause began since the check: wait for Resume and render it again
		}
		if s.cfg.OnEvent != nil {
			s.cfg.OnEvent(in.emitted(i, clients, at))
		}
		i++
	}
}

// emitted describes frame i for Config.OnEvent.
func (in *instance) emitted(i, clients int, at time.Time) EmittedEvent {
	ev := EmittedEvent{Call: in.call, Event: in.sc.frames[i].event, At: at, Clients: clients,
		Linkedid: in.fieldValue(i, "Linkedid"), Uniqueid: in.fieldValue(i, "Uniqueid"), Channel: in.fieldValue(i, "Channel")}
	if strings.HasPrefix(ev.Event, "Dial") {
		ev.DestChannel = in.fieldValue(i, "DestChannel")
	}
	return ev
}

// render appends frame fr in wire format. varName/varValue, when set, replace the Variable and
// Value headers (Originate variables).
func (in *instance) render(dst []byte, fr *tframe, ts time.Time, varName, varValue string) []byte {
	noTS := in.srv.cfg.NoTimestamps
	for i := range fr.fields {
		f := &fr.fields[i]
		if f.kind == fkTimestamp && noTS {
			continue
		}
		dst = append(dst, f.key...)
		dst = append(dst, ": "...)
		switch {
		case varName != "" && f.key == "Variable":
			dst = append(dst, varName...)
		case varName != "" && f.key == "Value":
			dst = append(dst, varValue...)
		default:
			dst = in.appendValue(dst, f, ts)
		}
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

func (in *instance) appendValue(dst []byte, f *tfield, ts time.Time) []byte {
	switch f.kind {
	case fkTimestamp:
		return appendTimestamp(dst, ts)
	case fkClockTime:
		t := in.base().Add(in.scale(f.segs[0].off)).UTC()
		return t.AppendFormat(dst, clockLayout)
	case fkSeconds:
		n, _ := strconv.Atoi(f.segs[0].lit)
		return strconv.AppendInt(dst, int64(math.Round(float64(in.scale(time.Duration(n)*time.Second))/float64(time.Second))), 10)
	case fkActionID:
		if in.actionID != "" {
			return append(dst, in.actionID...)
		}
	}
	for _, sg := range f.segs {
		var ok bool
		if dst, ok = in.appendID(dst, sg.kind, sg.idx); ok {
			continue
		}
		switch sg.kind {
		case segLit:
			dst = append(dst, sg.lit...)
		case segExt:
			dst = append(dst, in.ext...)
		case segNum:
			dst = append(dst, in.num...)
		case segCust:
			dst = appendCustomer(dst, sg.lit, in.customer(sg.idx))
		}
	}
	return dst
}

// customer returns the number that replaces the transcript's customer k ("": none).
func (in *instance) customer(k int) string {
	if k < len(in.cust) {
		return in.cust[k]
	}
	return ""
}

// appendCustomer appends repl (E.164, "" keeps the original) in the format the transcript wrote
// orig in: +79001234567, 79001234567, or 89001234567 (the national trunk prefix, for a +7
// number; other countries lose only their "+").
func appendCustomer(dst []byte, orig, repl string) []byte {
	switch {
	case repl == "":
		return append(dst, orig...)
	case orig[0] == '+':
		return append(dst, repl...)
	case orig[0] == '8' && strings.HasPrefix(repl, "+7"):
		return append(append(dst, '8'), repl[2:]...)
	}
	return append(dst, repl[1:]...)
}

// customersFor asks Config.Customers for the customers of one replay of sc and checks the
// answer; nil keeps the transcript's.
func (s *Server) customersFor(sc *scenario) ([]string, error) {
	if s.cfg.Customers == nil || len(sc.customers) == 0 {
		return nil, nil
	}
	repl := s.cfg.Customers(sc.name, slices.Clone(sc.customers))
	if len(repl) > len(sc.customers) {
		repl = repl[:len(sc.customers)]
	}
	for i, r := range repl {
		if r != "" && !validE164(r) {
			return nil, fmt.Errorf("fakepbx: %s: Customers: the number for %s is %q, want E.164 (+ and 7 to 15 digits)",
				sc.name, sc.customers[i], r)
		}
	}
	return repl, nil
}

// validE164 reports whether n is "+" followed by 7 to 15 digits.
func validE164(n string) bool {
	return len(n) >= 8 && len(n) <= 16 && n[0] == '+' && allDigits(n[1:])
}

// fieldValue renders one header of frame i ("" when the frame has no such header); the key is
// matched case-insensitively (CEL spells it LinkedID).
func (in *instance) fieldValue(i int, key string) string {
	fr := &in.sc.frames[i]
	for k := range fr.fields {
		if strings.EqualFold(fr.fields[k].key, key) {
			return string(in.appendValue(nil, &fr.fields[k], in.base().Add(in.scale(fr.at))))
		}
	}
	return ""
}

func appendTimestamp(dst []byte, t time.Time) []byte {
	dst = strconv.AppendInt(dst, t.Unix(), 10)
	dst = append(dst, '.')
	us := t.Nanosecond() / 1000
	for d := 100000; d > 0; d /= 10 {
		dst = append(dst, byte('0'+us/d%10))
	}
	return dst
}

// liveChannel is one channel of a replay that exists after the frames emitted so far.
type liveChannel struct {
	uid     int
	order   int // creation order
	last    int // the last frame that described it
	exten   int // its last Newexten frame, -1 when none
	bridge  int // the BridgeEnter frame of the bridge it is in, -1 when none
	created time.Duration
}

// channels returns the channels that exist after the first pos frames, in creation order.
func (in *instance) channels(pos int) []liveChannel {
	live := map[int]*liveChannel{}
	n := 0
	for i := 0; i < pos; i++ {
		fr := &in.sc.frames[i]
		if fr.chanUID < 0 {
			continue
		}
		lc := live[fr.chanUID]
		switch fr.event {
		case "Newchannel":
			lc = &liveChannel{uid: fr.chanUID, order: n, exten: -1, bridge: -1, created: fr.at}
			n++
			live[fr.chanUID] = lc
		case "Hangup":
			delete(live, fr.chanUID)
			continue
		}
		if lc == nil {
			continue
		}
		lc.last = i
		switch fr.event {
		case "Newexten":
			lc.exten = i
		case "BridgeEnter":
			lc.bridge = i
		case "BridgeLeave":
			lc.bridge = -1
		}
	}
	out := make([]liveChannel, 0, len(live))
	for _, lc := range live {
		out = append(out, *lc)
	}
	// creation order
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].order < out[j-1].order; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// coreShowChannel appends the CoreShowChannel event of one live channel.
func (in *instance) coreShowChannel(dst []byte, lc liveChannel, actionID string, now time.Time) []byte {
	dst = append(dst, "Event: CoreShowChannel\r\n"...)
	if actionID != "" {
		dst = append(dst, "ActionID: "...)
		dst = append(dst, actionID...)
		dst = append(dst, "\r\n"...)
	}
	for _, k := range [...]string{"Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum",
		"CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode",
		"Context", "Exten", "Priority", "Uniqueid", "Linkedid"} {
		dst = appendHeader(dst, k, in.fieldValue(lc.last, k))
	}
	var bridge, app, data string
	if lc.bridge >= 0 {
		bridge = in.fieldValue(lc.bridge, "BridgeUniqueid")
	}
	if lc.exten >= 0 {
		app = in.fieldValue(lc.exten, "Application")
		data = in.fieldValue(lc.exten, "AppData")
	}
	dst = appendHeader(dst, "BridgeId", bridge)
	dst = appendHeader(dst, "Application", app)
	dst = appendHeader(dst, "ApplicationData", data)
	age := now.Sub(in.base().Add(in.scale(lc.created)))
	if age < 0 {
		age = 0
	}
	sec := int(age / time.Second)
	dst = appendHeader(dst, "Duration", fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60))
	return append(dst, "\r\n"...)
}

func appendHeader(dst []byte, k, v string) []byte {
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	dst = append(dst, v...)
	return append(dst, "\r\n"...)
}
