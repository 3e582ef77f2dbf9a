package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
)

// CRMCopyNotice is what `pbxbridge forget` says about the CRM: pbxbridge erases its own state
// only, the calls it delivered live on in the CRM.
const CRMCopyNotice = "calls already delivered stay in the CRM: erase the contact and its calls there (pbxbridge never deletes CRM data)"

// ErrNotANumber is returned by Forget for input that is not a phone number.
var ErrNotANumber = errors.New("not a phone number: give the customer's number with at least 7 digits, e.g. +79161234567 or 89161234567")

// numberMatcher finds one phone number in stored text, in the forms a PBX, the daemon and a CRM
// write it: a run of digits (optionally after a +) equal to the digits of the number as given or
// of its E.164 form, or whose own normalisation is that E.164 form (89161234567 and 79161234567
// for +79161234567 with default_region RU). A run inside a longer run of digits never matches.
type numberMatcher struct {
	norm    *numbers.Normalizer
	e164    string
	targets []string // digit strings
}

// newNumberMatcher validates number (7 to 15 digits once separators are dropped).
func newNumberMatcher(norm *numbers.Normalizer, number string) (*numberMatcher, error) {
	raw := onlyDigits(number)
	if len(raw) < minNumberDigits || len(raw) > maxNumberDigits {
		return nil, fmt.Errorf("%w (got %q)", ErrNotANumber, number)
	}
	m := &numberMatcher{norm: norm, targets: []string{raw}}
	if e, err := norm.Parse(number); err == nil && strings.HasPrefix(e, "+") {
		m.e164 = e
		if d := onlyDigits(e); d != raw {
			m.targets = append(m.targets, d)
		}
	}
	return m, nil
}

// forms are the number as given and its E.164 form (what adapters' caches are keyed by).
func (m *numberMatcher) forms(given string) []string {
	out := []string{strings.TrimSpace(given)}
	if m.e164 != "" && m.e164 != out[0] {
		out = append(out, m.e164)
	}
	return out
}

// needles are the last 7 digits of each target: every written form of the number that keeps
// its digits together holds one of them.
func (m *numberMatcher) needles() []string {
	var out []string
	for _, t := range m.targets {
		n := t[len(t)-minNumberDigits:]
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// match reports whether data mentions the number.
func (m *numberMatcher) match(data []byte) bool {
	s := string(data)
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if m.is(s[i:j]) {
			return true
		}
		i = j
	}
	return false
}

// is reports whether a run of digits is the number.
func (m *numberMatcher) is(run string) bool {
	if len(run) < minNumberDigits || len(run) > maxNumberDigits {
		return false
	}
	if slices.Contains(m.targets, run) {
		return true
	}
	if m.e164 == "" {
		return false
	}
	return m.norm.Normalize(run) == m.e164 || m.norm.Normalize("+"+run) == m.e164
}

func onlyDigits(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// NumberErasure is the outbox erasure of one phone number (what `pbxbridge forget` erases while
// the daemon is stopped), and the number's E.164 form ("" when it does not parse).
func NumberErasure(norm *numbers.Normalizer, number string) (outbox.Erasure, string, error) {
	m, err := newNumberMatcher(norm, number)
	if err != nil {
		return outbox.Erasure{}, "", err
	}
	return outbox.Erasure{Needles: m.needles(), Match: m.match}, m.e164, nil
}

// Forget erases every trace of a phone number from the daemon's state: the outbox (the calls of
// the number in every state, their call state, timelines and open-call rows, and mentions of the
// number in other calls' timelines, call state and errors; see outbox.Forget), the recent calls
// of the status page, and the look-up caches of adapters that keep numbers (crm.Forgetter). It
// says what it erased, how many calls of the number are still in progress (stored when they
// end) and which backups still hold the earlier state. The CRM's copy is not touched
// (CRMCopyNotice).
func (d *Daemon) Forget(ctx context.Context, number string) (admin.ForgetReport, error) {
	m, err := newNumberMatcher(d.norm, number)
	if err != nil {
		return admin.ForgetReport{}, err
	}
	rep := admin.ForgetReport{Number: number, E164: m.e164}
	// The live actions' timeline entries reach the outbox lazily (livetimeline.go): write those
	// waiting first, so they are erased with the rest instead of bringing a call's key back.
	for _, c := range d.routes() {
		if c.live != nil && c.live.tl != nil {
			c.live.tl.flush(ctx, 0)
		}
	}
	rep.Outbox, err = d.store.Forget(ctx, outbox.Erasure{Needles: m.needles(), Match: m.match})
	if err != nil {
		return rep, err
	}
	rep.Recent = d.recent.remove(func(rc admin.RecentCall) bool {
		b, err := json.Marshal(rc.Record)
		return err == nil && m.match(b)
	})
	for _, c := range d.routes() {
		f, ok := c.adapter.(crm.Forgetter)
		if !ok {
			continue
		}
		for _, n := range m.forms(number) {
			f.Forget(ctx, n)
		}
		rep.Caches = append(rep.Caches, c.name)
	}
	d.unitsMu.Lock()
	for _, p := range d.pbxs {
		if p.ledger != nil {
			rep.InProgress += p.ledger.count(m.match)
		}
	}
	d.unitsMu.Unlock()
	rep.Backups = BackupFiles(d.Config().Backup.Dir)
	d.log.Info("forgot a phone number", "number", RedactNumber(number), "calls", len(rep.Outbox.Calls),
		"rows", rep.Outbox.Rows(), "timeline", rep.Outbox.Timeline, "in_progress", rep.InProgress)
	return rep, nil
}

// remove drops the recent calls for which match is true and returns how many.
func (r *recentCalls) remove(match func(admin.RecentCall) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.items)
	r.items = slices.DeleteFunc(r.items, match)
	return n - len(r.items)
}

// count returns how many calls in progress mention the number.
func (l *ledger) count(match func([]byte) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.calls {
		if b, err := json.Marshal(c); err == nil && match(b) {
			n++
		}
	}
	return n
}
