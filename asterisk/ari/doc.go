// Package ari is pbxbridge's own thin Asterisk REST Interface client on net/http and
// github.com/coder/websocket, written instead of CyCoreSystems/ari/v6 whose defects are listed
// in docs/deps.md §2.2. It delivers the same normalised events as the AMI transport, so the call
// model works unchanged on either.
//
// The layers, bottom up:
//
//   - ToEvent and Snapshot (normalize.go) translate ARI JSON into asterisk.Events. Pure.
//   - Client (client.go) does REST: every request is built with http.NewRequestWithContext and
//     bounded by Options.RequestTimeout and the caller's context; answers are size-limited;
//     redirects are not followed (they would carry the credentials elsewhere); no proxy and no
//     environment variable is ever read. Non-2xx answers are *HTTPError (errors.Is matches
//     ErrAuthFailed for 401, ErrNotFound for 404).
//   - Stream (stream.go) is one events websocket (GET /ari/events?app=…&subscribeAll=true, HTTP
//     basic auth): a context-aware dial bounded by ConnectTimeout, context-aware reads, a ping
//     keepalive and a bounded dead-peer detection that does not count the time the caller
//     spends blocked on its consumer, and an idempotent Close that leaves no goroutine behind.
//   - Source (source.go) implements asterisk.Source exactly like the AMI source: reconnect with
//     capped, jittered exponential backoff (injectable Clock and jitter, reset after a stable
//     period, straight to the cap after HTTP 401), TypeConnected/TypeDisconnected, the
//     GET /channels + GET /bridges resync after a reconnect, backpressure on the consumer
//     (never dropping an event; messages that are not events are counted and logged), metrics
//     pbxbridge_ari_* and Status.
//   - Source.Originate (originate.go) implements asterisk.Originator for click-to-call:
//     POST /channels rings the agent's endpoint and continues it into the dialplan at the
//     customer's number; the outcome of the agent leg is read from the events websocket.
//
// Backpressure: the Source blocks while its consumer is slow, and never drops an event. If the
// consumer stays slower than Asterisk long enough for the socket buffers to fill, Asterisk closes
// the websocket (ari.conf websocket_write_timeout); the source then reconnects and resyncs like
// after any other loss, and TypeDisconnected says so.
//
// Metrics (namespace pbxbridge, subsystem ari, label pbx): connected, events_total{type},
// messages_dropped_total{reason}, reconnects_total, connect_errors_total{stage},
// request_duration_seconds{request,code} (REST requests and the websocket handshake),
// out_blocked_seconds_total, reader_lag_seconds, resyncs_total{result}.
//
// Concurrency: Stream.Next must be called by one goroutine; everything else is safe for
// concurrent use.
//
// Errors are prefixed "ari: " at this package's boundary.
package ari
