// Package loadtest is pbxbridge's load and fault harness. It runs the product the way
// a PBX host runs it and measures it from the outside:
//
//   - PBX: a simulated Asterisk (asterisk/fakepbx) replays the real transcripts at a chosen call
//     rate. Its OnEvent hook timestamps every call event as it leaves for the daemon: a call
//     rings when a DialBegin reaches an extension and ends with its replay's last Hangup; an
//     event no client received marks the call as (partly) unseen.
//   - CRMs: fake Bitrix24 and amoCRM servers (crm/fakecrm) on the reserved demo-*.invalid names,
//     served by one loopback HTTP proxy. The daemon reaches them through HTTP_PROXY, as through a
//     site proxy; the proxy records when each CRM request arrived and when it was answered, and
//     can refuse everything with 503 (a CRM outage) or answer slowly.
//   - Daemon: the pbxbridge daemon as a subprocess, the calling binary re-executed with
//     RunChildIfRequested at the top of its main or TestMain. Its CPU time and RSS come from
//     /proc without the fakes, its counters from /metrics, and it can be SIGKILLed.
//
// Bench runs the benchmark of BENCHMARKS.md (cmd/loadtest prints it as a table); the fault suite
// (fault_test.go) uses the same parts. The hostile run (PlayHostile, hostile.go) floods the
// daemon's listeners and admin socket with the handler fuzz targets' inputs of
// connector/security, mutated, and measures the daemon alone. Everything listens on loopback only. Nothing here is used
// by the daemon itself.
package loadtest
