package amocrm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Repeat callers whose first call became an incoming lead.
//
// The contact of an incoming (unsorted) lead stays hidden until a manager accepts the lead
// (docs/crm-apis.md B.8): POST /api/v4/calls does not match it, so every further call from the
// number would be refused (263) and make another incoming lead. Instead the adapter remembers,
// per number (its last 10 digits), the incoming lead it made (call store key numberKey, field
// fieldUnsorted; the daemon prunes it after the outbox retention without an update), and logs a later call from or to that number as a call_in/call_out note on
// the lead (POST /api/v4/leads/notes, the same note a logged call becomes) while the lead waits in
// Incoming; once it was accepted, the contact is visible and the call goes to POST
// /api/v4/calls as usual; once it was declined, the call is a new unknown number. Whether the
// lead still waits is asked (GET /api/v4/leads/unsorted?filter[uid]=…) at most every
// unsortedRecheck; a note on a lead accepted meanwhile is still the right place.
//
// Incoming leads the adapter did not make itself (another process, a lost state) are found
// before a new one is made: one listing of the newest sip items (GET
// /api/v4/leads/unsorted?filter[category][]=sip, 250, newest first) serves for unsortedScanTTL.
// Calls of one number are handled one at a time, so two concurrent calls from a new number make
// one incoming lead.
const (
	fieldUnsorted   = "amo.unsorted" // <uid>:<lead id>:<contact id>:<checked unix>
	unsortedRecheck = 5 * time.Minute
	unsortedScanTTL = 10 * time.Minute
	unsortedScanMax = 250
)

// numberKey is the call store key of what is known about a number.
func numberKey(number string) string { return "amo.number/" + lastDigits(number, 10) }

// unsortedRef is an incoming lead made for a number.
type unsortedRef struct {
	UID           string
	Lead, Contact int64
	Checked       time.Time // when it was last seen waiting in Incoming
}

func (r unsortedRef) String() string {
	return r.UID + ":" + strconv.FormatInt(r.Lead, 10) + ":" + strconv.FormatInt(r.Contact, 10) + ":" + strconv.FormatInt(r.Checked.Unix(), 10)
}

