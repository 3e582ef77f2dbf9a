package connector

import (
	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/prometheus/client_golang/prometheus"
)

// newARISource builds the ARI source of p from its ari and originate blocks. The originate
// block means the same as for AMI; state_context has no ARI equivalent (the precheck asks the
// endpoint and its device state instead of a dialplan hint).
func newARISource(p config.PBX, d *Daemon, reg prometheus.Registerer) (asterisk.Source, error) {
	pre := ari.PrecheckExtensionState
	if p.Originate.Precheck == "none" {
		pre = ari.PrecheckNone
	}
	return ari.NewSource(ari.Options{
		Name:     p.Name,
		URL:      p.ARI.URL,
		Username: p.ARI.Username,
		Password: p.ARI.Password.Value(),
		App:      p.ARI.App,
		Originate: ari.OriginateOptions{
			Channel:     p.Originate.Channel,
			Context:     p.Originate.Context,
			CallerID:    p.Originate.CallerID,
			RingTimeout: p.Originate.RingTimeout,
			Precheck:    pre,
			AllowInUse:  p.Originate.AllowInUse,
		},
		// The first connection takes a snapshot too: calls up when the daemon starts (or when a
		// reload reconnects) are learnt, and the open-calls ledger is reconciled at once.
		SnapshotOnConnect: true,
		Logger:            d.log.With("component", "ari"),
		Registerer:        reg,
	})
}
