package connector_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The demo runs the whole product with nothing installed and ends with a summary: calls
// delivered to every CRM, none lost (issue 8 acceptance 1, with a shorter duration).
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	out := runCLI(t, 0, "demo", "--duration", "8s", "--speed", "10", "--rate", "3", "--listen", "127.0.0.1:0")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	m := regexp.MustCompile(`^summary: (\d+) calls played, (\d+) built; delivered amo (\d+), b24 (\d+), kommo (\d+); lost 0; dead letters 0$`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line %q does not report deliveries with 0 lost; output:\n%s", last, out)
	}
	for i, crm := range []string{"amo", "b24", "kommo"} {
		if n, _ := strconv.Atoi(m[3+i]); n == 0 {
			t.Errorf("nothing delivered to %s: %s", crm, last)
		}
	}
	if !strings.Contains(out, "status page: http://127.0.0.1:") {
		t.Errorf("no status page address in:\n%s", out)
	}
}
