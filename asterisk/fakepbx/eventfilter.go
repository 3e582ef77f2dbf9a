package fakepbx

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// EventFilter decides, as Asterisk's manager does for one AMI user, which events a set of
// manager.conf eventfilter lines lets through (Config.EventFilter). It follows Asterisk 22's
// rules:
//
//   - a line is "eventfilter = <pattern>" (legacy: a POSIX extended regular expression matched
//     against the whole event text, "Event:" line to blank line) or
//     "eventfilter(<criteria>) = <pattern>" (advanced: criteria action(include|exclude),
//     name(<event>), header(<header>), method(regex|exact|starts_with|ends_with|contains|none),
//     in any order; a pattern needs a method other than none, no pattern needs none, which is
//     the default). A pattern starting with '!' makes the line an exclude line unless action()
//     says otherwise;
//   - with no line every event passes; with include lines only, an event passes when one of
//     them matches; with exclude lines only, when none matches; with both, when an include line
//     matches and no exclude line does;
//   - name() compares the event name exactly; header(H) looks at every line starting with "H:"
//     and matches its value (leading blanks skipped, line end removed); an event without such a
//     line does not match.
//
// Go's regexp package stands in for POSIX regcomp(REG_EXTENDED): the patterns are compiled with
// (?s) so that '.' also matches line ends, as in POSIX without REG_NEWLINE. The two agree on
// the constructs pbxbridge's lines use (alternation, bounds, bracket classes such as
// [[:space:]], anchors); they differ on escapes such as \r, which Go reads as a carriage
// return. A nil *EventFilter passes every event.
type EventFilter struct {
	include, exclude []filterEntry
}

type matchMethod uint8

const (
	matchRegex matchMethod = iota
	matchExact
	matchStartsWith
	matchEndsWith
	matchContains
	matchNone
)

var matchMethods = map[string]matchMethod{"regex": matchRegex, "exact": matchExact,
	"starts_with": matchStartsWith, "ends_with": matchEndsWith, "contains": matchContains, "none": matchNone}

type filterEntry struct {
	method matchMethod
	re     *regexp.Regexp
	str    string
	name   string // "" matches every event
	header []byte // "Name:", nil: the whole event
}

// ParseEventFilter parses manager.conf eventfilter lines (see EventFilter). Blank lines and
// lines starting with ';' are skipped. A line Asterisk would refuse is an error naming it.
func ParseEventFilter(lines []string) (*EventFilter, error) {
	f := &EventFilter{}
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == ';' {
			continue
		}
		key, pattern, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("fakepbx: eventfilter %q: want \"eventfilter[(criteria)] = pattern\"", line)
		}
		e, exclude, err := parseFilterEntry(strings.TrimSpace(key), strings.TrimSpace(pattern))
		if err != nil {
			return nil, fmt.Errorf("fakepbx: eventfilter %q: %w", line, err)
		}
		if exclude {
			f.exclude = append(f.exclude, e)
		} else {
			f.include = append(f.include, e)
		}
	}
	return f, nil
}

func parseFilterEntry(key, pattern string) (e filterEntry, exclude bool, err error) {
	criteria, advanced := strings.CutPrefix(key, "eventfilter(")
	if !advanced && key != "eventfilter" {
		return e, false, fmt.Errorf("key %q is not eventfilter", key)
	}
	if p, ok := strings.CutPrefix(pattern, "!"); ok {
		exclude, pattern = true, p
	}
	e.method = matchRegex
	if !advanced {
		if pattern == "" {
			return e, false, fmt.Errorf("a legacy filter needs a pattern")
		}
	} else {
		e.method = matchNone
		if !strings.HasSuffix(criteria, ")") {
			return e, false, fmt.Errorf("criteria not closed by ')'")
		}
		found := false
		// Asterisk splits the criteria on spaces, commas and ')': "name(VarSet),method(none))"
		// gives "name(VarSet" and "method(none".
		for opt := range strings.FieldsFuncSeq(criteria, func(r rune) bool { return r == ' ' || r == ',' || r == ')' }) {
			name, arg, ok := strings.Cut(opt, "(")
			arg = strings.TrimSpace(arg)
			if !ok || arg == "" {
				return e, false, fmt.Errorf("option %q: want name(argument)", opt)
			}
			switch name {
			case "action":
				switch arg {
				case "include":
					exclude = false
				case "exclude":
					exclude = true
				default:
					return e, false, fmt.Errorf("action %q: want include or exclude", arg)
				}
			case "name":
				e.name = arg
			case "header":
				e.header = []byte(strings.TrimSuffix(arg, ":") + ":")
			case "method":
				m, ok := matchMethods[arg]
				if !ok {
					return e, false, fmt.Errorf("method %q is unknown", arg)
				}
				e.method = m
			default:
				return e, false, fmt.Errorf("option %q is unknown", name)
			}
			found = true
		}
		switch {
		case !found:
			return e, false, fmt.Errorf("no action, name, header or method")
		case pattern == "" && e.method != matchNone:
			return e, false, fmt.Errorf("a method other than none needs a pattern")
		case pattern != "" && e.method == matchNone:
			return e, false, fmt.Errorf("a pattern needs a method other than none")
		case e.name == "" && e.header == nil && e.method == matchNone:
			return e, false, fmt.Errorf("no name, no header and no pattern")
		}
	}
	if e.method == matchRegex {
		if e.re, err = regexp.Compile("(?s)" + pattern); err != nil {
			return e, false, fmt.Errorf("pattern: %w", err)
		}
	} else {
		e.str = pattern
	}
	return e, exclude, nil
}

