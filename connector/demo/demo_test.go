package demo_test

import (
	"bytes"
	"context"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The demo runs the whole product with nothing installed and ends with a summary: calls
// delivered to every CRM, none lost. (The 10-minute run with the defaults is TestDemoTenMinutes,
// in the long tier.)
func TestDemo(t *testing.T) {
	testkit.Tier(t, testkit.Slow)
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := demo.MainIO(context.Background(), "test", []string{"--duration", "5s", "--speed", "10", "--rate", "2", "--listen", "127.0.0.1:0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("demo: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
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
	for _, want := range []string{"\n  status  http://127.0.0.1:", "\n  rate    a new call every 0.5 s (--rate 2/s)", "\n  stop    after 5s or on Ctrl-C"} {
		if !strings.Contains(out, want) {
			t.Errorf("the first screen has no %q:\n%s", want, out)
		}
	}
	// Calls come from different customers and are answered by named employees.
	customers := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  \w+ +\w+ +(\+\d+) `).FindAllStringSubmatch(out, -1) {
		customers[m[1]] = true
	}
	if len(customers) < 3 {
		t.Errorf("calls from %d customers %v, want several; output:\n%s", len(customers), customers, out)
	}
	if !regexp.MustCompile(`answered by (Ivan Petrov \(101\)|Maria Sidorova \(102\)|Anna Smirnova \(103\)) `).MatchString(out) {
		t.Errorf("no call answered by a named employee; output:\n%s", out)
	}
}

// The demo runs until Ctrl-C, so it must outlive its fake CRMs' credentials: with the fake CRMs'
// clock moved a year and a month ahead, a call still reaches every CRM. (The fake amoCRM and
// Kommo took the demo's long-lived token for 24 h only: from the second day amo-demo and
// kommo-demo reported "CRM authorisation broken" and queued every call.)
func TestDemoOutlivesItsCredentials(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now()) // the fake CRMs' clock
	var mu sync.Mutex
	got := map[string]bool{} // connectors the call reached, under mu
	env, err := demo.Start(context.Background(), demo.Options{
		Speed: 10,
		B24:   []fakecrm.Bitrix24Option{fakecrm.B24Clock(clock.Now)},
		Amo:   fakecrm.AmoOptions{Now: clock.Now},
		OnDelivered: func(c string, _ *call.Record) {
			mu.Lock()
			got[c] = true
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Close() }()
	clock.Advance(400 * 24 * time.Hour)
	played, err := env.PBX.Play(context.Background(), "inbound_answered")
	if err != nil {
		t.Fatal(err)
	}
	<-played.Done()
	reached := func() map[string]bool { mu.Lock(); defer mu.Unlock(); return maps.Clone(got) }
	if !testkit.Until(30*time.Second, func() bool { return len(reached()) == 3 }) {
		t.Fatalf("400 days into the demo the call reached only %v; status: %+v", reached(), env.Daemon.Status(context.Background()))
	}
}
