package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/crm"
)

// Metrics are the hooks' metrics, shared by every connector of a daemon (register once).
type Metrics struct {
	failures *prometheus.CounterVec
	answers  *prometheus.CounterVec
	execTime *prometheus.HistogramVec
}

// NewMetrics registers the hooks' metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "hook_failures_total",
			Help: "Hooks that failed (the point kept its default), by connector, point and kind: error, type, timeout, busy, exit, output, start.",
		}, []string{"connector", "point", "kind"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "hook_answers_total",
			Help: "Hooks that answered (overrode the default), by connector, point and source (expression, program).",
		}, []string{"connector", "point", "source"}),
		execTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Name: "hook_program_duration_seconds",
			Help:    "Run time of exec hook programs, by connector.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"connector"}),
	}
	for _, c := range []prometheus.Collector{m.failures, m.answers, m.execTime} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("hooks: metrics: %w", err)
		}
	}
	return m, nil
}

// Options configure a connector's Set.
type Options struct {
	Connector string
	Metrics   *Metrics // nil: not counted
	Logger    *slog.Logger
	Now       func() time.Time // default time.Now
}

// Set is one connector's running hooks; it implements crm.Hooks and is safe for concurrent use.
type Set struct {
	c    *Compiled
	name string
	m    *Metrics
	log  *slog.Logger
	now  func() time.Time
	exec *runner
}

