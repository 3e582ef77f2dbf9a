package amocrm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Closing the lost-answer window of POST /api/v4/calls.
//
// amoCRM cannot be asked for a call by its uniq, and whether it de-duplicates on uniq is
// unconfirmed (docs/crm-apis.md Part E.7). What it can list are the call_in/call_out notes a logged
// call becomes, with the uniq in their params. So before a calls request the record's call
// field is set durably to "sent:<unix time>"; the answer replaces it (logged, or cleared when
// amoCRM's answer says the call was not placed), and an answer that leaves the outcome unknown
// (a transport error, a timeout, a gateway's 502/504) rewrites it to "unsure:<unix time>". A Deliver that
// finds either marker waits until the earlier request cannot still be running (settle), then
// looks the call up in the notes updated since shortly before the marker; found, the record is
// logged without a second request; not found, it is sent again.
//
// One look-up is a few GET requests (one page per entity type), shared: a kill that cut a
// batch of 50 calls costs one scan, not 50.
const (
	stateSent   = "sent:"
	stateUnsure = "unsure:"

	// settle is how long after an attempt ended its call may still appear in amoCRM.
	settle = 10 * time.Second
	// requestLimit bounds how long a calls request can run (sendCalls' timeout plus margin).
	requestLimit = 65 * time.Second
	// scanSlack: notes are scanned from this long before a marker (amoCRM's clock may differ
	// from ours; the doctor checks it), and a scan serves markers up to scanReuse later.
	scanSlack = 5 * time.Minute
	scanReuse = 3 * time.Minute
	// scanPages bounds one entity type's scan (250 notes per page).
	scanPages = 40
	// maxScanNotes bounds the index a scan builds (every entity type's pages full).
	maxScanNotes = scanPages * 250 * 4
)

// noteEntities are the entity types a call can land in.
var noteEntities = []string{"contacts", "leads", "companies", "customers"}

// marker parses a sent/unsure call state; ok is false for any other state.
func marker(state string) (kind string, at time.Time, ok bool) {
	for _, k := range []string{stateSent, stateUnsure} {
		if v, found := strings.CutPrefix(state, k); found {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return "", time.Time{}, false
			}
			return k, time.Unix(n, 0), true
		}
	}
	return "", time.Time{}, false
}

func markerState(kind string, at time.Time) string { return kind + strconv.FormatInt(at.Unix(), 10) }

