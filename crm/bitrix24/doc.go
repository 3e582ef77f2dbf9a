// Package bitrix24 is the Bitrix24 connector (type "bitrix24"): it shows the incoming-call card
// while a call rings, logs finished calls with their recordings under the right employee,
// creates missed-call follow-ups, serves click-to-call and web-form callbacks, and answers
// responsible-manager and caller-name look-ups. The wire contract is docs/crm-apis.md Part A; the
// typed REST client is package api.
//
// How it meets the crm contract:
//
//   - Live (in event order per call) registers the call on the first ringing extension — for an
//     outbound call the extension that dials, when the customer's leg rings —
//     (telephony.externalCall.register with a unique EXTERNAL_CALL_ID = the record key), shows
//     the card to the other ringing agents, hides it from those who stop ringing or did not
//     answer, and moves it on transfers. The CALL_ID and who sees the card are persisted in the
//     CallStore, so Deliver (and Live after a restart) continue from there. A show whose moment
//     passed (the daemon cancels its context: crm.LiveHandler) gives up while it waits for its
//     slot and returns an error wrapping crm.ErrLiveStale; hides run on a context the staleness
//     does not reach, and a request already sent is left to finish.
//   - Deliver is idempotent per Record.Key(): every step (register, finish, attachRecord,
//     lead, follow-up) is recorded in the CallStore when it succeeds and skipped when it is
//     already there; a call that was never registered live is registered first. A CALL_ID that
//     Bitrix24 hands out although another call owns it (a platform bug) is detected through an
//     index in the CallStore and the call is registered again with a different key, so two calls
//     are never merged.
//   - Live and Deliver share one client-side leaky bucket per connector (rate_limit); live cards
//     and look-ups may use a reserve of it that deliveries leave free. While the bucket holds
//     requests back, finish, show and hide commands waiting together go in one batch request
//     (batcher); register and attachRecord never wait for a batch. A finish whose answer was lost
//     is looked up in voximplant.statistic.get before it is sent again.
//   - Errors are classified: QUERY_LIMIT_EXCEEDED/OPERATION_TIME_LIMIT → crm.RateLimited;
//     a missing or revoked authorisation, missing scope or wrong auth type → crm.AuthBroken
//     (calls stay queued); transport errors and 5xx → transient; other answers → permanent.
//   - Its HTTP endpoints trust nothing unproven (README "Security"): an installation is accepted
//     only when its refresh token refreshes at the OAuth server with our client credentials for
//     the configured portal, the first one binds the portal's member_id, events must match the
//     installation and are accepted once, and numbers are dialled only as digits.
//   - The adapter never checks licences and never logs secrets. It logs only changes of its
//     authorisation state; per-call warnings go to the call's timeline (crm.Trace).
package bitrix24
