// Command pbxbridge-demo is `pbxbridge demo`: a simulated PBX replaying real Asterisk
// transcripts, fake Bitrix24, amoCRM and Kommo servers, demo licences and the daemon with its
// status page, on this machine. It is a program of its own so that the simulators never ship
// inside the pbxbridge daemon; `pbxbridge demo` hands over to it.
package main

import (
	"os"

	"github.com/pbxbridge/pbxbridge/connector/demo"
)

// version is stamped at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	os.Exit(demo.Main(version, os.Args[1:]))
}
