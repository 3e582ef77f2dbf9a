package httpclient

import (
	"strings"
	"unicode/utf8"
)

// redacted replaces every secret Redact finds.
const redacted = "<redacted>"

// Redact masks tokens and secrets in a URL, header or body for logs and timelines. It applies,
// in this order, the equivalent of these four case-insensitive (except the first) patterns,
// replacing the last part of each match with "<redacted>":
//
//  1. the Bitrix24 inbound-webhook secret: /rest/<digits>/<secret> (up to /, ?, # or a space);
//  2. key=value in query strings and form bodies, for keys ending in token, auth, code or
//     client_secret (the value runs up to &, a space or a double quote);
//  3. "key": "value" in JSON, for the keys access_token, refresh_token, client_secret, auth,
//     code, application_token, token, secret and password (the value runs up to the next quote);
//  4. Bearer <token> in Authorization headers.
//
// Letters match in either case, including the Unicode letters that fold to them (K, ſ), as
// regexp's (?i) does: redact_test.go checks Redact against those regular expressions. Redact
// scans its input once per pattern without allocating unless it finds something to mask.
func Redact(s string) string {
	s = redactWebhook(s)
	s = redactForm(s)
	s = redactJSON(s)
	return redactBearer(s)
}

// isSpace reports whether c is in RE2's \s: [\t\n\f\r ].
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'
}

// replacer builds the output of a pass lazily: nothing is copied until the first replacement.
type replacer struct {
	src    string
	b      strings.Builder
	done   int // src[:done] is already in b
	masked bool
}

// mask replaces src[from:to] with "<redacted>".
func (r *replacer) mask(from, to int) {
	if !r.masked {
		r.masked = true
		r.b.Grow(len(r.src) + len(redacted))
	}
	r.b.WriteString(r.src[r.done:from])
	r.b.WriteString(redacted)
	r.done = to
}

func (r *replacer) result() string {
	if !r.masked {
		return r.src
	}
	r.b.WriteString(r.src[r.done:])
	return r.b.String()
}

// redactWebhook is `(/rest/\d+/)[^/?#\s]+`.
func redactWebhook(s string) string {
	const prefix = "/rest/"
	r := replacer{src: s}
	for i := 0; ; {
		j := strings.Index(s[i:], prefix)
		if j < 0 {
			break
		}
		start := i + j
		k := start + len(prefix)
		d := k
		for d < len(s) && s[d] >= '0' && s[d] <= '9' {
			d++
		}
		if d == k || d >= len(s) || s[d] != '/' {
			i = start + 1
			continue
		}
		v := d + 1
		e := v
		for e < len(s) && s[e] != '/' && s[e] != '?' && s[e] != '#' && !isSpace(s[e]) {
			e++
		}
		if e == v {
			i = start + 1
			continue
		}
		r.mask(v, e)
		i = e
	}
	return r.result()
}

// formKeys are the key suffixes of pass 2: every key of the pattern
// access_token|refresh_token|client_secret|auth|code|application_token|token ends in one of
// them, so a match of the full alternation and of these suffixes mask the same values.
var formKeys = [...]string{"token", "auth", "code", "client_secret"}

// redactForm is `(?i)((?:access_token|refresh_token|client_secret|auth|code|application_token|token)=)[^&\s"]+`.
func redactForm(s string) string {
	r := replacer{src: s}
	for i := 0; ; {
		j := strings.IndexByte(s[i:], '=')
		if j < 0 {
			break
		}
		eq := i + j
		if !endsWithKey(s[:eq]) {
			i = eq + 1
			continue
		}
		e := eq + 1
		for e < len(s) && s[e] != '&' && s[e] != '"' && !isSpace(s[e]) {
			e++
		}
		if e == eq+1 {
			i = eq + 1
			continue
		}
		r.mask(eq+1, e)
		i = e
	}
	return r.result()
}

func endsWithKey(s string) bool {
	for _, k := range formKeys {
		if hasSuffixFold(s, k) {
			return true
		}
	}
	return false
}

// hasSuffixFold reports whether s ends with the lower-case ASCII word key, compared as (?i) does.
func hasSuffixFold(s, key string) bool {
	end := len(s)
	for i := len(key) - 1; i >= 0; i-- {
		n := foldLastRune(s[:end], key[i])
		if n == 0 {
			return false
		}
		end -= n
	}
	return true
}

