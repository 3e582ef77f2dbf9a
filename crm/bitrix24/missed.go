package bitrix24

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// missed reports whether rec is a missed inbound call for follow-ups.
func (a *Adapter) missed(rec *call.Record) bool {
	if rec.Direction != call.Inbound {
		return false
	}
	switch rec.Disposition {
	case call.NoAnswer:
		return true
	case call.Busy:
		return a.cfg.MissedCalls.Busy
	}
	return false
}

// followUps creates the lead (unknown number) and the task or to-do of a missed call, once each.
func (a *Adapter) followUps(ctx context.Context, rec *call.Record, st *callState) error {
	mc := a.cfg.MissedCalls
	if !a.missed(rec) || (mc.FollowUp == FollowUpNone && !mc.CreateLead) {
		return nil
	}
	key := rec.Key()
	entType, entID := parseEntity(st.entity)
	entType, entID = a.hookFollowUpEntity(ctx, entType, entID)
	var owner int // responsible of the entity, when known
	if mc.CreateLead && entID == 0 && st.lead == "" {
		// register found nothing; check the CRM once more (the number may have been added since).
		matches, err := a.routes.matches(ctx, rec.Customer)
		if err != nil {
			return fmt.Errorf("looking up the caller: %w", err)
		}
		if len(matches) > 0 {
			entType, entID, owner = matches[0].EntityType, int(matches[0].EntityID), int(matches[0].AssignedByID)
		} else {
			resp := a.responsible(ctx, rec, 0)
			id, err := a.client.AddLead(ctx, api.Lead{
				Title:        a.title("Missed call from {customer}", rec),
				Phone:        rec.Customer,
				SourceID:     "CALL",
				AssignedByID: resp,
				Comments:     "pbxbridge call " + key,
			})
			if err != nil {
				return permanentIfScope(fmt.Errorf("creating lead: %w", err))
			}
			a.m.followUps.WithLabelValues("lead").Inc()
			crm.Trace(ctx, "decision", fmt.Sprintf("created lead %d for the unknown number %s", id, rec.Customer), "")
			st.lead = strconv.Itoa(id)
			// The task request follows: a crash meanwhile must not make a second lead.
			if err := a.setLazy(ctx, key, map[string]string{fLead: st.lead}); err != nil {
				return err
			}
			owner = resp
		}
	}
	if st.lead != "" && entID == 0 {
		entType, entID = "LEAD", atoiSafe(st.lead)
	}
	if mc.FollowUp == FollowUpNone || st.followUp != "" {
		return nil
	}
	if owner == 0 && entID > 0 && containsStep(mc.Responsible, RespEntityOwner) {
		matches, err := a.routes.matches(ctx, rec.Customer)
		if err == nil {
			for _, m := range matches {
				if m.EntityType == entType && int(m.EntityID) == entID {
					owner = int(m.AssignedByID)
				}
			}
		}
	}
	resp := a.responsible(ctx, rec, owner)
	if resp == 0 {
		return crm.Permanent(fmt.Errorf("missed-call follow-up: nobody to give it to (missed_calls.responsible found no user; set users.default_user_id)"))
	}
	deadline := a.now().Add(mc.Deadline).In(a.loc).Format(isoOffset)
	title := a.title(mc.Title, rec)
	title, deadline = a.hookTask(ctx, title, deadline)
	desc := a.describe(rec)
	kind := mc.FollowUp
	if kind == FollowUpTodo && api.OwnerTypeID(entType) == 0 {
		crm.Trace(ctx, "decision", "the caller is not in the CRM: a to-do needs a CRM object, creating a task instead", "")
		kind = FollowUpTask
	}
	var id int
	var err error
	if kind == FollowUpTodo {
		id, err = a.client.AddTodo(ctx, api.Todo{
			OwnerTypeID: api.OwnerTypeID(entType), OwnerID: entID, Deadline: deadline,
			Title: title, Description: desc, ResponsibleID: resp, ParentActivityID: activityOf(st.finished),
		})
	} else {
		var bind []string
		if b := api.TaskBinding(entType, entID); b != "" {
			bind = []string{b}
		}
		id, err = a.client.AddTask(ctx, api.Task{
			Title: title, Description: desc, ResponsibleID: resp, CreatedBy: resp, Deadline: deadline, CRMBindings: bind,
		})
	}
	if err != nil {
		return permanentIfScope(fmt.Errorf("creating the missed-call %s: %w", kind, err))
	}
	a.m.followUps.WithLabelValues(kind).Inc()
	st.followUp = fmt.Sprintf("%s:%d", kind, id)
	crm.Trace(ctx, "decision", fmt.Sprintf("created missed-call %s %d for user %d", kind, id, resp), "")
	return a.setLater(ctx, key, map[string]string{fFollowUp: st.followUp})
}

// responsible walks missed_calls.responsible and returns the first user found (0: none).
func (a *Adapter) responsible(ctx context.Context, rec *call.Record, owner int) int {
	if u := a.hookResponsible(ctx); u > 0 {
		return u
	}
	for _, step := range a.cfg.MissedCalls.Responsible {
		switch step {
		case RespEntityOwner:
			if owner > 0 {
				return owner
			}
		case RespLastRang:
			for i := len(rec.Rang) - 1; i >= 0; i-- {
				if u, ok, err := a.users.lookup(ctx, rec.Rang[i]); err == nil && ok {
					return u.ID
				}
			}
		case RespLineDefault:
			if id := a.cfg.lineDefault(rec.Line); id > 0 {
				return id
			}
		case RespDefault:
			if a.cfg.Users.DefaultUserID > 0 {
				return a.cfg.Users.DefaultUserID
			}
		}
	}
	return 0
}

func (a *Adapter) title(tmpl string, rec *call.Record) string {
	r := strings.NewReplacer("{customer}", rec.Customer, "{line}", rec.Line)
	return r.Replace(tmpl)
}

func (a *Adapter) describe(rec *call.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Missed call from %s", rec.Customer)
	if rec.Line != "" {
		fmt.Fprintf(&b, " to %s", rec.Line)
	}
	fmt.Fprintf(&b, " at %s", rec.StartedAt.In(a.loc).Format("2006-01-02 15:04:05 -07:00"))
	if len(rec.Rang) > 0 {
		fmt.Fprintf(&b, "; rang: %s", strings.Join(rec.Rang, ", "))
	}
	if rec.Disposition == call.Busy {
		b.WriteString("; the line was busy")
	}
	fmt.Fprintf(&b, ". (pbxbridge call %s)", rec.Key())
	return b.String()
}

func activityOf(finished string) int {
	_, act, ok := strings.Cut(finished, ":")
	if !ok {
		return 0
	}
	return atoiSafe(act)
}

func atoiSafe(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func containsStep(steps []string, s string) bool {
	for _, x := range steps {
		if x == s {
			return true
		}
	}
	return false
}
