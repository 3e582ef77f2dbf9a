package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// EnvOptions configure a whole test bed.
type EnvOptions struct {
	// PBX is the simulated PBX's config (Speed, DropEvery...; OnEvent is the harness's).
	PBX fakepbx.Config
	// CRM is the fake CRMs' behaviour.
	CRM CRMOptions
	// Daemon configures the daemon (Dir, Connectors...; PBX and ProxyURL are filled in).
	Daemon DaemonOptions
	// Expected are the scenarios' expected records (LoadExpected).
	Expected Expected
	// Recordings makes the recordings real: the PBX's recording paths are moved into the
	// daemon's recordings directory, a file (RecordingBytes of silence) is written there when
	// the PBX announces it (VarSet MIXMONITOR_FILENAME), and the Bitrix24 connector attaches
	// them.
	Recordings bool
}

// RecordingBytes is the size of the recordings EnvOptions.Recordings writes: about 6 s of 8 kHz
// 16-bit mono, a typical short call.
const RecordingBytes = 96044

// pbxRecordingDir is where the transcripts' PBX wrote its recordings.
const pbxRecordingDir = "/var/spool/asterisk/monitor/"

// recordingMutator rewrites the recording paths of the PBX's frames into dir and writes each
// recording file when its path is announced.
func recordingMutator(dir string) func([]byte) []byte {
	var mu sync.Mutex
	written := map[string]bool{}
	return func(frame []byte) []byte {
		if !bytes.Contains(frame, []byte(pbxRecordingDir)) {
			return frame
		}
		frame = bytes.ReplaceAll(frame, []byte(pbxRecordingDir), []byte(dir+"/"))
		if !bytes.Contains(frame, []byte("MIXMONITOR_FILENAME")) {
			return frame
		}
		for line := range bytes.Lines(frame) {
			v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("Value: "))
			if !ok || !bytes.HasPrefix(v, []byte(dir+"/")) {
				continue
			}
			path := filepath.Clean(string(v))
			mu.Lock()
			if !written[path] && filepath.Dir(path) == filepath.Clean(dir) {
				written[path] = true
				b := make([]byte, RecordingBytes)
				copy(b, "RIFF\x00\x00\x00\x00WAVEfmt ")
				_ = os.WriteFile(path, b, 0o600)
			}
			mu.Unlock()
		}
		return frame
	}
}

// Env is a running test bed: simulated PBX, fake CRMs and the daemon subprocess.
type Env struct {
	PBX      *PBX
	CRMs     *CRMs
	Daemon   *Daemon
	Expected Expected
}

// StartEnv starts the PBX, the CRMs and the daemon, waits until the daemon is logged in to the
// PBX, and installs the Bitrix24 application when that connector is configured.
func StartEnv(ctx context.Context, o EnvOptions) (_ *Env, err error) {
	e := &Env{Expected: o.Expected}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if o.Recordings {
		if o.Daemon.Dir == "" {
			return nil, errors.New("loadtest: recordings need Daemon.Dir")
		}
		dir := filepath.Join(o.Daemon.Dir, "recordings")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("loadtest: %w", err)
		}
		o.PBX.Mutate = recordingMutator(dir)
		o.Daemon.AttachRecordings = true
	}
	if e.PBX, err = StartPBX(o.PBX); err != nil {
		return nil, err
	}
	if e.CRMs, err = StartCRMs(o.CRM); err != nil {
		return nil, err
	}
	o.Daemon.PBX = e.PBX.Addr()
	o.Daemon.ProxyURL = e.CRMs.ProxyURL()
	if e.Daemon, err = StartDaemon(ctx, o.Daemon); err != nil {
		return nil, err
	}
	if err := e.Daemon.WaitReady(ctx, 20*time.Second); err != nil {
		return nil, fmt.Errorf("%w; log:\n%s", err, e.Daemon.LogTail(3000))
	}
	for _, c := range o.Daemon.Connectors {
		if c == ConnBitrix24 {
			if err := e.CRMs.InstallB24(ctx, e.Daemon.PublicURL, "b24"); err != nil {
				return nil, err
			}
		}
	}
	if err := e.Daemon.WaitLicensed(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return e, nil
}

// Close stops the daemon (SIGTERM, then SIGKILL), the PBX and the CRMs.
func (e *Env) Close() {
	if e.Daemon != nil && !e.Daemon.Exited() {
		_ = e.Daemon.Stop(20 * time.Second)
	}
	if e.PBX != nil {
		_ = e.PBX.Close()
	}
	if e.CRMs != nil {
		_ = e.CRMs.Close()
	}
}

