package fakepbx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
)

// client is one connected client of a server: an AMI session or an ARI events websocket.
type client interface {
	comparable
	close()
}

// pbx is what the AMI Server and the ARIServer share: the simulated office, the random and
// sequential ids, the goroutines of the replays, the counters and the connection knobs
// (drops, outages). A server embeds one and adds its protocol.
type pbx[C client] struct {
	speed float64
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards sessions, exts, rng and the server's own maps
	sessions map[C]struct{}
	exts     map[string]Ext
	rng      *rand.Rand

	uidSeq   atomic.Uint64
	chanSeq  atomic.Uint64
	refuse   atomic.Int64 // unix nanoseconds until which new connections are closed at once
	started  atomic.Uint64
	finished atomic.Uint64
	sent     atomic.Uint64
	drops    atomic.Uint64
	origs    atomic.Uint64 // originate requests received (AMI Originate, ARI POST /channels)
	booted   time.Time
}

// init sets the office up: speed (not positive or NaN: 1), the extensions (nil: 101, 102 and
// 103, idle and answering; an Ext without Outcome answers), the seeded random ids.
func (p *pbx[C]) init(speed float64, seed uint64, extensions map[string]Ext, log *slog.Logger) {
	if speed <= 0 || math.IsNaN(speed) {
		speed = 1
	}
	p.speed, p.log = speed, log
	p.exts = make(map[string]Ext, len(extensions))
	for k, v := range extensions {
		p.SetExtension(k, v)
	}
	if extensions == nil {
		for _, e := range []string{"101", "102", "103"} {
			p.exts[e] = Ext{State: ami.ExtIdle, Outcome: Answer}
		}
	}
	ctx, cancel := context.WithCancel(context.Background()) //nolint:gosec // kept in p.cancel, called by shutdown
	p.ctx, p.cancel = ctx, cancel
	p.sessions = map[C]struct{}{}
	p.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p.booted = time.Now()
}

// defaults fills the configuration both servers take alike: a free loopback port, user
// "pbxbridge" with secret "secret", version 22.10.1, seed 1, a 5 s write timeout, no logs.
func defaults(addr, user, secret, version *string, seed *uint64, writeTimeout *time.Duration, log **slog.Logger) {
	for _, d := range [...]struct {
		p *string
		v string
	}{{addr, "127.0.0.1:0"}, {user, "pbxbridge"}, {secret, "secret"}, {version, "22.10.1"}} {
		if *d.p == "" {
			*d.p = d.v
		}
	}
	if *seed == 0 {
		*seed = 1
	}
	if *writeTimeout <= 0 {
		*writeTimeout = 5 * time.Second
	}
	if *log == nil {
		*log = slog.New(slog.DiscardHandler)
	}
}

// SetExtension sets what the simulated PBX answers and does for ext: what ExtensionState (AMI)
// or the endpoint and device state requests (ARI) report, and what an Originate or POST
// /ari/channels does.
func (p *pbx[C]) SetExtension(ext string, e Ext) {
	if e.Outcome == "" {
		e.Outcome = Answer
	}
	p.mu.Lock()
	p.exts[ext] = e
	p.mu.Unlock()
}

func (p *pbx[C]) extension(ext string) (Ext, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.exts[ext]
	return e, ok
}

// DropClients closes every client connection now (the calls keep playing) and returns how many
// were dropped.
func (p *pbx[C]) DropClients() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.sessions {
		c.close()
	}
	p.drops.Add(uint64(len(p.sessions)))
	return len(p.sessions)
}

// Outage drops every client connection and, for d, closes new connections as soon as they are
// accepted (the PBX is unreachable), while the calls keep playing. It returns how many clients
// were dropped.
func (p *pbx[C]) Outage(d time.Duration) int {
	p.refuse.Store(time.Now().Add(d).UnixNano())
	return p.DropClients()
}

// shutdown stops the replays, closes every client connection and, with closeListener, stops
// accepting, then waits for every goroutine. A closed listener is not an error: shutdown is
// idempotent.
func (p *pbx[C]) shutdown(closeListener func() error) error {
	p.cancel()
	p.mu.Lock()
	for c := range p.sessions {
		c.close()
	}
	p.mu.Unlock()
	err := closeListener()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// sessionCount is how many clients are connected now.
func (p *pbx[C]) sessionCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

// refusing reports whether a connection accepted now must be closed (Outage).
func (p *pbx[C]) refusing() bool { return time.Now().UnixNano() < p.refuse.Load() }

func (p *pbx[C]) removeSession(c C) {
	p.mu.Lock()
	delete(p.sessions, c)
	p.mu.Unlock()
}

// clients returns the connected clients that keep returns true for.
func (p *pbx[C]) clients(keep func(C) bool) []C {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]C, 0, len(p.sessions))
	for c := range p.sessions {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

func (p *pbx[C]) dropLoop(every time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			if n := p.DropClients(); n > 0 {
				p.log.Info("fakepbx: dropped client connections", "count", n)
			}
		}
	}
}

// track registers a goroutine with the server unless it is closing.
func (p *pbx[C]) track() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.wg.Add(1)
	return true
}

// after runs fn after d unless the server is closed first.
func (p *pbx[C]) after(d time.Duration, fn func()) {
	if !p.track() {
		return
	}
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fn()
		case <-p.ctx.Done():
		}
	}()
}

