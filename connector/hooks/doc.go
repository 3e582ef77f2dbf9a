// Package hooks runs the integrator's overrides of a connector's decisions (docs/hooks.md):
// expressions in the config (github.com/expr-lang/expr), compiled once when the config is
// loaded, and an external program asked with JSON on stdin and answering JSON on stdout.
//
// Hook points: log_if (whether a call goes to the connector; the daemon asks), responsible,
// task (text, deadline), entity, line and employee (the adapters ask, through crm.Hooks).
//
// Contract:
//
//   - Compile checks a connector's hooks block and compiles its expressions; connector/config
//     calls it at load and reports its problems with the line of the expression's key. New
//     makes the running Set of a connector (nil when it has no hooks: then nothing runs and
//     nothing is allocated on the delivery path).
//   - Set.Run never fails a call. An expression that errs, gives the wrong type or runs past
//     its time limit, a program that crashes, hangs, answers garbage or is over its
//     concurrency limit: the point keeps its default, the failure is counted in
//     pbxbridge_hook_failures_total{connector,point,kind}, logged, and written into the
//     call's timeline (crm.Trace).
//   - Expressions see a typed environment (Env) and cannot do I/O. Their cost is bounded: at
//     most 500 syntax nodes, a memory budget, + on strings at most 4 KiB, builtins that grow
//     without bound disabled, and a caller waits at most 50 ms for one evaluation.
//   - A program runs with a clean environment (not the daemon's: it holds secrets) in a
//     process group of its own, killed at its timeout (default 300 ms); at most concurrency
//     runs at once (a run beyond it waits up to the timeout, then keeps the default); its
//     stdout is read up to 64 KiB and 4 KiB of its stderr are kept for the log. It is not
//     asked on the live path of a ringing call unless declared fast.
//
// A Set is safe for concurrent use.
package hooks
