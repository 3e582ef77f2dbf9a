package amocrm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Hooks (crm.Hooks, docs/hooks.md) at this adapter's decision points:
//
//   - responsible: call_responsible / responsible_user_id of the logged call and of an
//     incoming lead, and the missed-call task's responsible (callUser, taskResponsible);
//   - task: the missed-call task's text and deadline (ensureTask);
//   - entity: the call is logged as a call note on that object (a deal or lead, contact or
//     company) instead of on what amoCRM finds for the number (logOnHookEntity);
//   - line: the number called (inbound) or calling (outbound) of an incoming lead (addUnsorted);
//   - employee: the user of an extension (user), for the call, the task and the pop-up.
//
// Deliver and Live put the call into their ctx (crm.WithHookCall). Without hooks (a.hooks nil)
// nothing of this runs.

func (a *Adapter) hook(ctx context.Context, p crm.HookPoint, ext string) (crm.HookResult, bool) {
	if a.hooks == nil {
		return crm.HookResult{}, false
	}
	return crm.AskHook(ctx, p, ext, a.hookFound)
}

// hookFound is the customer's contact for the hooks' crm input.
func (a *Adapter) hookFound(ctx context.Context, number string) *crm.HookFound {
	c, err := a.findContact(ctx, number)
	if err != nil {
		crm.Trace(ctx, "decision", "warning: hooks: looking the customer up failed", err.Error())
		return nil
	}
	if c == nil {
		return nil
	}
	return &crm.HookFound{Type: "contact", ID: c.ID, Name: c.Name, Responsible: c.ResponsibleUserID}
}

// user is the amoCRM user of an extension: the employee hook's answer, else the mapping.
func (a *Adapter) user(ctx context.Context, ext string) int64 {
	if ext == "" {
		return 0
	}
	if res, ok := a.hook(ctx, crm.HookEmployee, ext); ok {
		if u := a.hookUser(ctx, crm.HookEmployee, res); u != 0 {
			return u
		}
	}
	return a.users.user(ext)
}

// hookUser turns a hook's user answer into an amoCRM user id (0 when the extension it named is
// not mapped).
func (a *Adapter) hookUser(ctx context.Context, p crm.HookPoint, res crm.HookResult) int64 {
	if res.UserID != 0 {
		return res.UserID
	}
	if u := a.users.user(res.Ext); u != 0 {
		return u
	}
	crm.Trace(ctx, "decision", "warning: hook "+string(p)+" named an unmapped extension", "extension "+res.Ext+" has no amoCRM user; the default is used")
	return 0
}

// hookResponsible is the responsible hook's user, 0 when it has no answer.
func (a *Adapter) hookResponsible(ctx context.Context) int64 {
	res, ok := a.hook(ctx, crm.HookResponsible, "")
	if !ok {
		return 0
	}
	return a.hookUser(ctx, crm.HookResponsible, res)
}

// hookLine is the line hook's answer, else line.
func (a *Adapter) hookLine(ctx context.Context, line string) string {
	if res, ok := a.hook(ctx, crm.HookLine, ""); ok {
		return res.Line
	}
	return line
}

// hookTask applies the task hook to the task's text and deadline.
func (a *Adapter) hookTask(ctx context.Context, text string, till time.Time) (string, time.Time) {
	res, ok := a.hook(ctx, crm.HookTask, "")
	if !ok {
		return text, till
	}
	if res.TaskText != "" {
		text = res.TaskText
	}
	if !res.TaskDeadline.IsZero() {
		till = res.TaskDeadline
	}
	return text, till
}

// entityPlural is the API path of a hook's entity type (an amoCRM deal is a lead).
func entityPlural(typ string) string {
	switch typ {
	case "deal", "lead":
		return "leads"
	case "contact":
		return "contacts"
	case "company":
		return "companies"
	}
	return ""
}

// logOnHookEntity logs rec as a call note on the object the entity hook names, and returns the
// call store state; "" when the hook has no answer or the object does not exist (the call is
// then logged as usual).
func (a *Adapter) logOnHookEntity(ctx context.Context, rec *call.Record) (string, error) {
	res, ok := a.hook(ctx, crm.HookEntity, "")
	if !ok {
		return "", nil
	}
	plural := entityPlural(res.EntityType)
	if plural == "" {
		return "", nil
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
	note := api.NewCallNote{EntityID: res.EntityID, NoteType: typ, CreatedBy: c.CreatedBy, RequestID: "n1",
		Params: api.CallNoteParams{Uniq: c.Uniq, Duration: c.Duration, Source: c.Source, Link: c.Link, Phone: c.Phone,
			CallStatus: c.CallStatus, CallResponsible: c.CallResponsible}}
	_, err := a.client.AddCallNotes(ctx, plural, []api.NewCallNote{note})
	var e *api.Error
	switch {
	case err == nil:
	case errors.As(err, &e) && e.HTTPStatus == http.StatusBadRequest && len(e.Validation) > 0 && entityGone(e):
		if err := a.setLater(ctx, key, fieldCall, ""); err != nil {
			return "", err
		}
		crm.Trace(ctx, "decision", "warning: hook entity: no such object", fmt.Sprintf("%s %d does not exist in amoCRM; the call is logged as usual", res.EntityType, res.EntityID))
		return "", nil
	case ambiguous(err):
		if serr := a.setLater(ctx, key, fieldCall, markerState(stateUnsure, a.now())); serr != nil {
			a.log.Warn("the outcome of a note request is unknown and the call store failed", "key", key, "err", serr)
		}
		return "", fmt.Errorf("logging the call on %s %d: %w", res.EntityType, res.EntityID, err)
	default:
		if serr := a.setLater(ctx, key, fieldCall, ""); serr != nil {
			a.log.Warn("clearing a sent marker failed: the next attempt looks the call up first", "key", key, "err", serr)
		}
		return "", fmt.Errorf("logging the call on %s %d: %w", res.EntityType, res.EntityID, err)
	}
	a.m.calls.WithLabelValues("logged").Inc()
	state := "logged:" + plural + ":" + strconv.FormatInt(res.EntityID, 10)
	crm.Trace(ctx, "decision", "logged on the hook's entity", fmt.Sprintf("the call is a %s note on %s %d", typ, res.EntityType, res.EntityID))
	return state, a.setLater(ctx, key, fieldCall, state)
}
