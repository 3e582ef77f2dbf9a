package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

// DoctorCmd checks an installation before it goes live.
type DoctorCmd struct {
	Timeout time.Duration `help:"Time allowed for each network check." default:"10s"`
	JSON    bool          `help:"Print the checks as JSON: [{\"name\", \"status\": ok|warn|fail, \"detail\"}]."`
}

// doctorLine is one check result.
type doctorLine struct {
	ok     bool
	warn   bool
	name   string
	detail string
}

// Run runs every check and prints one line each: OK, WARN, or FAIL with a plain fix. Exit
// status 1 when something fails.
func (c *DoctorCmd) Run(g *Globals) error {
	var lines []doctorLine
	add := func(ok bool, name, format string, args ...any) {
		lines = append(lines, doctorLine{ok: ok, name: name, detail: fmt.Sprintf(format, args...)})
	}
	warn := func(name, format string, args ...any) {
		lines = append(lines, doctorLine{ok: true, warn: true, name: name, detail: fmt.Sprintf(format, args...)})
	}
	defer func() {
		if c.JSON {
			_ = writeJSONTo(g.Stdout, doctorJSON(lines))
			return
		}
		printDoctor(g.Stdout, lines)
	}()

	cfg, err := g.loadConfig()
	if err != nil {
		add(false, "config", "%s does not load: fix these, then run doctor again:\n%v", g.configPath(), err)
		return &exitError{code: 1}
	}
	add(true, "config", "%s: %d pbx, %d connectors", g.configPath(), len(cfg.PBX), len(cfg.Connectors))

	// The state directory: writable, room to grow.
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		add(false, "state directory", "%s: %v (the service creates it through StateDirectory=; run doctor with sudo)", cfg.StateDir, err)
	} else if f, err := os.CreateTemp(cfg.StateDir, ".doctor-*"); err != nil {
		add(false, "state directory", "%s is not writable: %v (chown pbxbridge:pbxbridge %s)", cfg.StateDir, err, cfg.StateDir)
	} else {
		_ = f.Close()
		_ = os.Remove(f.Name())
		var st syscall.Statfs_t
		if syscall.Statfs(cfg.StateDir, &st) == nil {
			free := st.Bavail * uint64(st.Bsize)
			if free < 100<<20 {
				add(false, "state directory", "%s has only %d MiB free: the outbox needs room (free some space)", cfg.StateDir, free>>20)
			} else {
				add(true, "state directory", "%s writable, %d MiB free", cfg.StateDir, free>>20)
			}
		}
	}

	lines = append(lines, accessChecks(cfg)...) // as the service user (privileges.go)

	ctx := g.Ctx
	for _, p := range cfg.PBX {
		lines = append(lines, c.checkPBX(ctx, p)...)
	}

	// Recordings.
	if entries, err := os.ReadDir(cfg.Recordings.Dir); err != nil {
		add(false, "recordings", "%s is not readable: %v (give the service user read access: see Recordings in docs/operations.md)", cfg.Recordings.Dir, err)
	} else {
		detail := fmt.Sprintf("%s readable (%d entries)", cfg.Recordings.Dir, len(entries))
		if cfg.Recordings.PublicURL == "" {
			detail += "; no public_url: recordings are uploaded (Bitrix24) but not linked (amoCRM/Kommo show no player)"
		}
		add(true, "recordings", "%s", detail)
	}

	// CRMs: the adapters' own checks (authorisation, scopes, telephony rights, user mapping).
	for i := range cfg.Connectors {
		cn := &cfg.Connectors[i]
		name := "crm " + cn.Name
		if !cn.IsEnabled() {
			warn(name, "disabled in the config")
			continue
		}
		a, err := standaloneAdapter(cfg, cn, io.Discard)
		if err != nil {
			add(false, name, "%v", err)
			continue
		}
		pr, ok := a.(crm.Prober)
		if !ok {
			add(true, name, "(%s has no checks)", cn.Type)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 3*c.Timeout)
		for _, ck := range pr.Probe(pctx) {
			add(ck.OK, name+": "+ck.Name, "%s", ck.Detail)
		}
		cancel()
		if cl, ok := a.(crm.Closer); ok {
			_ = cl.Close(context.Background())
		}
	}

	lines = append(lines, checkLicences(ctx, g, cfg)...)

	// Clock: licences and CRM timestamps need a sane clock.
	if bt := licensing.BuildTime(); !bt.IsZero() && time.Now().Before(bt) {
		add(false, "clock", "the system clock (%s) is before this program was built (%s): fix NTP", time.Now().Format(time.DateTime), bt.Format(time.DateTime))
	} else if _, err := os.Stat("/run/systemd/timesync/synchronized"); err == nil {
		add(true, "clock", "synchronised by systemd-timesyncd")
	} else {
		warn("clock", "cannot tell whether the clock is synchronised; make sure NTP (chrony or systemd-timesyncd) runs")
	}

	for _, l := range lines {
		if !l.ok {
			return &exitError{code: 1}
		}
	}
	return nil
}

