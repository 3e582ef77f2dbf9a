package loadtest

import (
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

// The throughput run's filtered PBX applies exactly the lines docs/asterisk.md recommends, and
// Asterisk's rules (as the simulated PBX reproduces them) accept them.
func TestRecommendedEventFilter(t *testing.T) {
	t.Parallel()
	lines, err := RecommendedEventFilter()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fakepbx.ParseEventFilter(lines); err != nil {
		t.Fatalf("the simulated PBX refuses the recommended lines: %v", err)
	}
	if joined := strings.Join(lines, "\n"); !strings.Contains(joined, "FROM_DID") || !strings.Contains(joined, "name(Newchannel)") {
		t.Errorf("lines lack the default variables or events:\n%s", joined)
	}
}
