package bitrix24

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of one connector instance (the registerer carries the connector label).
type metrics struct {
	requests        *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec
	limiterWait     prometheus.Histogram
	refreshes       *prometheus.CounterVec
	authOK          prometheus.Gauge
	reauthorize     prometheus.Gauge
	unknownExt      prometheus.Counter
	webhookRejected *prometheus.CounterVec
	requestsPerCall prometheus.Histogram
	callIDReuse     prometheus.Counter
	clickToCall     *prometheus.CounterVec
	usersMapped     prometheus.Gauge
	userRefresh     *prometheus.CounterVec
	live            *prometheus.CounterVec
	recordings      *prometheus.CounterVec
	followUps       *prometheus.CounterVec
	installProofs   *prometheus.CounterVec
	replays         *prometheus.CounterVec
	replayFull      prometheus.Counter
	replayEntries   prometheus.Gauge
	cacheFull       *prometheus.CounterVec
	batched         prometheus.Histogram
	finishLookups   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "pbxbridge", "bitrix24"
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "REST requests by method and result (ok, or the Bitrix24 error code, or transport)."}, []string{"method", "result"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rate_limited_total",
			Help: "Refusals received from the portal: QUERY_LIMIT_EXCEEDED, OPERATION_TIME_LIMIT, OVERLOAD_LIMIT."}, []string{"code"}),
		limiterWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "limiter_wait_seconds",
			Help: "Time requests waited for a slot of the client-side leaky bucket.", Buckets: []float64{0, .01, .05, .1, .5, 1, 2, 5, 10, 30, 60}}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "token_refreshes_total",
			Help: "OAuth token refreshes by result."}, []string{"result"}),
		authOK: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "auth_ok",
			Help: "1 when the connector holds a working authorisation."}),
		reauthorize: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "reauthorize_required",
			Help: "1 when an admin must authorise the application again (calls stay queued)."}),
		unknownExt: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "unknown_extension_total",
			Help: "Calls of extensions no Bitrix24 user has (sent as the default user or refused)."}),
		webhookRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "webhook_rejected_total",
			Help: "Requests to the connector's HTTP endpoints refused (401/403/400) by reason."}, []string{"reason"}),
		requestsPerCall: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "requests_per_call",
			Help: "HTTP requests (live card + delivery, retries included) per delivered call.", Buckets: []float64{1, 2, 3, 4, 5, 6, 8, 10, 15, 20}}),
		callIDReuse: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "call_id_reuse_total",
			Help: "CALL_IDs Bitrix24 handed out although another call owns them (re-registered)."}),
		clickToCall: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "click_to_call_total",
			Help: "Click-to-call and callback requests by result."}, []string{"result"}),
		usersMapped: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "users_mapped",
			Help: "Extensions mapped to Bitrix24 users (UF_PHONE_INNER and config overrides)."}),
		userRefresh: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "user_cache_refreshes_total",
			Help: "Refreshes of the extension→user cache by result."}, []string{"result"}),
		live: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "card_actions_total",
			Help: "Call-card actions while calls ring (register, show, hide) by result."}, []string{"action", "result"}),
		recordings: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "recordings_total",
			Help: "Recordings by outcome (content, upload, url, skipped_*)."}, []string{"outcome"}),
		followUps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "missed_call_followups_total",
			Help: "Missed-call follow-ups created (task, todo, lead)."}, []string{"kind"}),
		installProofs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "install_proofs_total",
			Help: "Installations and authorisations checked at the OAuth server by result (ok, refused, unavailable, wrong_portal, rate_limited)."}, []string{"result"}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "event_replays_total",
			Help: "Click-to-call and callback events dropped as already handled (replays, double deliveries)."}, []string{"event"}),
		replayFull: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "replay_guard_full_total",
			Help: "Events refused because the replay guard remembers its maximum of event ids."}),
		replayEntries: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "replay_guard_entries",
			Help: "Event ids the replay guard remembers."}),
		cacheFull: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_full_total",
			Help: "Entries a bounded in-memory cache did not take because it was full (live, users, lookups)."}, []string{"cache"}),
		batched: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_commands",
			Help: "Commands (finish, show, hide) per batch request sent while a backlog held them back.", Buckets: []float64{2, 3, 5, 10, 20, 30, 40, 50}}),
		finishLookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "finish_lookups_total",
			Help: "Look-ups of a call in the telephony statistics before re-sending a finish whose answer was lost, or before sending a call queued in a restored backup, by result (finished, not_finished, unavailable)."}, []string{"result"}),
	}
	var err error
	reg1 := func(c *prometheus.CounterVec) *prometheus.CounterVec { return register(reg, c, &err) }
	m.requests, m.rateLimited, m.refreshes = reg1(m.requests), reg1(m.rateLimited), reg1(m.refreshes)
	m.webhookRejected, m.clickToCall, m.userRefresh = reg1(m.webhookRejected), reg1(m.clickToCall), reg1(m.userRefresh)
	m.live, m.recordings, m.followUps = reg1(m.live), reg1(m.recordings), reg1(m.followUps)
	m.installProofs, m.replays, m.cacheFull = reg1(m.installProofs), reg1(m.replays), reg1(m.cacheFull)
	m.finishLookups = reg1(m.finishLookups)
	m.batched = register(reg, m.batched, &err)
	m.replayFull = register(reg, m.replayFull, &err)
	m.replayEntries = register(reg, m.replayEntries, &err)
	m.limiterWait = register(reg, m.limiterWait, &err)
	m.requestsPerCall = register(reg, m.requestsPerCall, &err)
	m.authOK, m.reauthorize, m.usersMapped = register(reg, m.authOK, &err), register(reg, m.reauthorize, &err), register(reg, m.usersMapped, &err)
	m.unknownExt = register(reg, m.unknownExt, &err)
	m.callIDReuse = register(reg, m.callIDReuse, &err)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// resultLabel is a bounded label for a Bitrix24 error code.
func resultLabel(code string) string {
	code = strings.ToUpper(code)
	switch code {
	case "":
		return "error"
	case "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT", "EXPIRED_TOKEN", "NO_AUTH_FOUND",
		"WRONG_AUTH_TYPE", "INSUFFICIENT_SCOPE", "ACCESS_DENIED", "ERROR_CORE", "INTERNAL_SERVER_ERROR",
		"ERROR_METHOD_NOT_FOUND", "INVALID_TOKEN", "INVALID_CREDENTIALS", "USER_ACCESS_ERROR", "PAYMENT_REQUIRED":
		return strings.ToLower(code)
	}
	return "other"
}

// register registers c; when an equal collector is already registered (a configuration reload
// building the connector again on the same registerer) it returns that one, so the exported
// series keep moving. The first other error is kept in *errp.
func register[T prometheus.Collector](reg prometheus.Registerer, c T, errp *error) T {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = err
	}
	return c
}