// ambiguous reports whether a failed calls request may still have placed its calls: no answer
// (a transport error after the connection was made, a timeout) or a gateway's 502/504 (amoCRM
// behind it may have finished the work). An answer from amoCRM itself (4xx, 429, a block, its
// own 500 or 503), a refused connection or a local refusal is taken as nothing placed.
func ambiguous(err error) bool {
	if err == nil || errors.Is(err, errClosed) {
		return false
	}
	var e *api.Error
	if errors.As(err, &e) {
		return e.HTTPStatus == http.StatusBadGateway || e.HTTPStatus == http.StatusGatewayTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	var ce *crm.Error
	if errors.As(err, &ce) && ce.Class == crm.ClassAuth {
		return false // no token: nothing was sent
	}
	return true
}

// noteIndex is the last scan of call notes: uniq → call state.
type noteIndex struct {
	mu       sync.Mutex
	from, at time.Time // notes updated since from, as listed at time at (when the scan began)
	logged   map[string]string
}

// recoverCall settles a record whose call field holds a sent/unsure marker: it returns the
// logged state when amoCRM has the call, "" when it has not (send it), or an error to retry
// later while the earlier request may still be running.
func (a *Adapter) recoverCall(ctx context.Context, rec *call.Record, state string) (string, error) {
	kind, at, ok := marker(state)
	if !ok {
		return state, nil
	}
	// ref: when the earlier attempt ended at the latest.
	ref := at
	if kind == stateSent {
		ref = at.Add(requestLimit)
		if at.Before(a.started) && a.started.Before(ref) {
			ref = a.started // the process that sent it is gone
		}
	}
	if wait := ref.Add(settle).Sub(a.now()); wait > 0 {
		crm.Trace(ctx, "decision", "earlier attempt unsettled", fmt.Sprintf("a calls request for this record (%s) may still be running; looking it up in %v", state, wait.Round(time.Second)))
		return "", crm.Transient(fmt.Errorf("the earlier calls request for %s may still be running: looking it up after %v", rec.Key(), wait.Round(time.Second)))
	}
	found, err := a.lookupCall(ctx, rec.Key(), at, ref.Add(settle))
	if err != nil {
		return "", fmt.Errorf("looking up an earlier attempt's call: %w", err)
	}
	if found == "" {
		crm.Trace(ctx, "decision", "not logged before", "an earlier calls request ("+state+") did not place the call: sending it")
		a.m.calls.WithLabelValues("resent").Inc()
		return "", nil
	}
	crm.Trace(ctx, "decision", "logged before", "an earlier calls request whose answer was lost placed the call ("+found+")")
	a.m.calls.WithLabelValues("recovered").Inc()
	return found, a.setLater(ctx, rec.Key(), fieldCall, found)
}

// lookupCall finds the call logged with uniq by an attempt made at sent, using a scan that
// began at or after notBefore.
func (a *Adapter) lookupCall(ctx context.Context, uniq string, sent, notBefore time.Time) (string, error) {
	idx := &a.notes
	idx.mu.Lock()
	defer idx.mu.Unlock()
	if idx.logged == nil || idx.from.After(sent.Add(-scanSlack+scanReuse)) || idx.at.Before(notBefore) {
		began := a.now()
		from := sent.Add(-scanSlack)
		logged, err := a.scanNotes(ctx, from)
		if err != nil {
			return "", err
		}
		idx.from, idx.at, idx.logged = from, began, logged
	}
	return idx.logged[uniq], nil
}

// scanNotes lists the call notes updated since from on every entity type.
func (a *Adapter) scanNotes(ctx context.Context, from time.Time) (map[string]string, error) {
	logged := map[string]string{}
	for _, ent := range noteEntities {
		for page := 1; ; page++ {
			if page > scanPages {
				return nil, crm.Transient(fmt.Errorf("more than %d call notes on %s since %s: too many to scan", scanPages*250, ent, from.UTC().Format(time.RFC3339)))
			}
			notes, more, err := a.client.CallNotes(ctx, ent, from, page)
			var e *api.Error
			if ent == "customers" && errors.As(err, &e) && e.HTTPStatus >= 400 && e.HTTPStatus < 500 && e.HTTPStatus != http.StatusUnauthorized && e.HTTPStatus != http.StatusTooManyRequests {
				break // customers are off on this account
			}
			if err != nil {
				return nil, err
			}
			for _, n := range notes {
				if n.Uniq != "" {
					logged[n.Uniq] = "logged:" + ent + ":" + strconv.FormatInt(n.EntityID, 10)
				}
			}
			if len(logged) > maxScanNotes {
				// amoCRM pages hold at most 250 notes: a longer answer is not one to keep.
				return nil, crm.Transient(fmt.Errorf("more than %d call notes since %s: too many to scan", maxScanNotes, from.UTC().Format(time.RFC3339)))
			}
			if !more {
				break
			}
		}
	}
	return logged, nil
}

// Uncertain implements crm.Reconciler: the daemon's state was restored from a backup taken at
// since, so a call still queued may have been logged after it without the call store knowing.
// It is marked unsure at since (an earlier marker is kept), and its next Deliver looks it up in
// the notes updated since then before it sends it.
func (a *Adapter) Uncertain(ctx context.Context, key string, since time.Time) error {
	state, err := a.get(ctx, key, fieldCall)
	if err != nil {
		return err
	}
	if _, at, ok := marker(state); (ok && !at.After(since)) || (!ok && state != "") {
		return nil
	}
	return a.set(ctx, key, fieldCall, markerState(stateUnsure, since))
}

var _ crm.Reconciler = (*Adapter)(nil)
