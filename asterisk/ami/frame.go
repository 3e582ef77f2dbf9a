package ami

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Limits of the frame reader. A line longer than MaxLineSize (including its line ending) or a
// frame larger than MaxFrameSize (counting every line plus two bytes for its line ending) is
// skipped and reported with ErrFrameTooLarge; the reader stays in sync and continues with the
// next frame. The reader never holds more than MaxFrameSize bytes of frame data plus its
// MaxLineSize read buffer.
const (
	MaxLineSize  = 64 << 10
	MaxFrameSize = 64 << 10
)

// ErrFrameTooLarge reports that a frame exceeded MaxFrameSize (or one of its lines exceeded
// MaxLineSize) and was dropped. The stream continues: call ReadFrame again.
var ErrFrameTooLarge = errors.New("ami: frame too large, dropped")

// errLineTooLong is internal: an over-long line was consumed and its frame must be skipped.
var errLineTooLong = errors.New("ami: line too long")

// Field is one "Key: Value" header line of a frame.
type Field struct {
	Key   string
	Value string
}

// Frame is one AMI message: its header lines in wire order, plus the body lines of a command
// response (Asterisk ≥ 14 "Output:" headers or a legacy "Response: Follows … --END COMMAND--"
// body). A value that continued over several lines (a raw line without "Key:" following a
// header) is joined with "\n".
//
// The strings of one frame share a single backing allocation, so retaining any of them retains
// at most MaxFrameSize bytes.
type Frame struct {
	Fields []Field
	Output []string
}

// Get returns the value of the first field named key (exact case first, then case-insensitive,
// because Asterisk spells some keys differently between events, e.g. CallerIDNum/CallerIDnum).
func (f *Frame) Get(key string) string {
	for i := range f.Fields {
		if f.Fields[i].Key == key {
			return f.Fields[i].Value
		}
	}
	for i := range f.Fields {
		if strings.EqualFold(f.Fields[i].Key, key) {
			return f.Fields[i].Value
		}
	}
	return ""
}

// Lookup is Get that also reports whether the key is present (case-insensitive).
func (f *Frame) Lookup(key string) (string, bool) {
	for i := range f.Fields {
		if f.Fields[i].Key == key {
			return f.Fields[i].Value, true
		}
	}
	for i := range f.Fields {
		if strings.EqualFold(f.Fields[i].Key, key) {
			return f.Fields[i].Value, true
		}
	}
	return "", false
}

// Event returns the frame's "Event" header ("" for responses).
func (f *Frame) Event() string { return f.Get("Event") }

// Response returns the frame's "Response" header ("" for events).
func (f *Frame) Response() string { return f.Get("Response") }

// ActionID returns the frame's "ActionID" header ("" when absent).
func (f *Frame) ActionID() string { return f.Get("ActionID") }

// IsResponse reports whether the frame answers an action (it has a Response header and no Event
// header). OriginateResponse, which is an event carrying a Response header, is not a response.
func (f *Frame) IsResponse() bool {
	_, isEvent := f.Lookup("Event")
	_, isResp := f.Lookup("Response")
	return isResp && !isEvent
}

// AppendTo appends the frame in wire format (CRLF line endings, Output lines after the fields,
// a terminating blank line) to dst. It does not validate: frames read by Reader never contain
// CR or LF in keys or values except joined continuation lines, which are written back as
// continuation lines.
func (f *Frame) AppendTo(dst []byte) []byte {
	for _, fl := range f.Fields {
		dst = append(dst, fl.Key...)
		dst = append(dst, ": "...)
		dst = appendCRLF(dst, fl.Value)
	}
	for _, o := range f.Output {
		dst = append(dst, "Output: "...)
		dst = appendCRLF(dst, o)
	}
	return append(dst, "\r\n"...)
}

// appendCRLF appends v with every "\n" written as "\r\n", then a final "\r\n".
func appendCRLF(dst []byte, v string) []byte {
	for {
		i := strings.IndexByte(v, '\n')
		if i < 0 {
			break
		}
		dst = append(dst, v[:i]...)
		dst = append(dst, "\r\n"...)
		v = v[i+1:]
	}
	dst = append(dst, v...)
	return append(dst, "\r\n"...)
}

