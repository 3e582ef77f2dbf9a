package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// routeCacheMax bounds the look-up cache; it is cleared when full. routeFlightMax bounds the
// numbers looked up at the same time: a look-up beyond it answers "unknown" at once
// (pbxbridge_bitrix24_cache_full_total{cache="lookups"}) instead of queueing a request.
const (
	routeCacheMax  = 10000
	routeFlightMax = 64
)

// routeCache caches telephony.externalCall.searchCrmEntities answers per number (found and
// not found) for routing.cache_ttl; concurrent look-ups of one number share one request.
type routeCache struct {
	a        *Adapter
	mu       sync.Mutex
	entries  map[string]routeEntry
	inflight map[string]*routeFlight
}

type routeEntry struct {
	matches []api.CrmMatch
	at      time.Time
}

type routeFlight struct {
	done    chan struct{}
	matches []api.CrmMatch
	err     error
}

func newRouteCache(a *Adapter) *routeCache {
	return &routeCache{a: a, entries: map[string]routeEntry{}, inflight: map[string]*routeFlight{}}
}

// matches returns the CRM objects of a number.
func (c *routeCache) matches(ctx context.Context, number string) ([]api.CrmMatch, error) {
	k := digits(number)
	if k == "" {
		return nil, nil
	}
	ttl := c.a.cfg.Routing.CacheTTL
	c.mu.Lock()
	if e, ok := c.entries[k]; ok && c.a.now().Sub(e.at) < ttl {
		c.mu.Unlock()
		return e.matches, nil
	}
	f := c.inflight[k]
	if f == nil {
		if len(c.inflight) >= routeFlightMax {
			c.mu.Unlock()
			c.a.m.cacheFull.WithLabelValues("lookups").Inc()
			return nil, nil
		}
		f = &routeFlight{done: make(chan struct{})}
		c.inflight[k] = f
		go c.fetch(ctx, k, number, f)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.matches, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *routeCache) fetch(ctx context.Context, k, number string, f *routeFlight) {
	// The first caller's deadline bounds the request; later callers only wait.
	f.matches, f.err = c.a.client.SearchCrmEntities(api.WithPriority(ctx), number)
	c.mu.Lock()
	delete(c.inflight, k)
	if f.err == nil && c.a.cfg.Routing.CacheTTL > 0 {
		if len(c.entries) >= routeCacheMax {
			c.entries = map[string]routeEntry{}
		}
		c.entries[k] = routeEntry{matches: f.matches, at: c.a.now()}
	}
	c.mu.Unlock()
	close(f.done)
}

// forget drops the cached answers of a number: every entry whose last 9 digits (all of them,
// for shorter numbers) are the number's, so the number cached with or without its country code
// or trunk prefix (+7…, 8…) goes. Dropping a stranger's entry too costs one look-up, no more.
func (c *routeCache) forget(number string) {
	k := digits(number)
	if len(k) < 7 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := range c.entries {
		n := min(len(e), len(k), 9)
		if len(e) >= 7 && e[len(e)-n:] == k[len(k)-n:] {
			delete(c.entries, e)
		}
	}
}

// Forget implements crm.Forgetter: the routing look-up cache drops the number.
func (a *Adapter) Forget(_ context.Context, number string) { a.routes.forget(number) }

var _ crm.Forgetter = (*Adapter)(nil)

// Responsible answers the extension of the customer's responsible manager ("" when unknown,
// not at work, or not answerable before the deadline). It implements crm.Router.
func (a *Adapter) Responsible(ctx context.Context, number string) (string, error) {
	ms, err := a.routes.matches(ctx, number)
	if err != nil {
		return "", quiet(err)
	}
	for _, m := range ms {
		uid := int(m.AssignedByID)
		if uid == 0 {
			uid = int(m.AssignedBy.ID)
		}
		if uid == 0 {
			continue
		}
		if a.cfg.Routing.OnlyAtWork {
			switch strings.ToUpper(string(m.AssignedBy.TimemanStatus)) {
			case "OPENED", "NOT_INSTALLED", "":
			default:
				continue
			}
		}
		ext := strings.TrimSpace(string(m.AssignedBy.UserPhoneInner))
		if ext == "" {
			if ext, err = a.users.extOf(ctx, uid); err != nil {
				return "", quiet(err)
			}
		}
		if ext != "" {
			return ext, nil
		}
	}
	return "", nil
}

// Lookup answers the CRM name of a caller ("" when unknown). It implements crm.Router.
func (a *Adapter) Lookup(ctx context.Context, number string) (string, error) {
	ms, err := a.routes.matches(ctx, number)
	if err != nil {
		return "", quiet(err)
	}
	for _, m := range ms {
		if n := strings.TrimSpace(string(m.Name)); n != "" {
			return n, nil
		}
	}
	return "", nil
}

// quiet turns deadline and rate-limit failures of a look-up into "no answer" (the dialplan just
// goes on); other errors are returned for the daemon to log.
func quiet(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, api.ErrLocalRateLimit) {
		return nil
	}
	return fmt.Errorf("bitrix24: look-up: %w", err)
}
