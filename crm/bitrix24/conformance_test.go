package bitrix24

import (
	"fmt"
	"sync"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	var envs sync.Map // *testing.T -> *env: the suite's cases run in parallel
	crmtest.Run(t, crmtest.Harness{
		New: func(t *testing.T) (crm.Adapter, crmtest.Controller) {
			t.Helper()
			f := crmtest.StartBitrix24(t)
			e := newEnv(t, f)
			envs.Store(t, e)
			return e.a, f
		},
		Record: func(t *testing.T, i int) *call.Record {
			t.Helper()
			e, _ := envs.Load(t)
			return answeredInbound(e.(*env), fmt.Sprintf("1795305782.%d", i), "101")
		},
	})
}