// Reader reads AMI frames from a byte stream. It accepts "\r\n" and "\n" line endings, skips
// frames that are too large and continues with the next, keeps the body of command responses
// as Output, and allocates a constant number of objects per frame (the frame, its field slice
// and one string holding all its keys and values). It is not safe for concurrent use.
type Reader struct {
	br      *bufio.Reader
	buf     []byte // keys and values of the current frame, back to back
	spans   []span
	nFields int
	nOut    int
	size    int
	inFrame bool // a non-blank line of the current frame was seen
	skip    bool // the current frame exceeded a limit and is being discarded
	state   parseState

	// Read-time filter (SetFilter).
	discard   map[string]struct{} // event names whose frames are consumed and not returned
	keepVars  map[string]struct{} // VarSet variables passed whole; nil: VarSets are not trimmed
	dropping  bool                // the current frame is being discarded by the filter
	varSet    bool                // the current frame is a VarSet and keepVars is set
	trim      bool                // the current VarSet's variable is not kept: trim it on build
	discarded uint64
	trimmed   uint64
}

// Filter selects, while reading, the event frames a Reader does not return whole. The decisions
// are taken on the frame's first header, which Asterisk always writes as "Event: <name>", and on a
// VarSet's "Variable:" header, so a discarded frame costs its line reads and nothing else: no
// field is split or copied, nothing is allocated.
//
// A filter must never name an event that answers an action (a list event, an awaited event such
// as OriginateResponse): the action would miss it.
type Filter struct {
	// Discard lists event names (exact case, as Asterisk writes them) whose frames are consumed
	// and counted (Reader.Discarded) instead of being returned.
	Discard []string
	// VarSetKeep, when not nil, lists the channel variables (leading underscores are ignored on
	// both sides) whose VarSet frames are returned whole; the first "Variable:" header decides.
	// Every other VarSet frame is trimmed and counted (Reader.Trimmed): it keeps Event,
	// Timestamp, Uniqueid, Linkedid, CallerIDNum (in every spelling ToEvent accepts), Variable,
	// Value and every "ChanVariable…" header (manager.conf channelvars), in wire order. That is
	// exactly what the call model reads from a VarSet event (connector/callmodel Builder.Apply:
	// touch, varSet, Vars); a change to what it reads must extend varSetFields. Such frames are
	// trimmed, not discarded, because every channel event also moves the model's view of the
	// channel (caller ID, Linkedid merges, last-event time, resync mark) whatever the variable.
	// Nil: VarSet frames are returned whole.
	VarSetKeep []string
}

// varSetFields are the headers a trimmed VarSet keeps besides "ChanVariable…" (see Filter).
var varSetFields = []string{"Event", "Timestamp", "Uniqueid", "UniqueID", "Linkedid", "LinkedID",
	"CallerIDNum", "CallerIDnum", "Variable", "Value"}

// SetFilter installs f; it applies from the next frame on. The zero Filter returns every frame
// whole. Like every Reader method, it must not be called concurrently with ReadFrame.
func (r *Reader) SetFilter(f Filter) {
	r.discard, r.keepVars = nil, nil
	if len(f.Discard) > 0 {
		r.discard = make(map[string]struct{}, len(f.Discard))
		for _, n := range f.Discard {
			r.discard[n] = struct{}{}
		}
	}
	if f.VarSetKeep != nil {
		r.keepVars = make(map[string]struct{}, len(f.VarSetKeep))
		for _, n := range f.VarSetKeep {
			r.keepVars[strings.TrimLeft(n, "_")] = struct{}{}
		}
	}
}

// Discarded returns how many frames the filter discarded so far.
func (r *Reader) Discarded() uint64 { return r.discarded }

// Trimmed returns how many VarSet frames the filter trimmed so far.
func (r *Reader) Trimmed() uint64 { return r.trimmed }

// span locates one field (key and value) or one output line (value only) in Reader.buf.
type span struct {
	k0, k1, v0, v1 int32
	out            bool
}

type parseState uint8

const (
	stHeaders     parseState = iota
	stFollowsHead            // after "Response: Follows": Privilege/ActionID/Message may follow
	stBody                   // inside a legacy command body, until "--END COMMAND--"
)

// NewReader returns a Reader on r with a MaxLineSize read buffer. The first line of an AMI
// stream is the banner ("Asterisk Call Manager/x.y.z"); ReadBanner reads it.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, MaxLineSize)}
}

// ReadBanner reads the banner line that starts an AMI session. It returns the banner and an
// error when the line does not look like an AMI banner.
func (r *Reader) ReadBanner() (string, error) {
	line, err := r.readLine()
	if err != nil {
		return "", fmt.Errorf("ami: reading banner: %w", err)
	}
	banner := string(line)
	if !strings.HasPrefix(banner, "Asterisk Call Manager/") {
		return banner, fmt.Errorf("ami: unexpected banner %q (is this an AMI port?)", transport.Truncate(banner, 80))
	}
	return banner, nil
}

