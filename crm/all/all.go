// Package all registers every connector type: import it for its side effects.
package all

import (
	_ "github.com/pbxbridge/pbxbridge/crm/amocrm"   // amocrm and kommo
	_ "github.com/pbxbridge/pbxbridge/crm/bitrix24" // bitrix24
	_ "github.com/pbxbridge/pbxbridge/crm/fake"     // in-process test CRM writing a local file
)
