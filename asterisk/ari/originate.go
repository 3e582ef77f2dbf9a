package ari

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/internal/originate"
	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Precheck modes of OriginateOptions.Precheck (the same words as the AMI source's).
const (
	// PrecheckExtensionState asks the PBX before ringing: the endpoint (GET /endpoints, for
	// device technologies such as PJSIP) and the device state (GET /deviceStates). Default.
	PrecheckExtensionState = originate.PrecheckExtensionState
	// PrecheckNone relies on the outcome of the call alone.
	PrecheckNone = originate.PrecheckNone
)

// OriginateVariable is the inherited channel variable that carries OriginateRequest.ID, so the
// call model can tie the resulting call to the CRM request.
const OriginateVariable = originate.Variable

// OriginateOptions configure click-to-call for one PBX: the agent's extension is rung first
// (Channel), and once the agent answers the channel continues in Context at Exten = the
// customer's number, i.e. through the PBX's normal outbound routing.
type OriginateOptions struct {
	// Channel is the agent's endpoint (ARI dial string); "{ext}" is replaced by the extension.
	// Default "PJSIP/{ext}". FreePBX: "Local/{ext}@from-internal"; chan_sip: "SIP/{ext}".
	Channel string
	// Context and Priority of the customer leg (default "from-internal", 1).
	Context  string
	Priority int
	// CallerID shown on the agent's phone while it rings; "{name}", "{number}" and "{ext}" are
	// replaced. Default `"{name}" <{ext}>` with {name} = the request's CallerIDName, else the
	// customer's number.
	CallerID string
	// RingTimeout is how long the agent's phone rings when the request sets no Timeout
	// (default 30 s).
	RingTimeout time.Duration
	// Precheck is PrecheckExtensionState (default) or PrecheckNone.
	Precheck string
	// AllowInUse lets an agent whose device is already in a call be rung (call waiting); by
	// default such an agent is reported busy.
	AllowInUse bool
	// Variables are set on every click-to-call in addition to the request's own.
	Variables map[string]string
}

func (o OriginateOptions) withDefaults() OriginateOptions {
	originate.SetDefaults(&o.Channel, &o.Context, &o.Priority, &o.CallerID, &o.RingTimeout, &o.Precheck)
	return o
}

func (o *OriginateOptions) validate() error {
	if tech, _, ok := strings.Cut(o.Channel, "/"); !ok || tech == "" {
		return fmt.Errorf("ari: originate channel template %q: want TECH/resource such as PJSIP/{ext}", o.Channel)
	}
	return originate.Options{
		Kind: "ari", Channel: o.Channel, Precheck: o.Precheck, Variables: o.Variables, Check: checkVariable,
		Texts: [][2]string{{"channel", o.Channel}, {"context", o.Context}, {"caller id", o.CallerID}},
	}.Validate()
}

// Originate rings req.Extension and, once the agent answers, dials req.Number through
// OriginateOptions.Context (click-to-call). It returns when the outcome of the agent leg is
// known from the events websocket: after the agent answered (the channel went Up), or with an
// error wrapping one of the asterisk sentinels when the cause is known (ErrExtensionUnknown,
// ErrExtensionBusy, ErrExtensionUnreachable, ErrNoAnswer, ErrNotConnected). If ctx has no
// deadline the wait is bounded by the ring timeout plus 15 s.
func (s *Source) Originate(ctx context.Context, req asterisk.OriginateRequest) (asterisk.OriginateResult, error) {
	o := &s.opts.Originate
	r, err := originate.Check("ari", req)
	if err != nil {
		return asterisk.OriginateResult{}, err
	}
	ext, where := r.Ext, r.Where
	vars, err := originate.Variables(o.Variables, req.Variables, req.ID, checkVariable)
	if err != nil {
		return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, err)
	}
	if !s.loop.Connected() {
		return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, asterisk.ErrNotConnected)
	}
	ctx, cancel, timeout := originate.Bound(ctx, req.Timeout, o.RingTimeout)
	defer cancel()
	endpoint := strings.ReplaceAll(o.Channel, "{ext}", ext)
	if o.Precheck == PrecheckExtensionState {
		if err := s.precheck(ctx, ext, endpoint); err != nil {
			return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, err)
		}
	}
	callerID := originate.CallerID(o.CallerID, req.CallerIDName, r.Num, ext)

	w := s.orig.begin()
	defer s.orig.end(w)
	ch, err := s.client.Originate(ctx, OriginateParams{
		Endpoint:  endpoint,
		Extension: r.Num,
		Context:   o.Context,
		Priority:  o.Priority,
		CallerID:  callerID,
		Timeout:   timeout,
		Variables: vars,
	})
	if err != nil {
		return asterisk.OriginateResult{}, fmt.Errorf("%s: %w", where, requestError(err))
	}
	if ch.ID == "" {
		return asterisk.OriginateResult{}, fmt.Errorf("%s: the PBX answered without a channel id", where)
	}
	s.orig.assign(w, ch.ID)
	res := asterisk.OriginateResult{Uniqueid: ch.ID}
	for {
		select {
		case oc := <-w.done:
			if oc.up {
				return res, nil
			}
			return res, fmt.Errorf("%s: %w", where, hangupError(ext, oc.cause, oc.causeText))
		case <-w.lost:
			// Events may have been missed: ask the PBX directly.
			if done, err := s.checkAgent(ctx, ch.ID); done {
				if err != nil {
					return res, fmt.Errorf("%s: %w", where, err)
				}
				return res, nil
			}
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return res, fmt.Errorf("%s: waiting for the agent to answer: %w", where, ctx.Err())
			}
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.RequestTimeout)
			done, err := s.checkAgent(cctx, ch.ID)
			cancel()
			switch {
			case done && err == nil:
				return res, nil
			case done:
				return res, fmt.Errorf("%s: %w", where, err)
			}
			return res, fmt.Errorf("%s: %w (still not answered when the wait ended)", where, asterisk.ErrNoAnswer)
		}
	}
}

