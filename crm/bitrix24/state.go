package bitrix24

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pbxbridge/pbxbridge/crm"
)

// CallStore fields of a call (key = Record.Key()).
const (
	fCallID     = "b24.call_id"     // the Bitrix24 CALL_ID of this call
	fCallUser   = "b24.call_user"   // user id the call was registered for
	fCallSource = "b24.call_source" // live, deliver, click2call, callback
	fShown      = "b24.shown"       // users the card is shown to, comma-separated
	fEntity     = "b24.entity"      // TYPE:ID bound by register
	fFinishSent = "b24.finish_sent" // a finish request was sent (its outcome may be unknown)
	fFinished   = "b24.finished"    // stat id:activity id once finish succeeded
	fRecord     = "b24.record"      // file:<id> or skipped:<reason>
	fLead       = "b24.lead"        // id of the lead created for a missed call
	fFollowUp   = "b24.follow_up"   // task:<id>, todo:<id>
)

// Index keys in the CallStore (not record keys).
const (
	callIDIndex    = "bitrix24-callid:"    // + CALL_ID; field "owner" = record key
	originateIndex = "bitrix24-originate:" // + originate id; fields below
	fOwner         = "owner"
	fOrigCallID    = "call_id"
	fOrigUser      = "user_id"
	fOrigKind      = "kind"            // click2call | callback
	fOrigDone      = "finished"        // the CALL_ID was finished (failed originate)
	eventIndex     = "bitrix24-event:" // + digest of an accepted event's replay id
	fEventSeen     = "seen"            // when it was accepted
)

// callState is what the CallStore knows of one call. While the adapter holds a call's live state
// (liveCall), this is the one copy both Live and Deliver use: every write of the call's fields
// goes to it and to the CallStore, so that only a call the adapter does not hold is read back.
type callState struct {
	key       string
	callID    string
	callUser  int
	source    string
	shown     []int
	entity    string
	finishSet bool
	finished  string
	record    string
	lead      string
	followUp  string
	uncertain string // fUncertain: look the call up before sending it (reconcile.go)
}

func (a *Adapter) get(ctx context.Context, key, field string) (string, error) {
	v, ok, err := a.store.Get(ctx, key, field)
	if err != nil {
		return "", fmt.Errorf("call store: reading %s: %w", field, err)
	}
	if !ok {
		return "", nil
	}
	return v, nil
}

func (a *Adapter) set(ctx context.Context, key, field, value string) error {
	if err := a.store.Set(ctx, key, field, value); err != nil {
		return fmt.Errorf("call store: writing %s: %w", field, err)
	}
	return nil
}

func (a *Adapter) loadState(ctx context.Context, key string) (*callState, error) {
	all, err := a.getAll(ctx, key, fCallID, fCallSource, fEntity, fFinished, fRecord, fLead, fFollowUp, fCallUser, fShown, fFinishSent, fUncertain)
	if err != nil {
		return nil, err
	}
	st := &callState{key: key, callID: all[fCallID], source: all[fCallSource], entity: all[fEntity], finished: all[fFinished],
		record: all[fRecord], lead: all[fLead], followUp: all[fFollowUp]}
	st.callUser, _ = strconv.Atoi(all[fCallUser])
	st.shown = parseIDs(all[fShown])
	st.finishSet = all[fFinishSent] != ""
	st.uncertain = all[fUncertain]
	return st, nil
}

// getAll reads the fields of key: in one query when the store can, else field by field.
func (a *Adapter) getAll(ctx context.Context, key string, fields ...string) (map[string]string, error) {
	if b, ok := a.store.(crm.CallStoreBatch); ok {
		all, err := b.GetAll(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("call store: reading %s: %w", key, err)
		}
		return all, nil
	}
	all := map[string]string{}
	for _, f := range fields {
		v, err := a.get(ctx, key, f)
		if err != nil {
			return nil, err
		}
		all[f] = v
	}
	return all, nil
}

