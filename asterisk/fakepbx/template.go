package fakepbx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// A scenario is one transcript compiled into frame templates. Every value is split into literal
// text and placeholders for the ids that must be fresh in each replay: Uniqueids/Linkedids (also
// inside recording file names and CEL JSON), the 8-hex-digit suffixes of channel names
// (Local/101@phones-0000001d;1, PJSIP/101-00000002), bridge UUIDs, the customers' numbers (a
// replay may give its call other customers: Config.Customers), and — in the click-to-call
// template — the agent's extension and the customer's number.
type scenario struct {
	name     string
	frames   []tframe
	duration time.Duration // from the first to the last replayed frame

	uidOrder   []int   // uid indexes sorted by (epoch, sequence): Linkedid = oldest stays oldest
	uidEpoch   []int64 // original epoch second of each uid, relative to the first frame's second
	nChans     int     // channel-name suffixes, in order of first appearance
	nBridges   int
	origIdx    int // index of the OriginateResponse frame, -1 when none
	hasOrigVar bool
	// customers are the transcript's customer numbers in E.164 (+79001234567), in order of
	// first appearance: segCust placeholders index it.
	customers []string

	uidIndex  map[string]int // original uid → index
	chanIndex map[string]int // original channel suffix → index
}

// tframe is one event frame of a scenario.
type tframe struct {
	at      time.Duration // offset from the scenario's first frame
	event   string
	classes uint32 // event classes of its Privilege header (for the session's event mask)
	fields  []tfield
	// origVar: a VarSet of the recorder's own originate id; an Originate replay replaces it
	// with one VarSet per requested variable.
	origVar bool
	// effect on the PBX's channel table (for CoreShowChannels)
	chanUID int // uid index of the frame's own channel, -1 when none
}

// tfield is one header of a frame template.
type tfield struct {
	key  string
	kind fieldKind
	segs []seg
}

type fieldKind uint8

const (
	fkValue     fieldKind = iota // render segs
	fkTimestamp                  // the emission time, seconds.micros
	fkClockTime                  // an absolute "2006-01-02 15:04:05" time (CEL EventTime, Cdr times), shifted
	fkSeconds                    // Cdr Duration/BillableSeconds: scaled by the replay speed
	fkActionID                   // OriginateResponse ActionID: the requesting client's
)

type seg struct {
	kind segKind
	lit  string
	idx  int
	// for fkClockTime: the original time as an offset from the first frame
	off time.Duration
}

type segKind uint8

const (
	segLit segKind = iota
	segUID
	segChan
	segBridge
	segExt
	segNum
	// segCust is a customer's number (lit: as the transcript wrote it, idx: into
	// scenario.customers).
	segCust
)

// Values of the click_to_call transcript that an Originate replay replaces (see its .meta.json:
// the CRM originate rings 101, then dials 89001234567).
const (
	originateScenario = "click_to_call"
	originateExt      = "101"
	originateNumber   = "89001234567"
	originateVarName  = "__CRM_ORIGINATE_ID"
)

// sessionEvents are events that belong to the recorder's AMI session, not to the calls.
var sessionEvents = map[string]bool{"FullyBooted": true, "SuccessfulAuth": true, "ChallengeSent": true}

// compileAll compiles every embedded transcript, plus the click-to-call template with the
// extension and number as placeholders.
func compileAll() (map[string]*scenario, *scenario, error) {
	out := make(map[string]*scenario)
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.AMI(name)
		if err != nil {
			return nil, nil, fmt.Errorf("fakepbx: reading transcript %s: %w", name, err)
		}
		sc, err := compile(name, data, "", "")
		if err != nil {
			return nil, nil, err
		}
		out[name] = sc
	}
	data, err := transcripts.AMI(originateScenario)
	if err != nil {
		return nil, nil, fmt.Errorf("fakepbx: reading transcript %s: %w", originateScenario, err)
	}
	orig, err := compile(originateScenario, data, originateExt, originateNumber)
	if err != nil {
		return nil, nil, err
	}
	if orig.origIdx < 0 {
		return nil, nil, fmt.Errorf("fakepbx: transcript %s has no OriginateResponse", originateScenario)
	}
	return out, orig, nil
}