// checkAgent asks the PBX about the agent's channel after events may have been lost. done is
// true when the outcome is known: answered (err nil) or gone (err says so).
func (s *Source) checkAgent(ctx context.Context, id string) (done bool, err error) {
	ch, err := s.client.Channel(ctx, id)
	switch {
	case err == nil && ch.State == "Up":
		return true, nil
	case errors.Is(err, ErrNotFound):
		return true, errors.New("the agent's call ended while the PBX connection was down; whether it was answered is unknown")
	}
	return false, nil
}

// precheck refuses an extension the PBX does not know, cannot reach or reports busy.
func (s *Source) precheck(ctx context.Context, ext, endpoint string) error {
	tech, res, _ := strings.Cut(endpoint, "/")
	device := endpoint
	if !strings.EqualFold(tech, "Local") {
		// The endpoint is the resource without dial options (PJSIP/101/sip:…, SIP/101@peer).
		if i := strings.IndexAny(res, "/@"); i >= 0 {
			res = res[:i]
		}
		device = tech + "/" + res
		ep, err := s.client.Endpoint(ctx, tech, res)
		switch {
		case errors.Is(err, ErrNotFound):
			return fmt.Errorf("%w: the PBX has no endpoint %s", asterisk.ErrExtensionUnknown, device)
		case err != nil:
			return fmt.Errorf("checking the extension: %w", requestError(err))
		case strings.EqualFold(ep.State, "offline"):
			return fmt.Errorf("%w: the phone of extension %s is not registered (endpoint %s offline)", asterisk.ErrExtensionUnreachable, ext, device)
		}
	}
	state, err := s.client.DeviceState(ctx, device)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil // Asterisk without res_ari_device_states: rely on the outcome
	case err != nil:
		return fmt.Errorf("checking the extension: %w", requestError(err))
	}
	return deviceStateError(ext, device, state, s.opts.Originate.AllowInUse)
}

// deviceStateError maps an Asterisk device state to an asterisk sentinel, or nil when the agent
// can be rung.
func deviceStateError(ext, device, state string, allowInUse bool) error {
	switch strings.ToUpper(state) {
	case "INVALID":
		return fmt.Errorf("%w: the PBX does not know device %s", asterisk.ErrExtensionUnknown, device)
	case "UNAVAILABLE":
		return fmt.Errorf("%w: the phone of extension %s is not registered or not reachable", asterisk.ErrExtensionUnreachable, ext)
	case "BUSY":
		return fmt.Errorf("%w: extension %s is busy", asterisk.ErrExtensionBusy, ext)
	case "RINGING", "RINGINUSE":
		return fmt.Errorf("%w: extension %s is ringing", asterisk.ErrExtensionBusy, ext)
	case "ONHOLD":
		return fmt.Errorf("%w: extension %s has a call on hold", asterisk.ErrExtensionBusy, ext)
	case "INUSE":
		if !allowInUse {
			return fmt.Errorf("%w: extension %s is already in a call", asterisk.ErrExtensionBusy, ext)
		}
	}
	return nil
}

