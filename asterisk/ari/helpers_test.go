package ari_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startFake starts a fake ARI server closed at the end of the test.
func startFake(tb testing.TB, cfg fakepbx.ARIConfig) *fakepbx.ARIServer {
	tb.Helper()
	srv, err := fakepbx.StartARI(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Close() })
	return srv
}

// fastOptions are Options for srv with quick reconnects and keepalive.
func fastOptions(srv *fakepbx.ARIServer) ari.Options {
	return ari.Options{
		Name:         "lab",
		URL:          srv.URL(),
		Username:     srv.Username(),
		Password:     srv.Password(),
		PingInterval: 500 * time.Millisecond,
		PingTimeout:  5 * time.Second, // generous: a loaded CI machine must not look like a dead peer
		Backoff:      ari.Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond},
	}
}

// running is a Source running in the background.
type running struct {
	src    *ari.Source
	out    chan asterisk.Event
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

// runSource creates a Source with opts (a fresh registry when none) and runs it until the test
// ends; buf is the capacity of its out channel.
func runSource(tb testing.TB, opts ari.Options, buf int) *running {
	tb.Helper()
	reg := prometheus.NewRegistry()
	if opts.Registerer == nil {
		opts.Registerer = reg
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	src, err := ari.NewSource(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{src: src, out: make(chan asterisk.Event, buf), cancel: cancel, done: make(chan error, 1), reg: reg}
	go func() { r.done <- src.Run(ctx, r.out) }()
	tb.Cleanup(r.stop)
	return r
}

// stop cancels the source and waits for Run to return (idempotent).
func (r *running) stop() {
	r.cancel()
	if err, ok := <-r.done; ok {
		close(r.done)
		if !errors.Is(err, context.Canceled) {
			panic("Run returned " + err.Error())
		}
	}
}

// testWriter sends log lines to the test's log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// next returns the next event or fails after limit.
func (r *running) next(tb testing.TB, limit time.Duration) asterisk.Event {
	tb.Helper()
	select {
	case ev := <-r.out:
		return ev
	case <-time.After(limit):
		tb.Fatalf("no event within %v", limit)
	}
	return asterisk.Event{}
}

// waitFor polls cond until it holds or fails after limit.
func waitFor(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !eventually(limit, cond) {
		tb.Fatalf("timed out after %v waiting for %s", limit, what)
	}
}

// eventually polls cond until it holds (true) or limit has passed (false); safe to call from
// any goroutine.
func eventually(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// messages counts the ARI messages of a transcript.
func messages(tb testing.TB, scenario string) int {
	tb.Helper()
	data, err := transcripts.ARI(scenario)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			n++
		}
	}
	return n
}

var inf = math.Inf(1)

// metricValue returns the value of the series of name whose labels include labels (0 when
// there is none).
func metricValue(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// firstChannelID returns the id of the first channel a transcript creates whose name starts
// with prefix and ends with suffix.
func firstChannelID(tb testing.TB, scenario, prefix, suffix string) string {
	tb.Helper()
	data, err := transcripts.ARI(scenario)
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		var m struct {
			Type    string `json:"type"`
			Channel struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"channel"`
		}
		if json.Unmarshal(l, &m) != nil || m.Type != "ChannelCreated" {
			continue
		}
		if strings.HasPrefix(m.Channel.Name, prefix) && strings.HasSuffix(m.Channel.Name, suffix) {
			return m.Channel.ID
		}
	}
	tb.Fatalf("%s creates no channel %s…%s", scenario, prefix, suffix)
	return ""
}

// drain passes events to fn until the source has read want messages in all and every event it
// forwarded was taken, or fails after limit.
func (r *running) drain(tb testing.TB, want int64, limit time.Duration, fn func(asterisk.Event)) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for r.src.Status().Events < want || len(r.out) > 0 {
		select {
		case ev := <-r.out:
			fn(ev)
		case <-time.After(10 * time.Millisecond):
			if time.Now().After(deadline) {
				tb.Fatalf("the source read %d messages in %v, want %d", r.src.Status().Events, limit, want)
			}
		}
	}
}

// channelSet follows from the events alone which channels exist, as a consumer of the Source
// must be able to: a channel exists from its NewChannel to its Hangup, and after a reconnect
// the snapshot (Snapshot events up to SnapshotEnd) replaces what was known.
type channelSet struct {
	open map[string]string // uniqueid → name
	snap map[string]string // the snapshot being received; nil outside one
}

func newChannelSet() *channelSet { return &channelSet{open: map[string]string{}} }

func (c *channelSet) apply(ev *asterisk.Event) {
	switch ev.Type {
	case asterisk.TypeNewChannel:
		c.open[ev.Chan.Uniqueid] = ev.Chan.Name
	case asterisk.TypeHangup:
		delete(c.open, ev.Chan.Uniqueid)
	case asterisk.TypeConnected:
		if ev.Resync {
			c.snap = map[string]string{}
		}
	case asterisk.TypeSnapshot:
		if c.snap != nil {
			c.snap[ev.Chan.Uniqueid] = ev.Chan.Name
		}
	case asterisk.TypeSnapshotEnd:
		if c.snap != nil {
			c.open, c.snap = c.snap, nil
		}
	}
}

// tap takes the events of a running source in the background, as the daemon's consumer does
// (a Source whose out channel is not read stalls, and Originate with it), and keeps them.
type tap struct {
	mu    sync.Mutex
	evs   []asterisk.Event
	chans *channelSet
}

// tap starts taking r's events until the test ends.
func (r *running) tap(tb testing.TB) *tap {
	tb.Helper()
	t := &tap{chans: newChannelSet()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case ev := <-r.out:
				t.mu.Lock()
				t.evs = append(t.evs, ev)
				t.chans.apply(&ev)
				t.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return t
}

// events returns the events taken so far.
func (t *tap) events() []asterisk.Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.evs)
}

// open returns how many channels exist according to the events taken so far.
func (t *tap) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.chans.open)
}