// spawn runs one replay in its own goroutine until it ends, ctx is cancelled or the server is
// closed, counting it started and finished, and then calls done (when not nil). It returns
// false, running nothing, when the server is closed.
func (p *pbx[C]) spawn(ctx context.Context, run func(context.Context), done func()) bool {
	if !p.track() {
		return false
	}
	p.started.Add(1)
	go func() {
		defer p.wg.Done()
		rctx, cancel := context.WithCancel(p.ctx)
		stop := context.AfterFunc(ctx, cancel)
		defer func() {
			stop()
			cancel()
		}()
		run(rctx)
		p.finished.Add(1)
		if done != nil {
			done()
		}
	}()
	return true
}

// newUUID returns a random bridge id in UUID form.
func (p *pbx[C]) newUUID() string {
	p.mu.Lock()
	a, b := p.rng.Uint64(), p.rng.Uint64()
	p.mu.Unlock()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", uint32(a>>32), uint16(a>>16), uint16(a)&0xfff,
		uint16(b>>48)&0x3fff|0x8000, b&0xffffffffffff)
}

func (p *pbx[C]) rngUint32() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Uint32()
}

// scenarioNames returns the names of a server's scenarios, sorted.
func scenarioNames[T any](scenarios map[string]T) []string {
	return slices.Sorted(maps.Keys(scenarios))
}

// defaultMix is every scenario but "concurrent", which is itself a burst of 20 calls.
func defaultMix(names []string) []string {
	return slices.DeleteFunc(names, func(n string) bool { return n == "concurrent" })
}

// loadSpec is LoadOptions or ARILoadOptions without the type of the call handle.
type loadSpec struct {
	Rate      float64
	Calls     int
	Scenarios []string
	Seed      uint64
}

// load starts calls at spec's rate with play, drawing scenarios from spec's mix (default: every
// scenario of names but "concurrent") with a seeded random generator (default seed: seed), and
// returns when every call it started has finished, or when ctx is cancelled (the calls in
// progress are then stopped). It returns the number of calls started.
func load[T interface{ Done() <-chan struct{} }](ctx context.Context, spec loadSpec, names []string, seed uint64,
	play func(context.Context, string) (T, error), onStart func(T)) (int, error) {
	mix := slices.Clone(spec.Scenarios)
	if len(mix) == 0 {
		mix = defaultMix(slices.Clone(names))
	}
	for _, n := range mix {
		if !slices.Contains(names, n) {
			return 0, fmt.Errorf("fakepbx: unknown scenario %q (have %v)", n, names)
		}
	}
	if spec.Seed != 0 {
		seed = spec.Seed
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var interval time.Duration
	if spec.Rate > 0 {
		interval = time.Duration(float64(time.Second) / spec.Rate)
	}
	var calls []T
	next := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	started := 0
	for spec.Calls == 0 || started < spec.Calls {
		if interval > 0 {
			if wait := time.Until(next); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return started, ctx.Err()
				}
			}
			next = next.Add(interval)
		}
		if err := ctx.Err(); err != nil {
			return started, err
		}
		c, err := play(ctx, mix[rng.IntN(len(mix))])
		if err != nil {
			return started, err
		}
		started++
		if onStart != nil {
			onStart(c)
		}
		calls = append(calls, c)
		if len(calls) >= 1024 { // forget finished calls so an endless load does not grow memory
			calls = slices.DeleteFunc(calls, func(c T) bool { return isClosed(c.Done()) })
		}
	}
	for _, c := range calls {
		select {
		case <-c.Done():
		case <-ctx.Done():
			return started, ctx.Err()
		}
	}
	return started, nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// enqueue queues b on a client's out queue; a client that does not drain its queue within
// timeout is disconnected with slow. It returns false when the client is closed or too slow.
func enqueue(out chan<- []byte, closed <-chan struct{}, timeout time.Duration, b []byte, slow func()) bool {
	select {
	case out <- b:
		return true
	case <-closed:
		return false
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case out <- b:
		return true
	case <-closed:
		return false
	case <-t.C:
		slow()
		return false
	}
}

// freshIDs are the ids one replay uses in place of its transcript's, by placeholder index.
type freshIDs struct{ uids, chans, bridges []string }

// newIDs draws the fresh ids of a replay: uids numbered in uidOrder (so the oldest channel
// keeps the smallest id, and stays the Linkedid) with the epoch second that epoch gives for
// each original one (relative to the transcript's first second), channel-name suffixes from
// the server's sequence, random bridge ids.
func (p *pbx[C]) newIDs(uidOrder []int, uidEpoch []int64, nChans, nBridges int, epoch func(time.Duration) int64) freshIDs {
	f := freshIDs{uids: make([]string, len(uidEpoch)), chans: make([]string, nChans), bridges: make([]string, nBridges)}
	for _, k := range uidOrder {
		f.uids[k] = strconv.FormatInt(epoch(time.Duration(uidEpoch[k])*time.Second), 10) + "." +
			strconv.FormatUint(p.uidSeq.Add(1), 10)
	}
	for k := range f.chans {
		f.chans[k] = fmt.Sprintf("%08x", uint32(p.chanSeq.Add(1)))
	}
	for k := range f.bridges {
		f.bridges[k] = p.newUUID()
	}
	return f
}

// appendID appends the fresh id of a segUID, segChan or segBridge placeholder; ok is false
// for other kinds.
func (f *freshIDs) appendID(dst []byte, kind segKind, idx int) (_ []byte, ok bool) {
	switch kind {
	case segUID:
		return append(dst, f.uids[idx]...), true
	case segChan:
		return append(dst, f.chans[idx]...), true
	case segBridge:
		return append(dst, f.bridges[idx]...), true
	}
	return dst, false
}
