// Package api is a thin typed client for the Bitrix24 REST API (docs/crm-apis.md Part A): the
// transport (JSON POST to /rest/<method>.json, success and error envelopes, batch), the two
// authentication modes (local-application OAuth with refresh-on-expiry, and the legacy inbound
// webhook), a client-side leaky bucket, and one typed wrapper per method the pbxbridge adapter
// uses (telephony.externalCall.*, telephony.externalLine.*, user.get, crm.duplicate.findbycomm,
// crm.lead.add, crm.activity.todo.add, tasks.task.add, event.bind), plus the parser of the
// form-encoded events Bitrix24 posts to our handlers.
//
// Contract:
//
//   - A Client is safe for concurrent use. Every request goes through the resty client given in
//     Options (built with crm/internal/httpclient, whose transport the caller wraps with a
//     Limiter so that every attempt, including short retries, is rate limited).
//   - Errors returned by the portal are *Error values (HTTP status, Bitrix24 error code,
//     description, wait hint); compare codes with IsCode, which ignores case as the codes come in
//     both cases. Transport errors are returned wrapped, with URLs stripped (a webhook URL
//     carries its secret in the path). Context cancellation is always wrapped with %w.
//   - What the shared client refuses to read comes back already classified for the dispatcher:
//     a redirect away from the portal (the request, token included, is not resent; see
//     crm/internal/httpclient) is crm.ClassAuth, an answer over the size cap crm.ClassTransient.
//   - On 401 expired_token the client asks its Authenticator to refresh and repeats the call
//     once; the OAuth TokenSource refreshes exactly once per stale token however many requests
//     hit the expiry at the same time, persists the rotated refresh token before using the new
//     access token, and turns invalid_grant into ErrReauthorize until new tokens are installed.
//   - The package never logs secrets: request and response excerpts given to crm.Trace go
//     through httpclient.Redact first.
package api
