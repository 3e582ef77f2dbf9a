package amocrm

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of one connector instance (the registerer adds the connector label).
type metrics struct {
	calls       *prometheus.CounterVec // result: logged, unknown, failed, recovered, resent
	batchSize   prometheus.Histogram   // calls per POST /api/v4/calls
	unknown     *prometheus.CounterVec // action: unsorted, unsorted_repeat, contact_created, skipped
	tasks       *prometheus.CounterVec // result: created, found, no_responsible, failed
	popups      *prometheus.CounterVec // result: sent, unmapped, failed, dropped
	tokens      *prometheus.CounterVec // event: refreshed, refresh_failed, broken, confirmed, authorised, reloaded
	throttled   *prometheus.CounterVec // kind: 429, blocked
	click2call  *prometheus.CounterVec // result: ok, unauthorized, bad_request, unmapped, failed, busy
	replayFull  prometheus.Counter     // valid one-time tokens refused: the replay cache was full
	authFailure *prometheus.CounterVec // route: click2call, oauth_callback
	routing     *prometheus.CounterVec // kind: responsible, lookup; result: found, unknown, error
	all         []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "calls_total",
			Help: "Calls handled by POST /api/v4/calls, by result (logged, unknown number, failed; after a lost answer: recovered from the call notes, resent)."}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "calls_batch_size",
			Help: "Calls per POST /api/v4/calls request.", Buckets: []float64{1, 2, 5, 10, 20, 30, 40, 50, 100, 250}}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "unknown_numbers_total",
			Help: "Calls from numbers that match no contact, by action taken (unsorted: a new incoming lead; unsorted_repeat: a note on the number's waiting incoming lead; contact_created, skipped)."}, []string{"action"}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "missed_call_tasks_total",
			Help: "Missed-call tasks, by result (created, found, no_responsible, failed)."}, []string{"result"}),
		popups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "popups_total",
			Help: "Incoming-call pop-ups (POST /api/v2/events), by result (sent, unmapped, failed; dropped: too many waiting, or waited too long, for amoCRM)."}, []string{"result"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "token_events_total",
			Help: "OAuth token events (authorised, refreshed, confirmed, refresh_failed, broken, reloaded)."}, []string{"event"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "throttled_total",
			Help: "Rate-limit refusals: 429 answers, and blocks (403 after repeated 429)."}, []string{"kind"}),
		click2call: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "click_to_call_total",
			Help: "Click-to-call requests from the widget, by result."}, []string{"result"}),
		replayFull: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "replay_cache_full_total",
			Help: "Click-to-call requests with a valid one-time token refused because the cache of used tokens was full (100 000 live tokens)."}),
		authFailure: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "http_auth_failures_total",
			Help: "Requests to the adapter's HTTP routes refused for bad authentication, by route."}, []string{"route"}),
		routing: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pbxbridge", Subsystem: "amocrm", Name: "routing_lookups_total",
			Help: "Responsible-manager and caller-name look-ups, by kind and result."}, []string{"kind", "result"}),
	}
	m.all = []prometheus.Collector{m.calls, m.batchSize, m.unknown, m.tasks, m.popups, m.tokens, m.throttled, m.click2call, m.replayFull, m.authFailure, m.routing}
	if reg == nil {
		return m, nil
	}
	for _, c := range m.all {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}
