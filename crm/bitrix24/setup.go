package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// requestSetup asks the set-up loop to (re)bind events and lines (after start or install).
func (a *Adapter) requestSetup() {
	select {
	case a.setupReq <- struct{}{}:
	default:
	}
}

// setupLoop runs setup when asked and retries failures with a growing delay (1 to 10 minutes).
// Without an authorisation it waits for the next request (the install).
func (a *Adapter) setupLoop(ctx context.Context) {
	delay := time.Minute
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.setupReq:
		case <-retry:
		}
		retry = nil
		err := a.setup(ctx)
		a.setupMu.Lock()
		a.setupErr, a.setupDone = err, err == nil
		a.setupMu.Unlock()
		switch {
		case err == nil:
			delay = time.Minute
		case ctx.Err() != nil:
			return
		case errors.Is(err, api.ErrNotAuthorized) || errors.Is(err, api.ErrReauthorize):
			// wait for an installation
		default:
			a.log.Warn("bitrix24 set-up failed; retrying", "in", delay, "err", err)
			retry = time.After(delay)
			delay = min(2*delay, 10*time.Minute)
		}
	}
}

// setup checks the authorisation and prepares the portal: it adds the configured external lines
// and binds the click-to-call events (event.bind, re-done at every start because Bitrix24 drops
// handlers when the application is reinstalled or updated). A webhook cannot bind events, so in
// webhook mode setup only probes telephony (telephony.externalLine.get: a portal that refuses
// webhooks for telephony says so at start, not at the first call) and adds the lines.
func (a *Adapter) setup(ctx context.Context) error {
	if a.tokens != nil {
		if st, cause := a.tokens.State(); st != api.StateOK {
			if cause == nil {
				cause = api.ErrNotAuthorized
			}
			return cause
		}
	}
	have, err := a.client.ExternalLines(ctx)
	if err != nil {
		if hint := a.accessProblem(err); hint != "" {
			a.noteAuthProblem(err)
			return fmt.Errorf("checking telephony access: %s: %w", hint, err)
		}
		return fmt.Errorf("listing external lines: %w", err)
	}
	for _, l := range a.cfg.Lines {
		exists := false
		for _, h := range have {
			if string(h.Number) == l.Number {
				exists = true
			}
		}
		if exists {
			continue
		}
		if err := a.client.AddExternalLine(ctx, l.Number, l.Name, l.CRMAutoCreate); err != nil {
			return fmt.Errorf("adding external line %s: %w", l.Number, err)
		}
	}
	if !a.cfg.ClickToCall.Enabled || a.webhook != nil {
		return nil
	}
	if a.routeURL == "" {
		return errors.New("click-to-call events are not bound: set http.public.url so Bitrix24 can reach pbxbridge")
	}
	// A portal_token connector's events come from the module, signed, to a route of their own.
	handler := strings.TrimRight(a.routeURL, "/") + a.eventsPath()
	for _, ev := range []string{api.EventExternalCallStart, api.EventExternalCallbackStart} {
		if err := a.client.BindEvent(ctx, ev, handler); err != nil {
			return fmt.Errorf("binding %s: %w", ev, err)
		}
	}
	return nil
}