// compile turns an AMI capture into a scenario. ext and num, when set, become placeholders.
func compile(name string, data []byte, ext, num string) (*scenario, error) {
	r := ami.NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		return nil, fmt.Errorf("fakepbx: %s: %w", name, err)
	}
	var frames []*ami.Frame
	for {
		f, err := r.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("fakepbx: %s: frame %d: %w", name, len(frames), err)
		}
		ev := f.Event()
		if ev == "" || sessionEvents[ev] {
			continue
		}
		frames = append(frames, f)
	}
	if len(frames) == 0 {
		return nil, fmt.Errorf("fakepbx: %s: no events", name)
	}
	c := &compiler{
		uids:      map[string]int{},
		chans:     map[string]int{},
		bridges:   map[string]int{},
		ext:       ext,
		num:       num,
		customers: map[string]int{},
	}
	// First pass: collect the ids, in order of first appearance.
	for _, f := range frames {
		for _, fl := range f.Fields {
			c.collect(fl.Key, fl.Value)
		}
	}
	t0, ok := frameTime(frames[0])
	if !ok {
		return nil, fmt.Errorf("fakepbx: %s: first event has no Timestamp", name)
	}
	sc := &scenario{
		name: name, nChans: len(c.chans), nBridges: len(c.bridges), origIdx: -1,
		uidIndex: c.uids, chanIndex: c.chans,
	}
	last := t0
	for i, f := range frames {
		ts, ok := frameTime(f)
		if !ok {
			ts = last // a frame without Timestamp is emitted with the one before it
		}
		if ts < last {
			ts = last
		}
		last = ts
		tf := tframe{
			at:      time.Duration((ts - t0) * float64(time.Second)),
			event:   f.Event(),
			classes: privilegeClasses(f.Get("Privilege")),
			chanUID: -1,
		}
		// Standard channel events (with a channel snapshot: ChannelState) describe their own
		// channel; CEL, Cdr and Dest-only events do not update the channel table.
		if _, std := f.Lookup("ChannelState"); std && f.Get("Channel") != "" {
			if u, ok := c.uids[f.Get("Uniqueid")]; ok {
				tf.chanUID = u
			}
		}
		if tf.event == "OriginateResponse" && sc.origIdx < 0 {
			sc.origIdx = i
		}
		if tf.event == "VarSet" && f.Get("Variable") == originateVarName {
			tf.origVar = true
			sc.hasOrigVar = true
		}
		for _, fl := range f.Fields {
			tf.fields = append(tf.fields, c.field(tf.event, fl, t0))
		}
		sc.frames = append(sc.frames, tf)
	}
	sc.duration = sc.frames[len(sc.frames)-1].at
	sc.customers = c.custList
	// uid order and epochs
	type uidInfo struct {
		idx        int
		epoch, seq int64
	}
	infos := make([]uidInfo, len(c.uidList))
	for i, u := range c.uidList {
		e, s, _ := strings.Cut(u, ".")
		ep, _ := strconv.ParseInt(e, 10, 64)
		sq, _ := strconv.ParseInt(s, 10, 64)
		infos[i] = uidInfo{idx: i, epoch: ep, seq: sq}
	}
	sc.uidEpoch = make([]int64, len(infos))
	for i, in := range infos {
		sc.uidEpoch[i] = in.epoch - int64(t0)
	}
	slices.SortFunc(infos, func(a, b uidInfo) int {
		if a.epoch != b.epoch {
			return int(a.epoch - b.epoch)
		}
		return int(a.seq - b.seq)
	})
	for _, in := range infos {
		sc.uidOrder = append(sc.uidOrder, in.idx)
	}
	return sc, nil
}

// frameTime returns the Timestamp header in seconds.
func frameTime(f *ami.Frame) (float64, bool) {
	ts := f.Get("Timestamp")
	if ts == "" {
		return 0, false
	}
	v, err := strconv.ParseFloat(ts, 64)
	return v, err == nil
}

type compiler struct {
	uids, chans, bridges map[string]int
	uidList              []string
	ext, num             string
	// customers (nil: not recognised, as in ARI templates) maps a customer's number in E.164
	// to its index in custList.
	customers map[string]int
	custList  []string
}

