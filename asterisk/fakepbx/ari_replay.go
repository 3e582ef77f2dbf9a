package fakepbx

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
)

// ARICall is one replay of a scenario on an ARIServer.
type ARICall struct {
	Scenario string
	in       *ariInstance
}

// Done is closed when the replay has sent its last message (or was stopped).
func (c *ARICall) Done() <-chan struct{} { return c.in.done }

// Start is the wall-clock time the replay started (millisecond precision).
func (c *ARICall) Start() time.Time { return c.in.start }

// TimeShift is what was added to the transcript's times: with ARIConfig.TranscriptTiming every
// timestamp of the replay is the transcript's plus TimeShift.
func (c *ARICall) TimeShift() time.Duration { return c.in.start.Sub(c.in.sc.t0) }

// MapID returns the fresh id this replay uses for an id of the original transcript (a channel
// id such as "1795305929.121", a channel-name suffix such as "00000020", or a bridge id), or ""
// when the transcript has no such id.
func (c *ARICall) MapID(orig string) string {
	if k, ok := c.in.sc.uidIndex[orig]; ok {
		return c.in.uids[k]
	}
	if k, ok := c.in.sc.chanIndex[orig]; ok {
		return c.in.chans[k]
	}
	if k, ok := c.in.sc.bridgeIndex[orig]; ok {
		return c.in.bridges[k]
	}
	return ""
}

// IDs returns every id mapping of the replay: original → fresh.
func (c *ARICall) IDs() map[string]string {
	out := make(map[string]string, len(c.in.uids)+len(c.in.chans)+len(c.in.bridges))
	for orig, k := range c.in.sc.uidIndex {
		out[orig] = c.in.uids[k]
	}
	for orig, k := range c.in.sc.chanIndex {
		out[orig] = c.in.chans[k]
	}
	for orig, k := range c.in.sc.bridgeIndex {
		out[orig] = c.in.bridges[k]
	}
	return out
}

// ariInstance is one replay: a scenario with its fresh ids and time base.
type ariInstance struct {
	srv      *ARIServer
	sc       *ariScenario
	start    time.Time
	speed    float64 // > 0; +Inf replays without delays
	keepTime bool    // timestamps keep the transcript's timing
	freshIDs
	ext, num string
	vars     []ami.Field // originate variables replacing the recorder's originate id (nil: none)
	pos      atomic.Int32
	done     chan struct{}
}

func (s *ARIServer) newInstance(sc *ariScenario, start time.Time) *ariInstance {
	in := &ariInstance{
		srv:      s,
		sc:       sc,
		start:    start.Truncate(time.Millisecond),
		speed:    s.speed,
		keepTime: s.cfg.TranscriptTiming,
		done:     make(chan struct{}),
	}
	in.freshIDs = s.newIDs(sc.uidOrder, sc.uidEpoch, sc.nChans, sc.nBridges,
		func(d time.Duration) int64 { return in.start.Add(in.tscale(d)).Unix() })
	return in
}

// scale converts a duration of the recording into replay (sending) time.
func (in *ariInstance) scale(d time.Duration) time.Duration {
	if math.IsInf(in.speed, 1) {
		return 0
	}
	return time.Duration(float64(d) / in.speed)
}

// tscale converts a duration of the recording into timestamp time.
func (in *ariInstance) tscale(d time.Duration) time.Duration {
	if in.keepTime {
		return d
	}
	return in.scale(d)
}

// render appends a template with this replay's values. varName and varValue replace the
// recorder's originate variable in an originate replay (vars not nil).
func (in *ariInstance) render(dst []byte, tpl []aseg, app, varName, varValue string) []byte {
	for i := range tpl {
		s := &tpl[i]
		var ok bool
		if dst, ok = in.appendID(dst, s.kind, s.idx); ok {
			continue
		}
		switch s.kind {
		case segLit:
			dst = append(dst, s.lit...)
		case segExt:
			dst = appendJSONContent(dst, in.ext)
		case segNum:
			dst = appendJSONContent(dst, in.num)
		case segTime:
			dst = in.start.Add(in.tscale(s.off)).In(s.zone).AppendFormat(dst, ariTimeLayout)
		case segApp:
			dst = appendJSONContent(dst, app)
		case segVarName:
			if in.vars == nil {
				dst = append(dst, s.lit...)
			} else {
				dst = appendJSONContent(dst, varName)
			}
		case segVarValue:
			if in.vars == nil {
				dst = append(dst, s.lit...)
			} else {
				dst = appendJSONContent(dst, varValue)
			}
		}
	}
	return dst
}

