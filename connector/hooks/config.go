package hooks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"github.com/goccy/go-yaml"

	"github.com/pbxbridge/pbxbridge/crm"
)

// Config is a connector's hooks block (connectors[].hooks). Every expression is compiled when
// the config is loaded (Compile); `pbxbridge config check` reports its errors with their line.
type Config struct {
	// Timezone is the IANA zone of now, started and ended in expressions (working hours);
	// default: this host's zone.
	Timezone string `yaml:"timezone"`
	// Consts are values the expressions read as consts.NAME: lists of VIP numbers, user ids.
	Consts map[string]Value `yaml:"consts"`
	// LogIf: a bool; false keeps the call away from this connector.
	LogIf string `yaml:"log_if"`
	// Responsible: the CRM user of the call and its missed-call task: a user id (a number), an
	// extension (a string) whose CRM user to take, or nil for the connector's own choice.
	Responsible string `yaml:"responsible"`
	// Task: the missed-call task's text (a string) and deadline (a time, or a duration from now).
	Task Task `yaml:"task"`
	// Entity: the CRM object to bind the call to, "deal:123" (contact, company, lead, deal).
	Entity string `yaml:"entity"`
	// Line: the external line (DID) the CRM shows.
	Line string `yaml:"line"`
	// Employee: the CRM user of the extension ext (a user id, another extension, or nil).
	Employee string `yaml:"employee"`
	// Exec runs an external program at the points it lists.
	Exec *Exec `yaml:"exec"`
}

// Task holds the expressions of the missed-call task.
type Task struct {
	Text     string `yaml:"text"`
	Deadline string `yaml:"deadline"`
}

// Exec is an external program asked at some hook points: the point's input as JSON on stdin,
// the values to override as JSON on stdout (docs/hooks.md).
type Exec struct {
	// Command is the program (an absolute path) and its arguments; no shell.
	Command []string `yaml:"command"`
	// Points it is asked at (log_if, responsible, task, entity, line, employee).
	Points []string `yaml:"points"`
	// Timeout is the hard limit of one run (default 300ms): the process group is killed and
	// the point keeps its default.
	Timeout time.Duration `yaml:"timeout"`
	// Concurrency is how many runs at once (default 4); a run beyond it waits up to Timeout
	// for a slot, then the point keeps its default.
	Concurrency int `yaml:"concurrency"`
	// Fast declares the program quick enough for the live path of a ringing call (log_if of a
	// card, line, employee of a ringing extension); otherwise it is not asked there.
	Fast bool `yaml:"fast"`
}

// Defaults of Exec.
const (
	DefaultExecTimeout     = 300 * time.Millisecond
	DefaultExecConcurrency = 4
)

// Value is a constant of any YAML type (a number, a string, a list, a mapping).
type Value struct{ V any }

// UnmarshalYAML implements yaml.BytesUnmarshaler.
func (v *Value) UnmarshalYAML(b []byte) error {
	var x any
	if err := yaml.Unmarshal(b, &x); err != nil {
		return err
	}
	v.V = normalize(x)
	return nil
}

