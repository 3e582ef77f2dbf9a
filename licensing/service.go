package licensing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// DefaultDir is the default licence directory.
const DefaultDir = "/etc/pbxbridge/licenses.d"

// Config is the `licensing:` section of the daemon configuration.
type Config struct {
	// Dir is the licence directory; every *.lic file in it is considered. Default DefaultDir.
	Dir string `yaml:"dir"`
	// SeatPriority lists, per connector instance name, the extensions that keep CRM actions first
	// when the instance is suspended for exceeding its seats (§3.9). Extensions not listed follow
	// in ascending order.
	SeatPriority map[string][]string `yaml:"seat_priority"`
}

// WithDefaults returns c with empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	return c
}

// Validate checks the configuration; errors name the offending key.
func (c Config) Validate() error {
	if c.Dir != "" && !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("licensing.dir: %q is not an absolute path", c.Dir)
	}
	for name, list := range c.SeatPriority {
		seen := map[string]bool{}
		for i, e := range list {
			if strings.TrimSpace(e) == "" {
				return fmt.Errorf("licensing.seat_priority.%s[%d]: empty extension", name, i)
			}
			if seen[e] {
				return fmt.Errorf("licensing.seat_priority.%s[%d]: duplicate extension %q", name, i, e)
			}
			seen[e] = true
		}
	}
	return nil
}

// Options are the runtime dependencies of a Service.
type Options struct {
	// StateDir is the daemon's state directory (license-state.json, install-id). Empty keeps the
	// state in memory only (anti-rollback and the time high-water mark then reset at restart,
	// unless Mirror holds them).
	StateDir string
	// Mirror is an optional second store of the licence memory, elsewhere than StateDir (the
	// daemon keeps it in its outbox database). At start the Service takes the strictest of both
	// copies; a copy missing or invalid while the other exists is logged, counted in
	// pbxbridge_license_state_resets_total{reason} and rewritten. See StateMirror.
	Mirror StateMirror
	// Connectors are the licensable connector types and how their accounts bind (the daemon
	// builds them from the CRM registry). Register refuses other types and licences for other
	// types are rejected. The zero value licenses nothing.
	Connectors Connectors
	// AllowDemo honours demo licences. Only `pbxbridge demo` sets it. When false, a demo licence
	// in the directory is rejected (reason demo_only) and an instance of its type without another
	// licence shows state none with a reason saying so: demo licences ship inside every binary
	// and must never unlock a real CRM account, whatever account the connector reports.
	AllowDemo bool
	// Logger receives state changes and warnings and is used as is: the caller adds its own
	// attributes (the daemon passes its logger With("component", "licensing")). Nil discards.
	Logger *slog.Logger
	// Registerer receives the pbxbridge_license_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Clock returns the wall clock; nil means time.Now.
	Clock func() time.Time
	// Keyring overrides the trusted keys (tests, dev tooling); nil means keyring.Default().
	Keyring *keyring.Keyring
	// Host reads the host factors; nil means SystemHost{StateDir: StateDir}.
	Host HostSource
	// BuildTime is a lower bound for the time floor; zero means BuildTime() (stamped at link time).
	BuildTime time.Time
	// Version is the daemon version checked against min_version; empty skips the check.
	Version string
	// RescanInterval is the safety-net rescan of the directory; zero means 60 s.
	RescanInterval time.Duration
}

// buildTime is stamped at link time:
//
//	go build -ldflags "-X github.com/pbxbridge/pbxbridge/licensing.buildTime=2026-11-22T00:00:00Z"
var buildTime string