// setLazy writes the fields of key without an fsync of their own when the store can
// (crm.CallStoreLazy: they survive a crash of the daemon), else durably: for write-ahead markers.
func (a *Adapter) setLazy(ctx context.Context, key string, fields map[string]string) error {
	if l, ok := a.store.(crm.CallStoreLazy); ok {
		if err := l.SetLazy(ctx, key, fields); err != nil {
			return fmt.Errorf("call store: writing %s: %w", key, err)
		}
		return nil
	}
	return a.setMany(ctx, key, fields)
}

// setLater writes the fields of key with the store's next commit when the store can
// (crm.CallStoreLazy), else durably now: for results the delivery's acknowledgement soon carries,
// and state whose loss is harmless.
func (a *Adapter) setLater(ctx context.Context, key string, fields map[string]string) error {
	if l, ok := a.store.(crm.CallStoreLazy); ok {
		if err := l.SetLater(key, fields); err != nil {
			return fmt.Errorf("call store: writing %s: %w", key, err)
		}
		return nil
	}
	return a.setMany(ctx, key, fields)
}

// setMany writes the fields of key: in one durable write when the store can, else one by one.
func (a *Adapter) setMany(ctx context.Context, key string, fields map[string]string) error {
	if b, ok := a.store.(crm.CallStoreBatch); ok {
		if err := b.SetMany(ctx, key, fields); err != nil {
			return fmt.Errorf("call store: writing %s: %w", key, err)
		}
		return nil
	}
	for f, v := range fields {
		if err := a.set(ctx, key, f, v); err != nil {
			return err
		}
	}
	return nil
}

// saveCall remembers the CALL_ID of key with its user, source and CRM entity, and the users the
// card is shown to (shown: nil leaves them), in one write with the store's next commit: for a
// caller whose next write (committed when it returns) follows at once and carries it.
func (a *Adapter) saveCall(ctx context.Context, key, callID string, user int, source, entity string, shown []int) error {
	return a.setLater(ctx, key, callFields(callID, user, source, entity, shown))
}

// saveCallNow is saveCall committed when it returns (without an fsync of its own): the CALL_ID
// of a ringing call survives a crash of the daemon.
func (a *Adapter) saveCallNow(ctx context.Context, key, callID string, user int, source, entity string, shown []int) error {
	return a.setLazy(ctx, key, callFields(callID, user, source, entity, shown))
}

func callFields(callID string, user int, source, entity string, shown []int) map[string]string {
	fields := map[string]string{fCallID: callID, fCallUser: strconv.Itoa(user), fCallSource: source, fEntity: entity}
	if shown != nil {
		fields[fShown] = formatIDs(shown)
	}
	return fields
}

// claim binds callID to key in the CALL_ID index; it reports false when another call owns it.
// Claims of one CALL_ID are serialised; different CALL_IDs do not wait for each other.
func (a *Adapter) claim(ctx context.Context, callID, key string) (owner string, ok bool, err error) {
	unlock, err := a.claimLocks.lock(ctx, callID)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	owner, err = a.get(ctx, callIDIndex+callID, fOwner)
	if err != nil {
		return "", false, err
	}
	if owner != "" && owner != key {
		return owner, false, nil
	}
	if owner == "" {
		// Claims of this CALL_ID read it back from the store (SetLater values included) under
		// claimLocks.
		if err := a.setLater(ctx, callIDIndex+callID, map[string]string{fOwner: key}); err != nil {
			return "", false, err
		}
	}
	return key, true, nil
}

func parseIDs(s string) []int {
	var out []int
	for _, p := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(p)); err == nil && n > 0 && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func formatIDs(ids []int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.Itoa(id)
	}
	return strings.Join(parts, ",")
}

func entityString(typ string, id int) string {
	if typ == "" || id <= 0 {
		return ""
	}
	return typ + ":" + strconv.Itoa(id)
}

func parseEntity(s string) (string, int) {
	typ, id, ok := strings.Cut(s, ":")
	if !ok {
		return "", 0
	}
	n, err := strconv.Atoi(id)
	if err != nil || n <= 0 {
		return "", 0
	}
	return typ, n
}
