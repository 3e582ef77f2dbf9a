// Command pbxbridge-issuer is the vendor-side licence tool: signing keys, issue, renew, transfer,
// revoke, inspect and verify. It is not packaged with the daemon. Private keys never go into the
// repository.
package main

import (
	"github.com/alecthomas/kong"

	"github.com/pbxbridge/pbxbridge/licensing/issuer"
)

func main() {
	var cli issuer.CLI
	ctx := kong.Parse(&cli,
		kong.Name("pbxbridge-issuer"),
		kong.Description("Vendor-side pbxbridge licence tool. Keep private keys offline."),
		kong.UsageOnError(),
	)
	ctx.FatalIfErrorf(ctx.Run(&issuer.Env{Connectors: issuer.Connectors()}))
}