// readLine returns the next line without its line ending. The slice is valid until the next
// read. A line longer than MaxLineSize is consumed and reported with errLineTooLong; a final
// line without a line ending is reported with io.ErrUnexpectedEOF.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.br.ReadSlice('\n')
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil, io.ErrUnexpectedEOF
				}
				return nil, err
			}
			return nil, errLineTooLong
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// ReadFrame returns the next frame. It returns ErrFrameTooLarge (having skipped the frame) when a
// frame or one of its lines exceeds the limits; the caller may simply call ReadFrame again. At a
// clean end of the stream it returns io.EOF, and io.ErrUnexpectedEOF when the stream ends inside
// a frame (the partial frame is discarded: a frame counts only once its blank line arrived).
// After any other error the reader must be discarded.
func (r *Reader) ReadFrame() (*Frame, error) {
	f := new(Frame)
	if err := r.ReadFrameTo(f); err != nil {
		return nil, err
	}
	return f, nil
}

// ReadFrameTo is ReadFrame reading into f instead of a new Frame, for a caller that is done
// with each frame before it reads the next: the storage of f.Fields and f.Output is reused, so
// the values the slices held before are overwritten, but the strings of every frame stay valid
// (they are allocated anew for each frame, one allocation per frame). On error f is left as it
// was.
func (r *Reader) ReadFrameTo(f *Frame) error {
	r.reset()
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				r.inFrame = true
				r.setSkip()
				continue
			}
			inFrame := r.inFrame
			r.reset()
			if errors.Is(err, io.EOF) && inFrame {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) == 0 {
			if r.state == stBody { // a blank line inside legacy command output
				r.grow(2)
				r.addOutput(nil)
				continue
			}
			if !r.inFrame {
				continue // blank lines between frames
			}
			if r.skip {
				r.reset()
				return ErrFrameTooLarge
			}
			if r.dropping {
				r.discarded++
				r.reset()
				continue
			}
			if r.trim {
				r.trimmed++
			}
			r.build(f)
			r.reset()
			return nil
		}
		r.inFrame = true
		r.grow(len(line) + 2)
		r.parseLine(line)
	}
}

// parseLine interprets one non-empty line of the current frame. State transitions happen even
// while a frame is being skipped, so a skipped command body with blank lines stays in sync.
func (r *Reader) parseLine(line []byte) {
	if r.dropping && r.state == stHeaders && line[0] != 'R' {
		return // only "Response: Follows" would change how the frame ends
	}
	if r.state != stHeaders {
		if rest, ok := bytes.CutSuffix(line, endCommand); ok {
			if len(rest) > 0 {
				r.addOutput(rest)
			}
			r.state = stHeaders
			return
		}
		if r.state == stFollowsHead {
			if k, v, ok := splitField(line); ok && isFollowsHeader(k) {
				r.addField(k, v)
				return
			}
			r.state = stBody
		}
		r.addOutput(line)
		return
	}
	k, v, ok := splitField(line)
	if !ok {
		r.addContinuation(line)
		return
	}
	if r.nFields == 0 && !r.skip && !r.dropping && string(k) == "Event" {
		if _, drop := r.discard[string(v)]; drop {
			r.dropping = true
			return
		}
		r.varSet = r.keepVars != nil && string(v) == "VarSet"
	} else if r.varSet && string(k) == "Variable" { // the first Variable decides, as in ToEvent
		_, keep := r.keepVars[string(bytes.TrimLeft(v, "_"))]
		r.trim, r.varSet = !keep, false
	}
	if string(k) == "Output" {
		r.addOutput(v)
		return
	}
	r.addField(k, v)
	if string(k) == "Response" && string(v) == "Follows" {
		r.state = stFollowsHead
	}
}

var endCommand = []byte("--END COMMAND--")

// isFollowsHeader reports whether k is one of the headers Asterisk writes between
// "Response: Follows" and the command output.
func isFollowsHeader(k []byte) bool {
	switch string(k) {
	case "Privilege", "ActionID", "Message":
		return true
	}
	return false
}

// grow accounts n bytes to the current frame and starts skipping it when it is too large.
func (r *Reader) grow(n int) {
	r.size += n
	if r.size > MaxFrameSize {
		r.setSkip()
	}
}

