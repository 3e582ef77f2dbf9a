package hooks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// saturdayNight is 2026-11-21 22:00 in Moscow, a Saturday.
var saturdayNight = time.Date(2026, 11, 21, 19, 0, 0, 0, time.UTC)

var missed = &call.Record{CallID: "1.1", PBX: "lab", Direction: call.Inbound, Customer: "+79001234567", Line: "+74951112233",
	Disposition: call.NoAnswer, Rang: []string{"101", "102"}, StartedAt: saturdayNight, EndedAt: saturdayNight,
	Vars: map[string]string{"IVR_DEAL": "4711"}}

func mustSet(tb testing.TB, cfg *Config, m *Metrics) *Set {
	tb.Helper()
	c, probs := Compile(cfg)
	if len(probs) > 0 {
		tb.Fatalf("compile: %v", probs)
	}
	return New(c, Options{Connector: "sales", Metrics: m, Now: func() time.Time { return saturdayNight }})
}

// TestPoints: each point's expression and what it answers.
func TestPoints(t *testing.T) {
	t.Parallel()
	s := mustSet(t, &Config{
		Timezone:    "Europe/Moscow",
		Consts:      map[string]Value{"vip": {V: []any{"+79001234567"}}, "anna": {V: 17}},
		LogIf:       `line != "+74951112299"`,
		Responsible: `customer in consts.vip ? consts.anna : (crm.found ? crm.responsible : nil)`,
		Task: Task{Text: `"Call back " + customer + (workingHours(ended, "09:00-18:00", "mon-fri") ? "" : " (after hours)")`,
			Deadline: `nextWorking(now, "09:00-18:00", "mon-fri")`},
		Entity:   `vars.IVR_DEAL != "" ? "deal:" + vars.IVR_DEAL : nil`,
		Line:     `weekday(now) in ["sat", "sun"] ? "+74950000000" : nil`,
		Employee: `ext == "102" ? "103" : nil`,
	}, nil)
	in := &crm.HookInput{Record: missed, Found: &crm.HookFound{Type: "contact", ID: 3, Responsible: 504142}}
	ctx := context.Background()
	if r, ok := s.Run(ctx, crm.HookLogIf, in); !ok || !r.Log {
		t.Errorf("log_if = %v %+v", ok, r)
	}
	if r, ok := s.Run(ctx, crm.HookResponsible, in); !ok || r.UserID != 17 {
		t.Errorf("responsible = %v %+v, want 17", ok, r)
	}
	msk, _ := time.LoadLocation("Europe/Moscow")
	if r, ok := s.Run(ctx, crm.HookTask, in); !ok || r.TaskText != "Call back +79001234567 (after hours)" ||
		!r.TaskDeadline.Equal(time.Date(2026, 11, 23, 9, 0, 0, 0, msk)) {
		t.Errorf("task = %v %+v, want Monday 09:00 Moscow", ok, r)
	}
	if r, ok := s.Run(ctx, crm.HookEntity, in); !ok || r.EntityType != "deal" || r.EntityID != 4711 {
		t.Errorf("entity = %v %+v", ok, r)
	}
	if r, ok := s.Run(ctx, crm.HookLine, in); !ok || r.Line != "+74950000000" {
		t.Errorf("line = %v %+v", ok, r)
	}
	emp := *in
	emp.Ext = "102"
	if r, ok := s.Run(ctx, crm.HookEmployee, &emp); !ok || r.Ext != "103" {
		t.Errorf("employee = %v %+v", ok, r)
	}
	emp.Ext = "101"
	if _, ok := s.Run(ctx, crm.HookEmployee, &emp); ok {
		t.Error("employee answered for 101, want nil (no answer)")
	}
	other := *missed
	other.Customer = "+79009999999"
	if r, ok := s.Run(ctx, crm.HookResponsible, &crm.HookInput{Record: &other, Found: in.Found}); !ok || r.UserID != 504142 {
		t.Errorf("responsible of a non-VIP = %v %+v, want the contact's owner", ok, r)
	}
	if !s.NeedsLookup(crm.HookResponsible) || s.NeedsLookup(crm.HookEntity) {
		t.Error("NeedsLookup: responsible reads crm, entity does not")
	}
}

