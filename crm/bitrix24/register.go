package bitrix24

import (
	"context"
	"fmt"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// isoOffset is ISO-8601 with an explicit offset, as CALL_START_DATE wants it.
const isoOffset = "2006-01-02T15:04:05-07:00"

// regRequest describes a call to register.
type regRequest struct {
	key      string // record key, sent as EXTERNAL_CALL_ID
	dir      call.Direction
	typ      int // 0: by direction
	customer string
	line     string
	started  time.Time
	user     int
	show     bool
	source   string // live, deliver, callback
}

// registered is the outcome of register.
type registered struct {
	callID string
	user   int
	entity string // TYPE:ID
}

// callType maps a direction to register's TYPE.
func callType(d call.Direction) int {
	if d == call.Outbound {
		return api.TypeOutgoing
	}
	return api.TypeIncoming
}

// lineNumber returns LINE_NUMBER for a line: the configured external line it matches, else
// the line as the PBX reported it.
func (a *Adapter) lineNumber(line string) string {
	for _, l := range a.cfg.Lines {
		if l.Number == line || (digits(line) != "" && digits(l.Number) == digits(line)) {
			return l.Number
		}
	}
	return line
}

// register calls telephony.externalCall.register and binds the CALL_ID to the call, guarding
// against the CALL_ID reuse bug: when the portal hands out a CALL_ID that the index says belongs
// to another call, it registers again with a different de-duplication key (TYPE 3 "incoming with
// redirection" for incoming calls, then without LINE_NUMBER); when every variant collides it
// returns a transient error so that the outbox retries after the other call was finished.
func (a *Adapter) register(ctx context.Context, r regRequest) (*registered, error) {
	typ := r.typ
	if typ == 0 {
		typ = callType(r.dir)
	}
	line, entType, entID := a.hookRegister(ctx, r.line)
	base := api.RegisterParams{
		UserID:         r.user,
		PhoneNumber:    r.customer,
		Type:           typ,
		CRMCreate:      api.Flag(a.cfg.Card.CRMCreate),
		CRMSource:      a.cfg.Card.CRMSource,
		Show:           api.Flag(r.show),
		LineNumber:     a.lineNumber(line),
		ExternalCallID: r.key,
		CRMEntityType:  entType,
		CRMEntityID:    entID,
	}
	if !r.started.IsZero() {
		base.CallStartDate = r.started.In(a.loc).Format(isoOffset)
	}
	variants := []api.RegisterParams{base}
	if a.cfg.CallIDReuseGuard {
		if typ == api.TypeIncoming {
			v := base
			v.Type = api.TypeIncomingRedir
			variants = append(variants, v)
		}
		if base.LineNumber != "" {
			v := variants[len(variants)-1]
			v.LineNumber = ""
			variants = append(variants, v)
		}
	}
	var owner string
	for i, p := range variants {
		res, err := a.client.RegisterCall(ctx, p)
		if err != nil && api.DescriptionContains(err, "User is not found") && p.UserID != a.cfg.Users.DefaultUserID && a.cfg.Users.DefaultUserID > 0 {
			crm.Trace(ctx, "decision", fmt.Sprintf("warning: Bitrix24 says user %d is not found or not active; registering for the default user %d", p.UserID, a.cfg.Users.DefaultUserID), "")
			p.UserID = a.cfg.Users.DefaultUserID
			for j := range variants {
				variants[j].UserID = p.UserID
			}
			res, err = a.client.RegisterCall(ctx, p)
		}
		if err != nil {
			return nil, err
		}
		reg := &registered{callID: res.CallID, user: p.UserID, entity: entityString(string(res.CRMEntityType), int(res.CRMEntityID))}
		if a.cfg.CallIDReuseGuard {
			var ok bool
			owner, ok, err = a.claim(ctx, res.CallID, r.key)
			if err != nil {
				return nil, err
			}
			if !ok {
				a.m.callIDReuse.Inc()
				crm.Trace(ctx, "decision", fmt.Sprintf("Bitrix24 answered CALL_ID %s, which belongs to call %s (the CALL_ID reuse bug); registering again with another key (variant %d)", res.CallID, owner, i+2), "")
				continue
			}
		}
		var shown []int
		if r.show {
			shown = []int{reg.user}
		}
		save := a.saveCall
		if r.source == "live" {
			// A ringing call's next write may be seconds away: the CALL_ID is committed now, so
			// that a crash of the daemon never makes its delivery register the call a second
			// time. Deliver's finish marker and a callback's originate binding follow at once
			// and carry it.
			save = a.saveCallNow
		}
		if err := save(ctx, r.key, reg.callID, reg.user, r.source, reg.entity, shown); err != nil {
			return nil, err
		}
		return reg, nil
	}
	return nil, crm.Transient(fmt.Errorf("Bitrix24 keeps answering CALL_ID owned by call %s (the CALL_ID reuse bug); retrying after that call is finished", owner))
}
