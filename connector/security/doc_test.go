// Package security_test is pbxbridge's security suite: every attack found against the daemon
// replayed through its real listeners (a running daemon on loopback sockets, the simulated PBX,
// the fake CRMs), each asserting that the attack fails. Each test's comment says what the attack
// did against main at 1bda728, before the fixes.
//
// Run it alone with `go test ./connector/security/` (it is part of `go test ./...`).
package security_test
