package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// userInfo is one employee with an extension.
type userInfo struct {
	ID     int
	Ext    string
	Name   string
	Active bool
}

// Bounds of the user cache: extensions looked up one by one while the cache is cold (each
// answer is kept for the TTL; when full, answers are not kept), and users loaded from a portal.
const (
	userSingleMax = 2000
	maxUsers      = 100000
)

// userCache maps extensions to Bitrix24 users: config overrides first, then UF_PHONE_INNER of
// the active users, loaded with user.get (first page, then the remaining pages in batches of
// 50 pages) and refreshed in the background before the TTL expires. A cold cache answers single
// extensions with one user.get each (cached too, including "unknown"), so a call never waits for
// a full refresh.
type userCache struct {
	a *Adapter

	mu       sync.RWMutex
	byExt    map[string]userInfo
	byID     map[int]userInfo
	dups     map[string][]int // extensions claimed by several users
	loadedAt time.Time
	single   map[string]singleEntry // extensions looked up one by one while cold
	// singleSwept is when single was last swept of expired answers.
	singleSwept time.Time
	lastErr     error
	kickCh      chan struct{}
}

type singleEntry struct {
	user userInfo
	ok   bool
	at   time.Time
}

func newUserCache(a *Adapter) *userCache {
	return &userCache{a: a, single: map[string]singleEntry{}, kickCh: make(chan struct{}, 1)}
}

// kick asks the background loop to refresh now.
func (c *userCache) kick() {
	select {
	case c.kickCh <- struct{}{}:
	default:
	}
}

// run refreshes the cache until ctx ends: at start, then at 3/4 of the TTL (1 minute after a
// failure), and when kicked.
func (c *userCache) run(ctx context.Context) {
	ttl := c.a.cfg.Users.CacheTTL
	for {
		wait := ttl * 3 / 4
		if err := c.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = time.Minute
		}
		c.a.sweepLive()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.kickCh:
			t.Stop()
		case <-t.C:
		}
	}
}

// refresh loads every active user (batched) and replaces the cache.
func (c *userCache) refresh(ctx context.Context) error {
	users, err := c.fetchAll(ctx)
	if err != nil {
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		c.a.m.userRefresh.WithLabelValues("error").Inc()
		return err
	}
	byExt, byID, dups := map[string]userInfo{}, map[int]userInfo{}, map[string][]int{}
	sort.Slice(users, func(i, j int) bool { return users[i].ID < users[j].ID })
	for _, u := range users {
		info := userInfo{ID: int(u.ID), Ext: strings.TrimSpace(string(u.UFPhoneInner)), Name: u.FullName(), Active: bool(u.Active)}
		if info.ID <= 0 {
			continue
		}
		byID[info.ID] = info
		if info.Ext == "" || !info.Active {
			continue
		}
		if prev, ok := byExt[info.Ext]; ok {
			if len(dups[info.Ext]) == 0 {
				dups[info.Ext] = []int{prev.ID}
			}
			dups[info.Ext] = append(dups[info.Ext], info.ID)
			continue // the lowest id keeps the extension
		}
		byExt[info.Ext] = info
	}
	c.mu.Lock()
	c.byExt, c.byID, c.dups, c.loadedAt, c.lastErr = byExt, byID, dups, c.a.now(), nil
	c.single = map[string]singleEntry{}
	c.mu.Unlock()
	c.a.m.userRefresh.WithLabelValues("ok").Inc()
	c.a.m.usersMapped.Set(float64(len(c.mappedLocked())))
	return nil
}

func (c *userCache) mappedLocked() map[string]bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := map[string]bool{}
	for ext := range c.byExt {
		out[ext] = true
	}
	for ext := range c.a.cfg.Users.Map {
		out[ext] = true
	}
	return out
}

// fetchAll reads all active users: page one directly, the rest in batches.
func (c *userCache) fetchAll(ctx context.Context) ([]api.User, error) {
	filter := map[string]any{"ACTIVE": true}
	first, next, total, err := c.a.client.GetUsers(ctx, filter, 0)
	if err != nil {
		return nil, fmt.Errorf("loading users: %w", err)
	}
	all := first
	if next == 0 || total <= len(first) {
		return all, nil
	}
	if total > maxUsers {
		return nil, fmt.Errorf("loading users: the portal reports %d active users, pbxbridge loads at most %d (map extensions with users.map)", total, maxUsers)
	}
	var starts []int
	for s := next; s < total; s += api.UserPageSize {
		starts = append(starts, s)
	}
	for len(starts) > 0 {
		n := min(len(starts), api.MaxBatch)
		cmds := make([]api.BatchCmd, 0, n)
		for _, s := range starts[:n] {
			cmds = append(cmds, api.BatchCmd{Key: "p" + strconv.Itoa(s), Method: "user.get",
				Params: url.Values{"FILTER[ACTIVE]": {"true"}, "start": {strconv.Itoa(s)}}})
		}
		starts = starts[n:]
		res, err := c.a.client.Batch(ctx, cmds, false)
		if err != nil {
			return nil, fmt.Errorf("loading users: %w", err)
		}
		for k, e := range res.Errors {
			return nil, fmt.Errorf("loading users (%s): %w", k, e)
		}
		for _, cmd := range cmds {
			us, err := api.DecodeUsers(res.Result[cmd.Key])
			if err != nil {
				return nil, fmt.Errorf("loading users: %w", err)
			}
			all = append(all, us...)
		}
	}
	return all, nil
}

