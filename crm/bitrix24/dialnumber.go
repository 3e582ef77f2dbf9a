package bitrix24

import (
	"errors"
	"fmt"
	"strings"
)

// Limits of a number the adapter asks the PBX to dial.
const (
	minDialDigits = 3
	maxDialDigits = 20 // E.164 has at most 15; trunk and international prefixes add a few
)

// errBadNumber is wrapped by dialNumber's errors.
var errBadNumber = errors.New("not a phone number pbxbridge dials")

// dialNumber validates a number that came from Bitrix24 (a click-to-call, or a web-form callback
// typed by a site visitor) before it reaches the PBX. Spaces, hyphens, dots and parentheses, as
// people write numbers, are removed; what is left must be digits with at most one leading "+".
// Anything else — "*" and "#" (feature codes, voicemail menus), letters, dial-string
// separators — is refused: the adapter never passes such strings through.
func dialNumber(raw string) (string, error) {
	var b strings.Builder
	for i, r := range strings.TrimSpace(raw) {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			return "", fmt.Errorf("%w: %q contains %q (only digits and one leading + are dialled)", errBadNumber, raw, r)
		}
	}
	n := b.String()
	d := len(strings.TrimPrefix(n, "+"))
	if d < minDialDigits || d > maxDialDigits {
		return "", fmt.Errorf("%w: %q has %d digits (%d to %d are dialled)", errBadNumber, raw, d, minDialDigits, maxDialDigits)
	}
	return n, nil
}

// validExtension reports whether an extension (from users.map or a user's Internal phone in
// Bitrix24, which users may edit) is safe to put in an originate: letters, digits, "_" and "-".
func validExtension(ext string) bool {
	if ext == "" || len(ext) > 32 {
		return false
	}
	for _, r := range ext {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}
