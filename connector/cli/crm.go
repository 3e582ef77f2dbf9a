package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/recordings"
	"github.com/pbxbridge/pbxbridge/crm"
)

// CRMCmd groups the CRM commands.
type CRMCmd struct {
	Test CRMTestCmd `cmd:"" help:"Check a connector's CRM account: authorisation, scopes, telephony rights, user mapping."`
	Auth CRMAuthCmd `cmd:"" help:"Authorise an amoCRM/Kommo integration with the code from its settings page."`
}

// CRMTestCmd probes a connector.
type CRMTestCmd struct {
	Connector string `arg:"" help:"Connector name from the config (or its type when only one has that type)."`
	JSON      bool   `help:"Print the checks as JSON: [{\"name\", \"ok\", \"detail\"}]."`
}

// Run probes and prints one line per check; exit status 1 when a check fails.
func (c *CRMTestCmd) Run(g *Globals) error {
	cfg, err := g.loadConfig()
	if err != nil {
		return err
	}
	cn, err := findConnector(cfg, c.Connector)
	if err != nil {
		return err
	}
	adapter, err := standaloneAdapter(cfg, cn, g.Stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(g.Ctx, 60*time.Second)
	defer cancel()
	defer func() {
		if cl, ok := adapter.(crm.Closer); ok {
			_ = cl.Close(context.WithoutCancel(ctx))
		}
	}()
	pr, ok := adapter.(crm.Prober)
	if !ok {
		return fmt.Errorf("connector %s (%s) has no checks", cn.Name, cn.Type)
	}
	checks := pr.Probe(ctx)
	var failed int
	if c.JSON {
		for _, ck := range checks {
			if !ck.OK {
				failed++
			}
		}
		if err := writeJSONTo(g.Stdout, checks); err != nil {
			return err
		}
	} else {
		failed = printChecks(g.Stdout, checks)
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d checks failed", failed, len(checks))}
	}
	return nil
}

// printChecks prints checks and returns how many failed.
func printChecks(w io.Writer, checks []crm.Check) int {
	failed := 0
	for _, ck := range checks {
		mark := "OK  "
		if !ck.OK {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "%s  %-28s %s\n", mark, ck.Name, ck.Detail)
	}
	return failed
}

func findConnector(cfg *config.Config, name string) (*config.Connector, error) {
	var byType []*config.Connector
	for i := range cfg.Connectors {
		cn := &cfg.Connectors[i]
		if cn.Name == name {
			return cn, nil
		}
		if cn.Type == name {
			byType = append(byType, cn)
		}
	}
	if len(byType) == 1 {
		return byType[0], nil
	}
	var names []string
	for _, cn := range cfg.Connectors {
		names = append(names, cn.Name+" ("+cn.Type+")")
	}
	if len(byType) > 1 {
		return nil, fmt.Errorf("several %s connectors: name one of %s", name, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("no connector %q in the config (have: %s)", name, strings.Join(names, ", "))
}

// standaloneAdapter builds a connector's adapter outside the daemon (for `crm test`): same state
// directory (tokens), an in-memory call store, no click-to-call.
func standaloneAdapter(cfg *config.Config, cn *config.Connector, logOut io.Writer) (crm.Adapter, error) {
	f, ok := crm.Lookup(cn.Type)
	if !ok {
		return nil, fmt.Errorf("unknown connector type %q", cn.Type)
	}
	stateDir := connectorStateDir(cfg, cn)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	publicURL := strings.TrimRight(cfg.HTTP.Public.URL, "/")
	routeURL := ""
	if publicURL != "" {
		routeURL = publicURL + "/crm/" + cn.Name
	}
	var rec crm.Recordings
	if srv, err := recordings.New(cfg.Recordings, recordings.Options{}); err == nil {
		rec = srv
	}
	settings := cn.Settings
	if settings == nil {
		settings = f.NewConfig()
	}
	// The daemon gives every connector its click-to-call gate; a probe places no call, but
	// must not report click-to-call as impossible because this process has no PBX connection.
	var orig asterisk.Originator
	if len(cfg.PBX) > 0 {
		orig = probeOriginator{}
	}
	return f.New(crm.Params{
		Name:       cn.Name,
		Type:       cn.Type,
		Config:     settings,
		Logger:     slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Metrics:    prometheus.NewRegistry(),
		StateDir:   stateDir,
		Calls:      &memCallStore{m: map[string]string{}},
		Originator: orig,
		PublicURL:  publicURL,
		RouteURL:   routeURL,
		Recordings: rec,
		Now:        time.Now,
	})
}

// probeOriginator stands in for the daemon's click-to-call gate in the CLI's probes: it
// refuses every call (crm test and crm auth place none).
type probeOriginator struct{}

func (probeOriginator) Originate(context.Context, asterisk.OriginateRequest) (asterisk.OriginateResult, error) {
	return asterisk.OriginateResult{}, errors.New("crm: the command line places no calls (the running daemon does)")
}

// memCallStore is a CallStore that lives in memory (for probes, which create no calls).
type memCallStore struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *memCallStore) Get(_ context.Context, key, field string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key+"\x00"+field]
	return v, ok, nil
}

func (s *memCallStore) Set(_ context.Context, key, field, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key+"\x00"+field] = value
	return nil
}

// CRMAuthCmd exchanges an OAuth code.
type CRMAuthCmd struct {
	Connector string `arg:"" help:"Connector name from the config."`
	Code      string `required:"" help:"The authorisation code shown by the CRM (valid 20 minutes)."`
}

// Run exchanges the code and stores the tokens where the daemon reads them.
func (c *CRMAuthCmd) Run(g *Globals) error {
	cfg, err := g.loadConfig()
	if err != nil {
		return err
	}
	cn, err := findConnector(cfg, c.Connector)
	if err != nil {
		return err
	}
	adapter, err := standaloneAdapter(cfg, cn, g.Stderr)
	if err != nil {
		return err
	}
	ca, ok := adapter.(crm.CodeAuthorizer)
	if !ok {
		return errors.New("connector " + cn.Name + " (" + cn.Type + ") is not authorised with a code; see its README")
	}
	ctx, cancel := context.WithTimeout(g.Ctx, 60*time.Second)
	defer cancel()
	defer func() {
		if cl, ok := adapter.(crm.Closer); ok {
			_ = cl.Close(context.WithoutCancel(ctx))
		}
	}()
	acc, err := ca.AuthorizeCode(ctx, c.Code)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Stdout, "authorised: %s account %d (%s); tokens saved in %s\n", cn.Type, acc.AccountID, acc.Subdomain, connectorStateDir(cfg, cn))
	fmt.Fprintln(g.Stdout, "a running daemon picks them up by itself; check with: pbxbridge crm test", cn.Name)
	return nil
}

// connectorStateDir is the private state directory of a connector instance (the daemon's is the
// same: connector.StateDir).
func connectorStateDir(cfg *config.Config, cn *config.Connector) string {
	return filepath.Join(cfg.StateDir, "connectors", cn.Name)
}
