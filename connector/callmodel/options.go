package callmodel

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Options configure a Builder: how channels are recognised as extensions and trunks, how numbers
// are normalised, and the time limits. Use DefaultOptions (or Config.Compile) and adjust; the
// zero value recognises nothing.
//
// Channel recognition, applied lazily (when a channel first matters: it dials, is dialled,
// enters a bridge, or the call is summarised) in this order:
//
//  1. a channel that was not dialled by Asterisk (an incoming channel), is not a Local channel,
//     and whose first dialplan context matches TrunkContexts is an incoming trunk;
//  2. a channel whose name matches an Extensions pattern with a named group "ext" is that
//     extension's device;
//  3. a channel whose name matches Trunks is a trunk;
//  4. a channel whose name matches an Extensions pattern without an "ext" group is the extension
//     in its CallerIDNum, when that matches ExtensionNumber (a "calling" identity: it counts for
//     direction and talk, never as ringing);
//  5. an incoming non-Local channel whose context matches InternalContexts and whose
//     CallerIDNum matches ExtensionNumber is that extension (a phone with a non-numeric name);
//  6. anything else (Local channels, announcers, unknown technologies) is plumbing: the model
//     looks through it (Local ;1/;2 pairs, bridges) but never reports it.
//
// A trunk whose number (the caller ID of an incoming one, the dialled number of an outgoing
// one) is listed in FMC is that employee's extension instead.
type Options struct {
	Extensions       []*regexp.Regexp
	ExtensionNumber  *regexp.Regexp
	Trunks           []*regexp.Regexp
	TrunkContexts    []*regexp.Regexp // matched against the whole context name
	InternalContexts []*regexp.Regexp // matched against the whole context name
	// ExternalNumber: a number an extension dials that is external. An extension call that dials
	// such a number but never reaches a trunk (no outbound route) is reported as a failed
	// outbound call instead of being dropped.
	ExternalNumber *regexp.Regexp
	// FMC maps employees' mobile numbers (normalised with Normalize) to their extensions.
	FMC map[string]string
	// Normalize turns a raw number into its canonical form (asterisk/numbers); nil keeps numbers
	// as Asterisk reports them.
	Normalize func(string) string
	// OriginateIDVariables are channel variable names (without leading underscores) carrying a
	// click-to-call correlation id, e.g. PBXBRIDGE_ORIGINATE_ID.
	OriginateIDVariables []string
	// DIDVariables are channel variables (without leading underscores) holding the DID an
	// inbound call was made to, preferred over the trunk channel's extension (FreePBX: FROM_DID).
	DIDVariables []string
	// CallVariables are channel variables (without leading underscores) whose first non-empty
	// value the call's Record carries in Vars (for hooks: a deal number entered in the IVR).
	CallVariables []string
	// MaxCallAge: Flush(now, false) finishes calls older than this, flagged "flushed". Zero
	// disables the limit.
	MaxCallAge time.Duration
	// FinishDelay: how long a call whose channels are all gone waits for late events (Cdr
	// RecordingFile, needed only when AMI does not send VarSet) before its Record is emitted.
	// The record is then emitted by the first event or Flush at or after that time. Zero emits
	// records at the last hangup.
	FinishDelay time.Duration
	// UnansweredRecordings reports the recording file of calls nobody answered (MixMonitor's
	// header-only file, or the caller listening to the IVR). Off by default: such files hold
	// no conversation.
	UnansweredRecordings bool
}

// Default patterns: a typical plain Asterisk or FreePBX PBX with numeric device names and named
// trunk peers. DAHDI is a trunk technology here: its channel numbers are ports, not extensions.
const (
	DefaultExtensionPattern = `^(?:PJSIP|SIP|IAX2|SCCP|MGCP|UNISTIM|Skinny|Console)/(?P<ext>\d{2,6})-[0-9a-f]+$`
	DefaultTrunkPattern     = `^(?:PJSIP|SIP|IAX2|DAHDI|H323|OOH323|Motif|Dongle|Mobile|WebRTC)/.+`
	DefaultExtensionNumber  = `^\d{2,6}$`
	DefaultExternalNumber   = `^\+?\d{7,}$`
)

// Default context patterns (each matched against the whole context name).
var (
	DefaultTrunkContexts = []string{
		`from-trunk.*`, `from-pstn.*`, `from-external.*`, `from-did.*`, `from-sip-external`,
		`from-provider.*`, `from-carrier.*`, `incoming.*`, `inbound.*`,
	}
	DefaultInternalContexts = []string{
		`from-internal.*`, `internal.*`, `from-phones?`, `phones?`, `from-users?`, `users?`,
		`from-extensions?`, `office.*`,
	}
	DefaultOriginateIDVariables = []string{"PBXBRIDGE_ORIGINATE_ID"}
	DefaultDIDVariables         = []string{"FROM_DID"}
)

// Default time limits.
const (
	DefaultMaxCallAge = 4 * time.Hour
)

// DefaultOptions returns the options that need no configuration for a typical PBX.
func DefaultOptions() Options {
	o, err := Config{}.Compile(nil)
	if err != nil {
		panic("callmodel: built-in defaults do not compile: " + err.Error())
	}
	return o
}

