package connector

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
)

// redactHandler masks phone numbers in every record it passes on, while log.redact_numbers is on
// (the switch is shared with the handlers derived by WithAttrs and WithGroup, so a reload turns it
// on or off for lines logged afterwards; attributes bound by With before the switch changed keep
// their form until the component that bound them restarts).
//
// What it masks, with RedactNumber:
//   - the whole value of an attribute whose key names a number (customer, number, phone, from,
//     to, caller, callee, callerid, did, line, …; see numberKey), whatever its kind;
//   - in any other string value (errors included) and in the message, every run of 7 to 15
//     digits, with an optional leading +, that is not part of a word or a dotted id (a call id
//     such as 1700000000.123 or a version stays whole).
//
// The daemon installs it around its logger (New), so the CRM adapters, which get loggers derived
// from the daemon's, are masked too.
type redactHandler struct {
	inner slog.Handler
	on    *atomic.Bool
}

func newRedactHandler(inner slog.Handler, on *atomic.Bool) *redactHandler {
	return &redactHandler{inner: inner, on: on}
}

func (h *redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *redactHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.on.Load() {
		return h.inner.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, maskText(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(maskAttr(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if h.on.Load() {
		masked := make([]slog.Attr, len(attrs))
		for i, a := range attrs {
			masked[i] = maskAttr(a)
		}
		attrs = masked
	}
	return &redactHandler{inner: h.inner.WithAttrs(attrs), on: h.on}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{inner: h.inner.WithGroup(name), on: h.on}
}

// numberKeys are attribute keys (lower case, without _ and -) whose values are phone numbers.
var numberKeys = map[string]bool{
	"customer": true, "number": true, "phone": true, "phonenumber": true, "from": true, "to": true,
	"caller": true, "callee": true, "callerid": true, "calleridnum": true, "connectedline": true,
	"connectedlinenum": true, "did": true, "line": true, "dialed": true, "dialled": true,
	"destination": true, "msisdn": true, "exten": true,
}

// numberKey reports whether an attribute key names a phone number.
func numberKey(k string) bool {
	k = strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(k))
	return numberKeys[k] || strings.HasSuffix(k, "number") || strings.HasSuffix(k, "phone")
}

// maskAttr masks one attribute (groups recursively; LogValuers resolved first).
func maskAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		attrs := v.Group()
		masked := make([]slog.Attr, len(attrs))
		for i, g := range attrs {
			masked[i] = maskAttr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(masked...)}
	case slog.KindString:
		if numberKey(a.Key) {
			return slog.String(a.Key, RedactNumber(v.String()))
		}
		return slog.String(a.Key, maskText(v.String()))
	case slog.KindInt64, slog.KindUint64:
		if numberKey(a.Key) {
			return slog.String(a.Key, RedactNumber(v.String()))
		}
		return slog.Attr{Key: a.Key, Value: v}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, maskText(x.Error()))
		case []string:
			out := make([]string, len(x))
			for i, s := range x {
				if numberKey(a.Key) {
					out[i] = RedactNumber(s)
				} else {
					out[i] = maskText(s)
				}
			}
			return slog.Any(a.Key, out)
		case interface{ String() string }:
			return slog.String(a.Key, maskText(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// Phone-number runs in free text.
const (
	minNumberDigits = 7
	maxNumberDigits = 15 // E.164's longest
)

// maskText masks every run of 7 to 15 digits (with an optional leading +) that stands alone: not
// preceded or followed by a letter, a digit, a dot or an underscore.
func maskText(s string) string {
	if !hasLongDigitRun(s) {
		return s
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		start := i
		if start > 0 && s[start-1] == '+' {
			start--
		}
		n := j - i
		if n >= minNumberDigits && n <= maxNumberDigits && (start == 0 || !wordByte(s[start-1])) && (j == len(s) || !wordByte(s[j])) {
			b.WriteString(s[last:start])
			b.WriteString(RedactNumber(s[start:j]))
			last = j
		}
		i = j
	}
	b.WriteString(s[last:])
	return b.String()
}

func hasLongDigitRun(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			run++
			if run >= minNumberDigits {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// wordByte: a byte that makes a digit run part of something else (a word, an id, a decimal).
func wordByte(c byte) bool {
	return isDigit(c) || c == '.' || c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

var _ slog.Handler = (*redactHandler)(nil)
