// Package fakecrm holds faithful simulators of the Bitrix24, amoCRM and Kommo APIs, built from
// the wire contracts in docs/crm-apis.md: real HTTP handlers that keep what they received (GET
// /_fake/state), enforce the CRMs' rate limits, token lifetimes and error envelopes, and take
// fault knobs (latency, 5xx rate, token expiry, lost answers) so tests, the demo and the load
// harness exercise adapters the way the real CRMs would.
//
// It is the runtime of `pbxbridge demo` (connector/demo), cmd/fakecrm and the load harness. The
// daemon binary never imports it; crm/crmtest serves it on httptest servers for tests.
package fakecrm

// Fault is what a fake server should do to the next requests of the adapter under test.
type Fault int

// Faults the conformance suite injects.
const (
	FaultNone Fault = iota
	// FaultUnauthorized: the access token is rejected as expired (Bitrix24 401 expired_token,
	// amoCRM 401); a correct adapter refreshes it once and succeeds.
	FaultUnauthorized
	// FaultRevoked: the refresh token is rejected too (invalid_grant); the adapter must return
	// a crm.ClassAuth error and keep the record undelivered.
	FaultRevoked
	// FaultRateLimited: the CRM refuses with its rate-limit error (Bitrix24 503
	// QUERY_LIMIT_EXCEEDED, amoCRM 429 with Retry-After).
	FaultRateLimited
	// FaultServerError: every request answers 500/502.
	FaultServerError
	// FaultSlow: every request takes longer than the conformance context deadline.
	FaultSlow
)
