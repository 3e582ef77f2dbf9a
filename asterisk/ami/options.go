package ami

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Authentication methods of Options.Auth.
const (
	AuthPlain = "plain" // Login with Secret in clear text
	AuthMD5   = "md5"   // Challenge, then Login with Key = md5(challenge + secret)
)

// DefaultEvents is the Login event mask used when Options.Events is empty: every class the call
// model may use (channels, bridges, dial, transfers, CEL: "call"; Newexten/VarSet: "dialplan";
// queues: "agent"; Cdr: "cdr"; UserEvent: "user"), and none of the chatty ones (RTCP in
// "reporting", "verbose", "log", "dtmf", "system").
const DefaultEvents = "call,dialplan,agent,cdr,user"

// Defaults of Options.
const (
	DefaultPingInterval   = transport.DefaultPingInterval
	DefaultPingTimeout    = transport.DefaultPingTimeout
	DefaultConnectTimeout = transport.DefaultConnectTimeout
	DefaultWriteTimeout   = 10 * time.Second
	DefaultActionTimeout  = 15 * time.Second
	DefaultEventBuffer    = 1024
	DefaultReadDelay      = time.Millisecond
)

// readDelayBelow is the size under which a socket read counts as a trickle (Options.ReadDelay).
// A read that returns more does not delay the next one, so a busy connection is read as fast
// as data comes: the delay can never hold the reader below 16 KiB per ReadDelay.
const readDelayBelow = 16 << 10

// Options configure a Source, a Conn (Dial) and Capture. It is a plain struct: the daemon maps
// its YAML configuration onto it. Zero values take the documented defaults.
type Options struct {
	// Name of the PBX (config pbx[].name): Event.PBX, the "pbx" metric label, log attribute.
	Name string
	// Address of the AMI listener, host:port (e.g. "127.0.0.1:5038").
	Address string
	// Username and Secret of the manager.conf user. The secret is never logged.
	Username string
	Secret   string
	// Auth is AuthPlain (default) or AuthMD5.
	Auth string
	// Events is the Login event mask (default DefaultEvents; "on" for everything).
	Events string

	// PingInterval is the keepalive period (default 5 s). A connection on which no byte arrived
	// for PingInterval+PingTimeout is declared dead, so a dead peer is detected within that
	// bound. A negative PingInterval disables keepalive and read deadlines.
	PingInterval time.Duration
	// PingTimeout bounds the wait for a Pong (default 5 s).
	PingTimeout time.Duration
	// ConnectTimeout bounds dial, banner and login (default 10 s).
	ConnectTimeout time.Duration
	// WriteTimeout bounds each write to the socket (default 10 s).
	WriteTimeout time.Duration
	// ActionTimeout bounds actions whose context has no deadline (default 15 s).
	ActionTimeout time.Duration

	// Backoff is the reconnect policy of a Source.
	Backoff Backoff

	// Originate configures click-to-call (Source.Originate).
	Originate OriginateOptions

	// ForwardUnknown makes a Source send events of TypeUnknown on its out channel too; by
	// default they are only counted (pbxbridge_ami_events_total{type="unknown"}).
	ForwardUnknown bool
	// KeepAllEvents turns the Source's read-time filter off, so every frame is read and
	// normalised whole. By default a Source discards, while reading, the events the call model
	// never uses (DiscardedEvents; DiscardedUnknownEvents too unless ForwardUnknown), and trims
	// the VarSet frames whose variable is not in VarSetVariables (see Filter.VarSetKeep). Dial
	// and Capture never filter.
	KeepAllEvents bool
	// VarSetVariables are the channel variables whose VarSet events a Source passes whole (the
	// daemon passes callmodel.Options.Variables()). Nil: VarSet events are never trimmed.
	VarSetVariables []string
	// EventBuffer is how many frames may wait in Conn.Events() (default 1024). A Source's
	// reader hands its events straight to the consumer's channel, whose size is the
	// consumer's choice.
	EventBuffer int
	// ReadDelay (default 1 ms; negative: none) makes the reader, after a socket read that
	// returned little (under 16 KiB: events trickling in), wait this long before reading
	// again. Asterisk writes every event on its own, so at tens of calls per second a reader
	// that reads as soon as data arrives is woken, and makes a system call, for almost every
	// event; after the delay it reads the events of the whole interval at once, and hands them
	// to the consumer in one go. At 50 calls/s this roughly halves the reader's CPU per call
	// (BENCHMARKS.md); each event arrives up to ReadDelay later. It applies once logged in,
	// and never to a busy connection (a read of 16 KiB or more is followed by the next at
	// once). The wait is on the real clock, not Options.Clock, and does not count towards
	// keepalive: the read deadline is set after it.
	ReadDelay time.Duration

	// Logger receives connection-level logs (default: discard).
	Logger *slog.Logger
	// Registerer receives the metrics, labelled pbx=Name (default: not registered).
	Registerer prometheus.Registerer
	// Clock is the time source for backoff sleeps and timestamps (default: the system clock).
	Clock Clock
	// Dialer opens the TCP connection (default: net.Dialer.DialContext).
	Dialer func(ctx context.Context, network, address string) (net.Conn, error)
}