// run sends the scenario's messages at their (scaled) times.
func (in *ariInstance) run(ctx context.Context) {
	defer close(in.done)
	s := in.srv
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for i := range in.sc.frames {
		fr := &in.sc.frames[i]
		due := in.start.Add(in.scale(fr.at))
		if wait := time.Until(due); wait > 200*time.Microsecond {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		s.emitMu.Lock()
		for s.gate != nil { // frozen
			g := s.gate
			s.emitMu.Unlock()
			select {
			case <-g:
			case <-ctx.Done():
				return
			}
			s.emitMu.Lock()
		}
		in.pos.Store(int32(i + 1))
		switch {
		case fr.origVar && in.vars != nil:
			for _, v := range in.vars {
				s.broadcastLocked(func(dst []byte, app string) []byte { return in.render(dst, fr.tpl, app, v.Key, v.Value) })
			}
		default:
			s.broadcastLocked(func(dst []byte, app string) []byte { return in.render(dst, fr.tpl, app, "", "") })
		}
		s.emitMu.Unlock()
	}
}

// liveChannel of an ARI replay: the channel (uid index) and its latest object (frame, object).
type ariLiveChannel struct {
	uid, order, frame, obj int
}

// liveChannels returns the channels that exist after the first pos messages, in creation
// order, each with the message object that last described it.
func (in *ariInstance) liveChannels(pos int) []ariLiveChannel {
	live := map[int]*ariLiveChannel{}
	n := 0
	for i := 0; i < pos && i < len(in.sc.frames); i++ {
		fr := &in.sc.frames[i]
		if fr.create >= 0 {
			live[fr.create] = &ariLiveChannel{uid: fr.create, order: n, frame: -1}
			n++
		}
		for j := range fr.objs {
			if lc := live[fr.objs[j].idx]; lc != nil {
				lc.frame, lc.obj = i, j
			}
		}
		if fr.destroy >= 0 {
			delete(live, fr.destroy)
		}
	}
	out := make([]ariLiveChannel, 0, len(live))
	for _, lc := range live {
		if lc.frame >= 0 {
			out = append(out, *lc)
		}
	}
	slices.SortFunc(out, func(a, b ariLiveChannel) int { return a.order - b.order })
	return out
}

// liveBridges returns, for each bridge that exists after the first pos messages, the index of
// the message whose "bridge" object last described it, in creation order.
func (in *ariInstance) liveBridges(pos int) []int {
	type lb struct{ order, frame int }
	live := map[int]*lb{}
	n := 0
	for i := 0; i < pos && i < len(in.sc.frames); i++ {
		fr := &in.sc.frames[i]
		if fr.bcreate >= 0 {
			live[fr.bcreate] = &lb{order: n, frame: i}
			n++
		}
		if fr.bridge != nil {
			if b := live[fr.bridge.idx]; b != nil {
				b.frame = i
			}
		}
		if fr.bgone >= 0 {
			delete(live, fr.bgone)
		}
	}
	all := make([]lb, 0, len(live))
	for _, b := range live {
		all = append(all, *b)
	}
	slices.SortFunc(all, func(a, b lb) int { return a.order - b.order })
	out := make([]int, len(all))
	for i, b := range all {
		out[i] = b.frame
	}
	return out
}

// Play starts one replay of scenario name now and returns at once. The replay stops early when
// ctx is cancelled or the server is closed.
func (s *ARIServer) Play(ctx context.Context, name string) (*ARICall, error) {
	sc, ok := s.scenarios[name]
	if !ok {
		return nil, fmt.Errorf("fakepbx: unknown scenario %q", name)
	}
	in := s.newInstance(sc, time.Now())
	if !s.startInstance(ctx, in) {
		return nil, fmt.Errorf("fakepbx: server closed")
	}
	return &ARICall{Scenario: name, in: in}, nil
}

func (s *ARIServer) startInstance(ctx context.Context, in *ariInstance) bool {
	s.mu.Lock()
	s.calls[in] = struct{}{}
	s.mu.Unlock()
	ok := s.spawn(ctx, func(ctx context.Context) {
		in.run(ctx)
		s.mu.Lock()
		delete(s.calls, in)
		s.mu.Unlock()
	}, nil)
	if !ok {
		s.mu.Lock()
		delete(s.calls, in)
		s.mu.Unlock()
	}
	return ok
}

// ARILoadOptions configure generated load on an ARIServer.
type ARILoadOptions struct {
	// Rate is how many calls start per second; 0 starts them all at once.
	Rate float64
	// Calls is how many calls to start; 0 means until ctx is cancelled.
	Calls int
	// Scenarios is the mix to draw from, uniformly (default: DefaultMix).
	Scenarios []string
	// Seed of the draw (default: the server's seed).
	Seed uint64
	// OnStart, when set, is called with every call started.
	OnStart func(*ARICall)
}

// Load starts calls at the given rate, drawing scenarios from the mix with a seeded random
// generator, and returns when every call it started has finished, or when ctx is cancelled (the
// calls in progress are then stopped). It returns the number of calls started.
func (s *ARIServer) Load(ctx context.Context, o ARILoadOptions) (int, error) {
	return load(ctx, loadSpec{Rate: o.Rate, Calls: o.Calls, Scenarios: o.Scenarios, Seed: o.Seed},
		s.Scenarios(), s.cfg.Seed, s.Play, o.OnStart)
}
