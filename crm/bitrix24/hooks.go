package bitrix24

import (
	"context"
	"fmt"
	"strings"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Hooks (crm.Hooks, docs/hooks.md) at this adapter's decision points:
//
//   - responsible: the user a delivered call is finished under (finishUser) and the missed-call
//     follow-up's and lead's responsible (responsible);
//   - task: the follow-up's title and deadline (followUps);
//   - entity: CRM_ENTITY_TYPE/CRM_ENTITY_ID of telephony.externalCall.register, so the call
//     and its follow-up are bound to that object (register: while the call rings when cards
//     are on, else at delivery);
//   - line: LINE_NUMBER of the registration (register);
//   - employee: the user of an extension, wherever one is mapped while a call is delivered or
//     its card shown (userCache.lookup).
//
// Deliver and Live put the call into their ctx (crm.WithHookCall), so the decision points deep
// in the adapter see it without new parameters. Without hooks (a.hooks nil) nothing of this
// runs.

// withHookCall returns ctx carrying rec for the hooks; ctx itself when none are configured.
func (a *Adapter) withHookCall(ctx context.Context, rec *call.Record, live bool) context.Context {
	return crm.WithHookCall(ctx, a.hooks, rec, live)
}

// withHookLive is withHookCall for a live event.
func (a *Adapter) withHookLive(ctx context.Context, ev *call.Live) context.Context {
	if a.hooks == nil {
		return ctx
	}
	return crm.WithHookCall(ctx, a.hooks, crm.LiveRecord(ev), true)
}

// hook runs point p for the call in ctx (ext: the extension the employee point maps).
func (a *Adapter) hook(ctx context.Context, p crm.HookPoint, ext string) (crm.HookResult, bool) {
	if a.hooks == nil {
		return crm.HookResult{}, false
	}
	return crm.AskHook(ctx, p, ext, a.hookFound)
}

// hookFound is the customer's CRM object for the hooks' crm input (routing's cached look-up).
func (a *Adapter) hookFound(ctx context.Context, number string) *crm.HookFound {
	ms, err := a.routes.matches(ctx, number)
	if err != nil {
		crm.Trace(ctx, "decision", "warning: hooks: looking the customer up failed: "+err.Error(), "")
		return nil
	}
	if len(ms) == 0 {
		return nil
	}
	m := ms[0]
	owner := int64(m.AssignedByID)
	if owner == 0 {
		owner = int64(m.AssignedBy.ID)
	}
	return &crm.HookFound{Type: strings.ToLower(m.EntityType), ID: int64(m.EntityID), Name: string(m.Name), Responsible: owner}
}

// hookUser turns a hook's user answer into a Bitrix24 user id (0 when the extension it named
// has no user).
func (a *Adapter) hookUser(ctx context.Context, p crm.HookPoint, res crm.HookResult) int {
	if res.UserID > 0 {
		return int(res.UserID)
	}
	u, ok, err := a.users.lookup(withoutEmployeeHook(ctx), res.Ext)
	if err != nil || !ok {
		crm.Trace(ctx, "decision", fmt.Sprintf("warning: hook %s named extension %s, which has no Bitrix24 user; the default is used", p, res.Ext), "")
		return 0
	}
	return u.ID
}

// hookResponsible is the responsible hook's user, 0 when it has no answer.
func (a *Adapter) hookResponsible(ctx context.Context) int {
	res, ok := a.hook(ctx, crm.HookResponsible, "")
	if !ok {
		return 0
	}
	return a.hookUser(ctx, crm.HookResponsible, res)
}

// hookEmployee maps ext through the employee hook; done is false when the hook has no answer
// (the connector's mapping applies).
func (a *Adapter) hookEmployee(ctx context.Context, ext string) (u userInfo, ok, done bool) {
	if a.hooks == nil || ctx.Value(noEmployeeHook{}) != nil {
		return userInfo{}, false, false
	}
	res, answered := a.hook(ctx, crm.HookEmployee, ext)
	if !answered {
		return userInfo{}, false, false
	}
	id := a.hookUser(ctx, crm.HookEmployee, res)
	if id == 0 {
		return userInfo{}, false, false
	}
	u = userInfo{ID: id, Ext: ext, Active: true}
	if _, byID, _, _, _ := a.users.snapshot(); byID != nil {
		u.Name = byID[id].Name
	}
	return u, true, true
}

type noEmployeeHook struct{}

func withoutEmployeeHook(ctx context.Context) context.Context {
	return context.WithValue(ctx, noEmployeeHook{}, true)
}

// hookRegister applies the line and entity hooks to a registration. Bitrix24 binds a call to a
// contact, company or lead only (docs/crm-apis.md A.3.1); a deal binds the missed-call
// follow-up (hookFollowUpEntity), and the call stays with what Bitrix24 finds for the number.
func (a *Adapter) hookRegister(ctx context.Context, line string) (string, string, int) {
	if a.hooks == nil {
		return line, "", 0
	}
	if res, ok := a.hook(ctx, crm.HookLine, ""); ok {
		line = res.Line
	}
	res, ok := a.hook(ctx, crm.HookEntity, "")
	if !ok {
		return line, "", 0
	}
	if res.EntityType == "deal" {
		crm.Trace(ctx, "decision", fmt.Sprintf("hook entity: Bitrix24 registers calls on contacts, companies and leads only; deal %d gets the missed-call follow-up", res.EntityID), "")
		return line, "", 0
	}
	return line, strings.ToUpper(res.EntityType), int(res.EntityID)
}

// hookFollowUpEntity is the object the missed-call follow-up is bound to: the entity hook's
// answer, else what the call was bound to.
func (a *Adapter) hookFollowUpEntity(ctx context.Context, typ string, id int) (string, int) {
	if res, ok := a.hook(ctx, crm.HookEntity, ""); ok {
		return strings.ToUpper(res.EntityType), int(res.EntityID)
	}
	return typ, id
}

// hookTask applies the task hook to the follow-up's title and deadline (isoOffset).
func (a *Adapter) hookTask(ctx context.Context, title, deadline string) (string, string) {
	res, ok := a.hook(ctx, crm.HookTask, "")
	if !ok {
		return title, deadline
	}
	if res.TaskText != "" {
		title = res.TaskText
	}
	if !res.TaskDeadline.IsZero() {
		deadline = res.TaskDeadline.In(a.loc).Format(isoOffset)
	}
	return title, deadline
}
