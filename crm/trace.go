package crm

import "context"

// TraceFunc records one step of a call's delivery for the per-call timeline ("why was this call
// logged like that"): kind is "request", "response", "decision" or "error"; summary is one line
// (e.g. "POST telephony.externalCall.finish"); detail is the body with secrets already redacted.
type TraceFunc func(kind, summary, detail string)

type traceKey struct{}

// WithTrace returns a context whose CRM requests are recorded by fn.
func WithTrace(ctx context.Context, fn TraceFunc) context.Context {
	return context.WithValue(ctx, traceKey{}, fn)
}

// Trace records a timeline step if ctx carries a TraceFunc; it is a no-op otherwise. Callers
// must redact secrets from detail first.
func Trace(ctx context.Context, kind, summary, detail string) {
	if fn, ok := ctx.Value(traceKey{}).(TraceFunc); ok && fn != nil {
		fn(kind, summary, detail)
	}
}
