package connector

import (
	"unicode/utf8"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// Limits on what a PBX event may carry into a call record (and so into the outbox, timelines
// and CRM requests). A hostile or broken AMI/ARI peer once made 40,000 outbox rows of
// 5,000-digit numbers; real numbers and caller names are far shorter than these limits.
const (
	maxNumberLen = 64   // caller and connected numbers, dialled extensions
	maxNameLen   = 64   // caller and connected names
	maxValueLen  = 1024 // channel names, variables, recordings, dial strings
)

// boundEvent cuts every field of ev longer than its limit (at a character boundary) and counts
// each cut by kind ("number", "name", "value").
func boundEvent(ev *asterisk.Event, cut func(kind string)) {
	boundChannel(&ev.Chan, cut)
	boundChannel(&ev.Peer, cut)
	if t := ev.Transfer; t != nil {
		boundChannel(&t.Transferer, cut)
		boundChannel(&t.Second, cut)
		boundChannel(&t.Target, cut)
		boundString(&t.Exten, maxNumberLen, "number", cut)
	}
	for _, s := range []*string{&ev.Application, &ev.AppData, &ev.DialString, &ev.Forward, &ev.Variable, &ev.Value,
		&ev.Recording, &ev.Interface, &ev.Member, &ev.Queue} {
		boundString(s, maxValueLen, "value", cut)
	}
	for k, v := range ev.Vars {
		if len(v) > maxValueLen {
			ev.Vars[k] = truncate(v, maxValueLen)
			cut("value")
		}
	}
}

func boundChannel(c *asterisk.Channel, cut func(kind string)) {
	boundString(&c.CallerIDNum, maxNumberLen, "number", cut)
	boundString(&c.ConnectedNum, maxNumberLen, "number", cut)
	boundString(&c.Exten, maxNumberLen, "number", cut)
	boundString(&c.CallerIDName, maxNameLen, "name", cut)
	boundString(&c.ConnectedName, maxNameLen, "name", cut)
	for _, s := range []*string{&c.Name, &c.Uniqueid, &c.Linkedid, &c.Context, &c.AccountCode} {
		boundString(s, maxValueLen, "value", cut)
	}
}

func boundString(s *string, limit int, kind string, cut func(kind string)) {
	if len(*s) > limit {
		*s = truncate(*s, limit)
		cut(kind)
	}
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
