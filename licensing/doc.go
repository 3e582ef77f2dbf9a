// Package licensing verifies pbxbridge licences offline and gates each connector instance's CRM
// actions on them. The design is docs/licensing-design.md §3; deviations are noted where they
// occur.
//
// # Tokens
//
// A licence is a PASETO v4.public token (Ed25519, footer {"kid":"k4.pid..."}, implicit assertion
// "pbxbridge-license:v1") in an armoured .lic file. Verifier runs the strict pipeline of §3.4:
// size limits, exact prefix, strict base64url, a flat footer with only kid, the compiled keyring
// (package keyring; dev keys only in `devkeys` builds), the signature, and only then the claims,
// decoded with duplicate and case-variant keys rejected, followed by the semantic checks (issuer,
// key scope and issuance window, start <= end <= grace_until, trials <= 14 days without grace,
// grace <= 31 days, the zone, the connector, CRM-binding shape, and demo tokens bound to .invalid
// accounts only), and last the refusal of demo tokens unless Verifier.AllowDemo is set. It returns
// an immutable *License or an error, never both.
//
// # Connector types
//
// This package knows no connector type by name. The licensable types and how each binds to a CRM
// account (BindingDomain: portal domain and member_id, like Bitrix24; BindingAccount: account id
// and/or subdomain, like amoCRM and Kommo) are an input, Connectors, which the daemon builds from
// the CRM registry and passes in Options.Connectors, Verifier.Connectors and the CLI's Env. A
// token naming a type outside the set is rejected; the wire format of the claims did not change.
//
// # Demo licences
//
// The demo licences (package demo) ship inside every binary. Only a Service built with
// Options.AllowDemo (set by `pbxbridge demo` alone) honours them, and then only once the adapter
// reports the .invalid account they are bound to; any other Service rejects them (reason
// demo_only, connector state none with a reason saying so), whatever account is reported. CheckRollback
// (anti-rollback, step 8) and License.MatchHost (k-of-n host binding, step 9) follow; the CRM
// account is checked when the connector reports it (Service.SetAccount).
//
// # Service and gate
//
// Service is what the daemon runs. The daemon constructs it with New from Config (the
// `licensing:` YAML section) and Options (state dir, logger, Prometheus registerer, clock), runs
// Run(ctx) in its supervisor, calls Reload on SIGHUP, registers every configured connector
// instance with Register, reports each instance's CRM account with SetAccount once the adapter has
// authenticated, and feeds CRM HTTPS Date headers to ObserveCRMDate. Dispatch and live events ask
// Allowed(name) / ExtensionAllowed(name, ext) on every call: both read an atomic snapshot and take
// no lock. Subscribe signals gate changes so connectors can start or stop their CRM workers.
// Status is the JSON-able view for the admin API and `pbxbridge license status`.
//
// Licensing never stops the daemon or touches telephony: a missing, expired or mismatched licence
// only turns that connector's CRM actions off (the daemon's choice of what to do with the calls
// meanwhile — keep them in the outbox — is outside this package).
//
// # Time
//
// States are evaluated at N = max(wall clock, F) where the floor F = max(build time, newest iat,
// persisted high-water mark, last CRM Date - 5 min) (§3.5). A clock set back therefore gains
// nothing and causes no outage; it is counted in pbxbridge_license_clock_rollback_total. The
// high-water mark, the highest rev per lid, revocations and overage windows persist in
// <state dir>/license-state.json under a host-keyed HMAC.
//
// # Multiple instances
//
// Several instances of one connector type may run (one per CRM account). Each subscription (lid)
// serves at most one instance: instances whose account is known are served first, by name, with
// licences bound to their account or unbound ones; instances with an unknown account may take a
// CRM-bound licence provisionally (it is checked as soon as the account is reported), except demo
// licences, which wait for the account.
//
// # Seats
//
// Seats are the mapped extensions registered for an instance (§3.9, "configured mappings"; the
// CRM-user count is reported against seats.crm_users but not suspended: open question 3 of §3.17).
// Within limit*(1+ratio) and the overage hours the instance is over_limit with full service;
// beyond either, only the first `limit` extensions in seat order (Config.SeatPriority, then
// ascending) keep CRM actions.
package licensing
