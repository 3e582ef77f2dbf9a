package connector

import (
	"context"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pbxbridge/pbxbridge/connector/hooks"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// metrics are the daemon's own metrics; components (AMI, licensing, dispatch, adapters) register
// theirs on the same registry.
type metrics struct {
	crmDuration       *prometheus.HistogramVec
	crmRequests       *prometheus.CounterVec
	live              *prometheus.CounterVec
	liveDropped       *prometheus.CounterVec
	calls             *prometheus.CounterVec
	unrouted          *prometheus.CounterVec
	endedUnseen       *prometheus.CounterVec
	recoveredCDR      *prometheus.CounterVec
	cdrRecoveries     *prometheus.CounterVec
	cdrPending        *prometheus.GaugeVec
	openCalls         *prometheus.GaugeVec
	heldRecords       prometheus.GaugeFunc
	spilled           prometheus.Counter
	outboxWriteErrors prometheus.Counter
	reloadOK          prometheus.Gauge
	reloadTime        prometheus.Gauge
	reloads           *prometheus.CounterVec
	adminRefused      *prometheus.CounterVec
	intakeCut         *prometheus.CounterVec
	originates        *prometheus.CounterVec
	routerThrottled   *prometheus.CounterVec
	backupLast        prometheus.Gauge
	backupSize        prometheus.Gauge
	backupFailures    prometheus.Counter
	backupInterval    prometheus.Gauge
	hooks             *hooks.Metrics
}

func newMetrics(reg *prometheus.Registry, d *Daemon, version string) *metrics {
	m := &metrics{
		crmDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pbxbridge", Name: "crm_request_duration_seconds",
			Help:    "Duration of HTTP requests to CRMs, by connector and status code.",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"connector", "code"}),
		crmRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "crm_requests_total",
			Help: "HTTP requests sent to CRMs (live cards and deliveries).",
		}, []string{"connector"}),
		live: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "live_events_total",
			Help: "Live call events (incoming-call cards) by connector and result (ok, error, dropped).",
		}, []string{"connector", "result"}),
		liveDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "live_actions_dropped_total",
			Help: "Live call actions (cards) given up because their moment passed, by connector and reason (call_ended, answered_elsewhere, stopped_ringing, queue_full, other): a card is never shown after its call ended.",
		}, []string{"connector", "reason"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "calls_total",
			Help: "Finished calls built by the call model.",
		}, []string{"pbx", "direction", "disposition"}),
		unrouted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "calls_unrouted_total",
			Help: "Finished calls no connector wanted (internal calls, filters).",
		}, []string{"direction"}),
		endedUnseen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "calls_ended_unseen_total",
			Help: "Calls in progress when pbxbridge last stopped that ended while it was down, finished from the open-calls ledger (flag ended_unseen).",
		}, []string{"pbx"}),
		recoveredCDR: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "calls_recovered_from_cdr_total",
			Help: "Calls the daemon did not see (they began and ended while it or its PBX connection was down), recovered from the PBX's CDR (flag recovered_from_cdr).",
		}, []string{"pbx"}),
		cdrRecoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "cdr_recoveries_total",
			Help: "Reads of the PBX's CDR after a gap, by result (ok, error: retried with backoff).",
		}, []string{"pbx", "result"}),
		cdrPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "cdr_gap_pending",
			Help: "1 while a gap in what the daemon saw of a PBX waits to be recovered from its CDR.",
		}, []string{"pbx"}),
		openCalls: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "calls_open",
			Help: "Calls in progress known to the call model.",
		}, []string{"pbx"}),
		heldRecords: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "intake_held_records",
			Help: "Finished calls held in memory because the outbox cannot write (0 while its writes succeed).",
		}, func() float64 { return float64(d.HeldCalls()) }),
		spilled: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "intake_spilled_records_total",
			Help: "Finished calls written to the spill file because the outbox could not take them when pbxbridge stopped (imported at the next start).",
		}),
		outboxWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "outbox_write_errors_total",
			Help: "Failed attempts to store finished calls in the outbox (disk full, I/O errors); they are retried.",
		}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "config_last_reload_successful",
			Help: "1 if the last configuration reload succeeded, 0 if the new config was refused.",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "config_reloads_total",
			Help: "Configuration reloads by result.",
		}, []string{"result"}),
		adminRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "http_admin_refused_total",
			Help: "Requests the admin listener refused, by reason (token, host, cross_site).",
		}, []string{"reason"}),
		intakeCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "intake_fields_truncated_total",
			Help: "PBX event fields cut to their maximum length at intake (numbers and names 64 characters, other values 1024), by kind.",
		}, []string{"kind"}),
		originates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "click_to_call_requests_total",
			Help: "Click-to-call requests from CRMs by connector and result (originated, failed, unlicensed, denied_number, rate_limited).",
		}, []string{"connector", "result"}),
		routerThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "routing_queries_throttled_total",
			Help: "/v1/responsible and /v1/lookup queries answered empty without asking the CRM, because the connector's query budget was spent.",
		}, []string{"connector"}),
		backupLast: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "backup_last_success_timestamp_seconds",
			Help: "When the newest backup of the state was written (0: none yet).",
		}),
		backupSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "backup_last_size_bytes",
			Help: "Size of the newest backup file.",
		}),
		backupFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pbxbridge", Name: "backup_failures_total",
			Help: "Backups of the state that failed (the reason is logged).",
		}),
		backupInterval: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pbxbridge", Name: "backup_interval_seconds",
			Help: "backup.interval in force (0: automatic backups are off).",
		}),
	}
	for _, r := range []string{"token", "host", "cross_site"} {
		m.adminRefused.WithLabelValues(r)
	}
	for _, k := range []string{"number", "name", "value"} {
		m.intakeCut.WithLabelValues(k)
	}
	for _, dir := range []call.Direction{call.Inbound, call.Outbound, call.Internal} {
		m.unrouted.WithLabelValues(string(dir))
	}
	for _, r := range []string{"applied", "partial", "refused"} {
		m.reloads.WithLabelValues(r)
	}
	m.reloadOK.Set(1)
	m.reloadTime.SetToCurrentTime()
	reg.MustRegister(m.crmDuration, m.crmRequests, m.live, m.liveDropped, m.calls, m.unrouted, m.endedUnseen, m.recoveredCDR, m.cdrRecoveries,
		m.cdrPending, m.openCalls, m.heldRecords,
		m.spilled, m.outboxWriteErrors, m.reloadOK, m.reloadTime, m.reloads, m.adminRefused, m.intakeCut, m.originates, m.routerThrottled,
		m.backupLast, m.backupSize, m.backupFailures, m.backupInterval)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(buildInfo(version))
	reg.MustRegister(&outboxCollector{d: d})
	hm, err := hooks.NewMetrics(reg)
	if err != nil {
		panic(err) // as MustRegister: a duplicate registration is a programming error
	}
	m.hooks = hm
	return m
}

