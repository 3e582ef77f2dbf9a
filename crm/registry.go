package crm

import (
	"fmt"
	"regexp"
	"slices"
	"sync"
)

// The registry of connector types: the only package-level state, filled by adapters' init().
var (
	registryMu sync.RWMutex
	registry   = map[string]Factory{}
)

var typeName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Register adds a connector type. It panics on an invalid or duplicate type name or a factory
// without constructors: these are programming errors caught by any test that imports the adapter.
func Register(f Factory) {
	if !typeName.MatchString(f.Type) {
		panic(fmt.Sprintf("crm: register: invalid type name %q", f.Type))
	}
	if f.New == nil || f.NewConfig == nil {
		panic(fmt.Sprintf("crm: register %q: New and NewConfig are required", f.Type))
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[f.Type]; dup {
		panic(fmt.Sprintf("crm: register: duplicate type %q", f.Type))
	}
	registry[f.Type] = f
}

// Lookup returns the factory of a connector type.
func Lookup(typ string) (Factory, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	f, ok := registry[typ]
	return f, ok
}

// Types lists the registered connector types, sorted.
func Types() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]string, 0, len(registry))
	for t := range registry {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Licensed returns the registered types that need a licence, with their binding.
func Licensed() map[string]LicenceBinding {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := map[string]LicenceBinding{}
	for t, f := range registry {
		if f.Licence != "" {
			out[t] = f.Licence
		}
	}
	return out
}