// BuildTime returns the link-time stamp (zero when the binary was not stamped).
func BuildTime() time.Time {
	t, err := time.Parse(time.RFC3339, buildTime)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Instance is a connector instance registered with the gate. Several instances of one type may
// exist (one per CRM account); each needs its own licence, matched by type and CRM binding.
type Instance struct {
	Name string // unique instance name from the config
	Type string // bitrix24, amocrm or kommo
	// Extensions are the mapped extensions this instance serves: its seats (§3.9).
	Extensions []string
	// CRMUsers is the number of mapped CRM users, reported against seats.crm_users.
	CRMUsers int
}

// Gate is the per-call question dispatch and live events ask. Both methods are lock-free.
type Gate interface {
	Allowed(name string) bool
	ExtensionAllowed(name, ext string) bool
}

// Service verifies the licence directory, keeps the per-connector gate and exposes status and
// metrics. Licensing never stops the daemon: problems turn connectors off and are reported.
//
// Concurrency: Allowed, ExtensionAllowed and Status read an immutable snapshot through an
// atomic pointer and never block. Reload, Register, Unregister, SetAccount and the Run loop are
// serialised by a mutex; each builds a new snapshot and swaps it in. ObserveCRMDate is cheap and
// safe to call on every CRM response.
type Service struct {
	cfg      Config
	opts     Options
	log      *slog.Logger
	clock    func() time.Time
	verifier *Verifier
	host     HostSource
	metrics  *metrics

	mu           sync.Mutex
	specs        map[string]*instanceSpec
	files        []FileStatus
	cands        []*candidate
	demoOnly     map[string]string // connector type -> lid of a demo licence refused (AllowDemo false)
	maxIAT       time.Time
	state        *Memory
	savedFile    *Memory // as last written to the state file (nil: rewrite)
	savedMirror  *Memory // as last written to the mirror (nil: rewrite)
	mirrorLoaded bool    // the mirror was read (or found missing/invalid); false: retry at persist
	fileExisted  bool    // the state file existed at start
	stateKey     []byte
	fingerprint  Fingerprint
	clockSuspect bool
	warned       map[string]string
	countedBad   map[string]bool
	countedCRM   map[string]bool
	lastReload   time.Time
	nextChange   time.Time
	watching     bool

	crmMu       sync.Mutex
	crmDate     time.Time // Date header of the last CRM response
	crmObserved time.Time // injected wall clock at that moment (for the offset metric)
	crmMono     time.Time // real time.Now() at that moment: its monotonic reading measures elapsed time

	wake chan struct{}
	snap atomic.Pointer[snapshot]

	subMu   sync.Mutex
	subs    map[int]chan struct{}
	nextSub int
}

type gateEntry struct {
	on         bool
	allowedExt map[string]bool // nil: every extension
}

type snapshot struct {
	gates  map[string]gateEntry
	status Status
	// for metrics
	infos   map[string]*License
	termEnd map[string]time.Time
	grace   map[string]time.Time
}

// New builds a Service and performs the first load of the licence directory, so the gate is
// correct before Run starts. It fails only on bad configuration or an unusable keyring; licence
// problems are reported through Status, logs and metrics.
func New(ctx context.Context, cfg Config, opts Options) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("licensing: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Keyring == nil {
		kr, err := keyring.Default()
		if err != nil {
			return nil, fmt.Errorf("licensing: %w", err)
		}
		opts.Keyring = kr
	}
	if opts.Host == nil {
		opts.Host = SystemHost{StateDir: opts.StateDir}
	}
	if opts.BuildTime.IsZero() {
		opts.BuildTime = BuildTime()
	}
	if opts.RescanInterval <= 0 {
		opts.RescanInterval = time.Minute
	}
	s := &Service{
		cfg:        cfg,
		opts:       opts,
		log:        opts.Logger,
		clock:      opts.Clock,
		verifier:   &Verifier{Keyring: opts.Keyring, Connectors: opts.Connectors, AllowDemo: opts.AllowDemo, Version: opts.Version},
		host:       opts.Host,
		specs:      map[string]*instanceSpec{},
		state:      newMemory(),
		warned:     map[string]string{},
		countedBad: map[string]bool{},
		countedCRM: map[string]bool{},
		wake:       make(chan struct{}, 1),
		subs:       map[int]chan struct{}{},
	}
	for _, k := range opts.Keyring.Keys() {
		if k.Dev {
			s.log.Warn("dev key trusted: this is a devkeys build and must never run in production", "kid", k.KID)
		}
	}
	if opts.StateDir != "" {
		if _, err := EnsureInstallID(opts.StateDir); err != nil {
			s.log.Warn("cannot write the install id; host binding uses the other factors", "error", err)
		}
	}
	raw, err := s.host.ReadFactors(ctx)
	if err != nil {
		s.log.Warn("reading host factors", "error", err)
	}
	s.fingerprint = FingerprintOf(raw)
	s.stateKey = StateKey(raw)
	m, err := newMetrics(s, opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("licensing: %w", err)
	}
	s.metrics = m
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadStateLocked(ctx)
	if err := s.reloadLocked(ctx); err != nil {
		s.log.Warn("licence directory not readable; every connector stays off until it is", "dir", cfg.Dir, "error", err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), persistTimeout)
	defer cancel()
	s.persistLocked(pctx) // both copies hold the merged memory from the start
	return s, nil
}

