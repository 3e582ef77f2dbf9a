package transport

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// DurationBuckets are the histogram buckets of request and action durations, in seconds.
var DurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30} //nolint:gochecknoglobals // read-only

// MetricsSpec names one transport's metrics and says what they count: the metrics are
// pbxbridge_<Subsystem>_<name>, labelled pbx=<PBX name>.
type MetricsSpec struct {
	Subsystem string // "ami" or "ari"; also the prefix of registration errors

	// Help texts of connected, events_total{type}, reconnects_total,
	// connect_errors_total{stage}, reader_lag_seconds and resyncs_total{result}.
	ConnectedHelp, EventsHelp, ReconnectsHelp, ConnectErrorsHelp, LagHelp, ResyncsHelp string
	// DropName and DropHelp are the name and help of the counter of wire messages that were
	// dropped, labelled reason.
	DropName, DropHelp string
	// Extra are the transport's own collectors, registered (and labelled) with the others.
	Extra []prometheus.Collector
}

// Metrics are the metrics every transport exports for one PBX. A nil *Metrics is valid and
// records nothing.
type Metrics struct {
	connected     prometheus.Gauge
	eventsVec     *prometheus.CounterVec
	events        [64]prometheus.Counter // by asterisk.Type, resolved once
	dropped       *prometheus.CounterVec
	reconnects    prometheus.Counter
	connectErrors *prometheus.CounterVec
	outBlocked    prometheus.Counter
	lag           prometheus.Gauge
	resyncs       *prometheus.CounterVec
}

// NewMetrics creates the metrics of PBX pbx and registers them and spec.Extra on reg, labelled
// pbx=<pbx>, when reg is not nil. A second registration for the same PBX name is refused with
// an error that says so.
func NewMetrics(reg prometheus.Registerer, pbx string, spec MetricsSpec) (*Metrics, error) {
	ss := spec.Subsystem
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: "connected", Help: spec.ConnectedHelp,
		}),
		eventsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: "events_total", Help: spec.EventsHelp,
		}, []string{"type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: spec.DropName, Help: spec.DropHelp,
		}, []string{"reason"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: "reconnects_total", Help: spec.ReconnectsHelp,
		}),
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: "connect_errors_total", Help: spec.ConnectErrorsHelp,
		}, []string{"stage"}),
		outBlocked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: "out_blocked_seconds_total",
			Help: "Time the source waited because its consumer's channel was full (backpressure).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: "reader_lag_seconds", Help: spec.LagHelp,
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: ss, Name: "resyncs_total", Help: spec.ResyncsHelp,
		}, []string{"result"}),
	}
	for i := range m.events {
		m.events[i] = m.eventsVec.WithLabelValues(asterisk.Type(i).String())
	}
	if reg == nil {
		return m, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pbx": pbx}, reg)
	all := []prometheus.Collector{m.connected, m.eventsVec, m.dropped, m.reconnects, m.connectErrors,
		m.outBlocked, m.lag, m.resyncs}
	for _, c := range append(all, spec.Extra...) {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("%s: registering metrics for pbx %q: already registered (duplicate pbx name?): %w", ss, pbx, err)
			}
			return nil, fmt.Errorf("%s: registering metrics for pbx %q: %w", ss, pbx, err)
		}
	}
	return m, nil
}

// Event counts one event of type t.
func (m *Metrics) Event(t asterisk.Type) {
	if m == nil {
		return
	}
	if int(t) < len(m.events) {
		m.events[t].Inc()
		return
	}
	m.events[asterisk.TypeUnknown].Inc()
}

// Drop counts one dropped wire message.
func (m *Metrics) Drop(reason string) {
	if m != nil {
		m.dropped.WithLabelValues(reason).Inc()
	}
}

// SetConnected sets the connected gauge.
func (m *Metrics) SetConnected(up bool) {
	if m == nil {
		return
	}
	if up {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

// Blocked adds time spent waiting for the consumer.
func (m *Metrics) Blocked(d time.Duration) {
	if m != nil {
		m.outBlocked.Add(d.Seconds())
	}
}

// SetLag sets the reader lag of the last event.
func (m *Metrics) SetLag(d time.Duration) {
	if m != nil {
		m.lag.Set(d.Seconds())
	}
}

// Reconnect counts a successful connection after a lost one.
func (m *Metrics) Reconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

// ConnectError counts a failed connection attempt at stage.
func (m *Metrics) ConnectError(stage string) {
	if m != nil {
		m.connectErrors.WithLabelValues(stage).Inc()
	}
}

// Resync counts a post-reconnect snapshot by result ("ok", "failed").
func (m *Metrics) Resync(result string) {
	if m != nil {
		m.resyncs.WithLabelValues(result).Inc()
	}
}
