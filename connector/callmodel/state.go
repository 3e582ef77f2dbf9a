package callmodel

import (
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/call"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// kind is what a channel is to the model.
type kind uint8

const (
	kindUnknown  kind = iota // not classified yet
	kindPlumbing             // Local halves, announcers, unknown technologies: looked through
	kindExt                  // an extension's device (or calling identity when byCID)
	kindTrunk                // a trunk channel: the external party
)

// chanDir says whether Asterisk created the channel for an incoming call or dialled it.
type chanDir uint8

const (
	dirUnknown  chanDir = iota
	dirIncoming         // created in state Ring/Up, or ran dialplan on its own
	dirOutgoing         // the destination of a Dial or Originate
)

// channel is the model's view of one Asterisk channel. It stays in Builder.chans after its
// hangup until its call is finished, so that late events (Cdr) still find the call.
type channel struct {
	id       string
	name     string
	call     *ongoing
	created  time.Time
	state    asterisk.ChannelState
	context  string // first dialplan context
	exten    string // first dialplan extension
	cid      string // current CallerIDNum
	firstCID string // first non-empty CallerIDNum (the caller as the PBX first saw it)
	dir      chanDir

	local     bool   // a Local/ channel half
	localBase string // name without ;1/;2
	pair      *channel
	bridge    *bridge

	dialString string // of the Dial that created it
	dialApp    string // a snapshot showed it running Dial with these arguments
	connAtDial string // its ConnectedLineNum when dialled (the caller ID presented)
	dialStatus string // final status of that Dial ("" while in progress)
	dialDone   bool

	kind    kind
	ext     string
	byCID   bool // extension recognised by caller ID (never rings)
	settled bool

	ringing bool // an extension whose Dial is in progress
	dead    bool
	hangup  time.Time
	cause   int

	mark uint32 // traversal generation
	seen uint32 // resync generation
}

// bridge is one Asterisk bridge and its current members.
type bridge struct {
	id      string
	typ     string
	members []*channel
}

func (br *bridge) remove(ch *channel) {
	for i, m := range br.members {
		if m == ch {
			copy(br.members[i:], br.members[i+1:])
			br.members[len(br.members)-1] = nil
			br.members = br.members[:len(br.members)-1]
			return
		}
	}
}

// mergeable reports whether Asterisk propagates linkedids between members of this bridge: basic
// (two-party, Dial/Queue/transfer) and stasis mixing bridges do, conference bridges do not.
func (br *bridge) mergeable() bool {
	switch br.typ {
	case "", "basic", "mixing", "stasis":
		return true
	}
	return false
}

type callState uint8

const (
	callOpen    callState = iota
	callClosing           // every channel is gone; waiting FinishDelay for late events
	callDone
)

// Flags, in the order they are reported.
const (
	flagIVRAbandoned uint16 = 1 << iota
	flagQueue
	flagPickup
	flagVoicemail
	flagClickToCall
	flagFlushed
	flagResynced
)

var flagNames = [...]string{"ivr_abandoned", "queue", "pickup", "voicemail", "click_to_call", "flushed", "resynced"}

// leg is an extension's connection to the customer.
type leg struct {
	ext      string
	answered time.Time
	ended    time.Time
	open     bool
}

// xfer is a recorded transfer; inferred ones (no transfer event seen) may be upgraded by a
// transfer event that arrives just after.
type xfer struct {
	call.Transfer
	inferred bool
	made     time.Time // when the new leg started
}

type pendingXfer struct {
	kind  string
	from  string
	to    string // target from the event when known (blind: the extension dialled)
	at    time.Time
	valid bool
}

// ongoing is one external ongoing: the channels of one Linkedid (plus calls merged into it).
type ongoing struct {
	id        string
	pbx       string
	created   time.Time
	chans     []*channel
	alive     int
	state     callState
	lastEvent time.Time
	endAt     time.Time
	deadline  time.Time // closing: when to finish
	aliases   []string  // ids of calls merged into this one

	rang      []string
	legs      []leg
	transfers []xfer
	pending   pendingXfer

	recording    string // MIXMONITOR_FILENAME
	cdrRecording string // Cdr RecordingFile
	originateID  string
	did          string
	vars         map[string]string // Options.CallVariables the call set
	flags        uint16
	firstCause   int
	trunkAnswer  time.Time // first ANSWER of a dialled trunk
	liveSent     bool      // a live event was emitted for this call
	outCard      string    // outbound: the calling extension announced by ringOutbound
}

func (c *ongoing) hasRang(ext string) bool {
	for _, e := range c.rang {
		if e == ext {
			return true
		}
	}
	return false
}

// olderThan reports whether c started before d (Asterisk keeps the oldest linkedid).
func (c *ongoing) olderThan(d *ongoing) bool {
	if !c.created.Equal(d.created) && !c.created.IsZero() && !d.created.IsZero() {
		return c.created.Before(d.created)
	}
	return compareUniqueid(c.id, d.id) < 0
}

// compareUniqueid orders Asterisk unique ids ("epoch.sequence", optionally "system-epoch.seq")
// numerically, falling back to string order.
func compareUniqueid(a, b string) int {
	as, an, aok := splitUniqueid(a)
	bs, bn, bok := splitUniqueid(b)
	if aok && bok {
		switch {
		case as != bs:
			if as < bs {
				return -1
			}
			return 1
		case an != bn:
			if an < bn {
				return -1
			}
			return 1
		}
		return 0
	}
	return strings.Compare(a, b)
}

func splitUniqueid(s string) (sec, seq uint64, ok bool) {
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		s = s[i+1:]
	}
	dot := strings.IndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return 0, 0, false
	}
	sec, ok1 := parseUint(s[:dot])
	seq, ok2 := parseUint(s[dot+1:])
	return sec, seq, ok1 && ok2
}

func parseUint(s string) (uint64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