// Connectors returns the licensable connector types the Service was built with.
func (s *Service) Connectors() Connectors { return s.opts.Connectors }

// Fingerprint returns this host's HMAC'd factors as read at start-up or the last reload.
func (s *Service) Fingerprint() Fingerprint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Fingerprint{FPV: s.fingerprint.FPV, Factors: maps.Clone(s.fingerprint.Factors)}
}

// Allowed reports whether the named connector instance may perform CRM actions now.
func (s *Service) Allowed(name string) bool {
	return s.snap.Load().gates[name].on
}

// ExtensionAllowed reports whether CRM actions for ext are allowed on the named instance: the
// instance is allowed and ext is not among the extensions suspended for exceeding the seats.
// Calls are never blocked; only their CRM actions are.
func (s *Service) ExtensionAllowed(name, ext string) bool {
	g := s.snap.Load().gates[name]
	if !g.on {
		return false
	}
	return g.allowedExt == nil || g.allowedExt[ext]
}

// Status returns the current licensing status. The result is a copy the caller may keep or
// modify.
func (s *Service) Status() Status {
	return s.snap.Load().status.clone()
}

// Subscribe returns a channel that receives a value (coalesced, never blocking the service)
// whenever the gate decision of any instance changes, and a function that unsubscribes.
func (s *Service) Subscribe() (<-chan struct{}, func()) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	id := s.nextSub
	s.nextSub++
	ch := make(chan struct{}, 1)
	s.subs[id] = ch
	return ch, func() {
		s.subMu.Lock()
		defer s.subMu.Unlock()
		delete(s.subs, id)
	}
}

func (s *Service) notify() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Register adds or replaces a connector instance and re-evaluates. Re-registering an instance of
// the same type keeps its reported CRM account.
func (s *Service) Register(inst Instance) error {
	if inst.Name == "" {
		return errors.New("licensing: register: empty instance name")
	}
	if !s.opts.Connectors.Known(inst.Type) {
		return fmt.Errorf("licensing: register %s: connector type %q needs no licence here (licensable: %s)", inst.Name, inst.Type, s.opts.Connectors)
	}
	if inst.CRMUsers < 0 {
		return fmt.Errorf("licensing: register %s: negative CRM user count", inst.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := &instanceSpec{Name: inst.Name, Type: inst.Type, CRMUsers: inst.CRMUsers,
		Extensions: seatOrder(inst.Extensions, s.cfg.SeatPriority[inst.Name])}
	if old, ok := s.specs[inst.Name]; ok && old.Type == inst.Type {
		sp.Account, sp.HasAccount = old.Account, old.HasAccount
	}
	s.specs[inst.Name] = sp
	s.evaluateLocked()
	return nil
}

// Unregister removes an instance (its gate closes).
func (s *Service) Unregister(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.specs, name)
	s.evaluateLocked()
}

// SetAccount records the CRM account the named instance authenticated as and re-evaluates; a
// zero Account forgets it. Call it after the adapter's first successful authenticated request
// (and again if the account changes). Until then CRM-bound licences are accepted provisionally,
// except demo licences, which need the account first.
func (s *Service) SetAccount(name string, a Account) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.specs[name]
	if !ok {
		return fmt.Errorf("licensing: set account: unknown connector instance %q", name)
	}
	if sp.Account == a && sp.HasAccount == !a.IsZero() {
		return nil
	}
	cp := *sp
	cp.Account, cp.HasAccount = a, !a.IsZero()
	s.specs[name] = &cp
	s.evaluateLocked()
	return nil
}

