package connector

import (
	"sort"

	"github.com/pbxbridge/pbxbridge/connector/admin"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/recordings"
	"github.com/pbxbridge/pbxbridge/crm"
)

// recordings returns the recording access adapters use: uploads always, signed links when
// recordings.public_url and recordings.secret are set. It is built once per daemon.
func (d *Daemon) recordings(cfg *config.Config) crm.Recordings {
	d.recOnce.Do(func() {
		srv, err := recordings.New(cfg.Recordings, recordings.Options{
			Now:      d.now,
			Metrics:  d.reg,
			Logger:   d.log.With("component", "recordings"),
			CacheDir: cfg.StateDir,
		})
		if err != nil {
			d.log.Error("recordings unavailable", "err", err)
			return
		}
		d.rec = srv
	})
	if d.rec == nil {
		return nil
	}
	return d.rec
}

func sortChecks(cs []admin.Check) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
}
