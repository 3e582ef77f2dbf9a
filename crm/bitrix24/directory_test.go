package bitrix24

import (
	"context"
	"fmt"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The user directory lists users.map first, then the users whose Internal phone is an extension
// (a shared one: the lowest id first), then the users without one; before the cache is loaded it
// lists users.map with an error.
func TestUsersDirectory(t *testing.T) {
	t.Parallel()
	users := append(fakecrm.DefaultB24Users(), fakecrm.B24User{ID: 1300, Name: "Petr", LastName: "Twin", Ext: "102", Active: true})
	f := crmtest.StartBitrix24(t, fakecrm.B24Users(users...))
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.Users.Map = map[string]int{"109": 1271, "110": 9999} })

	got, err := e.a.Users(context.Background())
	if err == nil || len(got) != 2 || got[0].Ext != "109" || got[0].Name != "" || got[0].Source != crm.UserFromConfig {
		t.Fatalf("before the first load: %+v, %v; want users.map and an error", got, err)
	}
	if err := e.a.users.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := f.State().Requests["user.get"]
	got, err = e.a.Users(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"109 1271 Ivan Petrov active config",
		"110 9999  inactive config", // not an active user of the portal
		"101 1269 Anna Smith active crm",
		"102 1270 Maria Sidorova active crm",
		"102 1300 Petr Twin active crm", // loses the shared Internal phone to 1270
		"103 1271 Ivan Petrov active crm",
		" 1 Admin Adminov active ", // no extension
	}
	if len(got) != len(want) {
		t.Fatalf("users %+v", got)
	}
	for i, u := range got {
		state := "inactive"
		if u.Active {
			state = "active"
		}
		if s := fmt.Sprintf("%s %s %s %s %s", u.Ext, u.ID, u.Name, state, u.Source); s != want[i] {
			t.Errorf("user %d: %q, want %q", i, s, want[i])
		}
	}
	if n := f.State().Requests["user.get"]; n != before {
		t.Errorf("Users asked the portal (%d user.get), want none", n-before)
	}
}
