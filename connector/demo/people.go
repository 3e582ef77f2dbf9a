package demo

import (
	"math/rand/v2"
	"strings"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The people of the demo: the customers its calls come from and go to, and the employees of
// the office in every demo CRM.

// customerPool is the numbers the demo's calls come from and go to, in E.164. The first four
// are known to the demo CRMs (Bitrix24 and amoCRM/Kommo alike; see demoB24Entities and
// fakecrm.AmoDemoAccount): a call from them lands on the contact. The others are unknown:
// their first call creates a lead.
func customerPool() []string {
	return []string{
		"+79001234567", // contact John Doe (Bitrix24) / Ivan Ivanov (amoCRM), with an open deal
		"+79165550102", // contact Olga Kuznetsova
		"+79037000001", // contact Pavel Orlov
		"+74957654321", // company Romashka LLC (Bitrix24)
		"+79035551020",
		"+79104442211",
		"+79217770345",
		"+79263338899",
		"+79854445566",
		"+79651237788",
		"+79998887766",
		"+79112223344",
	}
}

// Customers returns a fakepbx.Config.Customers that gives each played call customers drawn from
// the demo's pool of numbers, distinct within a call while the pool lasts, in the same sequence
// for the same seed. The simulated PBX calls it from Play, one call at a time.
func Customers(seed uint64) func(scenario string, orig []string) []string {
	pool := customerPool()
	rng := rand.New(rand.NewPCG(seed, seed^0xc057)) //nolint:gosec // a reproducible draw, not a secret
	return func(_ string, orig []string) []string {
		out := make([]string, len(orig))
		perm := rng.Perm(len(pool))
		for i := range out {
			if i < len(perm) {
				out[i] = pool[perm[i]]
			} else {
				out[i] = pool[rng.IntN(len(pool))]
			}
		}
		return out
	}
}

// demoB24Users are the fake Bitrix24's employees in the demo: fakecrm's defaults (the same ids
// and extensions) named as the lab office and the demo amoCRM/Kommo account name them, so every
// CRM shows the same person for an extension (101 Ivan Petrov, 102 Maria Sidorova, 103 Anna
// Smirnova; see asterisk/transcripts/README.md and fakecrm.AmoDemoAccount).
func demoB24Users() []fakecrm.B24User {
	names := map[string][2]string{"101": {"Ivan", "Petrov"}, "102": {"Maria", "Sidorova"}, "103": {"Anna", "Smirnova"}}
	users := fakecrm.DefaultB24Users()
	for i, u := range users {
		if n, ok := names[u.Ext]; ok {
			users[i].Name, users[i].LastName = n[0], n[1]
		}
	}
	return users
}

// demoB24Entities are the fake Bitrix24's CRM objects in the demo: fakecrm's defaults plus the
// amoCRM demo account's other contacts, so the known customers are known everywhere.
func demoB24Entities() []fakecrm.B24Entity {
	return append(fakecrm.DefaultB24Entities(),
		fakecrm.B24Entity{Type: "CONTACT", ID: 798, Name: "Olga Kuznetsova", Phone: "+79165550102", AssignedBy: 1269},
		fakecrm.B24Entity{Type: "CONTACT", ID: 799, Name: "Pavel Orlov", Phone: "+79037000001", AssignedBy: 1271},
	)
}

// demoAmoUsers is the users map of the demo's amoCRM and Kommo connectors (demoConfig):
// extension -> user of fakecrm.AmoDemoAccount.
func demoAmoUsers() map[string]int64 {
	return map[string]int64{"101": 504141, "102": 504142, "103": 504143}
}

// employees maps extensions to the names a demo CRM gives its users: Bitrix24's UF_PHONE_INNER,
// amoCRM's and Kommo's by the demo config's users map.
type employees map[string]string

// label is how the demo's output names an extension: "Ivan Petrov (101)", or the bare
// extension when the CRM has no name for it.
func (e employees) label(ext string) string {
	if n := e[ext]; n != "" {
		return n + " (" + ext + ")"
	}
	return ext
}

// b24Employees reads the fake Bitrix24's active users with an extension.
func b24Employees(f *fakecrm.Bitrix24) employees {
	out := employees{}
	for _, u := range f.State().Users {
		if u.Ext != "" && u.Active {
			out[u.Ext] = strings.TrimSpace(u.Name + " " + u.LastName)
		}
	}
	return out
}

// amoEmployees reads the names of a fake amoCRM/Kommo account's users mapped by users
// (extension → user id).
func amoEmployees(f *fakecrm.AmoCRM, users map[string]int64) employees {
	names := map[int64]string{}
	for _, a := range f.State().Accounts {
		for _, u := range a.Users {
			names[u.ID] = u.Name
		}
	}
	out := employees{}
	for ext, id := range users {
		if n := names[id]; n != "" {
			out[ext] = n
		}
	}
	return out
}