// Pass reports whether Asterisk would send the event whose wire text (from its "Event:" line to
// its blank line) is frame.
func (f *EventFilter) Pass(frame []byte) bool {
	if f == nil || len(f.include)+len(f.exclude) == 0 {
		return true
	}
	name := eventName(frame)
	if len(f.include) > 0 && !anyMatch(f.include, name, frame) {
		return false
	}
	return !anyMatch(f.exclude, name, frame)
}

func anyMatch(entries []filterEntry, name string, frame []byte) bool {
	for i := range entries {
		if entries[i].match(name, frame) {
			return true
		}
	}
	return false
}

func (e *filterEntry) match(name string, frame []byte) bool {
	if e.name != "" && e.name != name {
		return false
	}
	if e.header == nil {
		return e.matchData(frame)
	}
	for line := range bytes.Lines(frame) {
		rest, ok := bytes.CutPrefix(line, e.header)
		if !ok {
			continue
		}
		rest = bytes.TrimSuffix(bytes.TrimSuffix(rest, []byte("\n")), []byte("\r"))
		for len(rest) > 0 && rest[0] < 33 { // blanks and control characters, as Asterisk skips
			rest = rest[1:]
		}
		if len(rest) > 0 && e.matchData(rest) {
			return true
		}
	}
	return false
}

func (e *filterEntry) matchData(data []byte) bool {
	switch e.method {
	case matchRegex:
		return e.re.Match(data)
	case matchExact:
		return string(data) == e.str
	case matchStartsWith:
		return bytes.HasPrefix(data, []byte(e.str))
	case matchEndsWith:
		return bytes.HasSuffix(data, []byte(e.str))
	case matchContains:
		return bytes.Contains(data, []byte(e.str))
	}
	return true // none
}

// eventName returns the value of the frame's "Event:" header, "" when it has none.
func eventName(frame []byte) string {
	seen := false
	for line := range bytes.Lines(frame) {
		if v, ok := bytes.CutPrefix(line, []byte("Event: ")); ok {
			return string(bytes.TrimRight(v, "\r\n"))
		}
		if len(bytes.TrimRight(line, "\r\n")) > 0 {
			seen = true
		} else if seen {
			break
		}
	}
	return ""
}

// FilterCapture returns an AMI capture (the bytes of a Manager session, banner optional, CRLF
// or LF line ends) without the event frames f refuses: what the AMI user would have received
// from the same PBX with f in manager.conf. Frames that are not events (responses) are kept. A
// capture does not tell which events Asterisk wrote straight to the session (FullyBooted at
// login, the CoreShowChannels list), so every event frame is judged by f.
func (f *EventFilter) FilterCapture(capture []byte) []byte {
	out := make([]byte, 0, len(capture))
	if i := bytes.IndexByte(capture, '\n'); i >= 0 && bytes.HasPrefix(capture, []byte("Asterisk Call Manager/")) {
		out = append(out, capture[:i+1]...)
		capture = capture[i+1:]
	}
	for len(capture) > 0 {
		frame := capture
		if end := frameEnd(capture); end >= 0 {
			frame = capture[:end]
		}
		capture = capture[len(frame):]
		if eventName(frame) == "" || f.Pass(frame) {
			out = append(out, frame...)
		}
	}
	return out
}

// frameEnd returns the length of the first frame of b (blank lines before it and its own blank
// line included), or -1 when b holds no complete frame.
func frameEnd(b []byte) int {
	seen := false // a non-blank line of the frame was read
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := bytes.TrimSuffix(b[i:i+j], []byte("\r"))
		i += j + 1
		if len(line) > 0 {
			seen = true
		} else if seen {
			return i
		}
	}
	return -1
}
