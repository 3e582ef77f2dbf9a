// Package fake is an in-process connector type ("fake") for daemon tests and demos: a CRM that
// lives in a file. Deliver appends one JSON line per call to the configured log file (fsync'd)
// unless the call's key is already there, so, like a real CRM with an idempotency key, a call
// delivered twice appears once. Faults are configurable.
package fake

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Config of a fake connector instance.
type Config struct {
	// LogFile receives one JSON line per distinct delivered call ("" keeps them in memory only).
	LogFile string `yaml:"log_file"`
	// Latency is added to every delivery.
	Latency time.Duration `yaml:"latency"`
	// FailRate is the share (0..1) of deliveries that fail with a transient error.
	FailRate float64 `yaml:"fail_rate"`
	// PermanentFailCustomer: deliveries of calls from this customer fail permanently.
	PermanentFailCustomer string `yaml:"permanent_fail_customer"`
}

// Validate checks the config.
func (c *Config) Validate() []error {
	var errs []error
	if c.FailRate < 0 || c.FailRate > 1 {
		errs = append(errs, &crm.FieldError{Path: "fail_rate", Msg: fmt.Sprintf("must be between 0 and 1, got %v", c.FailRate)})
	}
	if c.Latency < 0 {
		errs = append(errs, &crm.FieldError{Path: "latency", Msg: "must not be negative"})
	}
	return errs
}

// Line is what the fake writes per delivered call.
type Line struct {
	Key         string    `json:"key"`
	Connector   string    `json:"connector"`
	DeliveredAt time.Time `json:"delivered_at"`
	Record      *call.Record
}

// Adapter is the fake connector.
type Adapter struct {
	name string
	cfg  Config
	now  func() time.Time

	mu       sync.Mutex
	seen     map[string]bool
	lines    []Line
	attempts int
	file     *os.File
	live     []call.Live
}

func init() {
	crm.Register(crm.Factory{
		Type:      "fake",
		NewConfig: func() any { return &Config{} },
		New: func(p crm.Params) (crm.Adapter, error) {
			cfg, ok := p.Config.(*Config)
			if !ok {
				return nil, fmt.Errorf("fake: config of type %T", p.Config)
			}
			return New(p.Name, *cfg, p.Now)
		},
	})
}

// New builds a fake adapter; an existing log file is loaded so keys stay unique across restarts.
func New(name string, cfg Config, now func() time.Time) (*Adapter, error) {
	if now == nil {
		now = time.Now
	}
	a := &Adapter{name: name, cfg: cfg, now: now, seen: map[string]bool{}}
	if cfg.LogFile == "" {
		return a, nil
	}
	if err := a.load(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fake: opening log: %w", err)
	}
	a.file = f
	return a, nil
}

// load reads the log of a previous run. A last line without its newline is a write torn by a
// crash: it is cut off, so the call is logged again whole (it was never acknowledged).
func (a *Adapter) load() error {
	data, err := os.ReadFile(a.cfg.LogFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fake: reading log: %w", err)
	}
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		if err := os.Truncate(a.cfg.LogFile, int64(i+1)); err != nil {
			return fmt.Errorf("fake: cutting a torn last line: %w", err)
		}
		data = data[:i+1]
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l Line
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Key != "" {
			a.seen[l.Key] = true
			a.lines = append(a.lines, l)
		}
	}
	return nil
}

// Deliver records rec once per key.
func (a *Adapter) Deliver(ctx context.Context, rec *call.Record) error {
	if a.cfg.Latency > 0 {
		t := time.NewTimer(a.cfg.Latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("fake: %w", ctx.Err())
		case <-t.C:
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fake: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attempts++
	if a.cfg.PermanentFailCustomer != "" && rec.Customer == a.cfg.PermanentFailCustomer {
		return crm.Permanent(fmt.Errorf("fake: customer %s is refused by configuration", rec.Customer))
	}
	if a.cfg.FailRate > 0 && rand.Float64() < a.cfg.FailRate { //nolint:gosec // fault injection, not security
		return crm.Transient(errors.New("fake: injected failure"))
	}
	key := rec.Key()
	crm.Trace(ctx, "request", "fake: log call "+key, "")
	if a.seen[key] {
		crm.Trace(ctx, "decision", "fake: already logged, nothing to do", "")
		return nil
	}
	l := Line{Key: key, Connector: a.name, DeliveredAt: a.now().UTC(), Record: rec}
	if a.file != nil {
		b, err := json.Marshal(l)
		if err != nil {
			return crm.Permanent(fmt.Errorf("fake: encoding: %w", err))
		}
		if _, err := a.file.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("fake: writing log: %w", err)
		}
		if err := a.file.Sync(); err != nil {
			return fmt.Errorf("fake: syncing log: %w", err)
		}
	}
	a.seen[key] = true
	a.lines = append(a.lines, l)
	return nil
}

// Live records live events (for tests of the live path).
func (a *Adapter) Live(_ context.Context, ev *call.Live) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.live = append(a.live, *ev)
	return nil
}

// Delivered returns the distinct calls delivered so far.
func (a *Adapter) Delivered() []Line {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Line(nil), a.lines...)
}

// Attempts returns how many times Deliver was called.
func (a *Adapter) Attempts() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attempts
}

// LiveEvents returns the live events seen so far.
func (a *Adapter) LiveEvents() []call.Live {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]call.Live(nil), a.live...)
}

// Close closes the log file.
func (a *Adapter) Close(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.file == nil {
		return nil
	}
	err := a.file.Close()
	a.file = nil
	return err
}

var (
	_ crm.Adapter     = (*Adapter)(nil)
	_ crm.LiveHandler = (*Adapter)(nil)
	_ crm.Closer      = (*Adapter)(nil)
)
