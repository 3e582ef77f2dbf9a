package dispatch

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the delivery metrics shared by all workers.
type Metrics struct {
	deliveries      *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	requestsPerCall *prometheus.HistogramVec
	authOK          *prometheus.GaugeVec
}

// NewMetrics registers the delivery metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "deliveries_total",
			Help: "Delivery attempts by connector and result (delivered, retry, rate_limited, auth, dead, skipped, released).",
		}, []string{"connector", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Name: "delivery_duration_seconds",
			Help:    "Time one delivery attempt took, CRM requests included.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"connector"}),
		requestsPerCall: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Name: "crm_requests_per_call",
			Help:    "CRM requests a successful delivery of one call needed.",
			Buckets: []float64{0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20},
		}, []string{"connector"}),
		authOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "crm_auth_ok",
			Help: "1 while the connector's CRM authorisation works, 0 when it must be renewed.",
		}, []string{"connector"}),
	}
	reg.MustRegister(m.deliveries, m.duration, m.requestsPerCall, m.authOK)
	return m
}

// Init creates the series of a connector so they are exported (at zero) before the first call.
func (m *Metrics) Init(connector string) {
	for _, r := range []string{"delivered", "retry", "rate_limited", "auth", "dead", "skipped", "released"} {
		m.deliveries.WithLabelValues(connector, r)
	}
	m.duration.WithLabelValues(connector)
	m.requestsPerCall.WithLabelValues(connector)
	m.authOK.WithLabelValues(connector).Set(1)
}