// ObserveCRMDate feeds the Date header of a TLS-verified CRM API response into the time floor
// (§3.5). Zero times are ignored.
func (s *Service) ObserveCRMDate(t time.Time) {
	if t.IsZero() {
		return
	}
	s.crmMu.Lock()
	defer s.crmMu.Unlock()
	s.crmDate = t
	s.crmObserved = s.clock()
	s.crmMono = time.Now()
}

// crmEstimate extrapolates the CRM's clock to now by the monotonic time elapsed since the last
// observation, so a wall-clock jump cannot move it.
func (s *Service) crmEstimate() (time.Time, bool) {
	s.crmMu.Lock()
	defer s.crmMu.Unlock()
	if s.crmDate.IsZero() {
		return time.Time{}, false
	}
	return s.crmDate.Add(max(time.Since(s.crmMono), 0)), true
}

// Reload re-reads and re-verifies every file of the licence directory, then re-evaluates and
// swaps the snapshot. A file that fails verification is reported and ignored; the others are
// unaffected. It returns an error only when the directory cannot be read (every connector then
// has no licence).
func (s *Service) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(ctx)
}

type scanned struct {
	path   string
	sum    string
	lic    *License
	err    error
	result FileResult
}

func (s *Service) reloadLocked(ctx context.Context) error {
	if raw, err := s.host.ReadFactors(ctx); err == nil {
		s.fingerprint = FingerprintOf(raw)
	}
	files, dirErr := s.scan(ctx)
	s.demoOnly = map[string]string{}
	for _, f := range files {
		var de *DemoOnlyError
		if errors.As(f.err, &de) {
			if cur, ok := s.demoOnly[de.Connector]; !ok || de.LID < cur {
				s.demoOnly[de.Connector] = de.LID
			}
		}
	}
	// Revocation lists first, lowest seq first, so every list of the directory applies.
	var revs []*scanned
	for _, f := range files {
		if f.lic != nil && f.lic.IsRevocation() {
			revs = append(revs, f)
		}
	}
	sort.SliceStable(revs, func(i, j int) bool { return revs[i].lic.claims.Seq < revs[j].lic.claims.Seq })
	for _, f := range revs {
		if err := CheckRollback(f.lic, s.state); err != nil {
			f.err, f.result = err, FileSuperseded
			continue
		}
		c := f.lic.claims
		s.state.Seq = max(s.state.Seq, c.Seq)
		for _, r := range c.Revoked {
			s.state.Revoked[r.LID] = max(s.state.Revoked[r.LID], r.RevLE)
		}
		for _, k := range c.RevokedKIDs {
			if !slices.Contains(s.state.RevokedKIDs, k) {
				s.state.RevokedKIDs = append(s.state.RevokedKIDs, k)
			}
		}
		f.result = FileValid
	}
	// Anti-rollback memory: the highest rev of every verified licence.
	var maxIAT time.Time
	for _, f := range files {
		if f.lic == nil {
			continue
		}
		if f.lic.IAT().After(maxIAT) {
			maxIAT = f.lic.IAT()
		}
		if !f.lic.IsRevocation() && f.lic.Rev() > s.state.Revs[f.lic.LID()] {
			s.state.Revs[f.lic.LID()] = f.lic.Rev()
		}
	}
	var cands []*candidate
	for _, f := range files {
		if f.lic == nil || f.lic.IsRevocation() {
			continue
		}
		if err := CheckRollback(f.lic, s.state); err != nil {
			f.err = err
			f.result = FileSuperseded
			if ReasonOf(err) == ReasonRevoked {
				f.result = FileRevoked
			}
			continue
		}
		f.result = FileValid
		cands = append(cands, &candidate{lic: f.lic, host: f.lic.MatchHost(s.fingerprint), file: f.path})
	}
	// Report and count rejected files once per distinct content.
	counted := map[string]bool{}
	statuses := make([]FileStatus, 0, len(files))
	for _, f := range files {
		fst := FileStatus{Path: f.path, Result: f.result}
		if f.lic != nil {
			fst.License = InfoOf(f.lic)
		}
		if f.err != nil {
			fst.Reason, fst.Error = ReasonOf(f.err), f.err.Error()
			key := f.sum + "|" + string(fst.Reason)
			counted[key] = true
			if !s.countedBad[key] {
				s.metrics.verifyErrors.WithLabelValues(string(fst.Reason)).Inc()
				s.log.Warn("licence file ignored", "file", f.path, "reason", fst.Reason, "error", f.err)
			}
		}
		statuses = append(statuses, fst)
	}
	for _, c := range cands {
		if c.host.Bound && !c.host.OK {
			key := c.lic.Digest() + "|host"
			counted[key] = true
			if !s.countedBad[key] {
				s.metrics.verifyErrors.WithLabelValues(string(ReasonHostMismatch)).Inc()
				s.log.Error("licence does not match this host", "file", c.file, "lid", c.lic.LID(),
					"matched", c.host.Matched, "required", c.host.Required, "differing", c.host.Failing, "missing", c.host.Missing)
			}
		}
	}
	s.countedBad = counted
	s.files = statuses
	s.cands = cands
	s.maxIAT = maxIAT
	s.lastReload = s.clock()
	if dirErr != nil {
		s.metrics.reloads.WithLabelValues("error").Inc()
	} else {
		s.metrics.reloads.WithLabelValues("ok").Inc()
	}
	s.evaluateLocked()
	return dirErr
}