// normalize turns YAML's integer types into int and keys into strings, so that expressions
// compare consts with call fields without conversions.
func normalize(x any) any {
	switch v := x.(type) {
	case uint64:
		return int(v)
	case int64:
		return int(v)
	case uint:
		return int(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = normalize(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[fmt.Sprint(k)] = normalize(e)
		}
		return out
	}
	return x
}

// Problem is one error of a hooks block: Path is relative to the block ("responsible",
// "task.deadline", "exec.command").
type Problem struct {
	Path string
	Msg  string
}

func (p *Problem) Error() string { return p.Path + ": " + p.Msg }

// Compiled is a hooks block ready to run: every expression compiled, the exec settings checked.
// It is immutable; New makes the running Set of a connector from it.
type Compiled struct {
	cfg    Config
	loc    *time.Location
	consts map[string]any
	progs  [numPoints]*program // by point index; nil: no expression
	text   *program            // task.text
	exec   *Exec               // with defaults; nil: none
	execAt [numPoints]bool
	// lookup: the point's hooks read the CRM look-up (an expression names crm, or exec runs).
	lookup [numPoints]bool
}

const numPoints = 6

func pointIndex(p crm.HookPoint) int {
	switch p {
	case crm.HookLogIf:
		return 0
	case crm.HookResponsible:
		return 1
	case crm.HookTask:
		return 2
	case crm.HookEntity:
		return 3
	case crm.HookLine:
		return 4
	case crm.HookEmployee:
		return 5
	}
	return -1
}

// Empty reports whether c configures no hook at all.
func (c *Compiled) Empty() bool {
	if c == nil {
		return true
	}
	for i := range numPoints {
		if c.progs[i] != nil || c.execAt[i] {
			return false
		}
	}
	return c.text == nil
}

// Compile checks and compiles a hooks block. It returns every problem found; the Compiled is
// nil when there are problems.
func Compile(cfg *Config) (*Compiled, []*Problem) {
	if cfg == nil {
		return nil, nil
	}
	var probs []*Problem
	bad := func(path, format string, args ...any) {
		probs = append(probs, &Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	c := &Compiled{cfg: *cfg, loc: time.Local, consts: map[string]any{}}
	if cfg.Timezone != "" {
		loc, err := time.LoadLocation(cfg.Timezone)
		if err != nil {
			bad("timezone", "unknown time zone %q (want an IANA name such as Europe/Moscow)", cfg.Timezone)
		} else {
			c.loc = loc
		}
	}
	for k, v := range cfg.Consts {
		if !identRe(k) {
			bad("consts."+k, "must be a name of letters, digits and _ (it is read as consts.%s)", k)
		}
		c.consts[k] = v.V
	}
	for _, e := range []struct {
		path string
		src  string
		kind resultKind
		dst  **program
	}{
		{"log_if", cfg.LogIf, kindBool, &c.progs[0]},
		{"responsible", cfg.Responsible, kindUser, &c.progs[1]},
		{"task.deadline", cfg.Task.Deadline, kindDeadline, &c.progs[2]},
		{"task.text", cfg.Task.Text, kindText, &c.text},
		{"entity", cfg.Entity, kindEntity, &c.progs[3]},
		{"line", cfg.Line, kindText, &c.progs[4]},
		{"employee", cfg.Employee, kindUser, &c.progs[5]},
	} {
		if strings.TrimSpace(e.src) == "" {
			continue
		}
		p, err := compileExpr(e.src, e.kind)
		if err != nil {
			bad(e.path, "%s", err)
			continue
		}
		*e.dst = p
	}
	c.lookup[1] = c.progs[1] != nil && c.progs[1].refsCRM
	c.lookup[2] = (c.progs[2] != nil && c.progs[2].refsCRM) || (c.text != nil && c.text.refsCRM)
	for i, p := range c.progs {
		if i != 1 && i != 2 && p != nil && p.refsCRM {
			c.lookup[i] = true
		}
	}
	if x := cfg.Exec; x != nil {
		e := *x
		if e.Timeout == 0 {
			e.Timeout = DefaultExecTimeout
		}
		if e.Concurrency == 0 {
			e.Concurrency = DefaultExecConcurrency
		}
		switch {
		case len(e.Command) == 0 || e.Command[0] == "":
			bad("exec.command", "must name the program, e.g. [/usr/local/bin/crm-hook]")
		case !filepath.IsAbs(e.Command[0]):
			bad("exec.command", "the program must be an absolute path (no shell, no PATH search), got %q", e.Command[0])
		default:
			if st, err := os.Stat(e.Command[0]); err != nil {
				bad("exec.command", "%v", err)
			} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
				bad("exec.command", "%s is not an executable file", e.Command[0])
			}
		}
		if len(e.Points) == 0 {
			bad("exec.points", "must list the points the program answers (log_if, responsible, task, entity, line, employee)")
		}
		for i, p := range e.Points {
			idx := pointIndex(crm.HookPoint(p))
			if idx < 0 {
				bad(fmt.Sprintf("exec.points[%d]", i), "unknown point %q (log_if, responsible, task, entity, line, employee)", p)
				continue
			}
			c.execAt[idx] = true
			c.lookup[idx] = true
		}
		if e.Timeout < 10*time.Millisecond || e.Timeout > 10*time.Second {
			bad("exec.timeout", "must be between 10ms and 10s, got %v", e.Timeout)
		}
		if e.Concurrency < 1 || e.Concurrency > 64 {
			bad("exec.concurrency", "must be between 1 and 64, got %d", e.Concurrency)
		}
		c.exec = &e
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return c, nil
}

func identRe(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// resultKind is what a point's expression must give.
type resultKind int

const (
	kindBool     resultKind = iota // log_if
	kindUser                       // responsible, employee: int user id, string extension, nil
	kindText                       // task.text, line: string or nil
	kindDeadline                   // task.deadline: time, duration or nil
	kindEntity                     // entity: "type:id" or nil
)

func (k resultKind) want() string {
	switch k {
	case kindBool:
		return "true or false"
	case kindUser:
		return "a CRM user id (a number), an extension (a string) or nil"
	case kindText:
		return "a string or nil"
	case kindDeadline:
		return `a time (now + duration("2h"), nextWorking(now, "09:00-18:00", "mon-fri")), a duration or nil`
	case kindEntity:
		return `a string "type:id" (contact, company, lead, deal) or nil`
	}
	return "?"
}

// Limits of one expression. Compile time: at most maxNodes syntax nodes. Run time: the
// memory budget (elements of ranges, lists and maps an evaluation builds), string results of
// + at most maxString bytes, builtins that grow strings or accumulate disabled, and the
// evaluation abandoned after exprTimeout (see program.run).
const (
	maxNodes     = 500
	memoryBudget = 100_000
	maxString    = 4096
)

// disabledBuiltins can grow memory or time beyond what the limits above bound (repeat, join,
// replace, reduce, toJSON), read the wall clock instead of the injected one (now), or are of no
// use for a call (base64, bit operations).
var disabledBuiltins = []string{"now", "repeat", "join", "replace", "reduce", "toJSON", "fromJSON",
	"toBase64", "fromBase64", "flatten", "concat", "splitAfter", "timezone",
	"bitand", "bitor", "bitxor", "bitnand", "bitnot", "bitshl", "bitshr", "bitushr"}

// program is one compiled expression.
type program struct {
	src     string
	prog    *vm.Program
	kind    resultKind
	refsCRM bool
	busy    busyFlag // an evaluation abandoned at its deadline still runs
}

// refs records the identifiers an expression names and checks the constant arguments of the
// working-hours helpers.
type refs struct {
	names map[string]bool
	errs  []error
}

func (r *refs) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		r.names[n.Value] = true
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok || (id.Value != "workingHours" && id.Value != "nextWorking") || len(n.Arguments) != 3 {
			return
		}
		if s, ok := n.Arguments[1].(*ast.StringNode); ok {
			if _, err := parseHours(s.Value); err != nil {
				r.errs = append(r.errs, fmt.Errorf("%s: %w", id.Value, err))
			}
		}
		if s, ok := n.Arguments[2].(*ast.StringNode); ok {
			if _, err := parseDays(s.Value); err != nil {
				r.errs = append(r.errs, fmt.Errorf("%s: %w", id.Value, err))
			}
		}
	}
}

func compileExpr(src string, kind resultKind) (*program, error) {
	r := &refs{names: map[string]bool{}}
	opts := []expr.Option{expr.Env(&Env{}), expr.MaxNodes(maxNodes), expr.Patch(r)}
	for _, b := range disabledBuiltins {
		opts = append(opts, expr.DisableBuiltin(b))
	}
	opts = append(opts, functions()...)
	if kind == kindBool {
		opts = append(opts, expr.AsBool())
	}
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, exprError(err)
	}
	if len(r.errs) > 0 {
		return nil, r.errs[0]
	}
	if t := p.Node().Type(); t != nil && !kind.accepts(t) {
		return nil, fmt.Errorf("must give %s; this expression gives %s", kind.want(), typeName(t))
	}
	return &program{src: src, prog: p, kind: kind, refsCRM: r.names["crm"]}, nil
}

var (
	timeType     = reflect.TypeOf(time.Time{})
	durationType = reflect.TypeOf(time.Duration(0))
)

// accepts reports whether a result of static type t may be right (interfaces are checked when
// the expression runs).
func (k resultKind) accepts(t reflect.Type) bool {
	if t.Kind() == reflect.Interface {
		return true
	}
	switch k {
	case kindBool:
		return t.Kind() == reflect.Bool
	case kindUser:
		return t.Kind() == reflect.String || isInt(t.Kind()) || t.Kind() == reflect.Float64
	case kindText, kindEntity:
		return t.Kind() == reflect.String
	case kindDeadline:
		return t == timeType || t == durationType
	}
	return false
}

func isInt(k reflect.Kind) bool {
	return (k >= reflect.Int && k <= reflect.Int64) || (k >= reflect.Uint && k <= reflect.Uint64)
}

func typeName(t reflect.Type) string {
	switch {
	case t == timeType:
		return "a time"
	case t == durationType:
		return "a duration"
	case t.Kind() == reflect.Bool:
		return "a bool"
	case t.Kind() == reflect.String:
		return "a string"
	case isInt(t.Kind()), t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Map:
		return "a map"
	}
	return t.String()
}

// exprError makes expr's error one line: the message and where in the expression.
func exprError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		if fe.Line > 1 {
			return fmt.Errorf("%s (line %d, column %d of the expression)", msg, fe.Line, fe.Column+1)
		}
		if fe.Snippet != "" {
			return fmt.Errorf("%s (column %d of the expression)", msg, fe.Column+1)
		}
		return errors.New(msg)
	}
	return err
}

// Points lists the points c has a hook at, for logs and the status page.
func (c *Compiled) Points() []crm.HookPoint {
	var out []crm.HookPoint
	for _, p := range crm.HookPoints {
		i := pointIndex(p)
		if c.progs[i] != nil || c.execAt[i] || (i == 2 && c.text != nil) {
			out = append(out, p)
		}
	}
	return slices.Clip(out)
}
