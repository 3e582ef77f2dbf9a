package connector

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Click-to-call places real calls on the PBX at a CRM's request, so every originate an adapter
// asks for passes one gate here, whatever the CRM:
//
//  1. the connector's licence allows CRM actions (no licence, no call);
//  2. the number is dialable and allowed by the PBX's pbx[].originate.allow/deny policy (toll
//     fraud: premium-rate, satellite and international numbers only when the admin allows them);
//  3. the agent's extension has not started more than pbx[].originate.per_minute calls in the
//     last minute;
//
// and every originate is logged with who asked, and written into the call's timeline once the
// call's record exists.

// gatedOriginator is the asterisk.Originator every adapter gets: it finds the PBX source at call
// time (reloads that restart a PBX are followed) and applies the gate.
type gatedOriginator struct {
	d         *Daemon
	connector string
	pbx       []string // the connector's pbx list (empty: any)
}

func (o *gatedOriginator) Originate(ctx context.Context, req asterisk.OriginateRequest) (asterisk.OriginateResult, error) {
	d := o.d
	result := func(r string) { d.m.originates.WithLabelValues(o.connector, r).Inc() }
	log := d.log.With("connector", o.connector, "requester", req.Requester, "extension", req.Extension, "number", d.redactNumber(req.Number), "originate_id", req.ID)

	d.unitsMu.Lock()
	c := d.conns[o.connector]
	var org asterisk.Originator
	var pc config.PBX
	for name, p := range d.pbxs {
		if len(o.pbx) > 0 && !contains(o.pbx, name) {
			continue
		}
		if og, ok := p.source.(asterisk.Originator); ok {
			org, pc = og, p.cfg
			break
		}
	}
	d.unitsMu.Unlock()

	if c == nil || !c.allowed() {
		result("unlicensed")
		log.Warn("click-to-call refused: no licence for CRM actions")
		return asterisk.OriginateResult{}, crm.ErrClickToCallUnlicensed
	}
	if org == nil {
		result("failed")
		return asterisk.OriginateResult{}, fmt.Errorf("click-to-call: %w", asterisk.ErrNotConnected)
	}
	class, rule, ok := d.click.check(pc.Originate, req.Number)
	if !ok {
		result("denied_number")
		log.Warn("click-to-call refused by the number policy", "class", class, "rule", rule)
		return asterisk.OriginateResult{}, fmt.Errorf("%w (%s number; pbx %s originate.allow/deny)", crm.ErrClickToCallDenied, class, pc.Name)
	}
	if !d.click.take(o.connector, req.Extension, pc.Originate.PerMinute) {
		result("rate_limited")
		log.Warn("click-to-call refused: rate limit", "per_minute", pc.Originate.PerMinute)
		return asterisk.OriginateResult{}, crm.ErrClickToCallRate
	}
	d.click.remember(req.ID, clickRequest{connector: o.connector, requester: req.Requester, ext: req.Extension, number: req.Number, at: d.now()})
	res, err := org.Originate(ctx, req)
	if err != nil {
		result("failed")
		log.Info("click-to-call failed", "err", err)
		return res, err
	}
	result("originated")
	log.Info("click-to-call originated", "pbx", pc.Name)
	return res, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clickRequest is who asked for a click-to-call, kept until the call's record is enqueued.
type clickRequest struct {
	connector, requester, ext, number string
	at                                time.Time
}

// Bounds of the gate's memory: limiters of distinct extensions and remembered requests.
const (
	maxClickLimiters = 4096
	maxClickRequests = 4096
	clickRequestTTL  = 2 * time.Hour
)

// clickGate holds the click-to-call policy's state: number classification, per-extension
// limiters and the requests waiting for their call's record. Safe for concurrent use; bounded.
type clickGate struct {
	norm *numbers.Normalizer
	now  func() time.Time

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	requests map[string]clickRequest
}

func newClickGate(norm *numbers.Normalizer, now func() time.Time) *clickGate {
	return &clickGate{norm: norm, now: now, limiters: map[string]*rate.Limiter{}, requests: map[string]clickRequest{}}
}

// check applies allow/deny to number: it returns the number's class, the rule that decided
// and whether the call may go ahead.
func (g *clickGate) check(o config.Originate, number string) (numbers.Class, string, bool) {
	class, e164 := g.norm.Classify(number)
	if class == numbers.ClassInvalid {
		return class, "not a dialable number", false
	}
	matches := func(rule string) bool {
		if strings.HasPrefix(rule, "+") {
			return e164 != "" && strings.HasPrefix(e164, rule)
		}
		return numbers.Class(rule) == class
	}
	for _, r := range o.Deny {
		if matches(r) {
			return class, "deny " + r, false
		}
	}
	for _, r := range o.Allow {
		if matches(r) {
			return class, "allow " + r, true
		}
	}
	return class, "not allowed", false
}

// take spends one call of the extension's per-minute budget.
func (g *clickGate) take(connector, ext string, perMinute int) bool {
	if perMinute <= 0 {
		return true
	}
	key := connector + "\x00" + ext
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.limiters[key]
	if !ok {
		if len(g.limiters) >= maxClickLimiters {
			clear(g.limiters) // a flood of distinct extensions: start over rather than grow
		}
		l = rate.NewLimiter(rate.Every(time.Minute/time.Duration(perMinute)), perMinute)
		g.limiters[key] = l
	}
	return l.AllowN(g.now(), 1)
}

// remember keeps who asked for the originate id until its call's record arrives.
func (g *clickGate) remember(id string, r clickRequest) {
	if id == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.requests) >= maxClickRequests {
		cutoff := g.now().Add(-clickRequestTTL)
		for k, v := range g.requests {
			if v.at.Before(cutoff) {
				delete(g.requests, k)
			}
		}
		if len(g.requests) >= maxClickRequests {
			return
		}
	}
	g.requests[id] = r
}

// forget drops the request of an originate id (its record is stored).
func (g *clickGate) forget(id string) {
	g.mu.Lock()
	delete(g.requests, id)
	g.mu.Unlock()
}

// customer returns the customer's number, normalised, of a click-to-call the daemon placed
// ("" when the originate id is not one of its requests).
func (g *clickGate) customer(id string) string {
	if id == "" {
		return ""
	}
	g.mu.Lock()
	r, ok := g.requests[id]
	g.mu.Unlock()
	if !ok || r.number == "" {
		return ""
	}
	return g.norm.Normalize(r.number)
}

// timeline returns the timeline entry of the click-to-call a record came from, if the daemon
// placed it.
func (g *clickGate) timeline(rec *call.Record) (outbox.TimelineEntry, bool) {
	if rec.OriginateID == "" {
		return outbox.TimelineEntry{}, false
	}
	g.mu.Lock()
	r, ok := g.requests[rec.OriginateID]
	g.mu.Unlock()
	if !ok {
		return outbox.TimelineEntry{}, false
	}
	who := r.requester
	if who == "" {
		who = "a CRM user"
	}
	return outbox.TimelineEntry{At: r.at, Connector: r.connector, Kind: "click_to_call",
		Summary: fmt.Sprintf("click-to-call requested by %s through %s: extension %s, then %s", who, r.connector, r.ext, r.number)}, true
}