// scan reads and verifies every *.lic file of the directory (steps 1-7).
func (s *Service) scan(ctx context.Context) ([]*scanned, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("licensing: reading %s: %w", s.cfg.Dir, err)
	}
	var out []*scanned
	for _, e := range entries {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		name := e.Name()
		if !strings.HasSuffix(name, ".lic") || strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		p := filepath.Join(s.cfg.Dir, name)
		f := &scanned{path: p, result: FileError}
		data, err := readLimited(p, MaxFileSize)
		sum := sha256.Sum256(data)
		f.sum = hex.EncodeToString(sum[:])
		if err != nil {
			f.err = &VerifyError{Reason: ReasonBadFormat, Err: err}
		} else if f.lic, err = s.verifier.VerifyFile(data); err != nil {
			f.err = err
		}
		out = append(out, f)
	}
	return out, nil
}

// readLimited reads at most limit bytes and fails for larger files or non-regular files.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("file larger than %d bytes", limit)
	}
	return data, nil
}

// floorLocked computes F = max(build time, max iat, persisted HWM, CRM date - 5 min).
func (s *Service) floorLocked() (floor time.Time, crm time.Time, haveCRM bool) {
	floor = s.opts.BuildTime
	for _, t := range []time.Time{s.maxIAT, s.state.HWM} {
		if t.After(floor) {
			floor = t
		}
	}
	crm, haveCRM = s.crmEstimate()
	if haveCRM {
		if t := crm.Add(-5 * time.Minute); t.After(floor) {
			floor = t
		}
	}
	return floor, crm, haveCRM
}

