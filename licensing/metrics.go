package licensing

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the pbxbridge_license_* series of §3.12. Per-connector gauges are computed at scrape
// time from the current snapshot, so they never disagree with the gate; counters are ordinary.
type metrics struct {
	verifyErrors *prometheus.CounterVec
	reloads      *prometheus.CounterVec
	rollback     prometheus.Counter
	stateResets  *prometheus.CounterVec
}

const ns = "pbxbridge"

func newMetrics(s *Service, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		verifyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "license",
			Name: "verify_errors_total", Help: "Licence files rejected, by reason (counted once per distinct file content)."}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "license",
			Name: "reloads_total", Help: "Reloads of the licence directory, by result."}, []string{"result"}),
		rollback: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "license",
			Name: "clock_rollback_total", Help: "Times the wall clock was seen more than 10 minutes behind the licence time floor."}),
		stateResets: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "license",
			Name: "state_resets_total", Help: "Copies of the licence memory (state file, mirror) found missing or invalid at start while the other copy existed, by reason."}, []string{"reason"}),
	}
	for _, r := range []Reason{ReasonBadFormat, ReasonUnknownKey, ReasonBadSignature, ReasonSchema, ReasonSuperseded,
		ReasonRevoked, ReasonHostMismatch, ReasonCRMMismatch, ReasonDemoOnly} {
		m.verifyErrors.WithLabelValues(string(r))
	}
	for _, r := range []string{ResetFileMissing, ResetFileInvalid, ResetMirrorMissing, ResetMirrorInvalid} {
		m.stateResets.WithLabelValues(r)
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.verifyErrors, m.reloads, m.rollback, m.stateResets, &collector{s: s}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(ns, "license", name), help, labels, nil)
}

var (
	descInfo      = desc("info", "The licence token currently selected for a connector (value 1).", "connector", "lid", "rev", "type", "kid")
	descState     = desc("state", "One-hot licence state of a connector.", "connector", "state")
	descTermEnd   = desc("term_end_timestamp_seconds", "First instant after the paid term's last day, in the token's zone.", "connector")
	descGraceEnd  = desc("grace_end_timestamp_seconds", "First instant after grace_until, in the token's zone.", "connector")
	descRemaining = desc("remaining_seconds", "Seconds until the paid term ends (term_end_timestamp_seconds - now); negative during grace.", "connector")
	descSeatsLim  = desc("seats_limit", "Seat limit of the selected licence (absent when unlimited).", "connector", "kind")
	descSeatsUsed = desc("seats_used", "Seats in use: mapped extensions and CRM users.", "connector", "kind")
	descOverage   = desc("overage_deadline_timestamp_seconds", "When over_limit turns into suspended_excess (0 if none).", "connector")
	descHostMatch = desc("host_factors_matched", "Host factors matching the licence binding.", "connector")
	descHostReq   = desc("host_factors_required", "Host factors the licence binding requires.", "connector")
	descFloor     = desc("time_floor_timestamp_seconds", "The licensing time floor F.")
	descOffset    = desc("clock_offset_seconds", "Wall clock minus the last CRM HTTPS Date header.", "source")
)

type collector struct{ s *Service }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descState, descTermEnd, descGraceEnd, descRemaining, descSeatsLim,
		descSeatsUsed, descOverage, descHostMatch, descHostReq, descFloor, descOffset} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.s.snap.Load()
	if snap == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	now := c.s.clock()
	if snap.status.Floor.After(now) {
		now = snap.status.Floor
	}
	for _, cs := range snap.status.Connectors {
		name := cs.Name
		for _, st := range AllStates {
			v := 0.0
			if cs.State == st {
				v = 1
			}
			gauge(descState, v, name, string(st))
		}
		if l, ok := snap.infos[name]; ok {
			gauge(descInfo, 1, name, l.LID(), strconv.Itoa(l.Rev()), string(l.Type()), l.KID())
			gauge(descTermEnd, float64(snap.termEnd[name].Unix()), name)
			gauge(descGraceEnd, float64(snap.grace[name].Unix()), name)
			gauge(descRemaining, snap.termEnd[name].Sub(now).Seconds(), name)
		}
		if lim := cs.Seats.ExtensionsLimit; lim != nil {
			gauge(descSeatsLim, float64(*lim), name, "extensions")
		}
		if lim := cs.Seats.CRMUsersLimit; lim != nil {
			gauge(descSeatsLim, float64(*lim), name, "crm_users")
		}
		gauge(descSeatsUsed, float64(cs.Seats.ExtensionsUsed), name, "extensions")
		gauge(descSeatsUsed, float64(cs.Seats.CRMUsersUsed), name, "crm_users")
		deadline := 0.0
		if cs.Seats.Deadline != nil {
			deadline = float64(cs.Seats.Deadline.Unix())
		}
		gauge(descOverage, deadline, name)
		if cs.Host != nil && cs.Host.Bound {
			gauge(descHostMatch, float64(cs.Host.Matched), name)
			gauge(descHostReq, float64(cs.Host.Required), name)
		}
	}
	if !snap.status.Floor.IsZero() {
		gauge(descFloor, float64(snap.status.Floor.Unix()))
	}
	c.s.crmMu.Lock()
	crmDate, observed := c.s.crmDate, c.s.crmObserved
	c.s.crmMu.Unlock()
	if !crmDate.IsZero() {
		gauge(descOffset, observed.Sub(crmDate).Seconds(), "crm_http_date")
	}
}
