package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	var st replay.Stats
	if c.AMI != "" {
		st, err = replay.AMIStats(r, opts, w)
	} else {
		st, err = replay.ARIStats(r, opts, w)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	// No call at all is worth saying: an empty capture, or channels the config does not know.
	switch {
	case st.Frames == 0:
		return &exitError{code: 1, err: fmt.Errorf("0 calls: %s holds no %s frames", path, kindOf(c))}
	case st.Records == 0:
		return &exitError{code: 1, err: fmt.Errorf("0 calls from %d frames (%d events); no channel matched pbx[].calls: check the extension and trunk patterns (pbxbridge config sample, docs/asterisk.md)", st.Frames, st.Events)}
	}
	fmt.Fprintf(g.Stderr, "%d calls from %d frames\n", st.Records, st.Frames)
	return nil
}

func kindOf(c *ReplayCmd) string {
	if c.AMI != "" {
		return "AMI"
	}
	return "ARI"
}

func (c *ReplayCmd) modelOptions(g *Globals) (callmodel.Options, error) {
	return pbxModelOptions(g, c.PBX)
}

// pbxModelOptions compiles the call recognition of the config's PBX named pbx (the only one when
// pbx is empty), or the defaults when no config file was named and none exists.
func pbxModelOptions(g *Globals, pbx string) (callmodel.Options, error) {
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
		p, err := pickPBX(cfg, pbx)
		if err != nil {
			return callmodel.Options{}, err
		}
		calls = p.Calls
	} else if pbx != "" {
		return callmodel.Options{}, fmt.Errorf("--pbx %s: the config has no pbx entries", pbx)
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
	if _, err := os.Stat(c.Out); err == nil {
		return fmt.Errorf("%s exists: name a new file", c.Out)
	}
	// The capture goes to a temporary file that becomes c.Out only once something was
	// captured: a PBX that refuses the connection leaves no empty file behind.
	f, err := os.CreateTemp(filepath.Dir(c.Out), "."+filepath.Base(c.Out)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }()
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
	if st, serr := os.Stat(tmp); serr != nil || st.Size() == 0 {
		return fmt.Errorf("nothing was captured from %s", p.AMI.Address())
	}
	if err := os.Rename(tmp, c.Out); err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "done: %s\n", c.Out)
	return nil
}