// hangupError maps the hangup cause of an agent channel that ended before answering.
func hangupError(ext string, cause int, text string) error {
	switch cause {
	case 17: // USER_BUSY
		return fmt.Errorf("%w (the phone of extension %s answered busy)", asterisk.ErrExtensionBusy, ext)
	case 18, 19, 16, 0: // NO_USER_RESPONSE, NO_ANSWER, NORMAL_CLEARING before answer
		return fmt.Errorf("%w (extension %s rang out)", asterisk.ErrNoAnswer, ext)
	case 21: // CALL_REJECTED
		return fmt.Errorf("%w (the phone of extension %s rejected the call)", asterisk.ErrNoAnswer, ext)
	case 1, 3, 22, 28: // UNALLOCATED, NO_ROUTE_DESTINATION, NUMBER_CHANGED, INVALID_NUMBER_FORMAT
		return fmt.Errorf("%w (the PBX cannot route to extension %s: cause %d %s)", asterisk.ErrExtensionUnknown, ext, cause, text)
	case 20, 27, 31, 34, 38, 41, 42, 44, 58: // absent, out of order, congestion, network failures
		return fmt.Errorf("%w (cause %d %s)", asterisk.ErrExtensionUnreachable, cause, text)
	}
	return fmt.Errorf("the PBX ended the call to extension %s before it was answered (cause %d %s)", ext, cause, text)
}

// requestError adds ErrNotConnected to errors that mean the PBX could not be reached.
func requestError(err error) error {
	var he *HTTPError
	if errors.As(err, &he) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", asterisk.ErrNotConnected, err)
}

// checkVariable refuses names and values Asterisk would mangle.
func checkVariable(name, value string) error {
	if name == "" || len(name) > 80 || strings.ContainsAny(name, "=()$:{}, \t\r\n\x00") {
		return fmt.Errorf("variable name %q is invalid", transport.Truncate(name, 40))
	}
	if len(value) > 1024 || strings.ContainsAny(value, "\r\n\x00") {
		return fmt.Errorf("variable %s: value longer than 1024 bytes or with a line break", name)
	}
	return nil
}

// originates tracks the click-to-calls waiting for their agent leg's outcome. The event pump
// calls observe for every event; it costs one atomic load while no originate is waiting.
// Events arriving while POST /channels is still in flight (the channel id is not known yet)
// are kept in each pending waiter's backlog, so a fast answer is never missed.
type originates struct {
	active  atomic.Int32
	mu      sync.Mutex
	byID    map[string]*origWaiter
	pending map[*origWaiter]struct{}
}

// maxBacklog bounds a pending waiter's backlog; beyond it the waiter asks the PBX instead.
const maxBacklog = 4096

type origWaiter struct {
	id       string
	done     chan origOutcome // capacity 1, sent once
	lost     chan struct{}    // capacity 1: events may have been missed
	backlog  []origOutcome
	overflow bool
}

type origOutcome struct {
	id        string
	up        bool
	cause     int
	causeText string
}

func (o *originates) init() {
	o.byID = make(map[string]*origWaiter)
	o.pending = make(map[*origWaiter]struct{})
}

func (o *originates) begin() *origWaiter {
	w := &origWaiter{done: make(chan origOutcome, 1), lost: make(chan struct{}, 1)}
	o.mu.Lock()
	o.pending[w] = struct{}{}
	o.mu.Unlock()
	o.active.Add(1)
	return w
}

// assign tells the waiter its channel id, delivering an outcome already seen.
func (o *originates) assign(w *origWaiter, id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.pending, w)
	w.id = id
	for _, oc := range w.backlog {
		if oc.id == id {
			w.done <- oc
			w.backlog = nil
			return
		}
	}
	if w.overflow {
		signal(w.lost)
	}
	w.backlog = nil
	o.byID[id] = w
}

func (o *originates) end(w *origWaiter) {
	o.mu.Lock()
	delete(o.pending, w)
	if o.byID[w.id] == w {
		delete(o.byID, w.id)
	}
	o.mu.Unlock()
	o.active.Add(-1)
}

// observe delivers the outcome events of watched channels.
func (o *originates) observe(ev *asterisk.Event) {
	if o.active.Load() == 0 {
		return
	}
	var oc origOutcome
	switch {
	case ev.Type == asterisk.TypeNewState && ev.Chan.State == asterisk.StateUp:
		oc = origOutcome{id: ev.Chan.Uniqueid, up: true}
	case ev.Type == asterisk.TypeHangup:
		oc = origOutcome{id: ev.Chan.Uniqueid, cause: ev.Cause, causeText: ev.CauseText}
	default:
		return
	}
	if oc.id == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if w := o.byID[oc.id]; w != nil {
		delete(o.byID, oc.id)
		w.done <- oc // capacity 1 and the waiter left byID: sent once
		return
	}
	for w := range o.pending {
		if len(w.backlog) < maxBacklog {
			w.backlog = append(w.backlog, oc)
		} else {
			w.overflow = true
		}
	}
}

// connectionLost wakes every waiter: events may be missed until the next connection.
func (o *originates) connectionLost() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.byID {
		signal(w.lost)
	}
	for w := range o.pending {
		signal(w.lost)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
