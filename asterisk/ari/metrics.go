package ari

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// Reasons of pbxbridge_ari_messages_dropped_total. A message is dropped only when it cannot be
// an event; every drop is counted and logged.
const (
	DropInvalid = "invalid" // not JSON, or fields of the wrong JSON type
	DropBinary  = "binary"  // a binary websocket message (ARI sends text only)
	DropTooBig  = "too_large"
)

// metrics of one PBX. A nil *metrics is valid and records nothing.
type metrics struct {
	connected     prometheus.Gauge
	eventsVec     *prometheus.CounterVec
	events        [64]prometheus.Counter // by asterisk.Type, resolved once
	dropped       *prometheus.CounterVec
	reconnects    prometheus.Counter
	connectErrors *prometheus.CounterVec
	requestDur    *prometheus.HistogramVec
	outBlocked    prometheus.Counter
	lag           prometheus.Gauge
	resyncs       *prometheus.CounterVec
}

// newMetrics creates the metrics of PBX pbx and registers them on reg (labelled pbx=<pbx>)
// when reg is not nil.
func newMetrics(reg prometheus.Registerer, pbx string) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "connected",
			Help: "1 while the ARI events websocket is connected.",
		}),
		eventsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "events_total",
			Help: "ARI events read (and snapshot/transport events produced), by normalised type.",
		}, []string{"type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "messages_dropped_total",
			Help: "ARI websocket messages that could not be events, by reason (invalid, binary, too_large).",
		}, []string{"reason"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "reconnects_total",
			Help: "Successful websocket connections after a lost one.",
		}),
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "connect_errors_total",
			Help: "Failed connection attempts, by stage (dial, auth, handshake).",
		}, []string{"stage"}),
		requestDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "request_duration_seconds",
			Help:    "ARI REST requests and websocket handshakes, by request and HTTP status (\"error\" when none).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"request", "code"}),
		outBlocked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "out_blocked_seconds_total",
			Help: "Time the source waited because its consumer's channel was full (backpressure).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "reader_lag_seconds",
			Help: "Time the last event spent between being read from the websocket and being handed to the consumer.",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ari", Name: "resyncs_total",
			Help: "Post-reconnect channel snapshots, by result (ok, failed).",
		}, []string{"result"}),
	}
	for i := range m.events {
		m.events[i] = m.eventsVec.WithLabelValues(asterisk.Type(i).String())
	}
	if reg == nil {
		return m, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pbx": pbx}, reg)
	for _, c := range []prometheus.Collector{m.connected, m.eventsVec, m.dropped, m.reconnects,
		m.connectErrors, m.requestDur, m.outBlocked, m.lag, m.resyncs} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("ari: registering metrics for pbx %q: already registered (duplicate pbx name?): %w", pbx, err)
			}
			return nil, fmt.Errorf("ari: registering metrics for pbx %q: %w", pbx, err)
		}
	}
	return m, nil
}

func (m *metrics) event(t asterisk.Type) {
	if m == nil {
		return
	}
	if int(t) < len(m.events) {
		m.events[t].Inc()
		return
	}
	m.events[asterisk.TypeUnknown].Inc()
}

func (m *metrics) drop(reason string) {
	if m != nil {
		m.dropped.WithLabelValues(reason).Inc()
	}
}

// request records one HTTP exchange; code 0 means no response.
func (m *metrics) request(name string, code int, d time.Duration) {
	if m == nil {
		return
	}
	c := "error"
	if code > 0 {
		c = strconv.Itoa(code)
	}
	m.requestDur.WithLabelValues(name, c).Observe(d.Seconds())
}

func (m *metrics) setConnected(up bool) {
	if m == nil {
		return
	}
	if up {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

func (m *metrics) blocked(d time.Duration) {
	if m != nil {
		m.outBlocked.Add(d.Seconds())
	}
}

func (m *metrics) setLag(d time.Duration) {
	if m != nil {
		m.lag.Set(d.Seconds())
	}
}

func (m *metrics) reconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

func (m *metrics) connectError(stage string) {
	if m != nil {
		m.connectErrors.WithLabelValues(stage).Inc()
	}
}

func (m *metrics) resync(result string) {
	if m != nil {
		m.resyncs.WithLabelValues(result).Inc()
	}
}
