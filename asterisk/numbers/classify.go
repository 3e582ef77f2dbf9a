package numbers

import (
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Class is what kind of destination a dialled number is, for click-to-call policies (toll
// fraud: premium-rate, satellite and international numbers cost the PBX owner money).
type Class string

// Classes, from cheapest to dearest.
const (
	// ClassExtension: a short internal number (2 to 6 digits, no + and no country code).
	ClassExtension Class = "extensions"
	// ClassNational: a valid number of the configured default region.
	ClassNational Class = "national"
	// ClassInternational: a valid number of another country.
	ClassInternational Class = "international"
	// ClassPremium: a premium-rate or shared-cost number (any country).
	ClassPremium Class = "premium"
	// ClassSatellite: a number of an international network rather than a country (+870
	// Inmarsat, +881 satellite phones, +882/+883 international networks, +800/+808 global
	// freephone).
	ClassSatellite Class = "satellite"
	// ClassInvalid: not a dialable number (letters, *, #, no valid parse).
	ClassInvalid Class = "invalid"
)

// Classes lists every class a policy may name (ClassInvalid is never allowed).
func Classes() []Class {
	return []Class{ClassExtension, ClassNational, ClassInternational, ClassPremium, ClassSatellite}
}

// globalCodes are the country calling codes of international networks (ITU-T E.164 "global
// services"), which carry no country.
var globalCodes = map[int32]bool{800: true, 808: true, 870: true, 878: true, 881: true, 882: true, 883: true, 888: true, 979: true}

// Classify says what kind of destination raw is, with its E.164 form ("" for extensions and
// invalid input). Only digits, spaces, dashes, dots, parentheses and one leading + are accepted:
// anything else (*, #, letters) is ClassInvalid, so feature codes never reach the dialplan.
func (n *Normalizer) Classify(raw string) (Class, string) {
	s := strings.TrimSpace(raw)
	if s == "" || len(s) > MaxLen {
		return ClassInvalid, ""
	}
	digits := 0
	for i, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '+' && i == 0:
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')':
		default:
			return ClassInvalid, ""
		}
	}
	if !strings.HasPrefix(s, "+") && digits >= 2 && digits <= 6 && !strings.ContainsAny(s, " -.()") {
		return ClassExtension, ""
	}
	e164, err := n.Parse(s)
	if err != nil {
		return ClassInvalid, ""
	}
	var pn phonenumbers.PhoneNumber
	if err := phonenumbers.ParseToNumber(e164, "ZZ", &pn); err != nil {
		return ClassInvalid, ""
	}
	if globalCodes[pn.GetCountryCode()] {
		return ClassSatellite, e164
	}
	switch phonenumbers.GetNumberType(&pn) {
	case phonenumbers.PREMIUM_RATE, phonenumbers.SHARED_COST:
		return ClassPremium, e164
	}
	if n.region != "" && int(pn.GetCountryCode()) == phonenumbers.GetCountryCodeForRegion(n.region) {
		return ClassNational, e164
	}
	return ClassInternational, e164
}