// customerNumber reports whether a digit token is a customer's number in the transcripts: a
// Russian mobile number written 79XXXXXXXXX (after a "+" or not) or 89XXXXXXXXX. The office's
// own numbers are Moscow numbers (+7495…) and extensions, so they never match (see
// asterisk/transcripts/README.md, "The simulated office").
func customerNumber(tok string) bool {
	return len(tok) == 11 && (tok[0] == '7' || tok[0] == '8') && tok[1] == '9'
}

// customer returns the index of a customer's number given in E.164, adding it when new.
func (c *compiler) customer(e164 string) int {
	k, ok := c.customers[e164]
	if !ok {
		k = len(c.custList)
		c.customers[e164] = k
		c.custList = append(c.custList, e164)
	}
	return k
}

// collect records the ids a header defines.
func (c *compiler) collect(key, value string) {
	lk := strings.ToLower(key)
	switch {
	case strings.HasSuffix(lk, "uniqueid") || strings.HasSuffix(lk, "linkedid"):
		if isUID(value) {
			if _, ok := c.uids[value]; !ok {
				c.uids[value] = len(c.uidList)
				c.uidList = append(c.uidList, value)
			}
		} else if isUUID(value) && strings.Contains(lk, "bridge") {
			c.addBridge(value)
		}
	case strings.HasSuffix(lk, "channel") || lk == "peer":
		if sfx, ok := chanSuffix(value); ok {
			if _, seen := c.chans[sfx]; !seen {
				c.chans[sfx] = len(c.chans)
			}
		}
	case strings.HasSuffix(lk, "bridgeid"):
		if isUUID(value) {
			c.addBridge(value)
		}
	}
}

func (c *compiler) addBridge(v string) {
	if _, ok := c.bridges[v]; !ok {
		c.bridges[v] = len(c.bridges)
	}
}

// field compiles one header.
func (c *compiler) field(event string, fl ami.Field, t0 float64) tfield {
	tf := tfield{key: fl.Key}
	switch {
	case fl.Key == "Timestamp":
		tf.kind = fkTimestamp
		return tf
	case event == "OriginateResponse" && fl.Key == "ActionID":
		tf.kind = fkActionID
		tf.segs = []seg{{kind: segLit, lit: fl.Value}}
		return tf
	case (event == "CEL" && fl.Key == "EventTime") ||
		(event == "Cdr" && (fl.Key == "StartTime" || fl.Key == "AnswerTime" || fl.Key == "EndTime")):
		if t, err := time.ParseInLocation(clockLayout, fl.Value, time.UTC); err == nil {
			tf.kind = fkClockTime
			off := time.Duration((float64(t.Unix()) - t0) * float64(time.Second))
			tf.segs = []seg{{kind: segLit, lit: fl.Value, off: off}}
			return tf
		}
	case event == "Cdr" && (fl.Key == "Duration" || fl.Key == "BillableSeconds"):
		if _, err := strconv.Atoi(fl.Value); err == nil {
			tf.kind = fkSeconds
			tf.segs = []seg{{kind: segLit, lit: fl.Value}}
			return tf
		}
	}
	tf.segs = c.scan(fl.Value)
	return tf
}

const clockLayout = "2006-01-02 15:04:05"

