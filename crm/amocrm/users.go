package amocrm

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

// maxAutoMapped bounds the extensions auto_map_users takes from the account's user list (what
// amoCRM answers is not trusted to be small); users beyond it are not mapped and the adapter
// logs it.
const maxAutoMapped = 10_000

// userMap maps extensions to amoCRM users: the config's users: first, then (auto_map_users) the
// users whose profile phone number is an extension, at most maxAutoMapped of them. Safe for
// concurrent use.
type userMap struct {
	mu     sync.RWMutex
	fixed  map[string]int64
	byExt  map[string]int64
	byUser map[int64]string
	names  map[int64]string // user -> name, from the last user list (loadUsers)
	// namesWanted is set by the first UserName: from then on loadUsers keeps the names.
	namesWanted atomic.Bool
	namesKick   chan struct{} // asks the upkeep loop to load the names now
	dir         inactiveUsers // for crm.UserDirectory (directory.go)
}

func newUserMap(fixed map[string]int64) *userMap {
	m := &userMap{fixed: map[string]int64{}, namesKick: make(chan struct{}, 1)}
	for k, v := range fixed {
		m.fixed[k] = v
	}
	m.apply(nil)
	return m
}

// apply rebuilds the maps from the fixed mapping plus auto (extension → user).
func (m *userMap) apply(auto map[string]int64) {
	byExt := map[string]int64{}
	byUser := map[int64]string{}
	for _, ext := range slices.Sorted(maps.Keys(m.fixed)) {
		u := m.fixed[ext]
		byExt[ext] = u
		if _, ok := byUser[u]; !ok {
			byUser[u] = ext
		}
	}
	for _, ext := range slices.Sorted(maps.Keys(auto)) {
		if _, ok := byExt[ext]; ok {
			continue
		}
		u := auto[ext]
		byExt[ext] = u
		if _, ok := byUser[u]; !ok {
			byUser[u] = ext
		}
	}
	m.mu.Lock()
	m.byExt, m.byUser = byExt, byUser
	m.mu.Unlock()
}

func (m *userMap) user(ext string) int64 {
	if ext == "" {
		return 0
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.byExt[ext]
}

func (m *userMap) ext(user int64) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.byUser[user]
}

// setNames keeps the users' names (user -> name).
func (m *userMap) setNames(names map[int64]string) {
	m.mu.Lock()
	m.names = names
	m.mu.Unlock()
}

func (m *userMap) snapshot() map[string]int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]int64, len(m.byExt))
	for k, v := range m.byExt {
		out[k] = v
	}
	return out
}

// loadUsers reads the account's users: their names (crm.UserDirectory) and, with auto_map_users,
// the users whose phone_number is an extension.
func (a *Adapter) loadUsers(ctx context.Context) error {
	users, err := a.client.Users(ctx, a.cfg.AutoMapUsers)
	if err != nil {
		return fmt.Errorf("%s: listing users: %w", a.typ, err)
	}
	names := make(map[int64]string, len(users))
	inactive := map[int64]bool{}
	for _, u := range users {
		if u.ID > 0 && u.Name != "" && len(names) < maxAutoMapped {
			names[u.ID] = u.Name
		}
		if u.ID > 0 && !u.Active() && len(inactive) < maxAutoMapped {
			inactive[u.ID] = true
		}
	}
	a.users.setNames(names)
	a.users.setInactive(inactive) // directory.go
	if !a.cfg.AutoMapUsers {
		return nil
	}
	auto := map[string]int64{}
	skipped := 0
	for _, u := range users {
		if !u.Active() || u.PhoneNumber == "" || u.ID <= 0 {
			continue
		}
		ext := extFromPhone(u.PhoneNumber)
		if _, taken := auto[ext]; ext == "" || taken {
			continue
		}
		if len(auto) >= maxAutoMapped {
			skipped++
			continue
		}
		auto[ext] = u.ID
	}
	if skipped > 0 {
		a.log.Warn("auto_map_users: too many users have an extension as their phone number; the rest are not mapped",
			"mapped", len(auto), "not_mapped", skipped)
	}
	a.users.apply(auto)
	return nil
}

// extFromPhone returns the extension a profile phone number names: a short number of 2 to 6
// digits (full phone numbers are not extensions).
func extFromPhone(p string) string {
	d := lastDigits(p, 32)
	if len(d) < 2 || len(d) > 6 || len(d) != len(p) {
		return ""
	}
	return d
}

// Responsible implements crm.Router: the extension of the contact's responsible user.
func (a *Adapter) Responsible(ctx context.Context, number string) (string, error) {
	c, err := a.findContact(api.WithPriority(ctx, api.PriorityLive), number)
	if err != nil {
		a.m.routing.WithLabelValues("responsible", "error").Inc()
		return "", classify(fmt.Errorf("%s: finding the contact: %w", a.typ, err))
	}
	if c == nil || c.ResponsibleUserID == 0 {
		a.m.routing.WithLabelValues("responsible", "unknown").Inc()
		return "", nil
	}
	ext := a.users.ext(c.ResponsibleUserID)
	if ext == "" {
		a.m.routing.WithLabelValues("responsible", "unknown").Inc()
		return "", nil
	}
	a.m.routing.WithLabelValues("responsible", "found").Inc()
	return ext, nil
}

// Lookup implements crm.Router: the contact's name.
func (a *Adapter) Lookup(ctx context.Context, number string) (string, error) {
	c, err := a.findContact(api.WithPriority(ctx, api.PriorityLive), number)
	if err != nil {
		a.m.routing.WithLabelValues("lookup", "error").Inc()
		return "", classify(fmt.Errorf("%s: finding the contact: %w", a.typ, err))
	}
	if c == nil {
		a.m.routing.WithLabelValues("lookup", "unknown").Inc()
		return "", nil
	}
	a.m.routing.WithLabelValues("lookup", "found").Inc()
	return c.Name, nil
}

var _ crm.Router = (*Adapter)(nil)
