package hooks

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/pbxbridge/pbxbridge/crm"
)

// exprTimeout bounds how long a caller waits for one expression. The limits of compileExpr
// keep evaluations to microseconds; the timeout is the guarantee for the rest (an expression
// nesting loops over long consts lists): the caller goes on with the default, and the
// abandoned evaluation keeps the expression busy (busyFlag) until it ends.
const exprTimeout = 50 * time.Millisecond

// busyFlag is set while an evaluation that missed its deadline still runs: at most one
// runaway evaluation per expression uses a CPU, and meanwhile the expression answers nothing.
type busyFlag struct{ atomic.Bool }

var vms = sync.Pool{New: func() any { return &vm.VM{MemoryBudget: memoryBudget} }}

type evalResult struct {
	v   any
	err error
}

var evalResults = sync.Pool{New: func() any { return make(chan evalResult, 1) }}

// Failure kinds (the kind label of pbxbridge_hook_failures_total).
const (
	FailError   = "error"   // the expression failed (a runtime error, the memory budget)
	FailType    = "type"    // the answer has the wrong type or value
	FailTimeout = "timeout" // the expression or the program ran past its time limit
	FailBusy    = "busy"    // no slot: the program's concurrency is used up, or the expression still runs
	FailExit    = "exit"    // the program exited non-zero or was killed by a signal (a crash)
	FailOutput  = "output"  // the program's answer is not JSON, or too long
	FailStart   = "start"   // the program could not be started
)

// hookError is a failed hook with its metric kind.
type hookError struct {
	kind string
	err  error
}

func (e *hookError) Error() string { return e.err.Error() }

func fail(kind string, format string, args ...any) *hookError {
	return &hookError{kind: kind, err: fmt.Errorf(format, args...)}
}

// run evaluates p on env within exprTimeout.
func (p *program) run(env *Env, timer *time.Timer) (any, *hookError) {
	if p.busy.Load() {
		return nil, fail(FailBusy, "an earlier evaluation of this expression is still running past its %v limit", exprTimeout)
	}
	ch := evalResults.Get().(chan evalResult)
	go func() {
		v := vms.Get().(*vm.VM)
		out, err := v.Run(p.prog, env)
		vms.Put(v)
		ch <- evalResult{out, err}
	}()
	timer.Reset(exprTimeout)
	select {
	case r := <-ch:
		evalResults.Put(ch)
		if r.err != nil {
			return nil, &hookError{kind: FailError, err: exprError(r.err)}
		}
		return r.v, nil
	case <-timer.C:
		p.busy.Store(true)
		go func() { <-ch; p.busy.Store(false) }()
		return nil, fail(FailTimeout, "the expression ran past its %v limit", exprTimeout)
	}
}

// decode reads an expression's (or a program's) answer for a point into res. It returns false
// for nil (no answer: the default).
func decode(kind resultKind, v any, now time.Time, res *crm.HookResult, task bool) (bool, *hookError) {
	if v == nil {
		return false, nil
	}
	switch kind {
	case kindBool:
		b, ok := v.(bool)
		if !ok {
			return false, fail(FailType, "want %s, got %T", kind.want(), v)
		}
		res.Log = b
	case kindUser:
		switch x := v.(type) {
		case string:
			x = strings.TrimSpace(x)
			if x == "" {
				return false, nil
			}
			if id, err := strconv.ParseInt(x, 10, 64); err == nil && len(x) > 6 {
				res.UserID = id // a long number is a user id, not an extension
			} else {
				res.Ext = x
			}
		default:
			id, ok := asInt(v)
			if !ok || id < 0 {
				return false, fail(FailType, "want %s, got %v (%T)", kind.want(), v, v)
			}
			if id == 0 {
				return false, nil
			}
			res.UserID = id
		}
	case kindText:
		s, ok := v.(string)
		if !ok {
			return false, fail(FailType, "want %s, got %T", kind.want(), v)
		}
		if s == "" {
			return false, nil
		}
		if len(s) > maxString {
			return false, fail(FailType, "the answer is %d bytes, more than %d", len(s), maxString)
		}
		if task {
			res.TaskText = s
		} else {
			res.Line = s
		}
	case kindDeadline:
		switch x := v.(type) {
		case time.Time:
			res.TaskDeadline = x
		case time.Duration:
			res.TaskDeadline = now.Add(x)
		case string: // from a program: RFC 3339 or a Go duration
			if t, err := time.Parse(time.RFC3339, x); err == nil {
				res.TaskDeadline = t
			} else if d, err := time.ParseDuration(x); err == nil {
				res.TaskDeadline = now.Add(d)
			} else {
				return false, fail(FailType, "want a time (RFC 3339) or a duration (2h30m), got %q", x)
			}
		default:
			return false, fail(FailType, "want %s, got %T", kind.want(), v)
		}
		if res.TaskDeadline.Before(now.Add(-24*time.Hour)) || res.TaskDeadline.After(now.AddDate(1, 0, 0)) {
			res.TaskDeadline = time.Time{}
			return false, fail(FailType, "the deadline %s is not within a day before and a year after now", fmt.Sprint(v))
		}
	case kindEntity:
		s, ok := v.(string)
		if !ok {
			return false, fail(FailType, "want %s, got %T", kind.want(), v)
		}
		if s == "" {
			return false, nil
		}
		typ, id, err := ParseEntity(s)
		if err != nil {
			return false, &hookError{kind: FailType, err: err}
		}
		res.EntityType, res.EntityID = typ, id
	}
	return true, nil
}

// ParseEntity reads "deal:123" (contact, company, lead, deal; the type in any case).
func ParseEntity(s string) (string, int64, error) {
	t, n, ok := strings.Cut(strings.TrimSpace(s), ":")
	t = strings.ToLower(strings.TrimSpace(t))
	id, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	if !ok || err != nil || id <= 0 {
		return "", 0, fmt.Errorf("want \"type:id\" such as \"deal:123\", got %q", s)
	}
	switch t {
	case "contact", "company", "lead", "deal":
		return t, id, nil
	}
	return "", 0, fmt.Errorf("unknown entity type %q in %q (contact, company, lead, deal)", t, s)
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case uint:
		return int64(x), true
	case float64:
		if x != math.Trunc(x) || x > math.MaxInt64 || x < 0 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}
