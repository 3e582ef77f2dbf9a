package amocrm

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
)

// Probe implements crm.Prober for `pbxbridge crm test`: one line per check, in plain words.
func (a *Adapter) Probe(ctx context.Context) []crm.Check {
	var out []crm.Check
	add := func(name string, ok bool, format string, args ...any) {
		out = append(out, crm.Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	mode := "OAuth integration " + a.cfg.Auth.ClientID
	if a.cfg.LongLived() {
		mode = "long-lived token"
	}
	add("configuration", true, "%s account at %s, %s, at most %v requests per second", a.typ, a.cfg.APIBase(), mode, a.cfg.RateLimit)

	st, detail := a.tokens.state()
	if st != "ok" {
		msg := "not authorised: " + detail
		if u := a.tokens.connectURL(); u != "" {
			msg += "; open " + u + " as an account administrator, or run `pbxbridge crm auth " + a.name + " --code CODE`"
		}
		add("authorisation", false, "%s", msg)
		return out
	}
	acc, err := a.client.Account(ctx)
	if err != nil {
		add("authorisation", false, "%s cannot be reached or refuses the token: %v", a.cfg.APIBase(), a.wrap(err))
		return out
	}
	a.tokens.rememberAccount(acc)
	add("authorisation", true, "authorised to %q (%s, account id %d)", acc.Name, acc.Subdomain, acc.ID)
	if acc.Subdomain != "" && acc.Subdomain != a.cfg.Subdomain {
		add("account", false, "the token belongs to %q but subdomain is %q: fix subdomain or authorise the right account", acc.Subdomain, a.cfg.Subdomain)
	}

	users, err := a.client.Users(ctx, true)
	if err != nil {
		add("user mapping", false, "cannot list users: %v", a.wrap(err))
	} else {
		if err := a.loadUsers(ctx); err != nil {
			a.log.Debug("probe: loading users", "err", err)
		}
		byID := map[int64]string{}
		active := map[int64]bool{}
		for _, u := range users {
			byID[u.ID], active[u.ID] = u.Name, u.Active()
		}
		mapping := a.users.snapshot()
		var good, bad []string
		for _, ext := range slices.Sorted(maps.Keys(mapping)) {
			id := mapping[ext]
			switch name, ok := byID[id]; {
			case !ok:
				bad = append(bad, fmt.Sprintf("extension %s → user %d does not exist", ext, id))
			case !active[id]:
				bad = append(bad, fmt.Sprintf("extension %s → %s (%d) is deactivated", ext, name, id))
			default:
				good = append(good, fmt.Sprintf("%s → %s", ext, name))
			}
		}
		switch {
		case len(bad) > 0:
			add("user mapping", false, "%s; fix users: in the config", strings.Join(bad, "; "))
		case len(good) == 0:
			add("user mapping", false, "no extension is mapped to a user: calls are logged without a responsible user and pop-ups are off; add users: to the config")
		default:
			add("user mapping", true, "%d extensions mapped: %s", len(good), strings.Join(good, ", "))
		}
		if d := a.cfg.DefaultUser; d != 0 {
			if _, ok := byID[d]; !ok {
				add("default user", false, "default_user %d does not exist in the account", d)
			}
		}
	}
	switch {
	case !a.cfg.RecordingLinks:
		add("recordings", true, "recording links are off (recording_links: false)")
	case a.rec == nil:
		add("recordings", false, "recording links are on but the daemon has no recordings: block (dir, public_url, secret): calls are logged without a player")
	default:
		add("recordings", true, "calls carry signed links to their recordings")
	}
	switch {
	case !a.cfg.ClickToCall.AcceptJWT:
		add("click-to-call", true, "off (set click_to_call.accept_jwt: true and upload the widget to enable it)")
	case a.orig == nil:
		add("click-to-call", false, "enabled but no PBX connection supports originate: clicks will fail")
	case a.audience == "":
		add("click-to-call", true, "enabled; the daemon's http.public.url is not set, so the tokens' audience is not checked")
	default:
		add("click-to-call", true, "enabled for widget requests to %s (amoCRM one-time tokens)", a.audience)
	}
	if until := a.client.BlockedUntil(); !until.IsZero() {
		add("rate limit", false, "amoCRM blocked this server for too many requests; sending resumes in %v", until.Sub(a.now()).Round(time.Second))
	}
	return out
}

var _ crm.Prober = (*Adapter)(nil)