// Config is the configuration file form of Options (YAML/JSON friendly: patterns as strings,
// durations as Go duration strings). A nil (absent) list means the default; an empty list
// means none.
type Config struct {
	Extensions           []string          `yaml:"extensions" json:"extensions"`
	ExtensionNumber      string            `yaml:"extension_number" json:"extension_number"`
	Trunks               []string          `yaml:"trunks" json:"trunks"`
	TrunkContexts        []string          `yaml:"trunk_contexts" json:"trunk_contexts"`
	InternalContexts     []string          `yaml:"internal_contexts" json:"internal_contexts"`
	ExternalNumber       string            `yaml:"external_number" json:"external_number"`
	FMC                  map[string]string `yaml:"fmc" json:"fmc"` // mobile number -> extension
	OriginateIDVariables []string          `yaml:"originate_id_variables" json:"originate_id_variables"`
	DIDVariables         []string          `yaml:"did_variables" json:"did_variables"`
	// Variables are channel variables copied into the record's vars (docs/hooks.md).
	Variables            []string `yaml:"variables" json:"variables"`
	MaxCallAge           string   `yaml:"max_call_age" json:"max_call_age"`
	FinishDelay          string   `yaml:"finish_delay" json:"finish_delay"`
	UnansweredRecordings bool     `yaml:"unanswered_recordings" json:"unanswered_recordings"`
}

// Compile validates c, fills defaults and returns Options using normalize (nil: identity) for
// numbers. Errors name the offending field.
func (c Config) Compile(normalize func(string) string) (Options, error) {
	o := Options{Normalize: normalize}
	var err error
	if o.Extensions, err = compileList("extensions", c.Extensions, []string{DefaultExtensionPattern}, false); err != nil {
		return Options{}, err
	}
	if o.Trunks, err = compileList("trunks", c.Trunks, []string{DefaultTrunkPattern}, false); err != nil {
		return Options{}, err
	}
	if o.TrunkContexts, err = compileList("trunk_contexts", c.TrunkContexts, DefaultTrunkContexts, true); err != nil {
		return Options{}, err
	}
	if o.InternalContexts, err = compileList("internal_contexts", c.InternalContexts, DefaultInternalContexts, true); err != nil {
		return Options{}, err
	}
	if o.ExtensionNumber, err = compileOne("extension_number", c.ExtensionNumber, DefaultExtensionNumber); err != nil {
		return Options{}, err
	}
	if o.ExternalNumber, err = compileOne("external_number", c.ExternalNumber, DefaultExternalNumber); err != nil {
		return Options{}, err
	}
	for i, re := range o.Extensions {
		if re.SubexpIndex("ext") < 0 && hasNamedGroups(re) {
			return Options{}, fmt.Errorf("callmodel: extensions[%d]: named groups other than \"ext\" are not supported", i)
		}
	}
	o.OriginateIDVariables = varList(c.OriginateIDVariables, DefaultOriginateIDVariables)
	o.DIDVariables = varList(c.DIDVariables, DefaultDIDVariables)
	o.CallVariables = varList(c.Variables, nil)
	if len(o.CallVariables) > maxCallVariables {
		return Options{}, fmt.Errorf("callmodel: variables: at most %d, got %d", maxCallVariables, len(o.CallVariables))
	}
	if len(c.FMC) > 0 {
		o.FMC = make(map[string]string, len(c.FMC))
		for num, ext := range c.FMC {
			if strings.TrimSpace(num) == "" || strings.TrimSpace(ext) == "" {
				return Options{}, fmt.Errorf("callmodel: fmc: empty number or extension in %q: %q", num, ext)
			}
			o.FMC[o.normalize(num)] = strings.TrimSpace(ext)
		}
	}
	if o.MaxCallAge, err = duration("max_call_age", c.MaxCallAge, DefaultMaxCallAge); err != nil {
		return Options{}, err
	}
	if o.FinishDelay, err = duration("finish_delay", c.FinishDelay, 0); err != nil {
		return Options{}, err
	}
	o.UnansweredRecordings = c.UnansweredRecordings
	return o, nil
}

// maxCallVariables bounds Config.Variables: each is kept per call.
const maxCallVariables = 16

// Variables returns the channel variables the Builder reads from VarSet events:
// MIXMONITOR_FILENAME (the recording), OriginateIDVariables, DIDVariables and CallVariables. A VarSet of any
// other variable changes nothing but what every channel event carries (the channel's caller ID,
// Linkedid and time), so a source may pass such events reduced to that (asterisk/ami's
// read-time filter does).
func (o *Options) Variables() []string {
	vars := make([]string, 0, 1+len(o.OriginateIDVariables)+len(o.DIDVariables)+len(o.CallVariables))
	vars = append(vars, "MIXMONITOR_FILENAME")
	vars = append(vars, o.OriginateIDVariables...)
	vars = append(vars, o.DIDVariables...)
	return append(vars, o.CallVariables...)
}

func hasNamedGroups(re *regexp.Regexp) bool {
	for _, n := range re.SubexpNames() {
		if n != "" {
			return true
		}
	}
	return false
}

func compileList(field string, list, def []string, anchor bool) ([]*regexp.Regexp, error) {
	if list == nil {
		list = def
	}
	out := make([]*regexp.Regexp, 0, len(list))
	for i, p := range list {
		if p == "" {
			return nil, fmt.Errorf("callmodel: %s[%d]: empty pattern", field, i)
		}
		if anchor {
			p = `^(?:` + p + `)$`
		}
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("callmodel: %s[%d]: %w", field, i, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func compileOne(field, p, def string) (*regexp.Regexp, error) {
	if p == "" {
		p = def
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return nil, fmt.Errorf("callmodel: %s: %w", field, err)
	}
	return re, nil
}

func varList(list, def []string) []string {
	if list == nil {
		list = def
	}
	out := make([]string, 0, len(list))
	for _, v := range list {
		if v = strings.TrimLeft(strings.TrimSpace(v), "_"); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func duration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("callmodel: %s: %w", field, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("callmodel: %s: negative duration %s", field, s)
	}
	return d, nil
}

func (o *Options) normalize(s string) string {
	if o.Normalize == nil {
		return strings.TrimSpace(s)
	}
	return o.Normalize(s)
}
