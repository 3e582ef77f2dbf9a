package ari

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Reasons of pbxbridge_ari_messages_dropped_total. A message is dropped only when it cannot be
// an event; every drop is counted and logged.
const (
	DropInvalid = "invalid" // not JSON, or fields of the wrong JSON type
	DropBinary  = "binary"  // a binary websocket message (ARI sends text only)
	DropTooBig  = "too_large"
)

// metrics of one PBX: the ones every transport has, and ARI's own. The zero value (noMetrics)
// is valid and records nothing.
type metrics struct {
	*transport.Metrics
	requestDur *prometheus.HistogramVec
}

// noMetrics records nothing (a Client of NewClient).
var noMetrics = &metrics{} //nolint:gochecknoglobals // immutable: every method is a no-op on it

// newMetrics creates the metrics of PBX pbx and registers them on reg (labelled pbx=<pbx>)
// when reg is not nil.
func newMetrics(reg prometheus.Registerer, pbx string) (*metrics, error) {
	m := &metrics{
		requestDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "request_duration_seconds",
			Help:    "ARI REST requests and websocket handshakes, by request and HTTP status (\"error\" when none).",
			Buckets: transport.DurationBuckets,
		}, []string{"request", "code"}),
	}
	common, err := transport.NewMetrics(reg, pbx, transport.MetricsSpec{
		Subsystem:         "ari",
		ConnectedHelp:     "1 while the ARI events websocket is connected.",
		EventsHelp:        "ARI events read (and snapshot/transport events produced), by normalised type.",
		ReconnectsHelp:    "Successful websocket connections after a lost one.",
		ConnectErrorsHelp: "Failed connection attempts, by stage (dial, auth, handshake).",
		LagHelp:           "Time the last event spent between being read from the websocket and being handed to the consumer.",
		ResyncsHelp:       "Post-reconnect channel snapshots, by result (ok, failed).",
		DropName:          "messages_dropped_total",
		DropHelp:          "ARI websocket messages that could not be events, by reason (invalid, binary, too_large).",
		Extra:             []prometheus.Collector{m.requestDur},
	})
	if err != nil {
		return nil, err
	}
	m.Metrics = common
	return m, nil
}

// request records one HTTP exchange; code 0 means no response.
func (m *metrics) request(name string, code int, d time.Duration) {
	if m.requestDur == nil {
		return
	}
	c := "error"
	if code > 0 {
		c = strconv.Itoa(code)
	}
	m.requestDur.WithLabelValues(name, c).Observe(d.Seconds())
}
