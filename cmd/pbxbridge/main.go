// Command pbxbridge is the Asterisk → CRM connector daemon and its command line.
package main

import (
	"os"

	"github.com/pbxbridge/pbxbridge/connector/cli"
	_ "github.com/pbxbridge/pbxbridge/crm/all" // every connector type
)

// version is stamped at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	os.Exit(cli.Main(version, os.Args[1:]))
}
