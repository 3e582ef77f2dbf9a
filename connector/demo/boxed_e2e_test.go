package demo_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/connector"
	"github.com/pbxbridge/pbxbridge/connector/config"
	"github.com/pbxbridge/pbxbridge/connector/demo"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The boxed portal answers to the demo's Bitrix24 name on the HTTPS port, so that the demo
// licence (bound to that domain) covers its connector: "b24-box" sorts before "b24-demo", so it
// claims the one demo licence (the demo's own Bitrix24 connector stays unlicensed here).
const boxedHost = "demo-bitrix24.invalid"

const (
	boxedToken  = "pbx.e2e0123456789abcdef0123456789ab"
	boxedSecret = "e2e-0123456789abcdef0123456789abcdef0123456789abcdef"
)

// TestBoxedBitrix24ThroughTheDaemon: a boxed portal without the Bitrix24 cloud, with a
// self-signed certificate trusted by tls.ca_file and the pbxbridge portal module
// (auth.mode: portal_token), behind the real daemon: the daemon's own HTTP transport takes the
// connector's TLS settings; a call played on the PBX is logged in the portal; a click in the CRM
// comes as the module's signed event and passes the daemon's originate gate to the PBX.
func TestBoxedBitrix24ThroughTheDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("plays calls through the demo")
	}
	cert, certPEM, err := fakecrm.SelfSignedCert(boxedHost)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "portal-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	box := fakecrm.NewBitrix24(fakecrm.B24Boxed(), fakecrm.B24PortalToken(boxedToken), fakecrm.B24ModuleSecret(boxedSecret))
	srv := httptest.NewUnstartedServer(box)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	box.SetBaseURL("https://" + boxedHost)
	boxAddr := srv.Listener.Addr().String()

	env, err := demo.Start(context.Background(), demo.Options{
		Speed:      10,
		Unlicensed: true,
		Configure: func(cfg *config.Config) {
			b := bitrix24.NewConfig()
			b.PortalURL = "https://" + boxedHost
			b.Auth = bitrix24.AuthConfig{Mode: bitrix24.AuthPortalToken,
				PortalToken: configs.NewSecret(boxedToken), ModuleSecret: configs.NewSecret(boxedSecret)}
			b.TLS.CAFile = caFile
			b.Lines = []bitrix24.LineConfig{{Number: "+74951112233", Name: "Main line"}}
			b.Recordings.Attach = false
			b.Users.DefaultUserID = 1
			cfg.Connectors = append(cfg.Connectors, config.Connector{Name: "b24-box", Type: bitrix24.Type, Settings: b,
				Directions: []string{"inbound", "outbound"}, PBX: []string{cfg.PBX[0].Name}})
		},
		Daemon: func(o *connector.Options) {
			next := o.Resolve
			o.Resolve = func(addr string) string {
				if addr == net.JoinHostPort(boxedHost, "443") {
					return boxAddr
				}
				return next(addr)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Close() }()

	waitUntil(t, 30*time.Second, "the demo licence to apply to the boxed connector", func() bool {
		return env.Daemon.Licensing().Allowed("b24-box")
	})

	// Start-up: the module's token lists and adds the line and binds the click-to-call events
	// to the module route, over the portal's own HTTPS.
	waitUntil(t, 30*time.Second, "the events bound to the module route", func() bool {
		s := box.State()
		return len(s.Bindings) == 2 && s.Bindings[0].Module && len(s.Lines) == 1
	})
	if h := box.State().Bindings[0].Handler; h != env.PublicURL+"/crm/b24-box/module/events" {
		t.Fatalf("handler %s", h)
	}

	// A call played on the PBX is logged in the boxed portal.
	key := play(t, env, "inbound_answered")
	waitUntil(t, time.Minute, "the call logged in the boxed portal", func() bool { return box.Logged(key) == 1 })

	// A click in the CRM: the module's signed event reaches the daemon, which dials.
	before := env.PBX.Stats().Originates
	callID, err := box.ClickToCall(context.Background(), 1269, "+79001234567", "+74951112233")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the click-to-call placed on the PBX", func() bool {
		return env.PBX.Stats().Originates > before
	})
	// The PBX plays the placed call; its record finishes the CALL_ID the portal gave the click.
	waitUntil(t, time.Minute, "the click-to-call call finished in the portal", func() bool {
		for _, c := range box.State().Calls {
			if c.CallID == callID {
				return c.State == "finished"
			}
		}
		return false
	})
	if n := box.State().Requests["oauth/token"]; n != 0 {
		t.Errorf("the cloud OAuth server was asked %d times", n)
	}
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