// doctorCheck is one check of `doctor --json`.
type doctorCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, warn or fail
	Detail string `json:"detail"`
}

func doctorJSON(lines []doctorLine) []doctorCheck {
	out := make([]doctorCheck, 0, len(lines))
	for _, l := range lines {
		st := "ok"
		switch {
		case !l.ok:
			st = "fail"
		case l.warn:
			st = "warn"
		}
		out = append(out, doctorCheck{Name: l.name, Status: st, Detail: l.detail})
	}
	return out
}

func printDoctor(w io.Writer, lines []doctorLine) {
	failed := 0
	for _, l := range lines {
		mark := "OK  "
		switch {
		case !l.ok:
			mark = "FAIL"
			failed++
		case l.warn:
			mark = "WARN"
		}
		detail := strings.ReplaceAll(l.detail, "\n", "\n      ")
		fmt.Fprintf(w, "%s  %-32s %s\n", mark, l.name, detail)
	}
	if failed == 0 {
		fmt.Fprintln(w, "\nready to go live")
	} else {
		fmt.Fprintf(w, "\n%d problem(s) to fix\n", failed)
	}
}

// checkPBX logs in and checks the rights pbxbridge needs.
func (c *DoctorCmd) checkPBX(ctx context.Context, p config.PBX) []doctorLine {
	name := "pbx " + p.Name
	if p.Type == "ari" {
		return []doctorLine{checkARI(ctx, p, c.Timeout)}
	}
	dctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	conn, err := ami.Dial(dctx, ami.Options{Name: p.Name, Address: p.AMI.Address(), Username: p.AMI.Username,
		Secret: p.AMI.Secret.Value(), Auth: p.AMI.Auth, Events: "off", ConnectTimeout: c.Timeout})
	if err != nil {
		fix := "check that Asterisk runs, manager.conf has enabled=yes and the port, and permit= allows this host"
		if errors.Is(err, ami.ErrAuthFailed) {
			fix = "the username or secret is wrong, or permit= excludes this host (manager.conf)"
		}
		return []doctorLine{{name: name, detail: fmt.Sprintf("cannot log in to AMI at %s: %v\n%s", p.AMI.Address(), err, fix)}}
	}
	defer func() { _ = conn.Close() }()
	out := []doctorLine{{ok: true, name: name, detail: fmt.Sprintf("AMI login to %s as %s (%s)", p.AMI.Address(), p.AMI.Username, conn.Banner())}}
	resp, err := conn.Action(dctx, ami.Action{Name: "ListCommands"})
	if err != nil {
		return append(out, doctorLine{name: name + ": rights", detail: fmt.Sprintf("ListCommands failed: %v", err)})
	}
	var missing []string
	for _, action := range []string{"Originate", "CoreShowChannels", "ExtensionState", "Ping"} {
		if _, ok := resp.Lookup(action); !ok {
			missing = append(missing, action)
		}
	}
	if len(missing) > 0 {
		out = append(out, doctorLine{name: name + ": rights", detail: fmt.Sprintf("the AMI user may not run %s: add write = originate,call,reporting in manager.conf", strings.Join(missing, ", "))})
	} else {
		out = append(out, doctorLine{ok: true, name: name + ": rights", detail: "Originate, CoreShowChannels and ExtensionState allowed (click-to-call, resync)"})
	}
	out = append(out, doctorLine{ok: true, warn: true, name: name + ": events",
		detail: "AMI cannot report a user's read classes; make sure read = call,dialplan,agent,cdr,user (then pbxbridge status shows events arriving)"})
	return out
}

