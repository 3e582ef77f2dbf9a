package licensing_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// mirrorEnv is an env whose services keep a mirror of the licence memory in a file elsewhere.
type mirrorEnv struct {
	*env
	mirror licensing.FileMirror
	iat    time.Time // iat of the installed licence: the signed floor
	now    time.Time // the wall clock of the first run: the high-water mark
}

func newMirrorEnv(t *testing.T) *mirrorEnv {
	t.Helper()
	keys := newKeys(t)
	now := inZone(t, msk, "2026-03-10 12:00:00")
	m := &mirrorEnv{mirror: licensing.FileMirror{Path: filepath.Join(t.TempDir(), "outbox", "licence-state.mirror")}, now: now}
	m.env = newEnv(t, keys, now, m.opts(nil))
	c := paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)
	c.IAT = time.Date(2026, 2, 25, 0, 0, 0, 0, time.UTC)
	m.iat = c.IAT
	m.write("l.lic", sign(t, keys.paid, c))
	m.reload()
	runAndStop(t, m.svc) // persists both copies
	m.mustExist(true, true)
	return m
}

func (m *mirrorEnv) opts(reg prometheus.Registerer) func(*licensing.Options) {
	return func(o *licensing.Options) {
		o.Mirror = m.mirror
		o.Registerer = reg
	}
}

// restart starts a new Service 30 days before the first run's clock (a clock set back) and
// returns its registry.
func (m *mirrorEnv) restart(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	m.clock.Set(m.now.AddDate(0, 0, -30))
	m.svc = m.start(m.opts(reg))
	return reg
}

func (m *mirrorEnv) stateFile() string { return filepath.Join(m.state, licensing.StateFile) }

func (m *mirrorEnv) mustExist(file, mirror bool) {
	m.t.Helper()
	for p, want := range map[string]bool{m.stateFile(): file, m.mirror.Path: mirror} {
		if _, err := os.Stat(p); (err == nil) != want {
			m.t.Fatalf("%s: exists=%v, want %v", p, err == nil, want)
		}
	}
}

func resets(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, r := range []string{licensing.ResetFileMissing, licensing.ResetFileInvalid, licensing.ResetMirrorMissing, licensing.ResetMirrorInvalid} {
		if v := testutil.ToFloat64(counterVec(t, reg, "pbxbridge_license_state_resets_total", r)); v != 0 {
			out[r] = v
		}
	}
	return out
}

// TestFloorSurvivesStateFileDeletion: deleting license-state.json (then setting the clock back)
// no longer resets the time floor: it comes back from the mirror, the reset is logged and counted,
// and both copies are rewritten. Either copy alone carries the floor.
func TestFloorSurvivesStateFileDeletion(t *testing.T) {
	t.Parallel()
	m := newMirrorEnv(t)

	must(t, os.Remove(m.stateFile()))
	reg := m.restart(t)
	if st := m.svc.Status(); !st.Floor.Equal(m.now) || !st.ClockSuspect {
		t.Fatalf("after deleting the state file: floor %s (want %s), suspect %v", st.Floor, m.now, st.ClockSuspect)
	}
	if got := resets(t, reg); len(got) != 1 || got[licensing.ResetFileMissing] != 1 {
		t.Fatalf("resets %v", got)
	}
	if !strings.Contains(m.logs.String(), "licence state file missing while its mirror exists") {
		t.Fatalf("not logged:\n%s", m.logs)
	}
	m.mustExist(true, true) // rewritten at start
	m.register("b24", b24)
	if !m.svc.Allowed("b24") { // evaluated at the floor, inside the term
		t.Fatalf("b24: %+v", m.conn("b24"))
	}

	// The mirror deleted: restored from the file.
	must(t, os.Remove(m.mirror.Path))
	reg = m.restart(t)
	if st := m.svc.Status(); !st.Floor.Equal(m.now) {
		t.Fatalf("after deleting the mirror: floor %s", st.Floor)
	}
	if got := resets(t, reg); len(got) != 1 || got[licensing.ResetMirrorMissing] != 1 {
		t.Fatalf("resets %v", got)
	}
	m.mustExist(true, true)

	// The mirror corrupted.
	must(t, os.WriteFile(m.mirror.Path, []byte(`{"state":"{\"v\":1}","mac":"00"}`), 0o600))
	reg = m.restart(t)
	if st := m.svc.Status(); !st.Floor.Equal(m.now) {
		t.Fatalf("after corrupting the mirror: floor %s", st.Floor)
	}
	if got := resets(t, reg); len(got) != 1 || got[licensing.ResetMirrorInvalid] != 1 {
		t.Fatalf("resets %v", got)
	}

	// The state file copied into the mirror's place is not accepted as a mirror (separate keys).
	data, err := os.ReadFile(m.stateFile())
	must(t, err)
	must(t, os.WriteFile(m.mirror.Path, data, 0o600))
	reg = m.restart(t)
	if got := resets(t, reg); got[licensing.ResetMirrorInvalid] != 1 {
		t.Fatalf("state file as mirror: resets %v", got)
	}

	// Both gone: nothing to restore, and nothing to tell a first start from.
	must(t, os.Remove(m.stateFile()))
	must(t, os.Remove(m.mirror.Path))
	reg = m.restart(t)
	if st := m.svc.Status(); !st.Floor.Equal(m.iat) {
		t.Fatalf("both deleted: floor %s, want the signed iat %s", st.Floor, m.iat)
	}
	if got := resets(t, reg); len(got) != 0 {
		t.Fatalf("both missing counted as %v", got)
	}
}

