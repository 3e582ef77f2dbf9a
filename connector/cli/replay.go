package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/replay"
)

// ReplayCmd prints the records of a capture.
type ReplayCmd struct {
	AMI string `name:"ami" help:"AMI capture (as written by 'pbxbridge capture'), or - for standard input." placeholder:"FILE" xor:"src"`
	ARI string `name:"ari" help:"ARI event stream, one JSON message per line." placeholder:"FILE.jsonl" xor:"src"`
	PBX string `help:"Use the call recognition settings of this pbx from the config (default: the first)."`
}

// Run replays. Without --config, the built-in defaults are used (plain Asterisk / FreePBX).
func (c *ReplayCmd) Run(g *Globals) error {
	if c.AMI == "" && c.ARI == "" {
		return errors.New("name a capture: --ami FILE or --ari FILE")
	}
	opts, err := c.modelOptions(g)
	if err != nil {
		return err
	}
	path := c.AMI
	if path == "" {
		path = c.ARI
	}
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	w := bufio.NewWriter(g.Stdout)
	if c.AMI != "" {
		err = replay.AMI(r, opts, w)
	} else {
		err = replay.ARI(r, opts, w)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func (c *ReplayCmd) modelOptions(g *Globals) (callmodel.Options, error) {
	var cfg *config.Config
	if g.ConfigFile != "" {
		var err error
		if cfg, err = config.Load(g.configPath(), os.Getenv, config.ForTools()); err != nil {
			return callmodel.Options{}, err
		}
	} else {
		cfg = config.Defaults(nil)
	}
	norm, err := numbers.New(cfg.Numbers)
	if err != nil {
		return callmodel.Options{}, err
	}
	calls := callmodel.Config{}
	if len(cfg.PBX) > 0 {
		p, err := pickPBX(cfg, c.PBX)
		if err != nil {
			return callmodel.Options{}, err
		}
		calls = p.Calls
	} else if c.PBX != "" {
		return callmodel.Options{}, fmt.Errorf("--pbx %s: the config has no pbx entries", c.PBX)
	}
	return calls.Compile(norm.Normalize)
}

func pickPBX(cfg *config.Config, name string) (*config.PBX, error) {
	if name == "" {
		if len(cfg.PBX) == 0 {
			return nil, errors.New("the config has no pbx entries")
		}
		return &cfg.PBX[0], nil
	}
	for i := range cfg.PBX {
		if cfg.PBX[i].Name == name {
			return &cfg.PBX[i], nil
		}
	}
	return nil, fmt.Errorf("no pbx named %q in the config", name)
}

// CaptureCmd records a live AMI stream.
type CaptureCmd struct {
	Out      string        `required:"" help:"File to write (the format 'pbxbridge replay --ami' reads)." placeholder:"FILE"`
	PBX      string        `help:"Which pbx of the config (default: the first)."`
	Duration time.Duration `help:"Stop after this long (default: until Ctrl-C)."`
}

// Run captures until Ctrl-C or the duration.
func (c *CaptureCmd) Run(g *Globals) error {
	cfg, err := config.Load(g.configPath(), os.Getenv, config.ForTools())
	if err != nil {
		return err
	}
	p, err := pickPBX(cfg, c.PBX)
	if err != nil {
		return err
	}
	if p.Type != "ami" {
		return fmt.Errorf("pbx %s is %s; capture records AMI streams", p.Name, p.Type)
	}
	f, err := os.OpenFile(c.Out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	ctx := g.Ctx
	if c.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration)
		defer cancel()
	}
	fmt.Fprintf(g.Stderr, "capturing %s (%s) into %s; Ctrl-C to stop\n", p.Name, p.AMI.Address(), c.Out)
	err = ami.Capture(ctx, ami.Options{
		Name: p.Name, Address: p.AMI.Address(), Username: p.AMI.Username, Secret: p.AMI.Secret.Value(),
		Auth: p.AMI.Auth, Events: p.AMI.Events, ConnectTimeout: p.AMI.Timeout,
	}, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "done: %s\n", c.Out)
	return nil
}
