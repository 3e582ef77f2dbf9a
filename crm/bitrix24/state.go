package bitrix24

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	fOrigKind      = "kind"     // click2call | callback
	fOrigDone      = "finished" // the CALL_ID was finished (failed originate)
)

// callState is what the CallStore knows of one call.
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
	st := &callState{key: key}
	fields := []struct {
		name string
		dst  *string
	}{
		{fCallID, &st.callID}, {fCallSource, &st.source}, {fEntity, &st.entity}, {fFinished, &st.finished},
		{fRecord, &st.record}, {fLead, &st.lead}, {fFollowUp, &st.followUp},
	}
	for _, f := range fields {
		v, err := a.get(ctx, key, f.name)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	v, err := a.get(ctx, key, fCallUser)
	if err != nil {
		return nil, err
	}
	st.callUser, _ = strconv.Atoi(v)
	if v, err = a.get(ctx, key, fShown); err != nil {
		return nil, err
	}
	st.shown = parseIDs(v)
	if v, err = a.get(ctx, key, fFinishSent); err != nil {
		return nil, err
	}
	st.finishSet = v != ""
	return st, nil
}

// saveCall persists a CALL_ID binding of key.
func (a *Adapter) saveCall(ctx context.Context, key, callID string, user int, source, entity string) error {
	for _, kv := range [][2]string{{fCallID, callID}, {fCallUser, strconv.Itoa(user)}, {fCallSource, source}, {fEntity, entity}} {
		if err := a.set(ctx, key, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// claim binds callID to key in the CALL_ID index; it reports false when another call owns it.
func (a *Adapter) claim(ctx context.Context, callID, key string) (owner string, ok bool, err error) {
	a.claimMu.Lock()
	defer a.claimMu.Unlock()
	owner, err = a.get(ctx, callIDIndex+callID, fOwner)
	if err != nil {
		return "", false, err
	}
	if owner != "" && owner != key {
		return owner, false, nil
	}
	if owner == "" {
		if err := a.set(ctx, callIDIndex+callID, fOwner, key); err != nil {
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
