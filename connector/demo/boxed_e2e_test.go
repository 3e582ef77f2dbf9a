package demo_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/testkit"
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

// TestBoxedBitrix24ThroughTheDaemon is the acceptance of the boxed-portal flow against the fake
// in boxed mode (no cloud OAuth server, application events not delivered through the cloud):
//
//  1. the portal's certificate is issued by a private CA, trusted by tls.ca_file (the CA's
//     certificate, not the portal's) and by nothing else: the daemon's own HTTP transport takes
//     the connector's TLS settings for the portal's host only;
//  2. the pbxbridge portal module is installed as an admin does on its settings page: pbxbridge's
//     public URL saved, a token issued, and the block the page shows goes into the config
//     (auth.mode: portal_token);
//  3. at start the daemon binds the click-to-call events to the module route with the module's
//     token and adds the line, over the portal's HTTPS;
//  4. a call played on the PBX is delivered to the portal;
//  5. a click in the CRM comes as the module's signed event, passes the daemon's originate gate
//     to the PBX, and the placed call finishes the CALL_ID the portal gave the click; a callback
//     form does the same; an unsigned or stale event to the module route is refused and dials
//     nothing;
//  6. nothing ever asks the cloud OAuth server.
//
// What pbxbridge says when the CA is not configured is TestCRMTestBoxedBitrix24TLS
// (connector/cli, `pbxbridge crm test`) and TestBoxedTLSRefusals (crm/bitrix24: deliveries, the
// status page, the start-up set-up).
func TestBoxedBitrix24ThroughTheDaemon(t *testing.T) {
	t.Parallel() // a few calls through the demo at speed: about 2 s, the quick tier
	ca, err := fakecrm.NewPrivateCA("Romashka LLC internal CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(boxedHost)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "portal-ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	box := fakecrm.NewBitrix24(fakecrm.B24Boxed())
	srv := httptest.NewUnstartedServer(box)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	box.SetBaseURL("https://" + boxedHost)
	boxAddr := srv.Listener.Addr().String()

	var module fakecrm.B24ModuleInstall
	env, err := demo.Start(context.Background(), demo.Options{
		Speed:      10,
		Unlicensed: true,
		Configure: func(cfg *config.Config) {
			// The module's settings page: pbxbridge's public URL, then "Issue a new token".
			var err error
			if module, err = box.InstallModule(cfg.HTTP.Public.URL); err != nil {
				t.Error(err)
				return
			}
			b := bitrix24.NewConfig()
			b.PortalURL = module.PortalURL
			b.Auth = bitrix24.AuthConfig{Mode: bitrix24.AuthPortalToken, PortalToken: configs.NewSecret(module.Token),
				ModuleSecret: configs.NewSecret(module.Secret), MemberID: module.MemberID}
			b.TLS.CAFile = caFile
			b.Lines = []bitrix24.LineConfig{{Number: "+74951112233", Name: "Main line"}}
			b.Recordings.Attach = false
			b.Users.DefaultUserID = 1
			b.ClickToCall.CallbackExtension = "101"
			b.ClickToCall.CallbackUserID = 1269
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

	testkit.WaitFor(t, 30*time.Second, "the demo licence to apply to the boxed connector", func() bool {
		return env.Daemon.Licensing().Allowed("b24-box")
	})

	// Start-up: the module's token lists and adds the line and binds the click-to-call events
	// to the module route, over the portal's own HTTPS.
	testkit.WaitFor(t, 30*time.Second, "the events bound to the module route", func() bool {
		s := box.State()
		return len(s.Bindings) == 2 && s.Bindings[0].Module && s.Bindings[1].Module && len(s.Lines) == 1
	})
	moduleRoute := env.PublicURL + "/crm/b24-box/module/events"
	if h := box.State().Bindings[0].Handler; h != moduleRoute {
		t.Fatalf("handler %s", h)
	}

	// A call played on the PBX is logged in the boxed portal.
	key := play(t, env, "inbound_answered")
	testkit.WaitFor(t, time.Minute, "the call logged in the boxed portal", func() bool { return box.Logged(key) == 1 })

	// Events that are not the module's reach nothing: unsigned, and signed an hour ago.
	before := env.PBX.Stats().Originates
	forged := url.Values{"event": {"ONEXTERNALCALLSTART"}, "data[CALL_ID]": {"externalCall.forged"}, "data[USER_ID]": {"1269"},
		"data[PHONE_NUMBER]": {"+79001234567"}, "ts": {strconv.FormatInt(time.Now().Unix(), 10)},
		"auth[domain]": {boxedHost}, "auth[member_id]": {module.MemberID}}
	body := []byte(forged.Encode())
	for name, h := range map[string]http.Header{
		"unsigned": {},
		"stale":    fakecrm.SignModuleEvent(module.Secret, time.Now().Add(-time.Hour), body),
	} {
		if st := postModuleEvent(t, moduleRoute, body, h); st != http.StatusUnauthorized {
			t.Errorf("%s event: http %d, want 401", name, st)
		}
	}

	// A click in the CRM: the module's signed event reaches the daemon, which dials.
	callID, err := box.ClickToCall(context.Background(), 1269, "+79001234567", "+74951112233")
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the click-to-call placed on the PBX", func() bool {
		return env.PBX.Stats().Originates == before+1
	})
	// The PBX plays the placed call; its record finishes the CALL_ID the portal gave the click.
	testkit.WaitFor(t, time.Minute, "the click-to-call call finished in the portal", func() bool {
		for _, c := range box.State().Calls {
			if c.CallID == callID {
				return c.State == "finished"
			}
		}
		return false
	})

	// A callback form on the portal: the module's signed event, a callback placed on the PBX.
	if err := box.CallbackRequest(context.Background(), "+79007654321", "+74951112233", "Call me back"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the callback placed on the PBX", func() bool {
		return env.PBX.Stats().Originates == before+2
	})
	if n := box.State().Requests["oauth/token"]; n != 0 {
		t.Errorf("the cloud OAuth server was asked %d times", n)
	}
}

// postModuleEvent posts body with headers h to the module route; it returns the status.
func postModuleEvent(t *testing.T, u string, body []byte, h http.Header) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