// initConnector creates a connector's series at zero, so that they are exported (and rate()
// and increase() alerts work) before its first event.
func (m *metrics) initConnector(name string) {
	m.crmRequests.WithLabelValues(name)
	for _, r := range []string{"ok", "error", "dropped"} {
		m.live.WithLabelValues(name, r)
	}
	for _, r := range []string{"originated", "failed", "unlicensed", "denied_number", "rate_limited"} {
		m.originates.WithLabelValues(name, r)
	}
	m.routerThrottled.WithLabelValues(name)
}

// initPBX creates a PBX's series at zero.
func (m *metrics) initPBX(name string) {
	for _, dir := range []call.Direction{call.Inbound, call.Outbound, call.Internal} {
		for _, disp := range []call.Disposition{call.Answered, call.NoAnswer, call.Busy, call.Failed} {
			m.calls.WithLabelValues(name, string(dir), string(disp))
		}
	}
	m.endedUnseen.WithLabelValues(name)
	m.openCalls.WithLabelValues(name)
}

func buildInfo(version string) prometheus.Collector {
	revision, goVersion := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	if version == "" {
		version = "dev"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "pbxbridge", Name: "build_info",
		Help:        "Build information; the value is 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// outboxCollector reads the outbox's per-connector counts at scrape time. Counting costs a scan
// of every row kept (done ones included: 0.3 s at 300,000 rows), so a result is reused by the
// scrapes of the next statsTTL (several Prometheus servers, the status page).
type outboxCollector struct {
	d *Daemon

	mu    sync.Mutex
	at    time.Time
	stats []outbox.ConnectorStats
}

// statsTTL is how long a count of the outbox serves scrapes.
const statsTTL = 2 * time.Second

// cachedStats returns the outbox's counts, at most statsTTL old.
func (c *outboxCollector) cachedStats(store *outbox.Store) ([]outbox.ConnectorStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats != nil && time.Since(c.at) < statsTTL {
		return c.stats, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stats, err := store.Stats(ctx)
	if err != nil {
		return nil, err
	}
	c.stats, c.at = stats, time.Now()
	return stats, nil
}

var (
	descPending = prometheus.NewDesc("pbxbridge_outbox_pending", "Calls waiting for delivery (pending or being delivered), per connector.", []string{"connector"}, nil)
	descDead    = prometheus.NewDesc("pbxbridge_outbox_dead", "Dead letters: calls that could not be delivered and wait for an operator, per connector.", []string{"connector"}, nil)
	descDone    = prometheus.NewDesc("pbxbridge_outbox_done", "Delivered calls kept for the retention period, per connector.", []string{"connector"}, nil)
	descOldest  = prometheus.NewDesc("pbxbridge_outbox_oldest_age_seconds", "Age of the oldest call waiting for delivery, per connector (0 when none).", []string{"connector"}, nil)
	descUp      = prometheus.NewDesc("pbxbridge_outbox_up", "1 when the outbox answered the scrape.", nil, nil)
	descCommits = prometheus.NewDesc("pbxbridge_outbox_commits_total", "Outbox transactions committed: sync=full were fsync'd (records, acknowledgements), sync=normal held only leases or open-call changes.", []string{"sync"}, nil)
	descWrites  = prometheus.NewDesc("pbxbridge_outbox_writes_total", "Writes committed to the outbox (several share one transaction under load).", nil, nil)
	descCommitS = prometheus.NewDesc("pbxbridge_outbox_commit_seconds_total", "Time spent in committed outbox transactions, fsync included: divided by the commits, the disk's commit latency.", nil, nil)
)

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPending
	ch <- descDead
	ch <- descDone
	ch <- descOldest
	ch <- descUp
	ch <- descCommits
	ch <- descWrites
	ch <- descCommitS
}

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	store := c.d.store
	if store == nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ws := store.WriterStats()
	ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(ws.DurableCommits), "full")
	ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(ws.LazyCommits), "normal")
	ch <- prometheus.MustNewConstMetric(descWrites, prometheus.CounterValue, float64(ws.Writes))
	ch <- prometheus.MustNewConstMetric(descCommitS, prometheus.CounterValue, ws.CommitTime.Seconds())
	stats, err := c.cachedStats(store)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	seen := map[string]bool{}
	for _, s := range stats {
		seen[s.Connector] = true
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.Pending+s.Leased), s.Connector)
		ch <- prometheus.MustNewConstMetric(descDead, prometheus.GaugeValue, float64(s.Dead), s.Connector)
		ch <- prometheus.MustNewConstMetric(descDone, prometheus.GaugeValue, float64(s.Done), s.Connector)
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, s.OldestPendingAge.Seconds(), s.Connector)
	}
	// Connectors without rows still get their series, at zero.
	for _, rt := range c.d.routes() {
		if seen[rt.name] {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, 0, rt.name)
		ch <- prometheus.MustNewConstMetric(descDead, prometheus.GaugeValue, 0, rt.name)
		ch <- prometheus.MustNewConstMetric(descDone, prometheus.GaugeValue, 0, rt.name)
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, 0, rt.name)
	}
}

