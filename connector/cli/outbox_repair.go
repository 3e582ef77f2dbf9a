package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
)

// outboxPath is the outbox database of a config's state directory (the daemon's is the same).
func outboxPath(stateDir string) string { return filepath.Join(stateDir, "outbox.db") }

// OutboxCheckCmd runs the full integrity check.
type OutboxCheckCmd struct{}

// Run asks the running daemon to check its outbox, or checks the file itself when no daemon
// runs. Exit status 1 when the file is damaged.
func (c *OutboxCheckCmd) Run(g *Globals) error {
	err := g.client().Do(g.Ctx, http.MethodPost, "/v1/outbox/check", nil, nil)
	if errors.Is(err, admin.ErrNotRunning) {
		cfg, cerr := g.optionalConfig()
		if cerr != nil {
			return cerr
		}
		err = checkOffline(g.Ctx, outboxPath(cfg.StateDir))
	}
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintln(g.Stdout, "outbox: ok (full integrity check)")
	return nil
}

func checkOffline(ctx context.Context, path string) error {
	s, err := outbox.Open(ctx, path, outbox.Options{})
	if err != nil {
		return err
	}
	defer func() { _ = s.Close() }()
	return s.Check(ctx)
}

// OutboxSalvageCmd copies the readable rows of a damaged outbox into a new one.
type OutboxSalvageCmd struct {
	JSON bool `help:"Print the report as JSON."`
}

// Run salvages the outbox of the config's state directory; it refuses while the daemon runs.
func (c *OutboxSalvageCmd) Run(g *Globals) error {
	if err := g.client().Do(g.Ctx, http.MethodGet, "/v1/status", nil, nil); err == nil {
		return &exitError{code: 1, err: errors.New("pbxbridge is running: stop it first (systemctl stop pbxbridge), then salvage")}
	}
	cfg, err := g.optionalConfig()
	if err != nil {
		return err
	}
	rep, err := outbox.Salvage(g.Ctx, outboxPath(cfg.StateDir), outbox.Options{})
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if c.JSON {
		return writeJSONTo(g.Stdout, rep)
	}
	for _, t := range rep.Tables {
		line := fmt.Sprintf("%-11s %6d rows copied", t.Name, t.Copied)
		if t.Lost != "" {
			line += "; lost: " + t.Lost
		}
		fmt.Fprintln(g.Stdout, line)
	}
	fmt.Fprintf(g.Stdout, "the damaged file is kept as %s; the new outbox is in place: start pbxbridge\n", rep.Damaged)
	return nil
}
