package licensing

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Armour lines and size limits of a .lic file (§3.2, §3.4 step 1).
const (
	ArmourBegin  = "-----BEGIN PBXBRIDGE LICENSE-----"
	ArmourEnd    = "-----END PBXBRIDGE LICENSE-----"
	MaxFileSize  = 64 << 10
	MaxTokenSize = 16 << 10
	armourWidth  = 76
)

// Armour wraps a token for humans: comment lines (each prefixed with "# "; they are NOT trusted),
// the BEGIN line, the token wrapped at 76 columns, the END line.
func Armour(token string, comments ...string) []byte {
	var b bytes.Buffer
	for _, c := range comments {
		for _, line := range strings.Split(c, "\n") {
			b.WriteString("# ")
			b.WriteString(strings.TrimRight(line, "\r"))
			b.WriteByte('\n')
		}
	}
	b.WriteString(ArmourBegin + "\n")
	for len(token) > armourWidth {
		b.WriteString(token[:armourWidth])
		b.WriteByte('\n')
		token = token[armourWidth:]
	}
	b.WriteString(token + "\n")
	b.WriteString(ArmourEnd + "\n")
	return b.Bytes()
}

// Unarmour extracts the token from a .lic file. It accepts the armoured form (comments and blank
// lines around the block, whitespace inside it) or a bare token (optionally with comment lines).
// Only space, tab, CR and LF count as whitespace; anything else outside comments is an error.
func Unarmour(data []byte) (string, error) {
	if len(data) > MaxFileSize {
		return "", fmt.Errorf("file is %d bytes, limit %d", len(data), MaxFileSize)
	}
	const (
		before = iota
		inside
		after
	)
	state := before
	armoured := false
	var tok strings.Builder
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.Trim(line, " \t\r")
		switch {
		case line == "":
			continue
		case line == ArmourBegin:
			if state != before || tok.Len() > 0 {
				return "", fmt.Errorf("line %d: unexpected BEGIN line", n+1)
			}
			state, armoured = inside, true
		case line == ArmourEnd:
			if state != inside {
				return "", fmt.Errorf("line %d: unexpected END line", n+1)
			}
			state = after
		case strings.HasPrefix(line, "#") && state != inside:
			continue // comment: for humans only, never trusted
		case state == after:
			return "", fmt.Errorf("line %d: data after the END line", n+1)
		default:
			for i := 0; i < len(line); i++ {
				c := line[i]
				if c == ' ' || c == '\t' {
					continue
				}
				if !isTokenChar(c) {
					return "", fmt.Errorf("line %d: invalid character %q in token", n+1, c)
				}
				tok.WriteByte(c)
				if tok.Len() > MaxTokenSize {
					return "", fmt.Errorf("token larger than %d bytes", MaxTokenSize)
				}
			}
		}
	}
	if armoured && state != after {
		return "", errors.New("missing END line")
	}
	if tok.Len() == 0 {
		return "", errors.New("no token found")
	}
	return tok.String(), nil
}

func isTokenChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}
