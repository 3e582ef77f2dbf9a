// Package ami is pbxbridge's own Asterisk Manager Interface client: wire framing, login (plain
// and MD5 challenge), ActionID-correlated actions with EventList collection, keepalive, reconnect
// with resync, click-to-call Originate, raw capture, and the translation of AMI event frames into
// normalised asterisk.Events.
//
// The layers, bottom up:
//
//   - Reader (frame.go) turns a byte stream into Frames. It is a pure parser with hard limits:
//     a line longer than MaxLineSize or a frame larger than MaxFrameSize is skipped and reported
//     with ErrFrameTooLarge; the reader stays in sync and never holds more than one frame. An
//     optional Filter discards named events on their "Event:" line, without splitting or copying
//     them, and trims VarSet frames of variables nobody reads (Reader.Discarded, Trimmed).
//   - Action (write.go) encodes requests and refuses CR or LF in any key or value, so a value
//     taken from a CRM request can never inject a header or a second action.
//   - Conn (conn.go) is one logged-in TCP session: exactly one reader goroutine, an ActionID →
//     pending-request map (responses never reach the event stream, events never break an
//     action), EventList collection, a keepalive Ping, read deadlines that detect a dead peer,
//     and an idempotent Close that leaves no goroutine behind. Every frame read before the
//     connection ended is delivered before Events() is closed.
//   - Source (source.go) implements asterisk.Source and asterisk.Originator on top of Conn:
//     reconnect with capped, jittered exponential backoff, TypeConnected / TypeDisconnected,
//     the CoreShowChannels resync after a reconnect, metrics and Status. Its connections'
//     reader goroutine translates each frame (ToEvent) and sends the event to the consumer
//     itself, into one reused Frame (Reader.ReadFrameTo): an event costs one string allocation
//     and crosses one goroutine boundary, into the consumer's. By default it reads
//     through SourceFilter: CEL (DiscardedEvents) and unused TypeUnknown events
//     (DiscardedUnknownEvents, unless ForwardUnknown) are discarded, VarSets of variables not in
//     Options.VarSetVariables are trimmed to what the call model reads from them; KeepAllEvents
//     turns this off. Dial (a bare Conn) and Capture never filter.
//   - Capture (capture.go) records the raw byte stream of a live PBX for support tickets.
//
// ToEvent (normalize.go) translates one event frame into an asterisk.Event; transports never
// interpret calls.
//
// Concurrency: Reader is not safe for concurrent use. Conn and Source methods are safe for
// concurrent use unless their doc says otherwise.
//
// Errors are prefixed "ami: " at this package's boundary. Sentinels (ErrAuthFailed, ErrClosed,
// ErrFrameTooLarge, ErrInvalidHeader) and *ResponseError are matched with errors.Is / errors.As.
package ami
