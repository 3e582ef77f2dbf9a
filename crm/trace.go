package crm

import (
	"context"
	"sync/atomic"
)

// TraceFunc records one step of a call's delivery for the per-call timeline ("why was this call
// logged like that"): kind is "request", "response", "decision" or "error"; summary is one line
// (e.g. "POST telephony.externalCall.finish"); detail is the body with secrets already redacted.
type TraceFunc func(kind, summary, detail string)

type traceKey struct{}

// WithTrace returns a context whose CRM requests are recorded by fn.
func WithTrace(ctx context.Context, fn TraceFunc) context.Context {
	return context.WithValue(ctx, traceKey{}, fn)
}

// Tracing reports whether ctx records a timeline, so callers build (and redact) details only
// when someone reads them.
func Tracing(ctx context.Context) bool {
	fn, ok := ctx.Value(traceKey{}).(TraceFunc)
	return ok && fn != nil
}

// Trace records a timeline step if ctx carries a TraceFunc; it is a no-op otherwise. Callers
// must redact secrets from detail first.
func Trace(ctx context.Context, kind, summary, detail string) {
	if fn, ok := ctx.Value(traceKey{}).(TraceFunc); ok && fn != nil {
		fn(kind, summary, detail)
	}
}

type counterKey struct{}

// WithRequestCounter returns a context whose CRM requests are counted into n (the dispatcher
// uses it for the requests-per-call metric).
func WithRequestCounter(ctx context.Context, n *atomic.Int64) context.Context {
	return context.WithValue(ctx, counterKey{}, n)
}

// CountRequest adds one CRM request to ctx's counter, if any. The daemon's instrumented HTTP
// transport calls it for every request an adapter sends.
func CountRequest(ctx context.Context) {
	if n, ok := ctx.Value(counterKey{}).(*atomic.Int64); ok && n != nil {
		n.Add(1)
	}
}
