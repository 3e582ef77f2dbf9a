package ami

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Ping sends a Ping and returns the round-trip time.
func (c *Conn) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if _, err := c.Action(ctx, Action{Name: "Ping"}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Logoff ends the session politely; the PBX answers "Goodbye" and closes the connection.
func (c *Conn) Logoff(ctx context.Context) error {
	_, err := c.Action(ctx, Action{Name: "Logoff"})
	return err
}

// CoreShowChannels lists the channels the PBX has now: one "CoreShowChannel" frame per channel
// (the completion event is not included).
func (c *Conn) CoreShowChannels(ctx context.Context) ([]*Frame, error) {
	res, err := c.Action(ctx, Action{Name: "CoreShowChannels"})
	if err != nil {
		return nil, err
	}
	out := make([]*Frame, 0, len(res.Events))
	for _, f := range res.Events {
		if f.Event() == "CoreShowChannel" {
			out = append(out, f)
		}
	}
	return out, nil
}

// Command runs a CLI command and returns its output lines (Asterisk ≥ 14 "Output:" headers or
// the legacy "Response: Follows" body).
func (c *Conn) Command(ctx context.Context, command string) ([]string, error) {
	res, err := c.Action(ctx, Action{Name: "Command"}.Set("Command", command))
	if err != nil {
		return nil, err
	}
	return res.Output, nil
}

// Extension states reported by ExtensionState (Asterisk's AST_EXTENSION_* values; they combine
// as bit flags, e.g. 9 = in use and ringing).
const (
	ExtRemoved     = -2 // the hint was removed
	ExtNoHint      = -1 // no hint for this extension: unknown to the PBX's device state
	ExtIdle        = 0
	ExtInUse       = 1
	ExtBusy        = 2
	ExtUnavailable = 4
	ExtRinging     = 8
	ExtOnHold      = 16
)

// ExtensionStatus is the answer to ExtensionState.
type ExtensionStatus struct {
	Exten      string
	Context    string
	Hint       string // e.g. "PJSIP/101"; empty when the extension has no hint
	Status     int    // one of the Ext* values (bit flags)
	StatusText string // Asterisk's text: Idle, InUse, Busy, Unavailable, Ringing, Hold...
}

// ExtensionState asks the device state of an extension through its hint in dialplanContext.
func (c *Conn) ExtensionState(ctx context.Context, exten, dialplanContext string) (ExtensionStatus, error) {
	res, err := c.Action(ctx, Action{Name: "ExtensionState"}.Set("Exten", exten).Set("Context", dialplanContext))
	if err != nil {
		return ExtensionStatus{}, err
	}
	st := ExtensionStatus{
		Exten:      res.Get("Exten"),
		Context:    res.Get("Context"),
		Hint:       res.Get("Hint"),
		StatusText: res.Get("StatusText"),
	}
	s := strings.TrimSpace(res.Get("Status"))
	n, err := strconv.Atoi(s)
	if err != nil {
		return st, fmt.Errorf("ami: extensionstate: status %q is not a number", transport.Truncate(s, 20))
	}
	st.Status = n
	return st, nil
}

// OriginateData are the parameters of the Originate action, named as in goami.
type OriginateData struct {
	Channel     string // the channel to call first, e.g. PJSIP/101
	Exten       string // where it continues once answered (with Context and Priority)...
	Context     string
	Priority    int
	Application string // ...or the application to run instead (with Data)
	Data        string
	Timeout     time.Duration // how long Channel may ring
	CallerID    string        // e.g. `"CRM: 89001234567" <101>`
	Variables   []string      // NAME=value each; a value must not contain ','
	Account     string
	EarlyMedia  bool
	Async       bool // answer at once and report the outcome in an OriginateResponse event
	Codecs      string
	ChannelID   string // Uniqueid to give the channel (Asterisk ≥ 12)
	OtherID     string // Uniqueid of the second channel of a Local pair
}

// Originate sends an Originate. With Async it waits for the OriginateResponse event (returned as
// the last element of Response.Events); a "Failure" there is a *ResponseError whose Frame carries
// the Reason code.
func (c *Conn) Originate(ctx context.Context, d OriginateData) (*Response, error) {
	a := Action{Name: "Originate"}.Set("Channel", d.Channel)
	if d.Application != "" {
		a = a.Set("Application", d.Application)
		if d.Data != "" {
			a = a.Set("Data", d.Data)
		}
	} else {
		a = a.Set("Context", d.Context).Set("Exten", d.Exten)
		p := d.Priority
		if p <= 0 {
			p = 1
		}
		a = a.Set("Priority", strconv.Itoa(p))
	}
	if d.Timeout > 0 {
		a = a.Set("Timeout", strconv.FormatInt(d.Timeout.Milliseconds(), 10))
	}
	if d.CallerID != "" {
		a = a.Set("CallerID", d.CallerID)
	}
	for _, v := range d.Variables {
		if strings.ContainsRune(v, ',') {
			name, _, _ := strings.Cut(v, "=")
			return nil, fmt.Errorf("ami: originate: variable %s: value contains ',' (AMI splits Variable on commas)", transport.Truncate(name, 40))
		}
		a = a.Set("Variable", v)
	}
	if d.Account != "" {
		a = a.Set("Account", d.Account)
	}
	if d.EarlyMedia {
		a = a.Set("EarlyMedia", "true")
	}
	if d.Codecs != "" {
		a = a.Set("Codecs", d.Codecs)
	}
	if d.ChannelID != "" {
		a = a.Set("ChannelId", d.ChannelID)
	}
	if d.OtherID != "" {
		a = a.Set("OtherChannelId", d.OtherID)
	}
	if d.Async {
		a = a.Set("Async", "true")
		a.Until = "OriginateResponse"
	}
	return c.Action(ctx, a)
}

// CoreSettings returns the PBX's settings (AsteriskVersion, AMIversion, SystemName...).
func (c *Conn) CoreSettings(ctx context.Context) (*Response, error) {
	return c.Action(ctx, Action{Name: "CoreSettings"})
}