func (r *Reader) setSkip() {
	r.skip = true
	r.buf = r.buf[:0]
	r.spans = r.spans[:0]
	r.nFields, r.nOut = 0, 0
}

func (r *Reader) addField(k, v []byte) {
	if r.skip || r.dropping {
		return
	}
	k0 := len(r.buf)
	r.buf = append(r.buf, k...)
	v0 := len(r.buf)
	r.buf = append(r.buf, v...)
	r.spans = append(r.spans, span{k0: int32(k0), k1: int32(v0), v0: int32(v0), v1: int32(len(r.buf))})
	r.nFields++
}

func (r *Reader) addOutput(v []byte) {
	if r.skip || r.dropping {
		return
	}
	v0 := len(r.buf)
	r.buf = append(r.buf, v...)
	r.spans = append(r.spans, span{v0: int32(v0), v1: int32(len(r.buf)), out: true})
	r.nOut++
}

// addContinuation handles a line without "Key:" outside a command body: it continues the value
// of the field just before it (joined with "\n"); with no such field it is kept as Output.
func (r *Reader) addContinuation(line []byte) {
	if r.skip || r.dropping {
		return
	}
	if n := len(r.spans); n > 0 && !r.spans[n-1].out && int(r.spans[n-1].v1) == len(r.buf) {
		r.buf = append(r.buf, '\n')
		r.buf = append(r.buf, line...)
		r.spans[n-1].v1 = int32(len(r.buf))
		return
	}
	r.addOutput(line)
}

// build stores the current frame in f, reusing the storage of its slices; all its strings
// share one allocation.
func (r *Reader) build(f *Frame) {
	if r.trim {
		r.trimSpans()
	}
	s := string(r.buf)
	if cap(f.Fields) < r.nFields {
		f.Fields = make([]Field, r.nFields)
	}
	f.Fields = f.Fields[:r.nFields]
	f.Output = f.Output[:0]
	if r.nOut > cap(f.Output) {
		f.Output = make([]string, 0, r.nOut)
	}
	i := 0
	for _, sp := range r.spans {
		if sp.out {
			f.Output = append(f.Output, s[sp.v0:sp.v1])
			continue
		}
		f.Fields[i] = Field{Key: s[sp.k0:sp.k1], Value: s[sp.v0:sp.v1]}
		i++
	}
}

// trimSpans keeps only the VarSetFields and ChanVariable headers of the current frame (and its
// output lines, which a VarSet never has), moving their bytes to the front of buf.
func (r *Reader) trimSpans() {
	n, w := 0, 0
	nFields := 0
	for _, sp := range r.spans {
		if !sp.out && !trimKeeps(r.buf[sp.k0:sp.k1]) {
			continue
		}
		// Spans are in buf order and w never passes sp.k0, so copy never overwrites unread bytes.
		k0 := w
		w += copy(r.buf[w:], r.buf[sp.k0:sp.k1])
		v0 := w
		w += copy(r.buf[w:], r.buf[sp.v0:sp.v1])
		if sp.out {
			k0 = v0
		} else {
			nFields++
		}
		r.spans[n] = span{k0: int32(k0), k1: int32(v0), v0: int32(v0), v1: int32(w), out: sp.out}
		n++
	}
	r.spans = r.spans[:n]
	r.buf = r.buf[:w]
	r.nFields = nFields
}

func trimKeeps(k []byte) bool {
	if bytes.HasPrefix(k, chanVariablePrefix) {
		return true
	}
	for _, f := range varSetFields {
		if string(k) == f {
			return true
		}
	}
	return false
}

var chanVariablePrefix = []byte("ChanVariable")

func (r *Reader) reset() {
	r.buf = r.buf[:0]
	r.spans = r.spans[:0]
	r.nFields, r.nOut, r.size = 0, 0, 0
	r.inFrame, r.skip = false, false
	r.dropping, r.varSet, r.trim = false, false, false
	r.state = stHeaders
}

// splitField splits "Key: Value". Values may contain ": " themselves; only the first colon
// counts. A key must be non-empty and contain no spaces; one space after the colon is removed.
func splitField(line []byte) (key, value []byte, ok bool) {
	for i, c := range line {
		switch c {
		case ':':
			if i == 0 {
				return nil, nil, false
			}
			v := line[i+1:]
			if len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			return line[:i], v, true
		case ' ':
			return nil, nil, false
		}
	}
	return nil, nil, false
}
