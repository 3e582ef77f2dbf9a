package amocrm

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"

	"github.com/pbxbridge/pbxbridge/crm"
)

// errDirectoryLoading: the account's user list has not been read yet.
var errDirectoryLoading = errors.New("the account's user list is not read yet (it is read in the background, then every 15 minutes)")

// inactiveUsers is the part of userMap the directory adds: the users the last user list marked
// as not active.
type inactiveUsers struct {
	inactive map[int64]bool
}

// setInactive keeps the users the last user list marked as not active.
func (m *userMap) setInactive(inactive map[int64]bool) {
	m.mu.Lock()
	m.dir.inactive = inactive
	m.mu.Unlock()
}

// Users implements crm.UserDirectory from what the adapter holds (no request): the extension
// mapping (the config's users first, then auto_map_users) with the users' names, then the active
// users no extension reaches. The names come from the account's user list, which the adapter
// reads in the background once names are wanted (the first Users asks for it) and
// every 15 minutes after; until it is read, Users returns the mapping without names and an
// error saying so.
func (a *Adapter) Users(_ context.Context) ([]crm.User, error) {
	a.wantNames()
	m := a.users
	m.mu.RLock()
	names, inactive := m.names, m.dir.inactive
	mapping := maps.Clone(m.byExt)
	m.mu.RUnlock()
	loaded := names != nil

	var out []crm.User
	mapped := map[int64]bool{}
	for _, ext := range slices.Sorted(maps.Keys(mapping)) {
		id := mapping[ext]
		u := crm.User{ID: strconv.FormatInt(id, 10), Ext: ext, Active: true, Source: crm.UserFromCRM}
		if _, fixed := a.cfg.Users[ext]; fixed {
			u.Source = crm.UserFromConfig
		}
		if loaded {
			name, listed := names[id]
			u.Name, u.Active = name, listed && !inactive[id]
		}
		mapped[id] = true
		out = append(out, u)
	}
	for _, id := range slices.Sorted(maps.Keys(names)) {
		if !mapped[id] && !inactive[id] {
			out = append(out, crm.User{ID: strconv.FormatInt(id, 10), Name: names[id], Active: true})
		}
	}
	if !loaded {
		return out, errDirectoryLoading
	}
	return out, nil
}

// wantNames asks the upkeep loop, once, to read the account's user list (as UserName does).
func (a *Adapter) wantNames() {
	if !a.users.namesWanted.Swap(true) {
		select {
		case a.users.namesKick <- struct{}{}:
		default:
		}
	}
}

var _ crm.UserDirectory = (*Adapter)(nil)
