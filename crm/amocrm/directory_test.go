package amocrm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// usersWhenLoaded calls Users until the account's user list has been read (the first call asks
// the upkeep loop for it).
func usersWhenLoaded(t *testing.T, a *Adapter) []crm.User {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := a.Users(context.Background())
		if err == nil {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the user list was not read: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The user directory is the extension mapping with the users' names, then the active users no
// extension reaches; before the account's user list is read it is the mapping and an error, and
// asking for it sends no request of its own.
func TestUsersDirectory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeAmoCRM, envOpt{longLived: true, mutate: func(c *Config) {
		c.Users = map[string]int64{"101": 504141, "105": 777}
	}})
	listed := func() int { return e.state().Requests["GET /api/v4/users"] }
	got, err := e.a.Users(context.Background())
	if err == nil || len(got) != 2 || got[0].Ext != "101" || got[0].Name != "" || !got[0].Active || got[0].Source != crm.UserFromConfig {
		t.Fatalf("before the user list is read: %+v, %v; want the mapping and an error", got, err)
	}
	got = usersWhenLoaded(t, e.a)
	want := []string{
		"101 504141 Ivan Petrov active config",
		"105 777  inactive config", // not a user of the account
		" 504142 Maria Sidorova active ",
		" 504143 Anna Smirnova active ",
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
	for range 5 {
		if _, err := e.a.Users(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The upkeep loop reads the list once when asked (twice if the ask raced its first round);
	// Users itself sends nothing.
	if n := listed(); n < 1 || n > 2 {
		t.Errorf("%d user list requests after 6 Users; want the upkeep loop's 1 or 2", n)
	}
}

// A deactivated user is shown as such where an extension maps to them, and not listed among the
// users no extension reaches; an account that cannot be read leaves the mapping and the error.
func TestUsersDirectoryInactive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeKommo, envOpt{longLived: true, mutate: func(c *Config) { c.Users = map[string]int64{"101": 504141} }})
	usersWhenLoaded(t, e.a)
	e.a.users.setInactive(map[int64]bool{504141: true, 504143: true}) // as the next user list would
	got, err := e.a.Users(context.Background())
	if err != nil || len(got) != 2 || got[0].ID != "504141" || got[0].Active || got[1].ID != "504142" {
		t.Errorf("with inactive users: %+v, %v", got, err)
	}

	down := newEnv(t, TypeKommo, envOpt{longLived: true})
	down.fake.Inject(fakecrm.FaultServerError)
	if got, err := down.a.Users(context.Background()); err == nil || len(got) != 3 || got[0].Name != "" {
		t.Errorf("an unreachable account: %+v, %v", got, err)
	}
}