// TestBothCopiesInvalid: a corrupted state file and a deleted mirror are both counted, and the
// floor falls back to the signed inputs (the §3.5 guarantee that remains).
func TestBothCopiesInvalid(t *testing.T) {
	t.Parallel()
	m := newMirrorEnv(t)
	must(t, os.WriteFile(m.stateFile(), []byte("{}"), 0o600))
	must(t, os.Remove(m.mirror.Path))
	reg := m.restart(t)
	if st := m.svc.Status(); !st.Floor.Equal(m.iat) {
		t.Fatalf("floor %s, want %s", st.Floor, m.iat)
	}
	if got := resets(t, reg); got[licensing.ResetFileInvalid] != 1 || got[licensing.ResetMirrorMissing] != 1 || len(got) != 2 {
		t.Fatalf("resets %v", got)
	}
	if !strings.Contains(m.logs.String(), "no valid copy of the licence memory") {
		t.Fatalf("not logged:\n%s", m.logs)
	}
}

// TestRevocationSurvivesStateFileDeletion: a revoked licence stays revoked after both the
// revocation list and license-state.json are deleted, because the mirror remembers.
func TestRevocationSurvivesStateFileDeletion(t *testing.T) {
	t.Parallel()
	keys := newKeys(t)
	now := inZone(t, msk, "2026-03-10 12:00:00")
	mirror := licensing.FileMirror{Path: filepath.Join(t.TempDir(), "mirror")}
	withMirror := func(o *licensing.Options) { o.Mirror = mirror }
	e := newEnv(t, keys, now, withMirror)
	e.register("b24", b24)
	e.write("l.lic", sign(t, keys.paid, paidClaims("L-R", 1, "2026-03-01", "2026-03-31", "2026-04-06", msk)))
	rev := licensing.Claims{V: 1, Iss: licensing.Issuer, IAT: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), Typ: keyring.TypeRevocation,
		Seq: 1, Revoked: []licensing.Revoked{{LID: "L-R", RevLE: 1}}}
	e.write("revocation-000001.lic", sign(t, keys.revocation, rev))
	e.reload()
	if e.svc.Allowed("b24") {
		t.Fatal("revoked licence allowed")
	}
	runAndStop(t, e.svc)

	must(t, os.Remove(filepath.Join(e.dir, "revocation-000001.lic")))
	must(t, os.Remove(filepath.Join(e.state, licensing.StateFile)))
	e.svc = e.start(withMirror)
	e.register("b24", b24)
	if e.svc.Allowed("b24") {
		t.Fatalf("the revocation was forgotten: %+v", e.conn("b24"))
	}
	if fs := e.svc.Status().Files; len(fs) != 1 || fs[0].Result != licensing.FileRevoked {
		t.Fatalf("files: %+v", fs)
	}
}

// lateMirror fails to load until it is opened, like a store opened after the licensing service.
type lateMirror struct {
	licensing.FileMirror
	open *atomic.Bool
}

func (l lateMirror) Load(ctx context.Context) ([]byte, error) {
	if !l.open.Load() {
		return nil, errors.New("outbox not open yet")
	}
	return l.FileMirror.Load(ctx)
}

// TestMirrorReadLate: a mirror that cannot be read at start is read at the next save and merged,
// so its floor is not lost and is not overwritten by the smaller one of the state file.
func TestMirrorReadLate(t *testing.T) {
	t.Parallel()
	m := newMirrorEnv(t)
	must(t, os.Remove(m.stateFile()))
	reg := prometheus.NewRegistry()
	open := &atomic.Bool{}
	m.clock.Set(m.now.AddDate(0, 0, -30))
	m.svc = m.start(func(o *licensing.Options) { o.Mirror = lateMirror{m.mirror, open}; o.Registerer = reg })
	if st := m.svc.Status(); !st.Floor.Equal(m.iat) {
		t.Fatalf("before the mirror opens: floor %s", st.Floor)
	}
	if !strings.Contains(m.logs.String(), "licence state mirror unreadable") {
		t.Fatalf("not logged:\n%s", m.logs)
	}
	open.Store(true)
	runAndStop(t, m.svc) // saves on return, reading the mirror first
	if st := m.svc.Status(); !st.Floor.Equal(m.now) {
		t.Fatalf("after the mirror opened: floor %s, want %s", st.Floor, m.now)
	}
	if got := resets(t, reg); len(got) != 1 || got[licensing.ResetFileMissing] != 1 {
		t.Fatalf("resets %v", got)
	}
	mem, err := licensing.LoadMemory(m.stateFile(), licensing.StateKey(licensing.RawFactors(hostA)))
	if err != nil || !mem.HWM.Equal(m.now) {
		t.Fatalf("state file rewritten with hwm %s (%v), want %s", mem.HWM, err, m.now)
	}
}

// TestStateFileInvalidWithoutMirror: with no mirror, a corrupted state file is still counted.
func TestStateFileInvalidWithoutMirror(t *testing.T) {
	t.Parallel()
	keys := newKeys(t)
	e := newEnv(t, keys, inZone(t, msk, "2026-03-10 12:00:00"))
	must(t, os.WriteFile(filepath.Join(e.state, licensing.StateFile), []byte("garbage"), 0o600))
	reg := prometheus.NewRegistry()
	e.svc = e.start(func(o *licensing.Options) { o.Registerer = reg })
	if got := resets(t, reg); len(got) != 1 || got[licensing.ResetFileInvalid] != 1 {
		t.Fatalf("resets %v", got)
	}
}
