package amocrm

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The user directory is the extension mapping with the account's names, then the users no
// extension reaches; the user list is read once per directoryTTL, and an unreachable account
// still gives the mapping, with the error.
func TestUsersDirectory(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, TypeAmoCRM, envOpt{longLived: true, now: clock, mutate: func(c *Config) {
		c.Users = map[string]int64{"101": 504141, "105": 777}
	}})

	got, err := e.a.Users(context.Background())
	if err != nil {
		t.Fatal(err)
	}
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
	listed := func() int { return e.state().Requests["GET /api/v4/users"] }
	if n := listed(); n != 1 {
		t.Fatalf("%d user list requests, want 1", n)
	}
	advance(directoryTTL / 2)
	if _, err := e.a.Users(context.Background()); err != nil || listed() != 1 {
		t.Fatalf("within the TTL: %v, %d user list requests, want 1", err, listed())
	}

	// The account fails: the kept list goes on until it is older than the TTL, then the
	// mapping comes with the error, and the account is not asked again for directoryRetry.
	e.fake.Inject(fakecrm.FaultServerError)
	advance(directoryTTL)
	got, err = e.a.Users(context.Background())
	if err == nil || len(got) != 4 || got[0].Name != "Ivan Petrov" {
		t.Fatalf("after a failed refresh: %+v, %v; want the kept list and an error", got, err)
	}
	n := listed()
	if _, err := e.a.Users(context.Background()); err == nil || listed() != n {
		t.Fatalf("within directoryRetry: %v, %d requests, want the error again and no request", err, listed()-n)
	}
	e.fake.Inject(fakecrm.FaultNone)
	advance(directoryRetry)
	if _, err := e.a.Users(context.Background()); err != nil || listed() != n+1 {
		t.Fatalf("after directoryRetry: %v, %d requests, want a fresh list", err, listed()-n)
	}
}

// Before the first list arrives, Users gives the configured mapping without names and an error.
func TestUsersDirectoryUnreachable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, TypeKommo, envOpt{longLived: true})
	e.fake.Inject(fakecrm.FaultServerError)
	got, err := e.a.Users(context.Background())
	if err == nil || len(got) != 3 || got[0].Ext != "101" || got[0].Name != "" || !got[0].Active || got[0].Source != crm.UserFromConfig {
		t.Fatalf("unreachable account: %+v, %v", got, err)
	}
}
