package demo_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/connector/hooks"
	"github.com/pbxbridge/pbxbridge/connector/internal/golden"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// ivrDeal turns the lab's scenario variable of inbound_answered into the deal number a caller
// entered in the IVR (__IVR_DEAL=2; lead 2 exists in the demo amoCRM account).
func ivrDeal(frame []byte) []byte {
	return bytes.ReplaceAll(frame, []byte("Variable: __LAB_SCENARIO\r\nValue: inbound_answered\r\n"),
		[]byte("Variable: __IVR_DEAL\r\nValue: 2\r\n"))
}

func connectorNamed(t *testing.T, cfg *config.Config, name string) *config.Connector {
	t.Helper()
	for i := range cfg.Connectors {
		if cfg.Connectors[i].Name == name {
			return &cfg.Connectors[i]
		}
	}
	t.Fatalf("no connector %s", name)
	return nil
}

func setHooks(t *testing.T, cfg *config.Config, name string, h *hooks.Config) {
	t.Helper()
	if err := connectorNamed(t, cfg, name).SetHooks(h); err != nil {
		t.Fatal(err)
	}
}

func play(t *testing.T, env *demo.Env, scenario string) string {
	t.Helper()
	c, err := env.PBX.Play(context.Background(), scenario)
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	return "lab/" + c.MapID(firstCallID(t, c))
}