// TestWorkingHours: the schedule helpers, past midnight too.
func TestWorkingHours(t *testing.T) {
	t.Parallel()
	at := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, time.UTC) } // 23rd is a Monday
	w, err := schedule("09:00-18:00", "mon-fri")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		t    time.Time
		open bool
		next time.Time
	}{
		{at(23, 9, 0), true, at(23, 9, 0)},
		{at(23, 17, 59), true, at(23, 17, 59)},
		{at(23, 18, 0), false, at(24, 9, 0)},
		{at(27, 20, 0), false, at(30, 9, 0)}, // Friday evening → Monday
		{at(22, 12, 0), false, at(23, 9, 0)}, // Sunday
	} {
		if w.open(c.t) != c.open || !w.next(c.t).Equal(c.next) {
			t.Errorf("%v: open %v next %v, want %v %v", c.t, w.open(c.t), w.next(c.t), c.open, c.next)
		}
	}
	night, err := schedule("22:00-06:00", "fri-sat")
	if err != nil {
		t.Fatal(err)
	}
	if !night.open(at(28, 3, 0)) || night.open(at(23, 3, 0)) || !night.open(at(27, 23, 0)) {
		t.Error("a night shift (22:00-06:00 fri-sat) is open Saturday 03:00 and Friday 23:00, not Monday 03:00")
	}
	for _, bad := range [][2]string{{"9-18", "mon-fri"}, {"09:00-09:00", "mon"}, {"09:00-18:00", "monday-funday"}, {"25:00-26:00", "mon"}} {
		if _, err := schedule(bad[0], bad[1]); err == nil {
			t.Errorf("schedule(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

// TestExpressionBounds: expressions that would grow without bound fail (at compile time or
// when they run) instead of eating the daemon's memory or time; the point keeps its default and
// the failure is counted.
func TestExpressionBounds(t *testing.T) {
	t.Parallel()
	for _, src := range []string{`repeat(customer, 1000000)`, `join(rang, ",")`, `now()`} {
		if _, probs := Compile(&Config{Line: src}); len(probs) == 0 {
			t.Errorf("%s compiled; want it refused", src)
		}
	}
	if _, probs := Compile(&Config{Line: strings.Repeat("customer + ", 600) + "customer"}); len(probs) == 0 {
		t.Error("an expression of 1200 nodes compiled; want it refused")
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := mustSet(t, &Config{
		Line:        `let a = customer + customer; let b = a + a; let c = b + b; let d = c + c; let e = d + d; let f = e + e; let g = f + f; let h = g + g; h + h`,
		Responsible: `len(1..100000000)`,
		Entity:      `all(1..20000, {all(1..20000, {# > 0})}) ? "deal:1" : nil`,
		Task:        Task{Text: `reduce(1..64, #acc + #acc, customer)`},
	}, m)
	in := &crm.HookInput{Record: missed}
	for _, c := range []struct {
		p    crm.HookPoint
		kind string
	}{{crm.HookLine, FailError}, {crm.HookResponsible, FailError}, {crm.HookEntity, FailError}, {crm.HookTask, FailError}} {
		if _, ok := s.Run(context.Background(), c.p, in); ok {
			t.Errorf("%s answered; want it to fail", c.p)
		}
		// The nested loop may run out of its time before it runs out of memory on a slow
		// machine (-race): either bound is the point, so count both kinds.
		v := testutil.ToFloat64(m.failures.WithLabelValues("sales", string(c.p), c.kind))
		if c.p == crm.HookEntity {
			v += testutil.ToFloat64(m.failures.WithLabelValues("sales", string(c.p), FailTimeout))
		}
		if v != 1 {
			t.Errorf("%s: failures{kind=%s} = %v, want 1", c.p, c.kind, v)
		}
	}
}

// TestRuntimeFailures: a wrong type or a runtime error keeps the default, with the failure in
// the call's timeline.
func TestRuntimeFailures(t *testing.T) {
	t.Parallel()
	s := mustSet(t, &Config{Consts: map[string]Value{"who": {V: true}}, Responsible: `consts.who`, Entity: `"deal:" + vars.NOPE`,
		LogIf: `consts.who ? 1/0 > 1 : false`}, nil)
	var tl []string
	ctx := crm.WithTrace(context.Background(), func(kind, summary, detail string) { tl = append(tl, summary) })
	if _, ok := s.Run(ctx, crm.HookResponsible, &crm.HookInput{Record: missed}); ok {
		t.Error("a bool answered responsible")
	}
	if _, ok := s.Run(ctx, crm.HookEntity, &crm.HookInput{Record: missed}); ok {
		t.Error(`"deal:" answered entity`)
	}
	if r, _ := s.Run(ctx, crm.HookLogIf, &crm.HookInput{Record: missed}); !r.Log {
		t.Error("a failed log_if kept the call away; want it logged (the default)")
	}
	if len(tl) != 3 || !strings.Contains(tl[0], "hook responsible (expression) failed, type") {
		t.Errorf("timeline = %q", tl)
	}
}

// TestExecProgram: a program's answer, its failures, the concurrency limit and the clean
// environment (the daemon's secrets never reach it).
func TestExecProgram(t *testing.T) {
	t.Setenv("PBXBRIDGE_HTTP_ADMIN_TOKEN", "secret-token-0123456789")
	dir := t.TempDir()
	script := filepath.Join(dir, "hook")
	write := func(body string) {
		if err := os.WriteFile(script, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	s := mustSet(t, &Config{Exec: &Exec{Command: []string{script}, Points: []string{"responsible", "task", "log_if"}, Timeout: 2 * time.Second, Concurrency: 1}}, nil)
	in := &crm.HookInput{Record: missed}
	write(`read -r input; case "$input" in *'"customer":"+79001234567"'*) ;; *) exit 3;; esac
env | grep -q PBXBRIDGE_HTTP_ADMIN_TOKEN && exit 4
echo '{"responsible": "105", "task": {"text": "Call back", "deadline": "2h"}, "log_if": false}'`)
	if r, ok := s.Run(context.Background(), crm.HookResponsible, in); !ok || r.Ext != "105" {
		t.Errorf("responsible = %v %+v, want extension 105", ok, r)
	}
	if r, ok := s.Run(context.Background(), crm.HookTask, in); !ok || r.TaskText != "Call back" || !r.TaskDeadline.Equal(saturdayNight.Add(2*time.Hour)) {
		t.Errorf("task = %v %+v", ok, r)
	}
	if r, ok := s.Run(context.Background(), crm.HookLogIf, &crm.HookInput{Record: missed, Live: true}); ok || !r.Log {
		t.Errorf("a slow program was asked on the live path: %v %+v", ok, r)
	}
	// Concurrency 1: a second run waits up to the timeout for the slot, then keeps the default.
	write("sleep 5\n")
	s2 := mustSet(t, &Config{Exec: &Exec{Command: []string{script}, Points: []string{"responsible"}, Timeout: 50 * time.Millisecond, Concurrency: 1}}, nil)
	r := s2.exec
	r.slots <- struct{}{} // the slot is taken
	if _, herr := r.run(context.Background(), "responsible", nil); herr == nil || herr.kind != FailBusy {
		t.Errorf("run with no free slot = %v, want busy", herr)
	}
	<-r.slots
	if _, herr := r.run(context.Background(), "responsible", nil); herr == nil || herr.kind != FailTimeout {
		t.Errorf("run of sleep 5 = %v, want timeout", herr)
	}
}

// TestNoHooksNoAllocation: without hooks nothing runs and nothing is allocated where adapters
// and the daemon ask.
func TestNoHooksNoAllocation(t *testing.T) {
	var s *Set
	var h crm.Hooks // an adapter's Params.Hooks without hooks
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if s.Has(crm.HookLogIf) || s.NeedsLookup(crm.HookResponsible) {
			t.Fatal("a nil Set has hooks")
		}
		c := crm.WithHookCall(ctx, h, missed, false)
		if _, ok := crm.AskHook(c, crm.HookResponsible, "", nil); ok {
			t.Fatal("answered without hooks")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call without hooks, want 0", allocs)
	}
	if New(nil, Options{}) != nil {
		t.Error("New(nil) is not nil")
	}
	if c, _ := Compile(&Config{}); New(c, Options{}) != nil {
		t.Error("New of an empty block is not nil")
	}
}
