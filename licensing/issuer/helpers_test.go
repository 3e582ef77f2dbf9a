package issuer_test

import (
	"context"

	"github.com/pbxbridge/pbxbridge/licensing"
)

// staticHost is a HostSource with fixed raw factors.
type staticHost licensing.RawFactors

func (h staticHost) ReadFactors(context.Context) (licensing.RawFactors, error) {
	out := licensing.RawFactors{}
	for k, v := range h {
		out[k] = v
	}
	return out, nil
}

var hostA = staticHost{
	licensing.FactorMachineID: "3d1219c7c4c5404aaa1f6d2a48adfda4",
	licensing.FactorInstallID: "9f0c2b7e1d3a4c5b8e6f7a9b0c1d2e3f",
	licensing.FactorDMI:       "4c4c4544-0051-3010-8052-b4c04f4d4a32",
	licensing.FactorRootFS:    "0b5a1f1e-2c7d-4e8a-9b3c-5d6e7f8a9b0c",
	licensing.FactorMAC:       "52:54:00:12:34:56",
}
