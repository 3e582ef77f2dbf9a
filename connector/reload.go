package connector

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/pbxbridge/pbxbridge/connector/config"
)

// Reload re-reads the config file and applies it without a restart (SIGHUP, `pbxbridge reload`).
// A config with problems is refused: the old one stays in force, the problems are logged and
// pbxbridge_config_last_reload_successful drops to 0. A good config is applied unit by unit:
// connectors and PBXs whose settings did not change keep running untouched; a changed connector
// drains its deliveries in progress and restarts; a changed PBX reconnects (its open calls are
// finished from what is known). Licences are re-read too.
func (d *Daemon) Reload(ctx context.Context) error {
	old := d.Config()
	if d.lic != nil {
		if err := d.lic.Reload(ctx); err != nil {
			d.log.Error("reloading licences", "err", err)
		}
	}
	if old.File == "" {
		return nil
	}
	cfg, err := config.Load(old.File, d.opts.Getenv)
	if err != nil {
		d.m.reloadOK.Set(0)
		d.m.reloads.WithLabelValues("refused").Inc()
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				d.log.Error("config reload refused, keeping the running config", "problem", p.Error())
			}
		} else {
			d.log.Error("config reload refused, keeping the running config", "err", err)
		}
		return fmt.Errorf("reload refused: %w", err)
	}
	for _, f := range []struct {
		name     string
		old, new any
	}{
		{"state_dir", old.StateDir, cfg.StateDir},
		{"http.public.listen", old.HTTP.Public.Listen, cfg.HTTP.Public.Listen},
		{"http.admin.listen", old.HTTP.Admin.Listen, cfg.HTTP.Admin.Listen},
		{"admin.socket", old.Admin.Socket, cfg.Admin.Socket},
		{"licensing.dir", old.Licensing.Dir, cfg.Licensing.Dir},
		{"log.format", old.Log.Format, cfg.Log.Format},
	} {
		if f.old != f.new {
			d.log.Warn("this setting changes only at restart", "setting", f.name, "running", f.old, "new", f.new)
		}
	}
	_ = d.level.UnmarshalText([]byte(cfg.Log.Level))
	d.redact.Store(cfg.Log.RedactNumbers)

	unitCtx := context.WithoutCancel(ctx)
	dispatchChanged := !reflect.DeepEqual(old.Dispatch, cfg.Dispatch) || old.HTTP.Public.URL != cfg.HTTP.Public.URL ||
		!reflect.DeepEqual(old.Recordings, cfg.Recordings)

	// Connectors.
	oldConns := map[string]config.Connector{}
	for _, c := range old.Connectors {
		oldConns[c.Name] = c
	}
	newConns := map[string]config.Connector{}
	for _, c := range cfg.Connectors {
		newConns[c.Name] = c
	}
	var restart []string
	for name, oc := range oldConns {
		nc, ok := newConns[name]
		if !ok || !nc.IsEnabled() || dispatchChanged || !sameConnector(oc, nc) {
			d.stopConnector(name)
			if ok && nc.IsEnabled() {
				restart = append(restart, name)
			}
		}
	}
	d.cfgMu.Lock()
	d.cfg = cfg
	d.cfgMu.Unlock()
	var failed error
	for i := range cfg.Connectors {
		cn := &cfg.Connectors[i]
		d.unitsMu.Lock()
		_, running := d.conns[cn.Name]
		d.unitsMu.Unlock()
		if running || !cn.IsEnabled() {
			continue
		}
		if err := d.startConnector(unitCtx, cfg, cn); err != nil {
			d.log.Error("starting connector after reload", "connector", cn.Name, "err", err)
			failed = errors.Join(failed, err)
		}
	}
	d.publishRoutes()

	// PBXs.
	oldPBX := map[string]config.PBX{}
	for _, p := range old.PBX {
		oldPBX[p.Name] = p
	}
	for _, p := range cfg.PBX {
		op, existed := oldPBX[p.Name]
		delete(oldPBX, p.Name)
		if existed && reflect.DeepEqual(op, p) {
			continue
		}
		d.unitsMu.Lock()
		running := d.pbxs[p.Name]
		d.unitsMu.Unlock()
		if existed && running != nil && reflect.DeepEqual(op.Calls, p.Calls) {
			// Only how to reach the PBX changed (address, secret, type, originate): a new
			// source, the same call model: calls in progress are kept.
			if err := running.swapSource(unitCtx, p); err != nil {
				d.log.Error("reconnecting the PBX after reload", "pbx", p.Name, "err", err)
				failed = errors.Join(failed, err)
			}
			continue
		}
		if existed {
			d.stopPBX(p.Name)
		}
		pc := p
		if err := d.startPBX(unitCtx, &pc); err != nil {
			d.log.Error("starting PBX after reload", "pbx", p.Name, "err", err)
			failed = errors.Join(failed, err)
		}
	}
	for name := range oldPBX {
		d.stopPBX(name)
	}

	if failed != nil {
		d.m.reloadOK.Set(0)
		d.m.reloads.WithLabelValues("partial").Inc()
		return failed
	}
	d.m.reloadOK.Set(1)
	d.m.reloadTime.SetToCurrentTime()
	d.m.reloads.WithLabelValues("applied").Inc()
	d.log.Info("configuration reloaded", "restarted_connectors", restart)
	return nil
}

// sameConnector compares two connector configs, type blocks included.
func sameConnector(a, b config.Connector) bool {
	return reflect.DeepEqual(a.Stripped(), b.Stripped())
}