// DiscardedEvents are discarded by a Source at read time (unless Options.KeepAllEvents): CEL
// duplicates the channel events the call model follows, and the model ignores it.
func DiscardedEvents() []string { return []string{"CEL"} }

// DiscardedUnknownEvents are events ToEvent maps to TypeUnknown, which a Source only counts and
// drops unless Options.ForwardUnknown; it discards them at read time (unless KeepAllEvents or
// ForwardUnknown). None of them answers an action a Source sends (CoreShowChannels, CoreSettings,
// Ping, ExtensionState, Originate), so no action misses a frame.
func DiscardedUnknownEvents() []string {
	return []string{"DeviceStateChange", "ExtensionStatus", "PresenceStateChange", "QueueMemberStatus",
		"DTMFBegin", "DTMFEnd", "MusicOnHoldStart", "MusicOnHoldStop", "RTCPSent", "RTCPReceived"}
}

// SourceFilter returns the read-time filter of a Source with default options and
// VarSetVariables vars: DiscardedEvents and DiscardedUnknownEvents discarded, VarSets of other
// variables than vars trimmed. Offline replays use it to read exactly what the daemon reads.
func SourceFilter(vars []string) Filter {
	return Filter{Discard: append(DiscardedEvents(), DiscardedUnknownEvents()...), VarSetKeep: vars}
}

// filter returns the read-time filter of a Source with these options, nil for none.
func (o *Options) filter() *Filter {
	if o.KeepAllEvents {
		return nil
	}
	f := SourceFilter(o.VarSetVariables)
	if o.ForwardUnknown {
		f.Discard = DiscardedEvents()
	}
	return &f
}

// LogValue hides the secret when Options are logged.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", o.Name),
		slog.String("address", o.Address),
		slog.String("username", o.Username),
		slog.String("auth", o.Auth),
		slog.String("events", o.Events),
	)
}

// withDefaults returns o with zero values replaced by defaults.
func (o Options) withDefaults() Options {
	o.Auth = strings.ToLower(strings.TrimSpace(o.Auth))
	if o.Auth == "" {
		o.Auth = AuthPlain
	}
	if o.Events == "" {
		o.Events = DefaultEvents
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.ActionTimeout <= 0 {
		o.ActionTimeout = DefaultActionTimeout
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	if o.ReadDelay == 0 {
		o.ReadDelay = DefaultReadDelay
	}
	if o.Dialer == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		o.Dialer = d.DialContext
	}
	transport.SetDefaults(&o.PingInterval, &o.PingTimeout, &o.ConnectTimeout, &o.Logger, &o.Clock, &o.Backoff)
	o.Originate = o.Originate.withDefaults()
	return o
}

// validate reports configuration errors that no retry can fix.
func (o *Options) validate() error {
	host, port, err := net.SplitHostPort(o.Address)
	if err != nil {
		return fmt.Errorf("ami: address %q: %w", o.Address, err)
	}
	if host == "" {
		return fmt.Errorf("ami: address %q: empty host", o.Address)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("ami: address %q: invalid port", o.Address)
	}
	if o.Username == "" {
		return fmt.Errorf("ami: username is empty")
	}
	for _, kv := range [][2]string{{"Username", o.Username}, {"Secret", o.Secret}, {"Events", o.Events}} {
		if strings.ContainsAny(kv[1], "\r\n\x00") {
			return fmt.Errorf("ami: %s contains a line break", strings.ToLower(kv[0]))
		}
	}
	switch o.Auth {
	case AuthPlain, AuthMD5:
	default:
		return fmt.Errorf("ami: auth %q: want %q or %q", o.Auth, AuthPlain, AuthMD5)
	}
	return o.Originate.validate()
}

// readTimeout is how long the reader waits for a byte before declaring the peer dead (0: forever).
func (o *Options) readTimeout() time.Duration {
	if o.PingInterval < 0 {
		return 0
	}
	return o.PingInterval + o.PingTimeout
}

// The reconnect loop's time source and policy, the same for AMI and ARI.
type (
	// Clock is the time source of backoff sleeps and timestamps; tests inject a fake one.
	Clock = transport.Clock
	// SystemClock is the wall clock.
	SystemClock = transport.SystemClock
	// Backoff is the reconnect policy: capped exponential delays with equal jitter, reset
	// after a stable connection, straight to the cap after a refused login.
	Backoff = transport.Backoff
)
