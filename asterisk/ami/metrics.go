package ami

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk/internal/transport"
)

// Reasons of pbxbridge_ami_frames_dropped_total.
const (
	DropTooLarge      = "too_large"       // a frame or line over the limits
	DropOrphanResp    = "orphan_response" // a response for no action in flight (late, or no ActionID)
	DropLateListEvent = "late_list_event" // a list event of an action that already gave up
	DropListOverflow  = "list_overflow"   // an event list longer than maxListEvents
)

// metrics of one PBX connection: the ones every transport has, and AMI's own. The zero value
// (noMetrics) is valid and records nothing.
type metrics struct {
	*transport.Metrics
	discards  prometheus.Counter
	trims     prometheus.Counter
	actionDur *prometheus.HistogramVec
}

// noMetrics records nothing (a Conn of Dial).
var noMetrics = &metrics{} //nolint:gochecknoglobals // immutable: every method is a no-op on it

// newMetrics creates the metrics of PBX pbx and registers them on reg (labelled pbx=<pbx>)
// when reg is not nil.
func newMetrics(reg prometheus.Registerer, pbx string) (*metrics, error) {
	m := &metrics{
		discards: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "events_discarded_total",
			Help: "AMI event frames discarded at read time by the Source's filter (events the call model never uses, e.g. CEL, DeviceStateChange).",
		}),
		trims: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "varsets_trimmed_total",
			Help: "AMI VarSet frames reduced at read time to the channel identity, because the call model does not use their variable.",
		}),
		actionDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Subsystem: "ami", Name: "action_duration_seconds",
			Help:    "Time from sending an AMI action to its complete response.",
			Buckets: transport.DurationBuckets,
		}, []string{"action"}),
	}
	common, err := transport.NewMetrics(reg, pbx, transport.MetricsSpec{
		Subsystem:         "ami",
		ConnectedHelp:     "1 while the AMI connection is up and logged in.",
		EventsHelp:        "AMI events read, by normalised type.",
		ReconnectsHelp:    "Successful logins after a lost connection.",
		ConnectErrorsHelp: "Failed connection attempts, by stage (dial, auth, other).",
		LagHelp:           "Time the last event spent between being read from the socket and being handed to the consumer (0 when the consumer's channel had room).",
		ResyncsHelp:       "Post-reconnect CoreShowChannels snapshots, by result (ok, failed).",
		DropName:          "frames_dropped_total",
		DropHelp:          "AMI frames dropped, by reason (too_large, orphan_response, late_list_event, list_overflow).",
		Extra:             []prometheus.Collector{m.discards, m.trims, m.actionDur},
	})
	if err != nil {
		return nil, err
	}
	m.Metrics = common
	return m, nil
}

func (m *metrics) discarded(n uint64) {
	if m.discards != nil {
		m.discards.Add(float64(n))
	}
}

func (m *metrics) trimmed(n uint64) {
	if m.trims != nil {
		m.trims.Add(float64(n))
	}
}

func (m *metrics) action(name string, d time.Duration) {
	if m.actionDur != nil {
		m.actionDur.WithLabelValues(name).Observe(d.Seconds())
	}
}
