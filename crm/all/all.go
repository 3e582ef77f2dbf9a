// Package all registers every connector type the daemon ships: import it for its side effects.
// The in-process test CRM (crm/fake) is not among them: tests and the load harness import it
// themselves.
package all

import (
	_ "github.com/pbxbridge/pbxbridge/crm/amocrm"   // amocrm and kommo
	_ "github.com/pbxbridge/pbxbridge/crm/bitrix24" // bitrix24
)