func timeline(t *testing.T, env *demo.Env, key string) string {
	t.Helper()
	rep, err := env.Daemon.Call(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range rep.Timeline {
		fmt.Fprintf(&b, "%s %s: %s | %s\n", e.Connector, e.Kind, e.Summary, e.Detail)
	}
	return b.String()
}

// TestHooksEndToEnd runs every hook point through the real delivery path (the simulated PBX,
// the daemon, the fake Bitrix24 and amoCRM), with the docs' worked examples: a VIP's calls go
// to a named manager, a missed call becomes a task for the next working morning, calls to the
// support line stay out of one connector, a deal number entered in the IVR binds the call.
func TestHooksEndToEnd(t *testing.T) {
	testkit.Tier(t, testkit.Slow) // plays calls through the demo
	answered := golden.Records(t, "inbound_answered")[0]
	const manager, substitute = 1271, 1270 // Bitrix24 users of 103 and 102
	env, err := demo.Start(context.Background(), demo.Options{
		Speed: 10,
		PBX:   func(c *fakepbx.Config) { c.Mutate = ivrDeal },
		Configure: func(cfg *config.Config) {
			cfg.PBX[0].Calls.Variables = []string{"IVR_DEAL"}
			setHooks(t, cfg, "b24-demo", &hooks.Config{
				Timezone: "Europe/Moscow",
				Consts: map[string]hooks.Value{"vip": {V: []any{answered.Customer}}, "manager": {V: manager},
					"sales_line": {V: "+74957770000"}},
				Responsible: `customer in consts.vip ? consts.manager : nil`,
				Task: hooks.Task{
					Text:     `"Call back " + customer + (workingHours(ended, "09:00-18:00", "mon-fri") ? "" : " (called after hours)")`,
					Deadline: `nextWorking(now + duration("15m"), "09:00-18:00", "mon-fri")`,
				},
				Line:     `consts.sales_line`,
				Employee: fmt.Sprintf(`ext == "101" ? %d : nil`, substitute),
			})
			setHooks(t, cfg, "amo-demo", &hooks.Config{
				Entity: `vars.IVR_DEAL != "" ? "deal:" + vars.IVR_DEAL : nil`,
				Task:   hooks.Task{Text: `"Missed: " + customer + (crm.found ? " (" + crm.name + ")" : "")`},
			})
			setHooks(t, cfg, "kommo-demo", &hooks.Config{LogIf: `line != "+74951112233"`})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Close() }()

	answeredKey := play(t, env, "inbound_answered")
	missedKey := play(t, env, "inbound_missed")
	env.WaitSettled(time.Minute)

	b24 := env.B24.State()
	var sawAnswered, sawMissed bool
	for _, c := range b24.Calls {
		switch c.ExternalCallID {
		case answeredKey:
			sawAnswered = true
			// responsible: the VIP's call is finished under the named manager, not 101's user.
			if c.FinishUserID != manager {
				t.Errorf("bitrix24: the VIP's answered call finished under user %d, want the manager %d", c.FinishUserID, manager)
			}
			// employee: the card of ringing 101 was registered for the substitute.
			if fmt.Sprint(c.Register["USER_ID"]) != fmt.Sprint(substitute) {
				t.Errorf("bitrix24: registered for user %v, want %d (the employee hook maps 101)", c.Register["USER_ID"], substitute)
			}
			// line: LINE_NUMBER is the hook's.
			if fmt.Sprint(c.Register["LINE_NUMBER"]) != "+74957770000" {
				t.Errorf("bitrix24: LINE_NUMBER %v, want the hook's +74957770000", c.Register["LINE_NUMBER"])
			}
		case missedKey:
			sawMissed = true
		}
	}
	if !sawAnswered || !sawMissed {
		t.Fatalf("bitrix24 got answered %v, missed %v; calls: %+v", sawAnswered, sawMissed, b24.Calls)
	}
	// task: the missed call's task says so, is for the manager, and is due in working hours.
	if len(b24.Tasks) != 1 {
		t.Fatalf("bitrix24: %d tasks, want 1: %+v", len(b24.Tasks), b24.Tasks)
	}
	task := b24.Tasks[0]
	if !strings.HasPrefix(task.Title, "Call back +79001234567") || task.ResponsibleID != manager {
		t.Errorf("bitrix24 task = %q for %d, want the hook's text for the manager %d", task.Title, task.ResponsibleID, manager)
	}
	due, err := time.Parse("2006-01-02T15:04:05-07:00", task.Deadline)
	if err != nil {
		t.Fatalf("task deadline %q: %v", task.Deadline, err)
	}
	msk, _ := time.LoadLocation("Europe/Moscow")
	due = due.In(msk)
	if wd := due.Weekday(); wd == time.Saturday || wd == time.Sunday || due.Hour() < 9 || due.Hour() >= 18 || time.Until(due) > 4*24*time.Hour {
		t.Errorf("bitrix24 task due %v, want within the next working hours (09:00-18:00 mon-fri, Moscow)", due)
	}
	tl := timeline(t, env, answeredKey)
	for _, want := range []string{"b24-demo decision: hook responsible (expression): CRM user 1271",
		"kommo-demo decision: hook log_if (expression): do not log the call to this connector", "amo-demo decision: hook entity (expression): bind to deal 2"} {
		if !strings.Contains(tl, want) {
			t.Errorf("the answered call's timeline has no %q:\n%s", want, tl)
		}
	}

	// entity: amoCRM logs the call with the IVR's deal number as a call note on that deal.
	amo := env.Amo.State().Accounts[0]
	var onDeal bool
	for _, n := range amo.Notes {
		if n.EntityType == "leads" && n.EntityID == 2 && n.NoteType == "call_in" && strings.Contains(string(n.Params), answeredKey) {
			onDeal = true
		}
	}
	if !onDeal {
		t.Errorf("amoCRM: no call_in note on lead 2 for %s; notes: %+v", answeredKey, amo.Notes)
	}
	// task, with the CRM look-up: the missed call's task names the contact.
	var amoTask *fakecrm.AmoTask
	for i := range amo.Tasks {
		amoTask = &amo.Tasks[i]
	}
	if amoTask == nil || !strings.HasPrefix(amoTask.Text, "Missed: +79001234567 (Ivan Ivanov)") {
		t.Errorf("amoCRM task = %+v, want the hook's text with the contact's name", amoTask)
	}
	// log_if: Kommo got neither call (both came in on the support line).
	kommo := env.Kommo.State().Accounts[0]
	if n := len(kommo.Calls) + len(kommo.Unsorted) + len(kommo.Tasks); n != 0 {
		t.Errorf("kommo: %d calls, leads or tasks, want none (log_if said no)", n)
	}
}

// hookScript is an exec hook whose behaviour the test picks per call (the file mode).
const hookScript = `#!/bin/sh
mode=$(cat "$(dirname "$0")/mode")
cat >/dev/null
case "$mode" in
panic) echo 'panic: runtime error: index out of range [3] with length 3' >&2
       echo 'goroutine 1 [running]:' >&2; exit 2 ;;
loop)  while :; do :; done ;;
sleep) sleep 30 ;;
garbage) echo '{"responsible": 17,' ;;
wrongtype) echo '{"responsible": true}' ;;
flood) yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 1073741824 ;;
ok) echo '{"responsible": 1271}' ;;
esac
`

// TestExecHookFailuresStillDeliver: an exec hook that crashes, loops, hangs, answers garbage or
// the wrong type, or writes a gigabyte: every call is still delivered with the default (the
// answering employee's user), and the failure is in pbxbridge_hook_failures_total and the
// call's timeline.
func TestExecHookFailuresStillDeliver(t *testing.T) {
	testkit.Tier(t, testkit.Slow) // plays calls through the demo
	dir := t.TempDir()
	script := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(script, []byte(hookScript), 0o755); err != nil {
		t.Fatal(err)
	}
	setMode := func(m string) {
		if err := os.WriteFile(filepath.Join(dir, "mode"), []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setMode("ok")
	env, err := demo.Start(context.Background(), demo.Options{
		Speed: 10,
		Configure: func(cfg *config.Config) {
			setHooks(t, cfg, "b24-demo", &hooks.Config{Exec: &hooks.Exec{Command: []string{script}, Points: []string{"responsible"},
				// 2 s, not the default 300 ms: a shell script's start on a loaded 2-core CI
				// machine must not pass for a hang; loop and sleep still run past it.
				Timeout: 2 * time.Second, Concurrency: 2}})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Close() }()
	failures := func(kind string) float64 { return hookFailures(env, kind) }
	for _, c := range []struct{ mode, kind, timeline string }{
		{"ok", "", "hook responsible (program): CRM user 1271"},
		{"panic", "exit", "exited with status 2"},
		{"loop", "timeout", "ran past its 2s limit"},
		{"sleep", "timeout", "ran past its 2s limit"},
		{"garbage", "output", "not a JSON object"},
		{"wrongtype", "type", "want a CRM user id"},
		{"flood", "output", "more than 65536 bytes"},
	} {
		setMode(c.mode)
		before := 0.0
		if c.kind != "" {
			before = failures(c.kind)
		}
		key := play(t, env, "inbound_answered")
		env.WaitSettled(time.Minute)
		want := 1269 // 101 answered
		if c.mode == "ok" {
			want = 1271
		}
		var got *fakecrm.B24Call
		for i, call := range env.B24.State().Calls {
			if call.ExternalCallID == key {
				got = &env.B24.State().Calls[i]
			}
		}
		if got == nil || got.State != "finished" || got.FinishUserID != want {
			t.Errorf("%s: call %s = %+v, want finished under user %d", c.mode, key, got, want)
		}
		if c.kind != "" {
			if after := failures(c.kind); after != before+1 {
				t.Errorf("%s: pbxbridge_hook_failures_total{kind=%q} went %v → %v, want +1", c.mode, c.kind, before, after)
			}
		}
		if tl := timeline(t, env, key); !strings.Contains(tl, c.timeline) {
			t.Errorf("%s: the timeline has no %q:\n%s", c.mode, c.timeline, tl)
		}
	}
}

// hookFailures reads pbxbridge_hook_failures_total of b24-demo's responsible point.
func hookFailures(env *demo.Env, kind string) float64 {
	mfs, err := env.Daemon.Registry().Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != "pbxbridge_hook_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["connector"] == "b24-demo" && labels["point"] == "responsible" && labels["kind"] == kind {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