// Connectors returns the CRM connectors of the daemon (bitrix24, amocrm) that have a fake CRM
// state to check.
func (e *Env) crmConnectors() []string {
	var out []string
	for _, c := range e.Daemon.o.Connectors {
		if c == ConnBitrix24 || c == ConnAmo {
			out = append(out, c)
		}
	}
	return out
}

// Logged is how many times the CRM of connector holds the call of key.
func (e *Env) Logged(connector, key string) int {
	switch connector {
	case ConnBitrix24:
		return e.CRMs.B24.Logged(key)
	case ConnAmo:
		return e.CRMs.Amo.Logged(key)
	}
	return 0
}

// WaitDrained waits until the daemon's outbox has nothing pending and nothing is held in memory,
// and the daemon has built every call the PBX finished (as far as it could see them: want is
// how many records the daemon should have built, or -1 to skip that check).
func (e *Env) WaitDrained(ctx context.Context, limit time.Duration, want int) error {
	deadline := time.Now().Add(limit)
	var last string
	for {
		built, pending, held, err := e.progress(ctx)
		if err == nil {
			last = fmt.Sprintf("built %d (want %d), pending %d, held %d", built, want, pending, held)
			if (want < 0 || built >= want) && pending == 0 && held == 0 {
				return nil
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loadtest: not drained after %v: %s", limit, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitNoOpenCalls waits until the daemon's call model holds no call in progress (its gauge is
// updated once a second): after the PBX's last call ended, every call the daemon knew of has
// been finished, by its hangup or by the snapshot after a reconnect.
func (e *Env) WaitNoOpenCalls(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		m, err := e.Daemon.Metrics(ctx)
		if err == nil && m.Sum("pbxbridge_calls_open") == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			open := -1.0
			if err == nil {
				open = m.Sum("pbxbridge_calls_open")
			}
			return fmt.Errorf("loadtest: %v calls still open in the daemon after %v", open, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// progress reads how many calls the daemon has built (/metrics), and how many rows wait in its
// outbox and records in memory (the admin API: uncached, unlike the outbox gauges of /metrics).
func (e *Env) progress(ctx context.Context) (built, pending, held int, err error) {
	m, err := e.Daemon.Metrics(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	st, err := e.Daemon.Status(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, o := range st.Outbox {
		pending += int(o.Pending + o.Leased)
	}
	return int(m.Sum("pbxbridge_calls_total")), pending, st.UnstoredCalls, nil
}

// Records is how many call records the replays the PBX has finished make a daemon build that
// saw all of them: every expected record, internal calls included (pbxbridge_calls_total counts
// them too). It is the want of WaitDrained for tests in which the daemon sees every call.
func (e *Env) Records() int {
	n := 0
	for _, t := range e.PBX.Traces() {
		select {
		case <-t.Call.Done():
			n += len(e.Expected.Keys(&t))
		default:
		}
	}
	return n
}

// Verdict is the outcome of one call record in the CRMs.
type Verdict struct {
	Key      string
	Scenario string
	Record   call.Record // expected
	// Logged is how many times each CRM connector holds it.
	Logged map[string]int
}

// Check compares what the CRMs hold with the calls the PBX finished: for every record key a
// finished replay must produce that goes to the CRMs, how many times each CRM connector logged
// it. include selects the replays that count (nil: all finished ones).
func (e *Env) Check(include func(*CallTrace) bool) []Verdict {
	var out []Verdict
	conns := e.crmConnectors()
	for _, t := range e.PBX.Traces() {
		select {
		case <-t.Call.Done():
		default:
			continue // still in progress
		}
		if include != nil && !include(&t) {
			continue
		}
		for key, rec := range e.Expected.Keys(&t) {
			if !ToCRM(rec) {
				continue
			}
			v := Verdict{Key: key, Scenario: t.Scenario, Record: rec, Logged: map[string]int{}}
			for _, c := range conns {
				v.Logged[c] = e.Logged(c, key)
			}
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Tally counts lost (logged 0 times) and duplicated (more than once) records per connector.
func Tally(vs []Verdict) (lost, dup map[string][]string) {
	lost, dup = map[string][]string{}, map[string][]string{}
	for _, v := range vs {
		for c, n := range v.Logged {
			switch {
			case n == 0:
				lost[c] = append(lost[c], v.Key)
			case n > 1:
				dup[c] = append(dup[c], v.Key)
			}
		}
	}
	return lost, dup
}

// TempDir makes a directory for a run under the system temporary directory.
func TempDir(name string) (string, error) {
	d, err := os.MkdirTemp("", "pbxbridge-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("loadtest: %w", err)
	}
	return d, nil
}