// unitRegisterer is a Registerer for the metrics of one unit (a PBX source) that can take them
// all back out of the daemon's registry when the unit stops: a reload that restarts a PBX then
// registers its metrics again instead of failing with "already registered".
type unitRegisterer struct {
	reg prometheus.Registerer
	mu  sync.Mutex
	cs  []prometheus.Collector
}

func newUnitRegisterer(reg prometheus.Registerer) *unitRegisterer { return &unitRegisterer{reg: reg} }

func (u *unitRegisterer) Register(c prometheus.Collector) error {
	if err := u.reg.Register(c); err != nil {
		return err
	}
	u.mu.Lock()
	u.cs = append(u.cs, c)
	u.mu.Unlock()
	return nil
}

func (u *unitRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := u.Register(c); err != nil {
			panic(err)
		}
	}
}

func (u *unitRegisterer) Unregister(c prometheus.Collector) bool {
	u.mu.Lock()
	for i, x := range u.cs {
		if x == c {
			u.cs = append(u.cs[:i], u.cs[i+1:]...)
			break
		}
	}
	u.mu.Unlock()
	return u.reg.Unregister(c)
}

// unregisterAll takes every collector registered through u out of the registry.
func (u *unitRegisterer) unregisterAll() {
	u.mu.Lock()
	cs := u.cs
	u.cs = nil
	u.mu.Unlock()
	for _, c := range cs {
		u.reg.Unregister(c)
	}
}
