package fakepbx

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// LoadOptions configure generated load.
type LoadOptions struct {
	// Rate is how many calls start per second; 0 starts them all at once.
	Rate float64
	// Calls is how many calls to start; 0 means until ctx is cancelled.
	Calls int
	// Scenarios is the mix to draw from, uniformly (default: every scenario except
	// "concurrent", which is itself a burst of 20 calls).
	Scenarios []string
	// Seed of the draw (default: the server's seed).
	Seed uint64
	// OnStart, when set, is called with every call started (e.g. to count or correlate).
	OnStart func(*Call)
}

// DefaultMix returns the scenarios Load draws from by default.
func (s *Server) DefaultMix() []string {
	var out []string
	for _, n := range s.Scenarios() {
		if n != "concurrent" {
			out = append(out, n)
		}
	}
	return out
}

// Load starts calls at the given rate, drawing scenarios from the mix with a seeded random
// generator, and returns when every call it started has finished, or when ctx is cancelled (the
// calls in progress are then stopped). It returns the number of calls started.
func (s *Server) Load(ctx context.Context, o LoadOptions) (int, error) {
	mix := o.Scenarios
	if len(mix) == 0 {
		mix = s.DefaultMix()
	}
	for _, n := range mix {
		if _, ok := s.scenarios[n]; !ok {
			return 0, fmt.Errorf("fakepbx: unknown scenario %q (have %v)", n, s.Scenarios())
		}
	}
	mix = slices.Clone(mix)
	seed := o.Seed
	if seed == 0 {
		seed = s.cfg.Seed
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	var calls []*Call
	next := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	started := 0
	for o.Calls == 0 || started < o.Calls {
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
		c, err := s.Play(ctx, mix[rng.IntN(len(mix))])
		if err != nil {
			return started, err
		}
		started++
		if o.OnStart != nil {
			o.OnStart(c)
		}
		calls = append(calls, c)
		// Forget finished calls so an endless load does not grow memory.
		if len(calls) >= 1024 {
			calls = slices.DeleteFunc(calls, func(c *Call) bool {
				select {
				case <-c.Done():
					return true
				default:
					return false
				}
			})
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
