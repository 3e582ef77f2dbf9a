package bitrix24

import (
	"fmt"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
)

func TestConformance(t *testing.T) {
	var cur *env
	crmtest.Run(t, crmtest.Harness{
		New: func(t *testing.T) (crm.Adapter, crmtest.Controller) {
			t.Helper()
			f := crmtest.StartBitrix24(t)
			cur = newEnv(t, f)
			return cur.a, f
		},
		Record: func(i int) *call.Record {
			return answeredInbound(cur, fmt.Sprintf("1795305782.%d", i), "101")
		},
	})
}
