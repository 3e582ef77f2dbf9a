package connector

import "errors"

// DemoCmd runs the whole pipeline on this machine.
type DemoCmd struct{}

// Run runs the demo.
func (c *DemoCmd) Run(g *Globals) error { return errors.New("demo: not wired yet") }


// DoctorCmd checks an installation.
type DoctorCmd struct{}

// Run runs the checks.
func (c *DoctorCmd) Run(g *Globals) error { return errors.New("doctor: not wired yet") }