// scan splits a value into literal text and id placeholders.
func (c *compiler) scan(v string) []seg {
	var segs []seg
	lit := 0 // start of pending literal text
	flush := func(end int) {
		if end > lit {
			segs = append(segs, seg{kind: segLit, lit: v[lit:end]})
		}
	}
	for i := 0; i < len(v); {
		ch := v[i]
		prevOK := i == 0 || !isAlnum(v[i-1])
		// bridge UUID
		if prevOK && isHex(ch) && i+36 <= len(v) && isUUID(v[i:i+36]) && (i+36 == len(v) || !isAlnum(v[i+36])) {
			if k, ok := c.bridges[v[i:i+36]]; ok {
				flush(i)
				segs = append(segs, seg{kind: segBridge, idx: k})
				i += 36
				lit = i
				continue
			}
		}
		// channel-name suffix "-xxxxxxxx"
		if ch == '-' && i+9 <= len(v) && allHex(v[i+1:i+9]) && (i+9 == len(v) || !isAlnum(v[i+9])) {
			if k, ok := c.chans[v[i+1:i+9]]; ok {
				flush(i + 1)
				segs = append(segs, seg{kind: segChan, idx: k})
				i += 9
				lit = i
				continue
			}
		}
		// digit tokens: uids (epoch.seq), the extension, the number
		if isDigit(ch) && (i == 0 || (!isAlnum(v[i-1]) && v[i-1] != '.')) {
			j := i
			for j < len(v) && isDigit(v[j]) {
				j++
			}
			if j+1 < len(v) && v[j] == '.' && isDigit(v[j+1]) {
				end := j + 1
				for end < len(v) && isDigit(v[end]) {
					end++
				}
				if k, ok := c.uids[v[i:end]]; ok && (end == len(v) || !isAlnum(v[end])) {
					flush(i)
					segs = append(segs, seg{kind: segUID, idx: k})
					lit = end
				}
				i = end
				continue
			}
			if j == len(v) || !isAlnum(v[j]) {
				tok := v[i:j]
				switch {
				case c.ext != "" && tok == c.ext:
					flush(i)
					segs = append(segs, seg{kind: segExt})
					lit = j
				case c.num != "" && tok == c.num:
					flush(i)
					segs = append(segs, seg{kind: segNum})
					lit = j
				case c.customers != nil && customerNumber(tok):
					start := i
					if tok[0] == '7' && i > lit && v[i-1] == '+' {
						start = i - 1
					}
					flush(start)
					segs = append(segs, seg{kind: segCust, lit: v[start:j], idx: c.customer("+7" + tok[1:])})
					lit = j
				}
			}
			i = j
			continue
		}
		i++
	}
	flush(len(v))
	return segs
}

// chanSuffix returns the 8-hex-digit sequence of a channel name ("Local/101@phones-0000001d;1",
// "PJSIP/101-00000002").
func chanSuffix(name string) (string, bool) {
	if i := strings.LastIndexByte(name, ';'); i >= 0 {
		name = name[:i]
	}
	if len(name) < 10 || name[len(name)-9] != '-' {
		return "", false
	}
	s := name[len(name)-8:]
	return s, allHex(s)
}

func isUID(s string) bool {
	e, q, ok := strings.Cut(s, ".")
	return ok && e != "" && q != "" && allDigits(e) && allDigits(q)
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return len(s) > 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool   { return isDigit(c) || (c >= 'a' && c <= 'f') }
func isAlnum(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// Event classes of Privilege headers and Login/Events masks (Asterisk's EVENT_FLAG_* names).
var classBits = map[string]uint32{
	"system": 1 << 0, "call": 1 << 1, "log": 1 << 2, "verbose": 1 << 3, "command": 1 << 4,
	"agent": 1 << 5, "user": 1 << 6, "config": 1 << 7, "dtmf": 1 << 8, "reporting": 1 << 9,
	"cdr": 1 << 10, "dialplan": 1 << 11, "originate": 1 << 12, "agi": 1 << 13, "cc": 1 << 14,
	"aoc": 1 << 15, "test": 1 << 16, "security": 1 << 17, "message": 1 << 18,
}

const allClasses = ^uint32(0)

// privilegeClasses returns the classes of a Privilege header such as "call,all" ("all" alone
// is not a class: an event is in the classes it names).
func privilegeClasses(p string) uint32 {
	var m uint32
	for _, c := range strings.Split(p, ",") {
		m |= classBits[strings.ToLower(strings.TrimSpace(c))]
	}
	if m == 0 {
		return allClasses
	}
	return m
}

// eventMask parses a Login "Events" / Events "EventMask" value.
func eventMask(v string) uint32 {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "on", "yes", "true", "all":
		return allClasses
	case "off", "no", "false", "none":
		return 0
	}
	var m uint32
	for _, c := range strings.Split(v, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if c == "all" || c == "on" {
			return allClasses
		}
		m |= classBits[c]
	}
	return m
}
