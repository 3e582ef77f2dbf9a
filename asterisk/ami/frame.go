// Package ami is pbxbridge's own Asterisk Manager Interface client: wire framing, login (plain and
// MD5 challenge), ActionID-correlated actions, keepalive, reconnect with resync, and the
// translation of AMI event frames into normalised asterisk.Events.
package ami

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits of the frame reader. A frame larger than MaxFrameSize is skipped and reported with
// ErrFrameTooLarge; the reader stays in sync and continues with the next frame.
const (
	MaxLineSize  = 64 << 10
	MaxFrameSize = 64 << 10
)

// Errors of the frame reader.
var (
	// ErrFrameTooLarge: a frame exceeded MaxFrameSize and was dropped (the stream continues).
	ErrFrameTooLarge = errors.New("ami: frame too large, dropped")
)

// Field is one "Key: Value" header line of a frame.
type Field struct {
	Key   string
	Value string
}

// Frame is one AMI message: its header lines in wire order, plus the body lines of a command
// response (Asterisk ≥ 14 "Output:" headers or a legacy "Response: Follows" body).
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

// Lookup is Get that also reports whether the key is present.
func (f *Frame) Lookup(key string) (string, bool) {
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

// Reader reads AMI frames from a byte stream. It accepts "\r\n" and "\n" line endings, continues
// past frames that are too large, keeps lines without a colon of a command body as Output, and
// never allocates more than MaxFrameSize (plus bufio's buffer) for one frame.
type Reader struct {
	r       *bufio.Reader
	banner  string
	started bool
	size    int
	skip    bool
	cur     Frame
}

// NewReader returns a Reader on r. The first line of an AMI stream is the banner
// ("Asterisk Call Manager/x.y.z"); ReadBanner reads it.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 32<<10)}
}

// ReadBanner reads the banner line that starts an AMI session.
func (r *Reader) ReadBanner() (string, error) {
	line, err := r.readLine()
	if err != nil {
		return "", fmt.Errorf("ami: reading banner: %w", err)
	}
	r.banner = string(line)
	if !strings.HasPrefix(r.banner, "Asterisk Call Manager/") {
		return r.banner, fmt.Errorf("ami: unexpected banner %q", truncate(r.banner, 80))
	}
	return r.banner, nil
}

// readLine returns the next line without its line ending. A line longer than MaxLineSize is
// consumed and returned truncated together with errLineTooLong.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Consume the rest of an over-long line without keeping it.
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = r.r.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, errLineTooLong
	}
	if err != nil {
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

var errLineTooLong = errors.New("ami: line too long")

// ReadFrame returns the next frame. It returns ErrFrameTooLarge (and skips the frame) when a
// frame or one of its lines exceeds the limits; the caller may simply call ReadFrame again.
// At the end of the stream it returns io.EOF, or io.ErrUnexpectedEOF inside a frame.
func (r *Reader) ReadFrame() (*Frame, error) {
	r.cur = Frame{}
	r.size = 0
	r.skip = false
	inBody := false
	for {
		line, err := r.readLine()
		if errors.Is(err, errLineTooLong) {
			r.skip = true
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && (len(r.cur.Fields) > 0 || r.skip) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(line) == 0 {
			if len(r.cur.Fields) == 0 && !r.skip {
				continue // blank lines between frames
			}
			if r.skip {
				return nil, ErrFrameTooLarge
			}
			f := r.cur
			return &f, nil
		}
		r.size += len(line) + 2
		if r.size > MaxFrameSize {
			r.skip = true
		}
		if r.skip {
			continue
		}
		if inBody {
			// Legacy "Response: Follows": header lines (Privilege, ActionID) may still come
			// first; after the first raw line everything up to "--END COMMAND--" is body.
			if len(r.cur.Output) == 0 {
				if k, v, ok := splitField(line); ok && !bytes.HasSuffix(line, []byte("--END COMMAND--")) {
					r.cur.Fields = append(r.cur.Fields, Field{Key: k, Value: v})
					continue
				}
			}
			if bytes.HasSuffix(line, []byte("--END COMMAND--")) {
				if s := strings.TrimSuffix(string(line), "--END COMMAND--"); s != "" {
					r.cur.Output = append(r.cur.Output, strings.TrimRight(s, "\r\n"))
				}
				inBody = false
				continue
			}
			r.cur.Output = append(r.cur.Output, string(line))
			continue
		}
		k, v, ok := splitField(line)
		if !ok {
			// A line without "Key: " inside a frame: keep it as body text.
			r.cur.Output = append(r.cur.Output, string(line))
			continue
		}
		if k == "Output" {
			r.cur.Output = append(r.cur.Output, v)
			continue
		}
		r.cur.Fields = append(r.cur.Fields, Field{Key: k, Value: v})
		if k == "Response" && v == "Follows" {
			inBody = true
		}
	}
}

// splitField splits "Key: Value". Values may contain ": " themselves; only the first separator
// counts. A key must be non-empty and contain no spaces.
func splitField(line []byte) (key, value string, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 || bytes.IndexByte(line[:i], ' ') >= 0 {
		return "", "", false
	}
	v := line[i+1:]
	if len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	return internKey(line[:i]), string(v), true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
