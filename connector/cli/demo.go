package cli

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DemoFlags are the options of the demo; `pbxbridge demo` and the pbxbridge-demo program take
// the same.
type DemoFlags struct {
	Duration time.Duration `help:"Stop after this long (default: until Ctrl-C)."`
	Rate     float64       `help:"Calls started per second (the default stays well within the 2 requests a second Bitrix24 takes)." default:"0.5"`
	Speed    float64       `help:"Replay speed of the recorded calls (1 = real time)." default:"3"`
	Listen   string        `help:"Status page address (the next free port is used when it is taken)." default:"127.0.0.1:8080"`
	State    string        `help:"Keep the demo's state here: calls not delivered when it stops wait there for the next run (default: a temporary folder, removed at the end)." placeholder:"DIR"`
	Dir      string        `help:"Old name of --state." hidden:"" placeholder:"DIR"`
	Seed     uint64        `help:"Seed of the calls' scenarios and customers: the same seed plays the same calls." default:"1"`
	Verbose  bool          `help:"Show the daemon's log."`
}

// Args renders the flags as command-line arguments.
func (f DemoFlags) Args() []string {
	args := []string{
		"--rate=" + fmt.Sprint(f.Rate),
		"--speed=" + fmt.Sprint(f.Speed),
		"--listen=" + f.Listen,
		"--seed=" + fmt.Sprint(f.Seed),
	}
	if f.Duration > 0 {
		args = append(args, "--duration="+f.Duration.String())
	}
	if state := cmp.Or(f.State, f.Dir); state != "" {
		args = append(args, "--state="+state)
	}
	if f.Verbose {
		args = append(args, "--verbose")
	}
	return args
}

// DemoCmd runs the demo: a simulated PBX replaying real Asterisk transcripts, fake Bitrix24,
// amoCRM and Kommo servers, demo licences and the daemon with its status page, on this machine.
//
// The simulators are not part of this binary (the daemon that runs a real PBX carries no fakes),
// so the command hands over to the pbxbridge-demo program: the one installed next to this
// binary or on $PATH, else, in a source checkout of pbxbridge, ./cmd/pbxbridge-demo built into
// the user's cache directory (rebuilt only when the sources changed). It is run itself, not
// through `go run`, which would end with "exit status 1" after any Ctrl-C.
type DemoCmd struct {
	DemoFlags
}

// demoModule is the module whose cmd/pbxbridge-demo the hand-over runs from a source checkout.
const demoModule = "github.com/pbxbridge/pbxbridge"

// Run replaces this process with the demo program.
func (c *DemoCmd) Run(g *Globals) error {
	args := c.Args()
	exe, _ := os.Executable()
	for _, p := range []string{filepath.Join(filepath.Dir(exe), "pbxbridge-demo"), lookPath("pbxbridge-demo")} {
		if p != "" && isExecutable(p) {
			return execDemo(p, append([]string{p}, args...))
		}
	}
	goBin := lookPath("go")
	if root := moduleRoot(); root != "" && goBin != "" {
		fmt.Fprintln(g.Stderr, "pbxbridge demo: building the demo ("+demoModule+"/cmd/pbxbridge-demo)…")
		bin, err := buildDemo(goBin, root, g.Stderr)
		if err == nil {
			return execDemo(bin, append([]string{bin}, args...))
		}
		fmt.Fprintf(g.Stderr, "pbxbridge demo: %v; running it with go run instead\n", err)
		return execDemo(goBin, append([]string{"go", "run", demoModule + "/cmd/pbxbridge-demo"}, args...))
	}
	return &exitError{code: 1, err: errors.New("the demo is not part of the installed package (it carries simulated CRMs " +
		"and a simulated PBX); run it from a source checkout of pbxbridge with Go installed: go run ./cmd/pbxbridge demo")}
}

// buildDemo builds the checkout's demo program at root into the user's cache directory, one
// binary per checkout, and returns its path. go build relinks it only when the sources changed.
func buildDemo(goBin, root string, stderr io.Writer) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for the demo program: %w", err)
	}
	dir := filepath.Join(cache, "pbxbridge")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	sum := sha256.Sum256([]byte(root))
	bin := filepath.Join(dir, "pbxbridge-demo-"+hex.EncodeToString(sum[:4]))
	cmd := exec.Command(goBin, "build", "-o", bin, demoModule+"/cmd/pbxbridge-demo") //nolint:gosec // the go tool on $PATH, our own package
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the demo program: %w", err)
	}
	return bin, nil
}

func lookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// execDemo replaces this process with the program at path, so that the terminal's Ctrl-C and a
// service manager's signals reach the demo directly.
func execDemo(path string, argv []string) error {
	err := syscall.Exec(path, argv, os.Environ()) //nolint:gosec // our own demo program, no shell
	return fmt.Errorf("starting the demo: %s: %w", path, err)
}

// moduleRoot returns the directory of the pbxbridge source checkout that holds the working
// directory, or "".
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			ok := sc.Scan() && strings.TrimSpace(sc.Text()) == "module "+demoModule
			_ = f.Close()
			if ok {
				return dir
			}
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