// evaluateLocked derives the states at the effective time, updates the persisted memory, swaps
// the snapshot and notifies subscribers when a gate decision changed.
func (s *Service) evaluateLocked() {
	wall := s.clock()
	floor, crm, haveCRM := s.floorLocked()
	now := wall
	if floor.After(now) {
		now = floor
	}
	suspect := wall.Before(floor.Add(-10 * time.Minute))
	if suspect && !s.clockSuspect {
		s.metrics.rollback.Inc()
		s.log.Error("wall clock is behind the licence time floor; licences are evaluated at the floor",
			"wall", wall.UTC().Format(time.RFC3339), "floor", floor.UTC().Format(time.RFC3339))
	} else if !suspect && s.clockSuspect {
		s.log.Info("wall clock is back above the licence time floor")
	}
	s.clockSuspect = suspect
	// High-water mark; with a CRM date, never beyond it (+5 min), so a clock set far ahead by
	// mistake cannot poison the floor.
	hwm := now
	if haveCRM {
		if limit := crm.Add(5 * time.Minute); hwm.After(limit) {
			hwm = limit
		}
	}
	if hwm.After(s.state.HWM) {
		s.state.HWM = hwm.UTC()
	}

	specs := make([]*instanceSpec, 0, len(s.specs))
	for _, sp := range s.specs {
		specs = append(specs, sp)
	}
	res := evaluate(now, s.cands, specs, s.state.OverSince, s.demoOnly)
	// Overage windows of instances not registered (yet, after a restart) are kept.
	over := maps.Clone(s.state.OverSince)
	for _, sp := range specs {
		delete(over, sp.Name)
	}
	maps.Copy(over, res.overSince)
	s.state.OverSince = over
	for name, ce := range res.connectors {
		if ce.selected != nil {
			s.state.Last[name] = LastToken{LID: ce.selected.lic.LID(), Rev: ce.selected.lic.Rev()}
		}
	}
	if !res.nextChange.Equal(s.nextChange) {
		s.nextChange = res.nextChange
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}

	snap := &snapshot{gates: map[string]gateEntry{}, infos: map[string]*License{}, termEnd: map[string]time.Time{}, grace: map[string]time.Time{}}
	st := Status{Now: now, Wall: wall, Floor: floor, ClockSuspect: suspect, Dir: s.cfg.Dir, LastReload: s.lastReload,
		Files: slices.Clone(s.files)}
	names := slices.Sorted(maps.Keys(res.connectors))
	crmSeen := map[string]bool{}
	for _, name := range names {
		ce := res.connectors[name]
		on := ce.state.On()
		snap.gates[name] = gateEntry{on: on, allowedExt: ce.allowedExt}
		cs := ConnectorStatus{Name: name, Type: ce.spec.Type, State: ce.state, Allowed: on, Reason: ce.reason, Seats: ce.seats}
		if ce.spec.HasAccount {
			a := ce.spec.Account
			cs.Account = &a
		}
		if ce.selected != nil {
			l := ce.selected.lic
			cs.License = InfoOf(l)
			h := ce.selected.host
			cs.Host = &h
			days := l.TermEndTime().Sub(now).Hours() / 24
			cs.DaysLeft = &days
			snap.infos[name] = l
			snap.termEnd[name] = l.TermEndTime()
			snap.grace[name] = l.GraceEndTime()
		}
		if ce.next != nil {
			cs.Next = InfoOf(ce.next.lic)
		}
		st.Connectors = append(st.Connectors, cs)
		s.logTransitions(now, ce)
		if ce.mismatch == ReasonCRMMismatch {
			key := name + "|" + ce.mismatchKey
			crmSeen[key] = true
			if !s.countedCRM[key] {
				s.metrics.verifyErrors.WithLabelValues(string(ReasonCRMMismatch)).Inc()
			}
		}
	}
	s.countedCRM = crmSeen
	snap.status = st
	old := s.snap.Swap(snap)
	if old == nil || gatesChanged(old.gates, snap.gates) {
		s.notify()
	}
}

func gatesChanged(a, b map[string]gateEntry) bool {
	if len(a) != len(b) {
		return true
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.on != y.on || !maps.Equal(x.allowedExt, y.allowedExt) || (x.allowedExt == nil) != (y.allowedExt == nil) {
			return true
		}
	}
	return false
}