// fresh reports whether a full load happened within the TTL.
func (c *userCache) fresh() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byExt != nil && c.a.now().Sub(c.loadedAt) < c.a.cfg.Users.CacheTTL
}

// lookup returns the user of an extension: (user, true) when found; (zero, false) when the
// extension has no user. It asks the portal only while the cache was never loaded.
func (c *userCache) lookup(ctx context.Context, ext string) (userInfo, bool, error) {
	ext = strings.TrimSpace(ext)
	if ext == "" {
		return userInfo{}, false, nil
	}
	if u, ok, done := c.a.hookEmployee(ctx, ext); done {
		return u, ok, nil
	}
	if id, ok := c.a.cfg.Users.Map[ext]; ok {
		return userInfo{ID: id, Ext: ext, Active: true}, true, nil
	}
	c.mu.RLock()
	loaded := c.byExt != nil
	u, ok := c.byExt[ext]
	s, sok := c.single[ext]
	c.mu.RUnlock()
	if loaded {
		if !c.fresh() {
			c.kick()
		}
		return u, ok, nil
	}
	if sok && c.a.now().Sub(s.at) < c.a.cfg.Users.CacheTTL {
		return s.user, s.ok, nil
	}
	users, _, _, err := c.a.client.GetUsers(ctx, map[string]any{"UF_PHONE_INNER": ext, "ACTIVE": true}, 0)
	if err != nil {
		return userInfo{}, false, fmt.Errorf("looking up extension %s: %w", ext, err)
	}
	e := singleEntry{at: c.a.now()}
	for _, x := range users {
		if strings.TrimSpace(string(x.UFPhoneInner)) == ext && x.Active && x.ID > 0 {
			e.user, e.ok = userInfo{ID: int(x.ID), Ext: ext, Name: x.FullName(), Active: true}, true
			break
		}
	}
	c.mu.Lock()
	if now := c.a.now(); len(c.single) >= userSingleMax && now.Sub(c.singleSwept) > time.Minute {
		c.singleSwept = now
		for k, v := range c.single {
			if c.a.now().Sub(v.at) >= c.a.cfg.Users.CacheTTL {
				delete(c.single, k)
			}
		}
	}
	if len(c.single) < userSingleMax {
		c.single[ext] = e
	} else {
		c.a.m.cacheFull.WithLabelValues("users").Inc()
	}
	c.mu.Unlock()
	return e.user, e.ok, nil
}

// extOf returns the extension of a user id ("" when none).
func (c *userCache) extOf(ctx context.Context, id int) (string, error) {
	var exts []string
	for ext, uid := range c.a.cfg.Users.Map {
		if uid == id {
			exts = append(exts, ext)
		}
	}
	if len(exts) > 0 {
		sort.Strings(exts)
		return exts[0], nil
	}
	c.mu.RLock()
	loaded := c.byExt != nil
	u, ok := c.byID[id]
	c.mu.RUnlock()
	if loaded {
		if ok && u.Active {
			return u.Ext, nil
		}
		if c.fresh() {
			return "", nil
		}
	}
	users, _, _, err := c.a.client.GetUsers(ctx, map[string]any{"ID": id}, 0)
	if err != nil {
		return "", fmt.Errorf("looking up user %d: %w", id, err)
	}
	for _, x := range users {
		if int(x.ID) == id && x.Active {
			return strings.TrimSpace(string(x.UFPhoneInner)), nil
		}
	}
	return "", nil
}

// snapshot returns the cache for the probe.
func (c *userCache) snapshot() (byExt map[string]userInfo, byID map[int]userInfo, dups map[string][]int, loaded bool, err error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byExt, c.byID, c.dups, c.byExt != nil, c.lastErr
}

// errNoUser is returned when an extension has no user and no default user is configured.
var errNoUser = errors.New("no Bitrix24 user")

// userFor resolves the user a call is logged under. An extension without a user falls back to
// the configured default user, with a warning in the call's timeline and a metric; without a
// default the call fails permanently (nothing a retry could fix).
func (a *Adapter) userFor(ctx context.Context, ext, role string) (int, error) {
	if ext != "" {
		u, ok, err := a.users.lookup(ctx, ext)
		if err != nil {
			return 0, err
		}
		if ok {
			return u.ID, nil
		}
	}
	a.m.unknownExt.Inc()
	what := "no extension is known for the " + role
	if ext != "" {
		what = "extension " + ext + " (" + role + ") has no Bitrix24 user (set the user's Internal phone, UF_PHONE_INNER, or users.map)"
	}
	def := a.cfg.Users.DefaultUserID
	if def <= 0 {
		crm.Trace(ctx, "decision", "warning: "+what+", and users.default_user_id is not set", "")
		return 0, crm.Permanent(fmt.Errorf("%w: %s, and users.default_user_id is not set", errNoUser, what))
	}
	crm.Trace(ctx, "decision", fmt.Sprintf("warning: %s; using the default user %d", what, def), "")
	return def, nil
}
