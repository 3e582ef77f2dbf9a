package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector/cli"
)

// runCode runs the command line in-process and returns its exit status, stdout and stderr.
func runCode(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.MainIO(context.Background(), "test", args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVersionFlagAndHelpCommand(t *testing.T) {
	t.Parallel()
	if code, out, _ := runCode(t, "--version"); code != 0 || strings.TrimSpace(out) != "pbxbridge test" {
		t.Errorf("--version: %d %q", code, out)
	}
	if code, out, _ := runCode(t, "help", "outbox", "list"); code != 0 || !strings.Contains(out, "Usage: pbxbridge outbox list") {
		t.Errorf("help outbox list: %d %q", code, out)
	}
	if code, out, _ := runCode(t, "help"); code != 0 || !strings.Contains(out, "doctor") {
		t.Errorf("help: %d %q", code, out)
	}
}

// `config check --json` says what is wrong in a form scripts (and the .deb's postinst) read.
func TestConfigCheckJSON(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pbxbridge.yaml")
	if err := os.WriteFile(path, configs.Example(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCode(t, "config", "check", "--json", "--config", path)
	var res struct {
		OK       bool `json:"ok"`
		Problems []struct {
			Line        int    `json:"line"`
			Path        string `json:"path"`
			Message     string `json:"message"`
			Placeholder bool   `json:"placeholder"`
		} `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if code != 1 || res.OK || len(res.Problems) == 0 || !res.Problems[0].Placeholder || res.Problems[0].Line == 0 {
		t.Errorf("the unedited sample: exit %d, %+v", code, res)
	}
}

// A capture the config recognises no call in is said so (at 1bda728 replay printed nothing and
// exited 0).
func TestReplaySaysWhenNoCallMatched(t *testing.T) {
	t.Parallel()
	lab := filepath.Join("..", "..", "asterisk", "transcripts", "inbound_answered.ami")
	// The built-in defaults know PJSIP/SIP/IAX2 phones, not the lab's Local channels.
	code, out, errOut := runCode(t, "replay", "--ami", lab)
	if code != 1 || out != "" || !strings.Contains(errOut, "0 calls from") || !strings.Contains(errOut, "pbx[].calls") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	empty := filepath.Join(t.TempDir(), "empty.ami")
	_ = os.WriteFile(empty, nil, 0o600)
	if code, _, errOut := runCode(t, "replay", "--ami", empty); code != 1 || !strings.Contains(errOut, "holds no AMI frames") {
		t.Errorf("empty capture: exit %d, %q", code, errOut)
	}
}

func captureConfig(t *testing.T, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	path := filepath.Join(t.TempDir(), "pbxbridge.yaml")
	cfg := "pbx:\n  - name: office\n    ami: {host: " + host + ", port: " + port + ", username: u, secret: averylongsecret, timeout: 500ms}\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// capture to a PBX that refuses the connection leaves no empty file (it did at 1bda728), and a
// port that accepts but is not AMI is named as such (at 1bda728: "context deadline exceeded
// (… use of closed network connection)" after 10 s).
func TestCaptureFailures(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	out := filepath.Join(t.TempDir(), "ticket.ami")
	if code, _, errOut := runCode(t, "capture", "--config", captureConfig(t, closed), "--out", out); code == 0 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("closed port: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused capture left %s behind: %v", out, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("files left behind: %v", entries)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // says nothing, like a web server waiting for a request
		}
	}()
	start := time.Now()
	code, _, errOut := runCode(t, "capture", "--config", captureConfig(t, silent.Addr().String()), "--out", out)
	if code == 0 || !strings.Contains(errOut, "sent no AMI banner") || !strings.Contains(errOut, "5038") {
		t.Errorf("silent port: exit %d, %q", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the silent port took %v (timeout 500ms)", d)
	}
}

// `config env` lists the variables of the freshly installed sample, placeholders and all: they are
// exactly what the variables replace.
func TestConfigEnvOnTheSample(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pbxbridge.yaml")
	if err := os.WriteFile(path, configs.Example(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCode(t, "config", "env", "--config", path)
	if code != 0 || !strings.Contains(out, "PBXBRIDGE_PBX_MAIN_AMI_SECRET") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
}

// config eventfilter admits the variables the PBX's calls block names, in both syntaxes.
func TestConfigEventfilter(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pbxbridge.yaml")
	sample := strings.Replace(string(configs.Example()), "# variables: [IVR_DEAL]", "variables: [IVR_DEAL]", 1)
	if err := os.WriteFile(path, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, `eventfilter(action(include),name(VarSet),header(Variable),method(regex)) = ^_{0,2}(MIXMONITOR_FILENAME|PBXBRIDGE_ORIGINATE_ID|FROM_DID|IVR_DEAL)$`},
		{[]string{"--legacy"}, `eventfilter = ^Event: VarSet[[:space:]].*[[:space:]]Variable: _{0,2}(MIXMONITOR_FILENAME|PBXBRIDGE_ORIGINATE_ID|FROM_DID|IVR_DEAL)[[:space:]]`},
	} {
		code, out, errOut := runCode(t, append([]string{"config", "eventfilter", "--config", path}, c.args...)...)
		if code != 0 || !strings.Contains(out, c.want+"\n") || !strings.Contains(out, "name(Newchannel)") && !strings.Contains(out, "|Newchannel|") {
			t.Errorf("config eventfilter %v: exit %d\n%s\n%s", c.args, code, out, errOut)
		}
	}
	if code, _, errOut := runCode(t, "config", "eventfilter", "--config", path, "--pbx", "nosuch"); code == 0 || !strings.Contains(errOut, "nosuch") {
		t.Errorf("an unknown --pbx: exit %d, %s", code, errOut)
	}
}
