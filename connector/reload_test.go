package connector_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/crm/fake"
)

type notifications struct {
	mu     sync.Mutex
	states []string
}

func (n *notifications) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.states = append(n.states, s)
}

func (n *notifications) has(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.states {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// A bad new config is refused and the old one keeps running; a good one is applied without
// dropping calls; systemd hears READY after the first AMI login and STOPPING at shutdown.
func TestReloadAndNotify(t *testing.T) {
	pbx, err := fakepbx.Start(fakepbx.Config{Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	path := testConfig(t, pbx.Addr(), "")
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var n notifications
	d, err := connector.New(cfg, connector.Options{Version: "test", Notify: n.add})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, 10*time.Second, "READY=1", func() bool { return n.has("READY=1") })
	adapter := d.Adapter("crm").(*fake.Adapter)

	good, _ := os.ReadFile(path)
	// A config with two problems: refused, both reported, the daemon keeps delivering.
	bad := strings.Replace(string(good), "backoff_max: 50ms", "backoff_max: soon", 1)
	bad = strings.Replace(bad, "type: fake", "type: fake\n    bogus: 1", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	err = d.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "backoff_max") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("bad reload: %v", err)
	}
	if v := gauge(t, d, "pbxbridge_config_last_reload_successful"); v != 0 {
		t.Fatalf("reload metric = %v after a refused config", v)
	}
	if d.Adapter("crm") != adapter {
		t.Fatal("the refused config replaced the connector")
	}
	call, _ := pbx.Play(context.Background(), "inbound_answered")
	<-call.Done()
	waitFor(t, 10*time.Second, "delivery under the old config", func() bool { return len(adapter.Delivered()) == 1 })

	// A good change to the connector: it restarts (drained), the PBX connection is untouched.
	logins := pbx.Stats().Logins
	changed := strings.Replace(string(good), "directions: [inbound, outbound]", "directions: [inbound]", 1)
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatalf("good reload: %v", err)
	}
	if v := gauge(t, d, "pbxbridge_config_last_reload_successful"); v != 1 {
		t.Fatalf("reload metric = %v after a good config", v)
	}
	if d.Adapter("crm") == adapter {
		t.Fatal("the changed connector was not restarted")
	}
	if pbx.Stats().Logins != logins {
		t.Fatal("an unchanged PBX reconnected on reload")
	}
	out, _ := pbx.Play(context.Background(), "outbound_answered")
	in, _ := pbx.Play(context.Background(), "inbound_missed")
	<-out.Done()
	<-in.Done()
	a2 := d.Adapter("crm").(*fake.Adapter)
	waitFor(t, 10*time.Second, "delivery under the new config", func() bool { return len(a2.Delivered()) == 2 })
	time.Sleep(200 * time.Millisecond)
	for _, l := range a2.Delivered() {
		if l.Record.Direction != "inbound" {
			t.Errorf("outbound call delivered after directions became [inbound]: %s", l.Key)
		}
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !n.has("STOPPING=1") {
		t.Fatal("no STOPPING=1")
	}
}

// gauge returns the value of an unlabelled gauge from the daemon's registry.
func gauge(t *testing.T, d *connector.Daemon, name string) float64 {
	t.Helper()
	mfs, err := d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// A reload that changes a pbx block applies it and calls keep flowing: the AMI secret rotated
// and the PBX moved to another address (the source is replaced, calls in progress are kept: a
// call in flight across the change comes out whole, not flushed), then the call recognition
// changed (the PBX restarts). At 1bda728 any pbx change failed with "registering metrics for pbx
// "lab": already registered": AMI stayed down while /readyz said ready.
func TestReloadPBXBlock(t *testing.T) {
	old, err := fakepbx.Start(fakepbx.Config{Speed: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	path := testConfig(t, old.Addr(), "")
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	d, err := connector.New(cfg, connector.Options{Version: "test", Notify: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, 10*time.Second, "daemon ready", func() bool { return d.Ready() })
	adapter := d.Adapter("crm").(*fake.Adapter)
	ready := func() bool {
		rec := httptest.NewRecorder()
		d.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/readyz", nil))
		return rec.Code == http.StatusOK
	}
	reload := func(from, to string) {
		t.Helper()
		b, _ := os.ReadFile(path)
		if !strings.Contains(string(b), from) {
			t.Fatalf("config lacks %q", from)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), from, to, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.Reload(context.Background()); err != nil {
			t.Fatalf("reload %q → %q: %v", from, to, err)
		}
	}
	delivered := func(n int, what string) {
		t.Helper()
		waitFor(t, 20*time.Second, what, func() bool { return len(adapter.Delivered()) == n })
	}

	// The PBX moves and its secret rotates, while a call is in flight on the old one.
	moved, err := fakepbx.Start(fakepbx.Config{Speed: 10, Secret: "rotated-secret", FirstID: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer moved.Close()
	flight, _ := old.Play(context.Background(), "inbound_answered")
	waitFor(t, 10*time.Second, "the call to ring", func() bool { return flight.Position() > 500*time.Millisecond })
	_, oldPort, _ := net.SplitHostPort(old.Addr())
	_, newPort, _ := net.SplitHostPort(moved.Addr())
	reload("port: "+oldPort+", username: pbxbridge, secret: secret", "port: "+newPort+", username: pbxbridge, secret: rotated-secret")
	waitFor(t, 10*time.Second, "a login on the new PBX and /readyz", func() bool { return moved.Stats().Logins == 1 && ready() })
	<-flight.Done()
	// The old PBX's call ended while the daemon was on the new one: the snapshot there does not
	// list it, so the model finishes it from what it knew, flagged resynced, never flushed.
	delivered(1, "the call in flight across the change")
	if rec := adapter.Delivered()[0].Record; rec.HasFlag("flushed") {
		t.Errorf("the call in flight was flushed by the reload: %+v", rec)
	}
	next, _ := moved.Play(context.Background(), "outbound_answered")
	<-next.Done()
	delivered(2, "a call on the moved PBX")

	// The call recognition changes: the PBX restarts with a new model, and its metrics register
	// again.
	reload("did_variables: [FROM_DID, LAB_DID]", "did_variables: [FROM_DID, LAB_DID, OTHER_DID]")
	waitFor(t, 10*time.Second, "/readyz after the restart", ready)
	again, _ := moved.Play(context.Background(), "inbound_missed")
	<-again.Done()
	delivered(3, "a call after the model changed")
	if v := gauge(t, d, "pbxbridge_config_last_reload_successful"); v != 1 {
		t.Fatalf("reload metric = %v", v)
	}
}