// logTransitions logs state changes once, the 14/7/3/1-days-left warnings once per threshold,
// and a daily WARN in grace / ERROR when expired.
func (s *Service) logTransitions(now time.Time, ce *connectorEval) {
	name := ce.spec.Name
	key := string(ce.state) + "|" + ce.reason
	if s.warned[name+"|state"] != key {
		s.warned[name+"|state"] = key
		lvl := slog.LevelInfo
		switch ce.state {
		case StateMismatch, StateExpired:
			lvl = slog.LevelError
		case StateGrace, StateNone:
			lvl = slog.LevelWarn
		}
		s.log.Log(context.Background(), lvl, "licence state", "connector", name, "type", ce.spec.Type,
			"state", ce.state, "crm_actions", ce.state.On(), "reason", ce.reason)
	}
	if ce.selected == nil {
		return
	}
	l := ce.selected.lic
	today := DateOf(now.In(l.Location()))
	switch ce.state {
	case StateActive, StateTrial:
		left := today.DaysUntil(l.End())
		for _, th := range []int{1, 3, 7, 14} {
			if left <= th {
				k := fmt.Sprintf("%s|%s|%d", l.LID(), l.End(), th)
				if s.warned[name+"|days"] != k && (ce.next == nil) {
					s.warned[name+"|days"] = k
					s.log.Warn("licence term ends soon", "connector", name, "lid", l.LID(), "days_left", left,
						"end", l.End().String(), "grace_until", l.GraceUntil().String())
				}
				break
			}
		}
	case StateGrace:
		k := "grace|" + today.String()
		if s.warned[name+"|daily"] != k {
			s.warned[name+"|daily"] = k
			s.log.Warn("licence in grace: payment is late; CRM actions stop after grace_until", "connector", name,
				"lid", l.LID(), "end", l.End().String(), "grace_until", l.GraceUntil().String())
		}
	case StateExpired:
		k := "expired|" + today.String()
		if s.warned[name+"|daily"] != k {
			s.warned[name+"|daily"] = k
			s.log.Error("licence expired: CRM actions are off; telephony is not affected", "connector", name,
				"lid", l.LID(), "grace_until", l.GraceUntil().String())
		}
	}
}

// Run watches the licence directory (fsnotify on the directory, so atomic renames are seen),
// rescans it every RescanInterval, re-evaluates every minute and at each token-zone midnight,
// and persists the state every 5 minutes and on return. It returns nil when ctx ends; it never
// fails because of licensing.
func (s *Service) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("fsnotify unavailable; relying on the periodic rescan", "error", err)
	} else {
		defer func() { _ = w.Close() }() // nothing useful to do with a close error of the watcher
	}
	var events chan fsnotify.Event
	var errs chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	s.watch(w)

	rescan := time.NewTicker(s.opts.RescanInterval)
	defer rescan.Stop()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	persist := time.NewTicker(5 * time.Minute)
	defer persist.Stop()
	boundary := time.NewTimer(s.untilNextChange())
	defer boundary.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()

	defer func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), persistTimeout)
		defer cancel()
		s.mu.Lock()
		s.persistLocked(pctx)
		s.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Clean(ev.Name) == filepath.Clean(s.cfg.Dir) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				s.mu.Lock()
				s.watching = false
				s.mu.Unlock()
			}
			debounce.Reset(100 * time.Millisecond)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("fsnotify", "error", err)
		case <-debounce.C:
			_ = s.reloadQuiet(ctx)
		case <-rescan.C:
			s.watch(w)
			_ = s.reloadQuiet(ctx)
		case <-tick.C:
			s.reevaluate()
		case <-boundary.C:
			s.reevaluate()
			boundary.Reset(s.untilNextChange())
		case <-s.wake:
			boundary.Reset(s.untilNextChange())
		case <-persist.C:
			s.persist(ctx)
		}
	}
}

func (s *Service) reloadQuiet(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.reloadLocked(ctx)
	pctx, cancel := context.WithTimeout(ctx, persistTimeout)
	defer cancel()
	s.persistLocked(pctx)
	return err
}

func (s *Service) persist(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, persistTimeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.persistLocked(pctx)
}

func (s *Service) reevaluate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evaluateLocked()
}

// watch (re)adds the directory watch when it is not active.
func (s *Service) watch(w *fsnotify.Watcher) {
	if w == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watching {
		return
	}
	if err := w.Add(s.cfg.Dir); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot watch the licence directory; relying on the periodic rescan", "dir", s.cfg.Dir, "error", err)
		}
		return
	}
	s.watching = true
}

func (s *Service) untilNextChange() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nextChange.IsZero() {
		return time.Hour
	}
	d := s.nextChange.Sub(s.snap.Load().status.Now)
	if d < 0 {
		d = 0
	}
	return d + 10*time.Millisecond
}

var _ Gate = (*Service)(nil)
