package ami

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// Reasons of pbxbridge_ami_frames_dropped_total.
const (
	DropTooLarge      = "too_large"       // a frame or line over the limits
	DropOrphanResp    = "orphan_response" // a response for no action in flight (late, or no ActionID)
	DropLateListEvent = "late_list_event" // a list event of an action that already gave up
	DropListOverflow  = "list_overflow"   // an event list longer than maxListEvents
)

// metrics of one PBX connection. A nil *metrics is valid and records nothing.
type metrics struct {
	connected     prometheus.Gauge
	eventsVec     *prometheus.CounterVec
	events        [64]prometheus.Counter // by asterisk.Type, resolved once
	dropped       *prometheus.CounterVec
	discards      prometheus.Counter
	trims         prometheus.Counter
	reconnects    prometheus.Counter
	connectErrors *prometheus.CounterVec
	actionDur     *prometheus.HistogramVec
	outBlocked    prometheus.Counter
	lag           prometheus.Gauge
	resyncs       *prometheus.CounterVec
}

// newMetrics creates the metrics of PBX pbx and registers them on reg (labelled pbx=<pbx>)
// when reg is not nil.
func newMetrics(reg prometheus.Registerer, pbx string) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "connected",
			Help: "1 while the AMI connection is up and logged in.",
		}),
		eventsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "events_total",
			Help: "AMI events read, by normalised type.",
		}, []string{"type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "frames_dropped_total",
			Help: "AMI frames dropped, by reason (too_large, orphan_response, late_list_event, list_overflow).",
		}, []string{"reason"}),
		discards: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "events_discarded_total",
			Help: "AMI event frames discarded at read time by the Source's filter (events the call model never uses, e.g. CEL, DeviceStateChange).",
		}),
		trims: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "varsets_trimmed_total",
			Help: "AMI VarSet frames reduced at read time to the channel identity, because the call model does not use their variable.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "reconnects_total",
			Help: "Successful logins after a lost connection.",
		}),
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "connect_errors_total",
			Help: "Failed connection attempts, by stage (dial, auth, other).",
		}, []string{"stage"}),
		actionDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "action_duration_seconds",
			Help:    "Time from sending an AMI action to its complete response.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"action"}),
		outBlocked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "out_blocked_seconds_total",
			Help: "Time the source waited because its consumer's channel was full (backpressure).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "reader_lag_seconds",
			Help: "Time the last event spent between being read from the socket and being handed to the consumer.",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "resyncs_total",
			Help: "Post-reconnect CoreShowChannels snapshots, by result (ok, failed).",
		}, []string{"result"}),
	}
	for i := range m.events {
		m.events[i] = m.eventsVec.WithLabelValues(asterisk.Type(i).String())
	}
	if reg == nil {
		return m, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pbx": pbx}, reg)
	for _, c := range []prometheus.Collector{m.connected, m.eventsVec, m.dropped, m.discards, m.trims, m.reconnects,
		m.connectErrors, m.actionDur, m.outBlocked, m.lag, m.resyncs} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("ami: registering metrics for pbx %q: already registered (duplicate pbx name?): %w", pbx, err)
			}
			return nil, fmt.Errorf("ami: registering metrics for pbx %q: %w", pbx, err)
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

func (m *metrics) discarded(n uint64) {
	if m != nil {
		m.discards.Add(float64(n))
	}
}

func (m *metrics) trimmed(n uint64) {
	if m != nil {
		m.trims.Add(float64(n))
	}
}

func (m *metrics) action(name string, d time.Duration) {
	if m != nil {
		m.actionDur.WithLabelValues(name).Observe(d.Seconds())
	}
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
