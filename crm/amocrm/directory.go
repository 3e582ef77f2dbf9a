package amocrm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
)

// How long the account's user list is kept for crm.UserDirectory, and how long a failed load
// keeps the adapter from asking again.
const (
	directoryTTL   = 5 * time.Minute
	directoryRetry = time.Minute
)

// errDirectoryLoading: another caller is loading the user list for the first time.
var errDirectoryLoading = errors.New("the user list is being loaded")

// userDirectory keeps the account's users (their names) for crm.UserDirectory. The zero value is
// ready. One caller at a time loads; the others get what is kept.
type userDirectory struct {
	mu       sync.Mutex
	users    []api.User
	at       time.Time // last successful load
	failedAt time.Time // last failed load, zero after a success
	err      error
	loading  bool
}

// get returns the kept users, loading them with load when they are older than directoryTTL
// (and the last failure is older than directoryRetry).
func (d *userDirectory) get(ctx context.Context, now time.Time, load func(context.Context) ([]api.User, error)) ([]api.User, error) {
	d.mu.Lock()
	fresh := !d.at.IsZero() && now.Sub(d.at) < directoryTTL
	resting := !d.failedAt.IsZero() && now.Sub(d.failedAt) < directoryRetry
	if fresh || resting || d.loading {
		users, err := d.users, d.err
		switch {
		case fresh:
			err = nil
		case d.loading && d.at.IsZero() && err == nil:
			err = errDirectoryLoading
		}
		d.mu.Unlock()
		return users, err
	}
	d.loading = true
	d.mu.Unlock()

	users, err := load(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.loading = false
	if err != nil {
		d.failedAt, d.err = now, err
		return d.users, err
	}
	d.users, d.at, d.failedAt, d.err = users, now, time.Time{}, nil
	return users, nil
}

// Users implements crm.UserDirectory: the extension mapping (the config's users first, then
// auto_map_users) with the users' names, then the account's users no extension reaches. The
// account's user list is read at most every 5 minutes (GET /api/v4/users); when it cannot be
// read, the mapping is returned without names, with the error.
func (a *Adapter) Users(ctx context.Context) ([]crm.User, error) {
	list, err := a.dir.get(ctx, a.now(), func(ctx context.Context) ([]api.User, error) {
		return a.client.Users(ctx, false)
	})
	byID := make(map[int64]*api.User, len(list))
	for i := range list {
		byID[list[i].ID] = &list[i]
	}
	known := len(list) > 0
	var out []crm.User
	mapped := map[int64]bool{}
	mapping := a.users.snapshot()
	for _, ext := range slices.Sorted(maps.Keys(mapping)) {
		id := mapping[ext]
		u := crm.User{ID: strconv.FormatInt(id, 10), Ext: ext, Active: true, Source: crm.UserFromCRM}
		if _, fixed := a.cfg.Users[ext]; fixed {
			u.Source = crm.UserFromConfig
		}
		if au, ok := byID[id]; ok {
			u.Name, u.Active = au.Name, au.Active()
		} else if known {
			u.Active = false // not a user of this account
		}
		mapped[id] = true
		out = append(out, u)
	}
	for _, au := range slices.SortedFunc(slices.Values(list), func(x, y api.User) int { return cmp.Compare(x.ID, y.ID) }) {
		if !mapped[au.ID] && au.ID > 0 {
			out = append(out, crm.User{ID: strconv.FormatInt(au.ID, 10), Name: au.Name, Active: au.Active()})
		}
	}
	if err != nil {
		return out, fmt.Errorf("%s: listing users: %w", a.typ, err)
	}
	return out, nil
}

var _ crm.UserDirectory = (*Adapter)(nil)