// New returns the running hooks of a connector, or nil when c configures none: give the
// adapter crm.Params.Hooks only when New returned a Set (a nil *Set in a crm.Hooks is not a
// nil interface).
func New(c *Compiled, o Options) *Set {
	if c.Empty() {
		return nil
	}
	s := &Set{c: c, name: o.Connector, m: o.Metrics, log: o.Logger, now: o.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if c.exec != nil {
		s.exec = newRunner(c.exec)
	}
	if s.m != nil {
		for _, p := range c.Points() {
			for _, k := range []string{FailError, FailType, FailTimeout, FailBusy, FailExit, FailOutput, FailStart} {
				s.m.failures.WithLabelValues(s.name, string(p), k)
			}
		}
	}
	return s
}

// Points lists the points the connector has hooks at.
func (s *Set) Points() []crm.HookPoint { return s.c.Points() }

// Has reports whether point has a hook. A nil Set has none.
func (s *Set) Has(p crm.HookPoint) bool {
	if s == nil {
		return false
	}
	i := pointIndex(p)
	return i >= 0 && (s.c.progs[i] != nil || s.c.execAt[i] || (i == 2 && s.c.text != nil))
}

// NeedsLookup reports whether point's hooks read crm (the CRM's look-up of the customer).
func (s *Set) NeedsLookup(p crm.HookPoint) bool {
	if s == nil {
		return false
	}
	i := pointIndex(p)
	return i >= 0 && s.c.lookup[i]
}

// Run implements crm.Hooks: the point's expression, then its program (which wins where it
// answers); a failure of either is counted, logged and traced, and leaves the default.
func (s *Set) Run(ctx context.Context, p crm.HookPoint, in *crm.HookInput) (crm.HookResult, bool) {
	var res crm.HookResult
	if p == crm.HookLogIf {
		res.Log = true
	}
	if !s.Has(p) || in == nil {
		return res, false
	}
	i := pointIndex(p)
	env := s.c.env(s.name, p, in, s.now())
	answered := false
	var timer *time.Timer
	for _, e := range []struct {
		prog *program
		task bool
	}{{s.c.progs[i], false}, {s.textProg(i), true}} {
		if e.prog == nil {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(time.Hour)
			defer timer.Stop()
		}
		v, herr := e.prog.run(env, timer)
		ok := false
		if herr == nil {
			ok, herr = decode(e.prog.kind, v, env.Now, &res, e.task)
		}
		if herr != nil {
			s.failed(ctx, p, "expression", herr, "")
			continue
		}
		answered = answered || ok
	}
	if answered {
		s.answered(ctx, p, "expression", &res, in)
	}
	if s.c.execAt[i] && (!in.Live || s.exec.fast) {
		if s.runProgram(ctx, p, env, &res) {
			answered = true
			s.answered(ctx, p, "program", &res, in)
		}
	}
	if p == crm.HookLogIf && !answered {
		res.Log = true
	}
	return res, answered
}

func (s *Set) textProg(i int) *program {
	if i == 2 {
		return s.c.text
	}
	return nil
}

// runProgram asks the exec hook and merges its answer into res.
func (s *Set) runProgram(ctx context.Context, p crm.HookPoint, env *Env, res *crm.HookResult) bool {
	input, err := json.Marshal(env)
	if err != nil {
		s.failed(ctx, p, "program", fail(FailError, "encoding the input: %v", err), "")
		return false
	}
	out, herr := s.exec.run(ctx, string(p), input)
	if s.m != nil && out.duration > 0 {
		s.m.execTime.WithLabelValues(s.name).Observe(out.duration.Seconds())
	}
	ok := false
	if herr == nil {
		ok, herr = decodeProgram(p, out.stdout, env.Now, res)
	}
	if herr != nil {
		s.failed(ctx, p, "program", herr, out.stderr)
		return false
	}
	if out.stderr != "" {
		s.log.Info("hook program wrote to stderr", "point", p, "stderr", out.stderr)
	}
	return ok
}

// decodeProgram reads a program's answer: a JSON object whose key named like the point holds
// the value ("task" holds {"text", "deadline"}). Nothing, null or a missing key: no answer.
func decodeProgram(p crm.HookPoint, stdout []byte, now time.Time, res *crm.HookResult) (bool, *hookError) {
	stdout = bytes.TrimSpace(stdout)
	if len(stdout) == 0 {
		return false, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(stdout, &obj); err != nil {
		return false, fail(FailOutput, "the program's answer is not a JSON object: %v", err)
	}
	raw, ok := obj[string(p)]
	if !ok {
		return false, nil
	}
	value := func(raw json.RawMessage) (any, *hookError) {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			return nil, fail(FailOutput, "%s: %v", p, err)
		}
		if n, ok := v.(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				return i, nil
			}
			f, _ := n.Float64()
			return f, nil
		}
		return v, nil
	}
	if p == crm.HookTask {
		if string(raw) == "null" {
			return false, nil
		}
		var t struct {
			Text     json.RawMessage `json:"text"`
			Deadline json.RawMessage `json:"deadline"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return false, fail(FailType, "task: want {\"text\": ..., \"deadline\": ...}: %v", err)
		}
		answered := false
		for _, f := range []struct {
			raw  json.RawMessage
			kind resultKind
		}{{t.Text, kindText}, {t.Deadline, kindDeadline}} {
			if len(f.raw) == 0 {
				continue
			}
			v, herr := value(f.raw)
			if herr != nil {
				return false, herr
			}
			ok, herr := decode(f.kind, v, now, res, true)
			if herr != nil {
				return false, herr
			}
			answered = answered || ok
		}
		return answered, nil
	}
	v, herr := value(raw)
	if herr != nil {
		return false, herr
	}
	return decode(kindOf(p), v, now, res, false)
}

func kindOf(p crm.HookPoint) resultKind {
	switch p {
	case crm.HookLogIf:
		return kindBool
	case crm.HookResponsible, crm.HookEmployee:
		return kindUser
	case crm.HookEntity:
		return kindEntity
	}
	return kindText
}

func (s *Set) failed(ctx context.Context, p crm.HookPoint, source string, herr *hookError, stderr string) {
	if s.m != nil {
		s.m.failures.WithLabelValues(s.name, string(p), herr.kind).Inc()
	}
	crm.Trace(ctx, "decision", fmt.Sprintf("warning: hook %s (%s) failed, %s: %v; the default is used", p, source, herr.kind, herr.err), stderr)
	s.log.Warn("hook failed; the default is used", "point", p, "source", source, "kind", herr.kind, "err", herr.err, "stderr", stderr)
}

func (s *Set) answered(ctx context.Context, p crm.HookPoint, source string, res *crm.HookResult, in *crm.HookInput) {
	if s.m != nil {
		s.m.answers.WithLabelValues(s.name, string(p), source).Inc()
	}
	if crm.Tracing(ctx) {
		crm.Trace(ctx, "decision", "hook "+string(p)+" ("+source+"): "+Describe(p, res, in), "")
	}
}

// Describe says in words what a hook answered.
func Describe(p crm.HookPoint, res *crm.HookResult, in *crm.HookInput) string {
	user := func() string {
		if res.UserID != 0 {
			return fmt.Sprintf("CRM user %d", res.UserID)
		}
		return "the CRM user of extension " + res.Ext
	}
	switch p {
	case crm.HookLogIf:
		if res.Log {
			return "log the call to this connector"
		}
		return "do not log the call to this connector"
	case crm.HookResponsible:
		return user()
	case crm.HookEmployee:
		return "extension " + in.Ext + " is " + user()
	case crm.HookTask:
		var parts []string
		if res.TaskText != "" {
			parts = append(parts, fmt.Sprintf("text %q", res.TaskText))
		}
		if !res.TaskDeadline.IsZero() {
			parts = append(parts, "deadline "+res.TaskDeadline.Format(time.RFC3339))
		}
		return strings.Join(parts, ", ")
	case crm.HookEntity:
		return fmt.Sprintf("bind to %s %d", res.EntityType, res.EntityID)
	case crm.HookLine:
		return "line " + res.Line
	}
	return ""
}

var _ crm.Hooks = (*Set)(nil)
