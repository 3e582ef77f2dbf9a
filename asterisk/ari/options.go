package ari

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// DefaultApp is the Stasis application name used when Options.App is empty. The events
// websocket subscribes to everything (subscribeAll=true), so the name only identifies the
// connection in Asterisk's "ari show apps"; it must be unique per daemon and PBX.
const DefaultApp = "pbxbridge"

// Defaults of Options.
const (
	DefaultPingInterval   = transport.DefaultPingInterval
	DefaultPingTimeout    = transport.DefaultPingTimeout
	DefaultConnectTimeout = transport.DefaultConnectTimeout
	DefaultRequestTimeout = 10 * time.Second
)

// Options configure a Client and a Source. It is a plain struct: the daemon maps its YAML
// configuration onto it. Zero values take the documented defaults. Nothing is read from the
// environment.
type Options struct {
	// Name of the PBX (config pbx[].name): Event.PBX, the "pbx" metric label, log attribute.
	// Default: the URL's host.
	Name string
	// URL of Asterisk's HTTP server (http.conf), e.g. "http://127.0.0.1:8088"; a trailing "/ari"
	// is optional. https:// uses TLS (TLSConfig, else the system roots). Credentials in the
	// URL are refused: use Username and Password.
	URL string
	// Username and Password of the ari.conf user (HTTP basic auth). The password is never
	// logged.
	Username string
	Password string
	// App is the Stasis application name of the events websocket (default DefaultApp).
	App string

	// PingInterval is the websocket keepalive period (default 5 s). While the reader waits on
	// the socket, a connection on which nothing (message or pong) arrived for
	// PingInterval+PingTimeout is declared dead and closed. A negative PingInterval disables
	// keepalive and dead-peer detection.
	PingInterval time.Duration
	// PingTimeout bounds the wait for a pong (default 5 s).
	PingTimeout time.Duration
	// ConnectTimeout bounds the TCP dial and websocket handshake (default 10 s).
	ConnectTimeout time.Duration
	// RequestTimeout bounds every REST request whose context has no earlier deadline
	// (default 10 s).
	RequestTimeout time.Duration

	// Backoff is the reconnect policy of a Source.
	Backoff Backoff

	// Originate configures click-to-call (Source.Originate).
	Originate OriginateOptions

	// ForwardUnknown makes a Source send events of TypeUnknown on its out channel too; by
	// default they are only counted (pbxbridge_ari_events_total{type="unknown"}).
	ForwardUnknown bool

	// TLSConfig for https:// URLs (default: Go's defaults with the system roots).
	TLSConfig *tls.Config

	// SnapshotOnConnect sends the channel snapshot (TypeSnapshot… TypeSnapshotEnd) after the
	// first connection too, not only after reconnects, so a consumer that starts (or takes over
	// from another source) while calls are up learns them, as AMI always does.
	SnapshotOnConnect bool
	// Logger receives connection-level logs (default: discard).
	Logger *slog.Logger
	// Registerer receives the metrics of a Source, labelled pbx=Name (default: not registered).
	Registerer prometheus.Registerer
	// Clock is the time source for backoff sleeps and timestamps (default: the system clock).
	// Keepalive and request timeouts use real time.
	Clock Clock
}

// LogValue hides the password when Options are logged.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", o.Name),
		slog.String("url", o.URL),
		slog.String("username", o.Username),
		slog.String("app", o.App),
	)
}

// withDefaults returns o with zero values replaced by defaults.
func (o Options) withDefaults() Options {
	o.URL = strings.TrimSpace(o.URL)
	if o.App == "" {
		o.App = DefaultApp
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	transport.SetDefaults(&o.PingInterval, &o.PingTimeout, &o.ConnectTimeout, &o.Logger, &o.Clock, &o.Backoff)
	o.Originate = o.Originate.withDefaults()
	return o
}

// baseURL validates o.URL and returns the REST base (".../ari", no trailing slash).
func (o *Options) baseURL() (*url.URL, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("ari: url %q: %w", o.URL, err)
	}
	switch u.Scheme {
	case "http", "https":
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return nil, fmt.Errorf("ari: url %q: scheme must be http or https", o.URL)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("ari: url %q: no host", o.URL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("ari: url %s://%s: credentials in the URL are not accepted; set username and password", u.Scheme, u.Host)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ari: url %q: must not have a query or fragment", o.URL)
	}
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, "/ari") {
		p += "/ari"
	}
	u.Path, u.RawPath = p, ""
	return u, nil
}

// validate reports configuration errors that no retry can fix.
func (o *Options) validate() error {
	if _, err := o.baseURL(); err != nil {
		return err
	}
	if o.Username == "" {
		return fmt.Errorf("ari: username is empty")
	}
	for _, kv := range [][2]string{{"username", o.Username}, {"password", o.Password}, {"app", o.App}} {
		if strings.ContainsAny(kv[1], "\r\n\x00") {
			return fmt.Errorf("ari: %s contains a line break or NUL", kv[0])
		}
	}
	if strings.Contains(o.Username, ":") {
		return fmt.Errorf("ari: username must not contain ':' (HTTP basic auth)")
	}
	return o.Originate.validate()
}

// deadAfter is how long the reader waits for any frame before declaring the peer dead (0:
// forever).
func (o *Options) deadAfter() time.Duration {
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
