// Package demo carries the pre-signed demo licences used by `pbxbridge demo`: one per connector
// type, signed with the release keyring's demo key (scope `demo`), valid through 2099-12-31, not
// host-bound, and bound to CRM accounts under the reserved `.invalid` top-level domain. The
// verifier accepts demo tokens only with such a binding and enables the connector only once the
// adapter reports the matching account, so these files can never unlock a real CRM.
//
// The fake CRM servers of the demo must report the accounts returned by Account.
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

// Account returns the CRM account a demo connector instance of the given type must report
// (Service.SetAccount) for its demo licence to apply.
func Account(connector string) (licensing.Account, error) {
	switch connector {
	case licensing.ConnectorBitrix24:
		return licensing.Account{Domain: "demo-bitrix24.invalid"}, nil
	case licensing.ConnectorAmoCRM:
		return licensing.Account{Subdomain: "demo-amocrm.invalid"}, nil
	case licensing.ConnectorKommo:
		return licensing.Account{Subdomain: "demo-kommo.invalid"}, nil
	}
	return licensing.Account{}, fmt.Errorf("demo: unknown connector %q", connector)
}

// Install verifies every demo licence against the release keyring and writes it into dir (e.g. a
// temporary licence directory); it returns the paths.
func Install(dir string) ([]string, error) {
	v := &licensing.Verifier{Keyring: keyring.Release()}
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
