package ami

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// ErrInvalidHeader reports an action that cannot be written safely: an empty or malformed key, or
// a CR, LF or NUL byte in a key or value (which would let a value inject headers or a second
// action).
var ErrInvalidHeader = errors.New("ami: invalid header")

// Action is one AMI request.
type Action struct {
	// Name is the "Action:" header, e.g. "Ping", "Originate".
	Name string
	// ID is the ActionID. Conn assigns a unique one when it is empty; a caller-chosen ID must be
	// unique among the connection's actions in flight.
	ID string
	// Headers are the further headers, in order; a key may repeat (e.g. "Variable").
	Headers []Field
	// Until makes Conn.Action wait, after a successful response, for the event of this name
	// that carries the same ActionID (e.g. "OriginateResponse" for an Async Originate). That
	// event is returned as the last element of Response.Events.
	Until string
}

// Set appends a header and returns the action, for building actions fluently.
func (a Action) Set(key, value string) Action {
	a.Headers = append(a.Headers, Field{Key: key, Value: value})
	return a
}

// AppendTo validates the action and appends it in wire format to dst: "Action", "ActionID",
// the headers in order, then a blank line, all with CRLF endings. It returns ErrInvalidHeader
// (wrapped, naming the header) when a key or value is unsafe; dst is then returned unchanged.
func (a *Action) AppendTo(dst []byte) ([]byte, error) {
	if err := checkKeyValue("Action", a.Name); err != nil {
		return dst, err
	}
	if a.Name == "" {
		return dst, fmt.Errorf("%w: empty action name", ErrInvalidHeader)
	}
	if err := checkKeyValue("ActionID", a.ID); err != nil {
		return dst, err
	}
	for _, h := range a.Headers {
		if err := checkKeyValue(h.Key, h.Value); err != nil {
			return dst, err
		}
	}
	dst = append(dst, "Action: "...)
	dst = append(dst, a.Name...)
	dst = append(dst, "\r\n"...)
	if a.ID != "" {
		dst = append(dst, "ActionID: "...)
		dst = append(dst, a.ID...)
		dst = append(dst, "\r\n"...)
	}
	for _, h := range a.Headers {
		dst = append(dst, h.Key...)
		dst = append(dst, ": "...)
		dst = append(dst, h.Value...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...), nil
}

// checkKeyValue rejects keys that are empty or contain ':' or whitespace, and any CR, LF or NUL in
// the key or the value.
func checkKeyValue(key, value string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidHeader)
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == ':', c <= ' ', c == 0x7f:
			return fmt.Errorf("%w: key %q", ErrInvalidHeader, transport.Truncate(key, 40))
		}
	}
	if i := strings.IndexAny(value, "\r\n\x00"); i >= 0 {
		return fmt.Errorf("%w: %s: value contains a line break or NUL", ErrInvalidHeader, key)
	}
	return nil
}

// Response is the answer to an action: the response frame and, for actions that return an event
// list (EventList: start … Complete), the list's events including the completion event; for an
// action with Until set, the awaited event.
type Response struct {
	*Frame
	Events []*Frame
}

// ResponseError is an action the PBX refused ("Response: Error", or "Failure" in an awaited
// OriginateResponse).
type ResponseError struct {
	Action   string // the action name
	Response string // "Error", "Failure"...
	Message  string // the PBX's Message header, e.g. "Permission denied"
	Frame    *Frame // the refusing frame
}

func (e *ResponseError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "no message"
	}
	return fmt.Sprintf("pbx answered %s: %s", e.Response, msg)
}
