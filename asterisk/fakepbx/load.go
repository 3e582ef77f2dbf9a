package fakepbx

import "context"

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
func (s *Server) DefaultMix() []string { return defaultMix(s.Scenarios()) }

// Load starts calls at the given rate, drawing scenarios from the mix with a seeded random
// generator, and returns when every call it started has finished, or when ctx is cancelled (the
// calls in progress are then stopped). It returns the number of calls started.
func (s *Server) Load(ctx context.Context, o LoadOptions) (int, error) {
	return load(ctx, loadSpec{Rate: o.Rate, Calls: o.Calls, Scenarios: o.Scenarios, Seed: o.Seed},
		s.Scenarios(), s.cfg.Seed, s.Play, o.OnStart)
}
