package connector

import (
	"errors"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/connector/config"
)

// newARISource builds the ARI source of p.
func newARISource(p config.PBX, d *Daemon) (asterisk.Source, error) {
	return nil, errors.New("pbx " + p.Name + ": the ARI source is not available yet; use type: ami")
}