func parseUnsortedRef(s string) (unsortedRef, bool) {
	p := strings.Split(s, ":")
	if len(p) != 4 || p[0] == "" {
		return unsortedRef{}, false
	}
	lead, err1 := strconv.ParseInt(p[1], 10, 64)
	contact, err2 := strconv.ParseInt(p[2], 10, 64)
	checked, err3 := strconv.ParseInt(p[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || lead <= 0 {
		return unsortedRef{}, false
	}
	return unsortedRef{UID: p[0], Lead: lead, Contact: contact, Checked: time.Unix(checked, 0)}, true
}

// numberLocks serialises the handling of one number's unknown calls.
type numberLocks struct {
	mu sync.Mutex
	m  map[string]*numberLock
}

type numberLock struct {
	ch   chan struct{} // a one-slot semaphore
	refs int
}

// lock takes the number's lock, waiting at most until ctx ends; it returns the unlock.
func (l *numberLocks) lock(ctx context.Context, number string) (func(), error) {
	key := lastDigits(number, 10)
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*numberLock{}
	}
	nl := l.m[key]
	if nl == nil {
		nl = &numberLock{ch: make(chan struct{}, 1)}
		l.m[key] = nl
	}
	nl.refs++
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		if nl.refs--; nl.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
	select {
	case nl.ch <- struct{}{}:
		return func() { <-nl.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}

// unsortedScan is the last listing of the account's waiting sip incoming leads.
type unsortedScan struct {
	mu       sync.Mutex
	at       time.Time
	byNumber map[string]unsortedRef // last 10 digits of from / phone → newest item
}

// unsortedOf returns the incoming lead remembered for number.
func (a *Adapter) unsortedOf(ctx context.Context, number string) (unsortedRef, bool, error) {
	v, err := a.get(ctx, numberKey(number), fieldUnsorted)
	if err != nil {
		return unsortedRef{}, false, err
	}
	ref, ok := parseUnsortedRef(v)
	return ref, ok, nil
}

func (a *Adapter) rememberUnsorted(ctx context.Context, number string, ref unsortedRef) error {
	return a.setLater(ctx, numberKey(number), fieldUnsorted, ref.String())
}

// forgetUnsorted drops what is known about number's incoming lead uid (accepted or declined).
func (a *Adapter) forgetUnsorted(ctx context.Context, number, uid string) error {
	a.scan.mu.Lock()
	if r, ok := a.scan.byNumber[lastDigits(number, 10)]; ok && r.UID == uid {
		delete(a.scan.byNumber, lastDigits(number, 10))
	}
	a.scan.mu.Unlock()
	return a.setLater(ctx, numberKey(number), fieldUnsorted, "")
}

// findUnsorted looks number up in the listing of waiting sip incoming leads (listed again when
// older than unsortedScanTTL).
func (a *Adapter) findUnsorted(ctx context.Context, number string) (unsortedRef, bool, error) {
	want := lastDigits(number, 10)
	if len(want) < 5 {
		return unsortedRef{}, false, nil
	}
	s := &a.scan
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byNumber == nil || a.now().Sub(s.at) > unsortedScanTTL {
		began := a.now()
		items, err := a.client.ListUnsorted(ctx, "", "sip", 1, unsortedScanMax)
		if err != nil {
			return unsortedRef{}, false, fmt.Errorf("listing incoming leads: %w", err)
		}
		byNumber := map[string]unsortedRef{}
		for i := range items {
			it := &items[i]
			if it.LeadID() == 0 {
				continue
			}
			ref := unsortedRef{UID: it.UID, Lead: it.LeadID(), Contact: it.ContactID(), Checked: began}
			from, phone := it.Numbers()
			for _, n := range []string{from, phone} {
				if d := lastDigits(n, 10); len(d) >= 5 {
					if _, seen := byNumber[d]; !seen { // newest first
						byNumber[d] = ref
					}
				}
			}
		}
		s.at, s.byNumber = began, byNumber
		crm.Trace(ctx, "decision", "incoming leads listed", fmt.Sprintf("%d waiting sip incoming leads", len(items)))
	}
	ref, ok := s.byNumber[want]
	return ref, ok, nil
}

// stillWaiting reports whether the incoming lead ref still waits in Incoming, asking amoCRM
// when it was last seen there more than unsortedRecheck ago.
func (a *Adapter) stillWaiting(ctx context.Context, number string, ref unsortedRef) (unsortedRef, bool, error) {
	if a.now().Sub(ref.Checked) <= unsortedRecheck {
		return ref, true, nil
	}
	items, err := a.client.ListUnsorted(ctx, ref.UID, "", 1, 1)
	if err != nil {
		return ref, false, fmt.Errorf("looking up incoming lead %s: %w", ref.UID, err)
	}
	for _, it := range items {
		if it.UID == ref.UID {
			ref.Checked = a.now()
			return ref, true, a.rememberUnsorted(ctx, number, ref)
		}
	}
	return ref, false, nil
}

// logRepeat logs rec, whose number has the incoming lead ref, on that lead; when the lead no
// longer waits in Incoming it returns "" (log it as usual: accepted, its contact is visible;
// declined, the number is unknown again).
func (a *Adapter) logRepeat(ctx context.Context, rec *call.Record, ref unsortedRef) (string, error) {
	ref, waiting, err := a.stillWaiting(ctx, rec.Customer, ref)
	if err != nil {
		return "", err
	}
	if !waiting {
		crm.Trace(ctx, "decision", "incoming lead left Incoming", "incoming lead "+ref.UID+" of "+rec.Customer+" was accepted or declined: logging the call as usual")
		return "", a.forgetUnsorted(ctx, rec.Customer, ref.UID)
	}
	key := rec.Key()
	if err := a.setLazy(ctx, key, fieldCall, markerState(stateSent, a.now())); err != nil {
		return "", err
	}
	c := a.callItem(ctx, rec)
	typ := api.NoteCallIn
	if rec.Direction == call.Outbound {
		typ = api.NoteCallOut
	}
	note := api.NewCallNote{EntityID: ref.Lead, NoteType: typ, CreatedBy: c.CreatedBy, RequestID: "n1",
		Params: api.CallNoteParams{Uniq: c.Uniq, Duration: c.Duration, Source: c.Source, Link: c.Link, Phone: c.Phone,
			CallStatus: c.CallStatus, CallResponsible: c.CallResponsible}}
	_, err = a.client.AddCallNotes(ctx, "leads", []api.NewCallNote{note})
	var e *api.Error
	switch {
	case err == nil:
	case errors.As(err, &e) && e.HTTPStatus == http.StatusBadRequest && len(e.Validation) > 0 && entityGone(e):
		// The lead is gone (declined and deleted): the number is unknown again.
		if err := a.setLater(ctx, key, fieldCall, ""); err != nil {
			return "", err
		}
		crm.Trace(ctx, "decision", "incoming lead gone", "lead "+strconv.FormatInt(ref.Lead, 10)+" of incoming lead "+ref.UID+" no longer exists")
		return "", a.forgetUnsorted(ctx, rec.Customer, ref.UID)
	case ambiguous(err):
		if serr := a.setLater(ctx, key, fieldCall, markerState(stateUnsure, a.now())); serr != nil {
			a.log.Warn("the outcome of a note request is unknown and the call store failed", "key", key, "err", serr)
		}
		return "", fmt.Errorf("logging the call on incoming lead %s: %w", ref.UID, err)
	default:
		if serr := a.setLater(ctx, key, fieldCall, ""); serr != nil {
			a.log.Warn("clearing a sent marker failed: the next attempt looks the call up first", "key", key, "err", serr)
		}
		return "", fmt.Errorf("logging the call on incoming lead %s: %w", ref.UID, err)
	}
	a.m.unknown.WithLabelValues("unsorted_repeat").Inc()
	state := "unsorted:" + ref.UID + ":" + strconv.FormatInt(ref.Lead, 10)
	crm.Trace(ctx, "decision", "logged on the incoming lead", fmt.Sprintf("%s called before and is still an incoming lead (%s): the call is a %s note on lead %d", rec.Customer, ref.UID, typ, ref.Lead))
	return state, a.setLater(ctx, key, fieldCall, state)
}

// entityGone reports whether a note request failed because its entity does not exist.
func entityGone(e *api.Error) bool {
	for _, v := range e.Validation {
		for _, ve := range v.Errors {
			if ve.Path == "entity_id" {
				return true
			}
		}
	}
	return false
}