func checkARI(ctx context.Context, p config.PBX, timeout time.Duration) doctorLine {
	name := "pbx " + p.Name
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, strings.TrimRight(p.ARI.URL, "/")+"/ari/asterisk/info", nil)
	if err != nil {
		return doctorLine{name: name, detail: err.Error()}
	}
	req.SetBasicAuth(p.ARI.Username, p.ARI.Password.Value())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return doctorLine{name: name, detail: fmt.Sprintf("ARI at %s unreachable: %v (http.conf enabled=yes, bindaddr, port)", p.ARI.URL, err)}
	}
	_ = resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return doctorLine{ok: true, name: name, detail: "ARI login to " + p.ARI.URL}
	case http.StatusUnauthorized:
		return doctorLine{name: name, detail: "ARI refused the username or password (ari.conf)"}
	}
	return doctorLine{name: name, detail: fmt.Sprintf("ARI answered %s", resp.Status)}
}

// checkLicences reports each connector's licence: from the running daemon when it runs, else by
// verifying the licence directory offline.
func checkLicences(ctx context.Context, g *Globals, cfg *config.Config) []doctorLine {
	var st licensing.Status
	if err := admin.NewClient(cfg.Admin.Socket).Do(ctx, http.MethodGet, "/v1/license", nil, &st); err == nil {
		var out []doctorLine
		for _, c := range st.Connectors {
			l := doctorLine{ok: c.Allowed, name: "licence " + c.Name, detail: string(c.State)}
			if c.DaysLeft != nil {
				l.detail += fmt.Sprintf(", %.0f days left", *c.DaysLeft)
			}
			if c.Reason != "" {
				l.detail += ": " + c.Reason
			}
			if !c.Allowed {
				l.detail += " (pbxbridge license request --connector " + c.Name + ", then license install)"
			}
			out = append(out, l)
		}
		return out
	}
	kr, err := keyring.Default()
	if err != nil {
		return []doctorLine{{name: "licences", detail: err.Error()}}
	}
	types, err := connector.LicensedTypes()
	if err != nil {
		return []doctorLine{{name: "licences", detail: err.Error()}}
	}
	v := &licensing.Verifier{Keyring: kr, Version: g.Version, Connectors: types}
	files, _ := filepath.Glob(filepath.Join(cfg.Licensing.Dir, "*.lic"))
	byType := map[string][]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		l, err := v.VerifyFile(data)
		if err != nil {
			byType["bad"] = append(byType["bad"], filepath.Base(f)+": "+err.Error())
			continue
		}
		byType[l.Claims().Connector] = append(byType[l.Claims().Connector], filepath.Base(f))
	}
	var out []doctorLine
	for _, cn := range cfg.Connectors {
		if !types.Known(cn.Type) {
			continue
		}
		if fs := byType[cn.Type]; len(fs) > 0 {
			out = append(out, doctorLine{ok: true, name: "licence " + cn.Name, detail: "signed licence present: " + strings.Join(fs, ", ") + " (dates and binding are checked by the daemon: pbxbridge license status)"})
		} else {
			out = append(out, doctorLine{name: "licence " + cn.Name, detail: fmt.Sprintf("no %s licence in %s: pbxbridge license request --connector %s, then license install FILE", cn.Type, cfg.Licensing.Dir, cn.Name)})
		}
	}
	for _, b := range byType["bad"] {
		out = append(out, doctorLine{name: "licence file", detail: b})
	}
	return out
}
