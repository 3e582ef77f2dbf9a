// Package numbers normalises the phone numbers a PBX reports (caller IDs, dialled numbers, DIDs)
// into E.164 so that a CRM finds the same customer however the number was written.
//
// A Normalizer applies the configured rewrite rules in order, then parses the result with
// github.com/nyaruka/phonenumbers in the configured default region. A number that parses and is
// valid comes back in E.164 ("+79001234567"); anything else (short numbers, service codes,
// garbage, an empty default region with a national number) comes back as written after the
// rewrite rules, trimmed: a number is never dropped. Extensions are not phone numbers: callers
// (the call model) do not pass them here.
//
// A Normalizer's configuration is immutable after New; it remembers the last few thousand
// results (a PBX repeats the same numbers in every event of a call, and parsing costs tens of
// microseconds), and it is safe for concurrent use.
package numbers

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// Rule is one rewrite rule: where Match (a Go regexp) matches, the number is replaced with
// Replace, which may use $1-style group references (regexp.ReplaceAllString semantics).
type Rule struct {
	Match   string `yaml:"match" json:"match"`
	Replace string `yaml:"replace" json:"replace"`
}

// Config configures a Normalizer. The zero value is valid: no rules and no default region, so
// only numbers written with a leading "+" are normalised.
type Config struct {
	// DefaultRegion is the ISO 3166-1 alpha-2 region national numbers are dialled in ("RU",
	// "DE", "US"...). Empty means: parse only numbers that start with "+".
	DefaultRegion string `yaml:"default_region" json:"default_region"`
	// Rewrite rules, applied in order, each to the result of the previous one, before parsing.
	Rewrite []Rule `yaml:"rewrite" json:"rewrite"`
}

// Normalizer normalises phone numbers. Use New.
type Normalizer struct {
	region string
	rules  []compiledRule

	mu    sync.Mutex
	cache map[string]result // raw input → Parse result; emptied when full
}

type result struct {
	s   string
	err error
}

// cacheSize bounds the remembered results (a few hundred kilobytes at most).
const cacheSize = 4096

type compiledRule struct {
	re      *regexp.Regexp
	replace string
}

// MaxLen is the longest input Normalize parses; longer input is returned as written (trimmed)
// without parsing. No real phone number comes close.
const MaxLen = 64

// New validates cfg and returns a Normalizer. Errors name the offending rule or region.
func New(cfg Config) (*Normalizer, error) {
	n := &Normalizer{region: strings.ToUpper(strings.TrimSpace(cfg.DefaultRegion))}
	if n.region != "" && !phonenumbers.GetSupportedRegions()[n.region] {
		return nil, fmt.Errorf("numbers: default_region %q is not a supported ISO 3166-1 region", cfg.DefaultRegion)
	}
	for i, r := range cfg.Rewrite {
		if r.Match == "" {
			return nil, fmt.Errorf("numbers: rewrite[%d]: match is empty", i)
		}
		re, err := regexp.Compile(r.Match)
		if err != nil {
			return nil, fmt.Errorf("numbers: rewrite[%d]: %w", i, err)
		}
		n.rules = append(n.rules, compiledRule{re: re, replace: r.Replace})
	}
	return n, nil
}

// MustNew is New for configurations known to be valid (tests, built-in defaults); it panics on
// an invalid configuration.
func MustNew(cfg Config) *Normalizer {
	n, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return n
}

// ErrNotNumber is returned by Parse for input that is not a valid phone number in the
// configured region.
var ErrNotNumber = errors.New("numbers: not a valid phone number")

// Normalize returns raw in E.164 when it is a valid phone number (after the rewrite rules), and
// otherwise raw as written after the rewrite rules, trimmed of surrounding white space. It
// never returns "" for non-blank input.
func (n *Normalizer) Normalize(raw string) string {
	s, _ := n.Parse(raw)
	return s
}

// Parse is Normalize that also says whether the number was valid: it returns the E.164 form and
// nil, or the rewritten input and ErrNotNumber.
func (n *Normalizer) Parse(raw string) (string, error) {
	if len(raw) > 2*MaxLen { // not a number: do not let such input fill the cache
		return n.parse(raw)
	}
	n.mu.Lock()
	r, ok := n.cache[raw]
	n.mu.Unlock()
	if ok {
		return r.s, r.err
	}
	s, err := n.parse(raw)
	n.mu.Lock()
	if n.cache == nil || len(n.cache) >= cacheSize {
		n.cache = make(map[string]result, 64)
	}
	n.cache[raw] = result{s, err}
	n.mu.Unlock()
	return s, err
}

func (n *Normalizer) parse(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", ErrNotNumber
	}
	for _, r := range n.rules {
		if r.re.MatchString(s) {
			s = strings.TrimSpace(r.re.ReplaceAllString(s, r.replace))
		}
	}
	if s == "" || len(s) > MaxLen || !hasDigit(s) {
		if s == "" {
			s = strings.TrimSpace(raw)
		}
		return s, ErrNotNumber
	}
	if n.region == "" && !strings.HasPrefix(s, "+") {
		return s, ErrNotNumber
	}
	region := n.region
	if region == "" {
		region = "ZZ" // unknown region: phonenumbers then requires a leading +
	}
	var pn phonenumbers.PhoneNumber
	if err := phonenumbers.ParseToNumber(s, region, &pn); err != nil {
		return s, ErrNotNumber
	}
	if !phonenumbers.IsValidNumber(&pn) {
		return s, ErrNotNumber
	}
	return phonenumbers.Format(&pn, phonenumbers.E164), nil
}

func hasDigit(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			return true
		}
	}
	return false
}
