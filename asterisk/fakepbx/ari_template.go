package fakepbx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// An ariScenario is one .ari.jsonl transcript compiled into message templates: the raw JSON of
// each message split into literal bytes and placeholders for what must be fresh in each replay
// (channel ids, channel-name suffixes, bridge ids, timestamps, the subscriber's application
// name, and in the click-to-call template the agent's extension, the customer's number and the
// originate variables). Channel and bridge objects are also compiled on their own, so that
// GET /channels and GET /bridges can show their latest state.
type ariScenario struct {
	name     string
	frames   []ariFrame
	duration time.Duration

	uidOrder []int
	uidEpoch []int64 // original epoch second of each uid, relative to the first message's second
	nChans   int
	nBridges int

	uidIndex    map[string]int
	chanIndex   map[string]int
	bridgeIndex map[string]int
	t0          time.Time // the first message's timestamp
	agent       int       // frame index of the first ChannelCreated (the originated leg), -1
	// linked maps a channel (uid index) to its Linkedid (uid index), -1 when unknown. ARI
	// events do not carry it; the AMI capture of the same calls does.
	linked []int
}

type ariFrame struct {
	at   time.Duration // emission offset from the first message (monotonic)
	typ  string
	tpl  []aseg
	objs []ariObj // channel objects of the message (top-level values)
	// bridge is the message's "bridge" object (its "channels" list is the membership).
	bridge  *ariObj
	create  int // uid index of the channel a ChannelCreated creates, -1
	destroy int // uid index of the channel a ChannelDestroyed destroys, -1
	bcreate int // bridge index of BridgeCreated, -1
	bgone   int // bridge index of BridgeDestroyed, -1
	// origVar: a ChannelVarset of the recorder's own originate id; an originate replay
	// replaces it with one message per requested variable.
	origVar bool
}

// ariObj is a channel (idx = uid index) or bridge (idx = bridge index) object template.
type ariObj struct {
	idx int
	tpl []aseg
}

// aseg is one piece of a JSON template: literal JSON bytes or a placeholder. The placeholder
// kinds of the AMI templates (segUID, segChan, segBridge, segExt, segNum) are reused.
type aseg struct {
	kind segKind
	lit  string
	idx  int
	off  time.Duration  // segTime: offset from the scenario's t0
	zone *time.Location // segTime: the zone the time was written in (Asterisk's local zone)
}

// Placeholder kinds only ARI templates use.
const (
	segTime     segKind = 100 + iota // an ARI timestamp, shifted
	segApp                           // the subscriber's application name
	segVarName                       // originate variable name (lit: as recorded)
	segVarValue                      // originate variable value (lit: as recorded)
)

// ariTimeLayout is how ARI writes times: "2026-11-22T00:03:02.933+0000".
const ariTimeLayout = "2006-01-02T15:04:05.000-0700"

// maxTimeOffset bounds the times that become placeholders.
const maxTimeOffset = 50 * 365 * 24 * time.Hour

var ariTimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}$`)

// compileAllARI compiles every embedded ARI transcript, plus the click-to-call template with the
// extension and number as placeholders.
func compileAllARI() (map[string]*ariScenario, *ariScenario, error) {
	out := make(map[string]*ariScenario)
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.ARI(name)
		if err != nil {
			return nil, nil, fmt.Errorf("fakepbx: reading ARI transcript %s: %w", name, err)
		}
		sc, err := compileARI(name, data, "", "")
		if err != nil {
			return nil, nil, err
		}
		if err := linkFromAMI(sc); err != nil {
			return nil, nil, err
		}
		out[name] = sc
	}
	data, err := transcripts.ARI(originateScenario)
	if err != nil {
		return nil, nil, fmt.Errorf("fakepbx: reading ARI transcript %s: %w", originateScenario, err)
	}
	orig, err := compileARI(originateScenario, data, originateExt, originateNumber)
	if err != nil {
		return nil, nil, err
	}
	if err := linkFromAMI(orig); err != nil {
		return nil, nil, err
	}
	if orig.agent < 0 {
		return nil, nil, fmt.Errorf("fakepbx: ARI transcript %s creates no channel", originateScenario)
	}
	return out, orig, nil
}

func linkFromAMI(sc *ariScenario) error {
	data, err := transcripts.AMI(sc.name)
	if err != nil {
		return fmt.Errorf("fakepbx: reading transcript %s: %w", sc.name, err)
	}
	return sc.linkAMI(data)
}

type ariHead struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Variable  string          `json:"variable"`
	Channel   json.RawMessage `json:"channel"`
	Bridge    json.RawMessage `json:"bridge"`
}

// compileARI turns ARI messages (one JSON object per line) into a scenario. ext and num, when
// set, become placeholders.
func compileARI(name string, data []byte, ext, num string) (*ariScenario, error) {
	var lines [][]byte
	for _, l := range bytes.Split(data, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("fakepbx: %s: no ARI messages", name)
	}
	c := &compiler{uids: map[string]int{}, chans: map[string]int{}, bridges: map[string]int{}, ext: ext, num: num}
	heads := make([]ariHead, len(lines))
	for i, l := range lines {
		var v any
		if err := json.Unmarshal(l, &v); err != nil {
			return nil, fmt.Errorf("fakepbx: %s: line %d: %w", name, i+1, err)
		}
		c.collectJSON(v)
		if err := json.Unmarshal(l, &heads[i]); err != nil {
			return nil, fmt.Errorf("fakepbx: %s: line %d: %w", name, i+1, err)
		}
	}
	t0, err := time.Parse(ariTimeLayout, heads[0].Timestamp)
	if err != nil {
		return nil, fmt.Errorf("fakepbx: %s: first message has no usable timestamp: %w", name, err)
	}
	sc := &ariScenario{
		name: name, nChans: len(c.chans), nBridges: len(c.bridges), agent: -1,
		uidIndex: c.uids, chanIndex: c.chans, bridgeIndex: c.bridges, t0: t0,
	}
	var last time.Duration
	for i, l := range lines {
		h := &heads[i]
		at := last
		if ts, err := time.Parse(ariTimeLayout, h.Timestamp); err == nil {
			at = max(ts.Sub(t0), last)
		}
		last = at
		fr := ariFrame{at: at, typ: h.Type, create: -1, destroy: -1, bcreate: -1, bgone: -1}
		fr.origVar = h.Type == "ChannelVarset" && h.Variable == originateVarName
		fr.tpl = c.compileJSON(l, t0, fr.origVar)
		var top map[string]json.RawMessage
		_ = json.Unmarshal(l, &top) // decoded above
		keys := make([]string, 0, len(top))
		for k := range top {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if id, ok := channelObjectID(top[k]); ok {
				if u, known := c.uids[id]; known {
					fr.objs = append(fr.objs, ariObj{idx: u, tpl: c.compileJSON(top[k], t0, false)})
				}
			}
		}
		if id, ok := objectID(h.Bridge); ok {
			if b, known := c.bridges[id]; known {
				fr.bridge = &ariObj{idx: b, tpl: c.compileJSON(h.Bridge, t0, false)}
			}
		}
		chID, _ := objectID(h.Channel)
		switch h.Type {
		case "ChannelCreated":
			if u, ok := c.uids[chID]; ok {
				fr.create = u
				if sc.agent < 0 {
					sc.agent = i
				}
			}
		case "ChannelDestroyed":
			if u, ok := c.uids[chID]; ok {
				fr.destroy = u
			}
		case "BridgeCreated":
			if fr.bridge != nil {
				fr.bcreate = fr.bridge.idx
			}
		case "BridgeDestroyed":
			if fr.bridge != nil {
				fr.bgone = fr.bridge.idx
			}
		}
		sc.frames = append(sc.frames, fr)
	}
	sc.duration = sc.frames[len(sc.frames)-1].at
	sc.uidOrder, sc.uidEpoch = uidOrdering(c.uidList, t0.Unix())
	sc.linked = make([]int, len(c.uidList))
	for i := range sc.linked {
		sc.linked[i] = -1
	}
	return sc, nil
}

// linkAMI fills sc.linked from the AMI capture of the same calls (Uniqueid → Linkedid).
func (sc *ariScenario) linkAMI(data []byte) error {
	r := ami.NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		return fmt.Errorf("fakepbx: %s: %w", sc.name, err)
	}
	for {
		f, err := r.ReadFrame()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fakepbx: %s: %w", sc.name, err)
		}
		u, okU := sc.uidIndex[f.Get("Uniqueid")]
		l, okL := sc.uidIndex[f.Get("Linkedid")]
		if okU && okL && sc.linked[u] < 0 {
			sc.linked[u] = l
		}
	}
}

// uidOrdering returns the uid indexes sorted by (epoch, sequence) and each uid's epoch relative
// to t0.
func uidOrdering(list []string, t0 int64) ([]int, []int64) {
	type info struct {
		idx        int
		epoch, seq int64
	}
	infos := make([]info, len(list))
	epochs := make([]int64, len(list))
	for i, u := range list {
		e, s, _ := strings.Cut(u, ".")
		ep, _ := strconv.ParseInt(e, 10, 64)
		sq, _ := strconv.ParseInt(s, 10, 64)
		infos[i] = info{idx: i, epoch: ep, seq: sq}
		epochs[i] = ep - t0
	}
	slices.SortFunc(infos, func(a, b info) int {
		if a.epoch != b.epoch {
			return int(a.epoch - b.epoch)
		}
		return int(a.seq - b.seq)
	})
	order := make([]int, len(infos))
	for i, in := range infos {
		order[i] = in.idx
	}
	return order, epochs
}

// channelObjectID returns the id of a JSON channel object (one with id, name and state).
func channelObjectID(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return "", false
	}
	var o struct {
		ID    *string `json:"id"`
		Name  *string `json:"name"`
		State *string `json:"state"`
	}
	if json.Unmarshal(raw, &o) != nil || o.ID == nil || o.Name == nil || o.State == nil {
		return "", false
	}
	return *o.ID, true
}

func objectID(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return "", false
	}
	var o struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &o) != nil || o.ID == "" {
		return "", false
	}
	return o.ID, true
}

// collectJSON records the ids in every string of a decoded JSON value.
func (c *compiler) collectJSON(v any) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys) // first-appearance order must not depend on map order
		for _, k := range keys {
			c.collectJSON(x[k])
		}
	case []any:
		for _, e := range x {
			c.collectJSON(e)
		}
	case string:
		switch {
		case isAsteriskUID(x):
			if _, ok := c.uids[x]; !ok {
				c.uids[x] = len(c.uidList)
				c.uidList = append(c.uidList, x)
			}
		case isUUID(x):
			c.addBridge(x)
		default:
			if sfx, ok := chanSuffix(x); ok {
				if _, seen := c.chans[sfx]; !seen {
					c.chans[sfx] = len(c.chans)
				}
			}
		}
	}
}

// isAsteriskUID reports whether s is a Uniqueid such as "1795305782.12" (epoch seconds, a dot,
// a sequence number).
func isAsteriskUID(s string) bool {
	e, _, ok := strings.Cut(s, ".")
	return ok && len(e) >= 9 && isUID(s)
}

// compileJSON compiles the raw bytes of one JSON value into a template. Object keys stay
// literal; each string value is scanned for ids (compiler.scan), recognised as a timestamp, or
// (by its key) as the application name or an originate variable.
func (c *compiler) compileJSON(raw []byte, t0 time.Time, origVar bool) []aseg {
	var segs []aseg
	lit := 0
	flush := func(end int) {
		if end > lit {
			segs = append(segs, aseg{kind: segLit, lit: string(raw[lit:end])})
		}
	}
	place := func(start, end int, s aseg) { // replace raw[start:end] (a string's content)
		flush(start)
		segs = append(segs, s)
		lit = end
	}
	lastKey := ""
	for i := 0; i < len(raw); i++ {
		if raw[i] != '"' {
			continue
		}
		j := i + 1
		escaped := false
		for j < len(raw) && raw[j] != '"' {
			if raw[j] == '\\' {
				escaped = true
				j++
			}
			j++
		}
		if j >= len(raw) {
			break // unterminated: keep the rest literal
		}
		content := string(raw[i+1 : j])
		k := j + 1
		for k < len(raw) && (raw[k] == ' ' || raw[k] == '\t' || raw[k] == '\n' || raw[k] == '\r') {
			k++
		}
		if k < len(raw) && raw[k] == ':' {
			lastKey = content
			i = j
			continue
		}
		switch {
		case escaped:
			// Kept as recorded (the transcripts have none; ids never need escaping).
		case lastKey == "application":
			place(i+1, j, aseg{kind: segApp})
		case origVar && lastKey == "variable" && content == originateVarName:
			place(i+1, j, aseg{kind: segVarName, lit: content})
		case origVar && lastKey == "value":
			place(i+1, j, aseg{kind: segVarValue, lit: content})
		case ariTimeRE.MatchString(content):
			// A time far from the first message's (a date, not an event time) stays literal:
			// offsets beyond a few decades would not survive time.Duration arithmetic.
			if t, err := time.Parse(ariTimeLayout, content); err == nil && t.Sub(t0).Abs() < maxTimeOffset {
				zone := time.UTC
				if _, off := t.Zone(); off != 0 {
					zone = time.FixedZone("", off)
				}
				place(i+1, j, aseg{kind: segTime, off: t.Sub(t0), zone: zone})
			}
		default:
			sub := c.scan(content)
			if len(sub) == 1 && sub[0].kind == segLit || len(sub) == 0 {
				break
			}
			flush(i + 1)
			for _, s := range sub {
				segs = append(segs, aseg{kind: s.kind, lit: s.lit, idx: s.idx})
			}
			lit = j
		}
		i = j
	}
	flush(len(raw))
	return mergeLits(segs)
}

// mergeLits joins adjacent literal segments.
func mergeLits(segs []aseg) []aseg {
	out := segs[:0]
	for _, s := range segs {
		if n := len(out); n > 0 && s.kind == segLit && out[n-1].kind == segLit {
			out[n-1].lit += s.lit
			continue
		}
		out = append(out, s)
	}
	return out
}

// appendJSONContent appends s as the content of a JSON string (without the quotes).
func appendJSONContent(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\':
				dst = append(dst, '\\', b)
			case b < 0x20:
				dst = append(dst, fmt.Sprintf(`\u%04x`, b)...)
			default:
				dst = append(dst, b)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}
