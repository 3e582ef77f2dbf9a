package connector

import "errors"

// DoctorCmd checks an installation.
type DoctorCmd struct{}

// Run runs the checks.
func (c *DoctorCmd) Run(g *Globals) error { return errors.New("doctor: not wired yet") }
