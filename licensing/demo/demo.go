// Package demo carries the pre-signed demo licences used by `pbxbridge demo`: one per connector
// type, signed with the release keyring's demo key (scope `demo`), valid through 2099-12-31, not
// host-bound, and bound to CRM accounts under the reserved `.invalid` top-level domain.
//
// Two locks keep these files, which ship inside every binary, from unlocking a real CRM: a
// licensing.Service honours demo licences only when built with Options.AllowDemo (which only the
// demo runner sets; `pbxbridge run` rejects them with reason demo_only), and even then a demo
// licence enables a connector only once its adapter reports the matching .invalid account.
//
// The fake CRM servers of the demo must report the accounts returned by Account. The three demo
// accounts below are data of this package, not a registry of connector types.
package demo

import (
	"embed"
	"fmt"
	"sort"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
)

//go:embed *.lic
var files embed.FS

// File is one embedded demo licence.
type File struct {
	Connector string // bitrix24, amocrm or kommo
	Name      string // file name, e.g. "bitrix24.lic"
	Data      []byte // armoured token
}

// Files returns the demo licences, one per connector type, sorted by connector.
func Files() []File {
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(err) // embedded at build time; cannot fail
	}
	var out []File
	for _, e := range entries {
		data, err := files.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		name := e.Name()
		out = append(out, File{Connector: name[:len(name)-len(".lic")], Name: name, Data: data})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Connector < out[j].Connector })
	return out
}

// demoAccount is one demo connector type: how its account binds and the account its demo
// licence is bound to.
type demoAccount struct {
	typ     licensing.ConnectorType
	account licensing.Account
}

func accounts() []demoAccount {
	return []demoAccount{
		{licensing.ConnectorType{Name: "bitrix24", Binding: licensing.BindingDomain}, licensing.Account{Domain: "demo-bitrix24.invalid"}},
		{licensing.ConnectorType{Name: "amocrm", Binding: licensing.BindingAccount}, licensing.Account{Subdomain: "demo-amocrm.invalid"}},
		{licensing.ConnectorType{Name: "kommo", Binding: licensing.BindingAccount}, licensing.Account{Subdomain: "demo-kommo.invalid"}},
	}
}

// Account returns the CRM account a demo connector instance of the given type must report
// (Service.SetAccount) for its demo licence to apply.
func Account(connector string) (licensing.Account, error) {
	for _, a := range accounts() {
		if a.typ.Name == connector {
			return a.account, nil
		}
	}
	return licensing.Account{}, fmt.Errorf("demo: unknown connector %q", connector)
}

// Connectors returns the connector types of the demo licences with their binding kinds (what
// Install verifies them against).
func Connectors() licensing.Connectors {
	var types []licensing.ConnectorType
	for _, a := range accounts() {
		types = append(types, a.typ)
	}
	return licensing.MustConnectors(types...)
}

// Install verifies every demo licence against the release keyring and writes it into dir (e.g. a
// temporary licence directory); it returns the paths. The daemon that reads dir must be built
// with licensing.Options.AllowDemo, or it rejects them.
func Install(dir string) ([]string, error) {
	v := &licensing.Verifier{Keyring: keyring.Release(), Connectors: Connectors(), AllowDemo: true}
	var paths []string
	for _, f := range Files() {
		l, err := v.VerifyFile(f.Data)
		if err != nil {
			return nil, fmt.Errorf("demo: %s: %w", f.Name, err)
		}
		p, err := licensing.Install(dir, l)
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}
