package config_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
)

const withHooks = good + `    hooks:
      timezone: Europe/Moscow
      consts:
        vip: ["+79001234567", "+79007654321"]
        anna: 17
      log_if: 'line != "+74951112299"'
      responsible: 'customer in consts.vip ? consts.anna : nil'
      task:
        text: '"Call back " + customer'
        deadline: 'nextWorking(now + duration("15m"), "09:00-18:00", "mon-fri")'
      entity: 'vars.IVR_DEAL != "" ? "deal:" + vars.IVR_DEAL : nil'
`

// TestHooksCompiledAtLoad: a hooks block is decoded (consts of any YAML type) and compiled when
// the config loads; reloading the same file compares equal (no restart of the connector).
func TestHooksCompiledAtLoad(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse([]byte(withHooks), "hooks.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	cn := &cfg.Connectors[0]
	c := cn.CompiledHooks()
	if c == nil || c.Empty() {
		t.Fatal("hooks not compiled")
	}
	got := c.Points()
	want := []crm.HookPoint{crm.HookLogIf, crm.HookResponsible, crm.HookTask, crm.HookEntity}
	if len(got) != len(want) {
		t.Fatalf("points = %v, want %v", got, want)
	}
	if v := cn.Hooks.Consts["anna"].V; v != 17 {
		t.Errorf("consts.anna = %#v, want int 17", v)
	}
	again, err := config.Parse([]byte(withHooks), "hooks.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !sameStripped(cfg.Connectors[0], again.Connectors[0]) {
		t.Error("the same hooks block loaded twice compares different: every reload would restart the connector")
	}
}

// TestHookProblems: `config check` reports each bad expression with the line of its key and
// what is wrong, all at once.
func TestHookProblems(t *testing.T) {
	t.Parallel()
	in := good + `    hooks:
      timezone: Mars/Olympus
      log_if: 'customer'
      responsible: 'talk_seconds > 10'
      task:
        text: 'customer +'
        deadline: 'workingHours(now, "9-18", "mon-fri") ? now : nil'
      entity: 'no_such_field == 1'
      line: '1 +'
      employee: 'ext == 101'
      exec:
        command: [relative/hook]
        points: [responsible, bogus]
        timeout: 1h
`
	_, err := config.Parse([]byte(in), "bad.yaml", nil)
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want problems", err)
	}
	lines := strings.Split(in, "\n")
	lineOf := func(key string) int {
		for i, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), key+":") {
				return i + 1
			}
		}
		t.Fatalf("no %s key", key)
		return 0
	}
	for _, w := range []struct{ path, key, msg string }{
		{"hooks.timezone", "timezone", "unknown time zone"},
		{"hooks.log_if", "log_if", "bool"},
		{"hooks.responsible", "responsible", "this expression gives a bool"},
		{"hooks.task.text", "text", "unexpected token"},
		{"hooks.task.deadline", "deadline", `hours "9-18"`},
		{"hooks.entity", "entity", "unknown name no_such_field"},
		{"hooks.line", "line", "unexpected token"},
		{"hooks.employee", "employee", "mismatched types string and int"},
		{"hooks.exec.command", "command", "absolute path"},
		{"hooks.exec.points[1]", "points", `unknown point "bogus"`},
		{"hooks.exec.timeout", "timeout", "between 10ms and 10s"},
	} {
		found := false
		for _, p := range ps {
			if p.Path == "connectors[0]."+w.path {
				found = true
				if !strings.Contains(p.Msg, w.msg) {
					t.Errorf("%s: message %q does not say %q", w.path, p.Msg, w.msg)
				}
				if want := lineOf(w.key); p.Line != want {
					t.Errorf("%s: line %d, want %d (the key's)", w.path, p.Line, want)
				}
			}
		}
		if !found {
			t.Errorf("no problem reported at %s; got:\n%v", w.path, err)
		}
	}
}

// sameStripped compares two connectors the way the daemon's reload does.
func sameStripped(a, b config.Connector) bool {
	return reflect.DeepEqual(a.Stripped(), b.Stripped())
}
