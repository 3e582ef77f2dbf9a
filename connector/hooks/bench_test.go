package hooks

import (
	"context"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
)

// typical is the hooks block of docs/hooks.md's examples: VIPs to a named manager, the missed
// call's task for the next working morning, support calls kept out, the IVR's deal number.
var typical = &Config{
	Timezone: "Europe/Moscow",
	Consts: map[string]Value{"vip": {V: []any{"+79001112233", "+79001234567", "+79005556677"}}, "anna": {V: 17},
		"support": {V: "+74951112299"}},
	LogIf:       `line != consts.support`,
	Responsible: `customer in consts.vip ? consts.anna : nil`,
	Task: Task{Text: `"Missed call from " + customer`,
		Deadline: `workingHours(now, "09:00-18:00", "mon-fri") ? now + duration("30m") : nextWorking(now, "09:00-18:00", "mon-fri")`},
	Entity: `vars.IVR_DEAL != "" ? "deal:" + vars.IVR_DEAL : nil`,
}

// BenchmarkRun is the cost of the typical hooks of one missed call: the points a delivery asks
// (log_if, responsible, task, entity), each evaluated once.
func BenchmarkRun(b *testing.B) {
	s := mustSet(b, typical, nil)
	in := &crm.HookInput{Record: missed}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range []crm.HookPoint{crm.HookLogIf, crm.HookResponsible, crm.HookTask, crm.HookEntity} {
			s.Run(ctx, p, in)
		}
	}
}

// BenchmarkRunOne is one point (responsible: a VIP list look-up).
func BenchmarkRunOne(b *testing.B) {
	s := mustSet(b, typical, nil)
	in := &crm.HookInput{Record: missed}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.Run(ctx, crm.HookResponsible, in)
	}
}

// BenchmarkNoHooks is what a connector without hooks pays where adapters ask: nothing.
func BenchmarkNoHooks(b *testing.B) {
	var h crm.Hooks
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c := crm.WithHookCall(ctx, h, missed, false)
		crm.AskHook(c, crm.HookResponsible, "", nil)
	}
}