// foldLastRune reports the byte length of the last rune of s when it equals the lower-case ASCII
// c under simple case folding, else 0.
func foldLastRune(s string, c byte) int {
	if s == "" {
		return 0
	}
	if b := s[len(s)-1]; b < utf8.RuneSelf {
		if b == c || (c >= 'a' && c <= 'z' && b == c-'a'+'A') {
			return 1
		}
		return 0
	}
	switch c {
	case 'k':
		if strings.HasSuffix(s, "\u212a") { // KELVIN SIGN
			return len("\u212a")
		}
	case 's':
		if strings.HasSuffix(s, "\u017f") { // LATIN SMALL LETTER LONG S
			return len("\u017f")
		}
	}
	return 0
}

// jsonKeys are the keys of pass 3.
var jsonKeys = [...]string{
	"access_token", "refresh_token", "client_secret", "auth", "code", "application_token",
	"token", "secret", "password",
}

// redactJSON is `(?i)("(?:access_token|…|password)"\s*:\s*")[^"]*`.
func redactJSON(s string) string {
	r := replacer{src: s}
	for i := 0; ; {
		j := strings.IndexByte(s[i:], '"')
		if j < 0 {
			break
		}
		q := i + j
		v, ok := jsonValueStart(s, q)
		if !ok {
			i = q + 1
			continue
		}
		e := len(s)
		if k := strings.IndexByte(s[v:], '"'); k >= 0 {
			e = v + k
		}
		r.mask(v, e)
		i = e
	}
	return r.result()
}

// jsonValueStart matches `"key"\s*:\s*"` at s[q:] and returns where the value starts.
func jsonValueStart(s string, q int) (int, bool) {
	k := strings.IndexByte(s[q+1:], '"')
	if k < 0 {
		return 0, false
	}
	key := s[q+1 : q+1+k]
	known := false
	for _, w := range jsonKeys {
		if equalFold(key, w) {
			known = true
			break
		}
	}
	if !known {
		return 0, false
	}
	p := q + 1 + k + 1
	for p < len(s) && isSpace(s[p]) {
		p++
	}
	if p >= len(s) || s[p] != ':' {
		return 0, false
	}
	p++
	for p < len(s) && isSpace(s[p]) {
		p++
	}
	if p >= len(s) || s[p] != '"' {
		return 0, false
	}
	return p + 1, true
}

// equalFold reports whether s equals the lower-case ASCII word w, compared as (?i) does.
func equalFold(s, w string) bool {
	if len(s) < len(w) || len(s) > 3*len(w) { // K and ſ take 3 and 2 bytes
		return false
	}
	return hasSuffixFold(s, w) && utf8.RuneCountInString(s) == len(w)
}

// redactBearer is `(?i)(Bearer\s+)[A-Za-z0-9._~+/=-]+`.
func redactBearer(s string) string {
	r := replacer{src: s}
	for i := 0; i+len("bearer") <= len(s); {
		j := indexBearer(s[i:])
		if j < 0 {
			break
		}
		start := i + j
		p := start + len("bearer")
		w := p
		for w < len(s) && isSpace(s[w]) {
			w++
		}
		if w == p {
			i = start + 1
			continue
		}
		e := w
		for e < len(s) {
			n := tokenRune(s[e:])
			if n == 0 {
				break
			}
			e += n
		}
		if e == w {
			i = start + 1
			continue
		}
		r.mask(w, e)
		i = e
	}
	return r.result()
}

// indexBearer finds "bearer" in any case.
func indexBearer(s string) int {
	for i := 0; i+6 <= len(s); i++ {
		if c := s[i]; (c == 'b' || c == 'B') && strings.EqualFold(s[i:i+6], "bearer") {
			return i
		}
	}
	return -1
}

// tokenRune returns the byte length of the rune at the start of s if it is in
// [A-Za-z0-9._~+/=-] under (?i) (which adds K and ſ), else 0.
func tokenRune(s string) int {
	c := s[0]
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return 1
	case c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-':
		return 1
	case strings.HasPrefix(s, "\u212a"):
		return len("\u212a")
	case strings.HasPrefix(s, "\u017f"):
		return len("\u017f")
	}
	return 0
}
