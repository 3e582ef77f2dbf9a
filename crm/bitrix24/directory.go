package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/pbxbridge/pbxbridge/crm"
)

// Users implements crm.UserDirectory from the user cache (no request to the portal): users.map
// first, then the active users whose Internal phone (UF_PHONE_INNER) is an extension, then the
// active users without one. A user who lost a shared Internal phone to a lower id is listed
// after the winner with the same extension. Before the first load of the cache it returns the
// users.map entries and an error.
func (a *Adapter) Users(_ context.Context) ([]crm.User, error) {
	byExt, byID, dups, loaded, lastErr := a.users.snapshot()
	var out []crm.User
	listed := map[int]bool{}
	for _, ext := range slices.Sorted(maps.Keys(a.cfg.Users.Map)) {
		id := a.cfg.Users.Map[ext]
		u := crm.User{ID: strconv.Itoa(id), Ext: ext, Active: true, Source: crm.UserFromConfig}
		if info, ok := byID[id]; ok {
			u.Name = info.Name
		} else if loaded {
			u.Active = false // the cache holds every active user
		}
		listed[id] = true
		out = append(out, u)
	}
	for _, ext := range slices.Sorted(maps.Keys(byExt)) {
		if _, overridden := a.cfg.Users.Map[ext]; overridden {
			continue
		}
		ids := dups[ext]
		if len(ids) == 0 {
			ids = []int{byExt[ext].ID}
		}
		for _, id := range ids {
			info := byID[id]
			out = append(out, crm.User{ID: strconv.Itoa(id), Name: info.Name, Ext: ext, Active: true, Source: crm.UserFromCRM})
			listed[id] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		if !listed[id] {
			info := byID[id]
			out = append(out, crm.User{ID: strconv.Itoa(id), Name: info.Name, Active: info.Active})
		}
	}
	if !loaded {
		if lastErr != nil {
			return out, fmt.Errorf("bitrix24: the user list is not loaded yet: %w", lastErr)
		}
		return out, errors.New("bitrix24: the user list is not loaded yet")
	}
	return out, nil
}

var _ crm.UserDirectory = (*Adapter)(nil)
