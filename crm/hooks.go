package crm

import (
	"context"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/call"
)

// HookPoint names a decision an integrator may override per connector (docs/hooks.md): with an
// expression in the config or an external program.
type HookPoint string

// Hook points. The daemon decides HookLogIf itself; adapters ask the others.
const (
	// HookLogIf: whether the call goes to this connector at all (HookResult.Log).
	HookLogIf HookPoint = "log_if"
	// HookResponsible: the CRM user the call is logged under and its missed-call task is given
	// to (HookResult.UserID or HookResult.Ext).
	HookResponsible HookPoint = "responsible"
	// HookTask: the text and deadline of the missed-call task (HookResult.TaskText,
	// HookResult.TaskDeadline).
	HookTask HookPoint = "task"
	// HookEntity: the CRM object the call is bound to (HookResult.EntityType, EntityID).
	HookEntity HookPoint = "entity"
	// HookLine: the external line (DID) the CRM shows (HookResult.Line).
	HookLine HookPoint = "line"
	// HookEmployee: the CRM user of an extension (HookInput.Ext), instead of the connector's
	// mapping (HookResult.UserID or HookResult.Ext).
	HookEmployee HookPoint = "employee"
)

// HookPoints lists every hook point in the order the docs present them.
var HookPoints = []HookPoint{HookLogIf, HookResponsible, HookTask, HookEntity, HookLine, HookEmployee}

// Hooks are a connector's configured overrides (crm.Params.Hooks; nil when none are configured,
// and then an adapter does exactly what it did without them).
//
// Contract for adapters: at a decision point, call Has first (cheap, no allocation) and build
// the HookInput only when it says yes; look the customer up in the CRM for HookInput.Found only
// when NeedsLookup says so (it costs a request). Run never fails the delivery: when no hook
// answers, or the hook failed (an expression error, a program that crashed, timed out or
// answered garbage), ok is false and the adapter does what it would have done. Run has already
// counted a failure in pbxbridge_hook_failures_total and written it, like every answer, into
// the call's timeline (Trace on ctx). Run may block for an external program's time limit
// (default 300 ms), except with HookInput.Live set: on the live path of a ringing call only
// expressions and programs declared fast run. Safe for concurrent use.
type Hooks interface {
	Has(p HookPoint) bool
	NeedsLookup(p HookPoint) bool
	Run(ctx context.Context, p HookPoint, in *HookInput) (res HookResult, ok bool)
}

// HookInput is what a hook sees of a call.
type HookInput struct {
	// Record is the call. On the live path it is built from the live event: Disposition is
	// empty and the durations are 0.
	Record *call.Record
	// Live is set while the call is in progress (a ringing card, a pop-up).
	Live bool
	// Ext is the extension HookEmployee maps.
	Ext string
	// Found is the CRM's look-up of the customer's number; nil when the adapter did not look
	// (NeedsLookup false) or the CRM knows no object with it.
	Found *HookFound
}

// HookFound is the CRM object found for the customer's number.
type HookFound struct {
	Type string // contact, company, lead, deal (lower case)
	ID   int64
	Name string
	// Responsible is the object's responsible user (its owner), 0 when unknown.
	Responsible int64
}

// HookResult is what a hook answered; only the fields of the point asked are meaningful.
type HookResult struct {
	Log bool // HookLogIf
	// UserID is a CRM user id (HookResponsible, HookEmployee); when 0, Ext names an extension
	// whose CRM user to take (the connector's mapping).
	UserID int64
	Ext    string
	// TaskText replaces the task's text when not empty; TaskDeadline its deadline when not zero.
	TaskText     string
	TaskDeadline time.Time
	// EntityType (contact, company, lead, deal) and EntityID name the CRM object to bind.
	EntityType string
	EntityID   int64
	Line       string // HookLine
}

// LiveRecord builds the call as known while it is in progress, for hooks on the live path.
func LiveRecord(ev *call.Live) *call.Record {
	r := &call.Record{CallID: ev.CallID, PBX: ev.PBX, Direction: ev.Direction, Customer: ev.Customer, Line: ev.Line,
		StartedAt: ev.StartedAt, OriginateID: ev.OriginateID, Vars: ev.Vars}
	if ev.Ext != "" {
		r.Rang = []string{ev.Ext}
	}
	return r
}

// A hook call carries one Deliver's (or Live's) call to the decision points deep in an adapter
// without new parameters, and keeps the hooks' answers and the customer's look-up for that
// attempt: a point asked at two places (the finish user and the task's responsible) runs once.

type hookCallKey struct{}

type hookCall struct {
	h       Hooks
	in      HookInput
	mu      sync.Mutex
	looked  bool
	answers map[string]hookAnswer // point + "/" + ext
}

type hookAnswer struct {
	res HookResult
	ok  bool
}

// WithHookCall returns ctx carrying rec for AskHook; ctx itself when h is nil (no hooks: no
// allocation).
func WithHookCall(ctx context.Context, h Hooks, rec *call.Record, live bool) context.Context {
	if h == nil {
		return ctx
	}
	return context.WithValue(ctx, hookCallKey{}, &hookCall{h: h, in: HookInput{Record: rec, Live: live}})
}

// AskHook runs point p for the call in ctx (ext: the extension HookEmployee maps), once per
// point and extension per call attempt. lookup finds the customer's CRM object; it is called at
// most once, only when the point's hooks read it, and never on the live path. It reports false
// when ctx carries no call, the point has no hook, or the hook did not answer.
func AskHook(ctx context.Context, p HookPoint, ext string, lookup func(ctx context.Context, number string) *HookFound) (HookResult, bool) {
	hc, _ := ctx.Value(hookCallKey{}).(*hookCall)
	if hc == nil || !hc.h.Has(p) {
		return HookResult{}, false
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	key := string(p) + "/" + ext
	if a, ok := hc.answers[key]; ok {
		return a.res, a.ok
	}
	if lookup != nil && !hc.looked && !hc.in.Live && hc.h.NeedsLookup(p) && hc.in.Record != nil {
		hc.looked = true
		hc.in.Found = lookup(ctx, hc.in.Record.Customer)
	}
	in := hc.in
	in.Ext = ext
	res, ok := hc.h.Run(ctx, p, &in)
	if hc.answers == nil {
		hc.answers = map[string]hookAnswer{}
	}
	hc.answers[key] = hookAnswer{res, ok}
	return res, ok
}
