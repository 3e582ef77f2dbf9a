package connector

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// route decides which calls reach one connector: its PBXs, directions and include/exclude
// filters (docs/design.md §7). It is immutable and safe for concurrent use.
type route struct {
	pbx        map[string]bool
	directions map[call.Direction]bool
	include    filter
	exclude    filter
	// logIf is the connector's log_if hook (nil: none), asked after the rules above.
	logIf crm.Hooks
}

type matcher struct {
	literal map[string]bool
	res     []*regexp.Regexp
}

func (m *matcher) empty() bool { return len(m.literal) == 0 && len(m.res) == 0 }

func (m *matcher) match(v string) bool {
	if v == "" {
		return false
	}
	if m.literal[v] {
		return true
	}
	for _, re := range m.res {
		if re.MatchString(v) {
			return true
		}
	}
	return false
}

type filter struct {
	extensions, trunks, dids, numbers matcher
}

func (f *filter) empty() bool {
	return f.extensions.empty() && f.trunks.empty() && f.dids.empty() && f.numbers.empty()
}

// match reports whether any rule of f matches the call.
func (f *filter) match(exts []string, trunk, did, number string) bool {
	for _, e := range exts {
		if f.extensions.match(e) {
			return true
		}
	}
	if trunk != "" {
		for lit := range f.trunks.literal {
			if strings.HasPrefix(trunk, lit) {
				return true
			}
		}
		for _, re := range f.trunks.res {
			if re.MatchString(trunk) {
				return true
			}
		}
	}
	return f.dids.match(did) || f.numbers.match(number)
}

func compileMatcher(list []string) (matcher, error) {
	m := matcher{literal: map[string]bool{}}
	for _, v := range list {
		if config.IsPattern(v) {
			re, err := regexp.Compile(v[1 : len(v)-1])
			if err != nil {
				return m, fmt.Errorf("pattern %s: %w", v, err)
			}
			m.res = append(m.res, re)
			continue
		}
		m.literal[v] = true
	}
	return m, nil
}

func compileFilter(f config.Filter) (filter, error) {
	var out filter
	var err error
	if out.extensions, err = compileMatcher(f.Extensions); err != nil {
		return out, err
	}
	if out.trunks, err = compileMatcher(f.Trunks); err != nil {
		return out, err
	}
	if out.dids, err = compileMatcher(f.DIDs); err != nil {
		return out, err
	}
	out.numbers, err = compileMatcher(f.Numbers)
	return out, err
}

func newRoute(c *config.Connector) (*route, error) {
	r := &route{pbx: map[string]bool{}, directions: map[call.Direction]bool{}}
	for _, p := range c.PBX {
		r.pbx[p] = true
	}
	for _, d := range c.Directions {
		r.directions[call.Direction(d)] = true
	}
	var err error
	if r.include, err = compileFilter(c.Include); err != nil {
		return nil, fmt.Errorf("connector %s: include: %w", c.Name, err)
	}
	if r.exclude, err = compileFilter(c.Exclude); err != nil {
		return nil, fmt.Errorf("connector %s: exclude: %w", c.Name, err)
	}
	return r, nil
}

// wants reports whether the finished call rec goes to this connector.
func (r *route) wants(rec *call.Record) bool {
	if !r.pbx[rec.PBX] || !r.directions[rec.Direction] {
		return false
	}
	exts := recordExtensions(rec)
	if !r.include.empty() && !r.include.match(exts, rec.Trunk, rec.Line, rec.Customer) {
		return false
	}
	return !r.exclude.match(exts, rec.Trunk, rec.Line, rec.Customer)
}

// logged asks the log_if hook, if any, whether the finished call rec goes to the connector
// (after wants said yes). Its answer and failures go to ctx's trace.
func (r *route) logged(ctx context.Context, rec *call.Record) bool {
	if r.logIf == nil {
		return true
	}
	res, _ := r.logIf.Run(ctx, crm.HookLogIf, &crm.HookInput{Record: rec})
	return res.Log
}

// liveLogged asks the log_if hook, if any, whether the live event ev goes to the connector: the
// hook sees the call as known while it rings (no disposition, live set).
func (r *route) liveLogged(ev *call.Live) bool {
	if r.logIf == nil {
		return true
	}
	res, _ := r.logIf.Run(context.Background(), crm.HookLogIf, &crm.HookInput{Record: crm.LiveRecord(ev), Live: true})
	return res.Log
}

// wantsLive reports whether a live event goes to this connector (the same rules on what is known
// while the call is in progress).
func (r *route) wantsLive(ev *call.Live) bool {
	if !r.pbx[ev.PBX] || !r.directions[ev.Direction] {
		return false
	}
	var exts []string
	if ev.Ext != "" {
		exts = []string{ev.Ext}
	}
	if !r.include.empty() && !r.include.match(exts, "", ev.Line, ev.Customer) {
		return false
	}
	return !r.exclude.match(exts, "", ev.Line, ev.Customer)
}

// recordExtensions lists every extension that rang or talked in rec.
func recordExtensions(rec *call.Record) []string {
	exts := slices.Clone(rec.Rang)
	for _, l := range rec.Legs {
		if !slices.Contains(exts, l.Ext) {
			exts = append(exts, l.Ext)
		}
	}
	if rec.AnsweredBy != "" && !slices.Contains(exts, rec.AnsweredBy) {
		exts = append(exts, rec.AnsweredBy)
	}
	return exts
}
