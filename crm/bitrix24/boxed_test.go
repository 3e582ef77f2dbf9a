package bitrix24

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The boxed-portal flow (README.md "On-premise (boxed) Bitrix24"): a portal on the company's
// network with a certificate of a private CA (or a self-signed one) and no way to the Bitrix24
// cloud.

const (
	testPortalToken  = "pbx.0123456789abcdef0123456789abcdef"
	testModuleSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// boxedTrust is how a test trusts the boxed portal's certificate.
type boxedTrust func(b *crmtest.BoxedBitrix24, c *Config)

func trustCAFile(b *crmtest.BoxedBitrix24, c *Config) { c.TLS.CAFile = b.CAFile }

// trustCertPin pins the certificate's fingerprint as openssl prints it.
func trustCertPin(b *crmtest.BoxedBitrix24, c *Config) {
	sum := sha256.Sum256(b.Cert.Raw)
	c.TLS.PinSHA256 = PinList{colonHex(sum[:])}
}

// trustKeyPin pins the public key, curl style.
func trustKeyPin(b *crmtest.BoxedBitrix24, c *Config) {
	sum := sha256.Sum256(b.Cert.RawSubjectPublicKeyInfo)
	c.TLS.PinSHA256 = PinList{"sha256//" + base64.StdEncoding.EncodeToString(sum[:])}
}

var boxedTrusts = []struct {
	name  string
	trust boxedTrust
}{{"ca_file", trustCAFile}, {"certificate pin", trustCertPin}, {"public-key pin", trustKeyPin}}

// webhookMode configures an inbound webhook of the boxed portal.
func webhookMode(b *crmtest.BoxedBitrix24, trust boxedTrust) envOpt {
	return func(_ *crm.Params, c *Config) {
		c.Auth = AuthConfig{Mode: AuthWebhook, WebhookURL: configs.NewSecret(b.URL() + "/rest/1/b0x3dw3bh00k/")}
		c.PortalURL = b.URL()
		c.ClickToCall.Enabled = false
		if trust != nil {
			trust(b, c)
		}
	}
}

// portalTokenMode configures the pbxbridge module's token and secret.
func portalTokenMode(b *crmtest.BoxedBitrix24, trust boxedTrust) envOpt {
	return func(_ *crm.Params, c *Config) {
		c.Auth = AuthConfig{Mode: AuthPortalToken, PortalToken: configs.NewSecret(testPortalToken),
			ModuleSecret: configs.NewSecret(testModuleSecret)}
		c.PortalURL = b.URL()
		c.OAuthURL = ""
		if trust != nil {
			trust(b, c)
		}
	}
}

func startBoxed(t *testing.T, opts ...fakecrm.Bitrix24Option) *crmtest.BoxedBitrix24 {
	t.Helper()
	return crmtest.StartBoxedBitrix24(t, append([]fakecrm.Bitrix24Option{
		fakecrm.B24Webhook(1, "b0x3dw3bh00k", "crm,telephony,user,task"),
		fakecrm.B24PortalToken(testPortalToken), fakecrm.B24ModuleSecret(testModuleSecret),
	}, opts...)...)
}

// checkDelivered delivers an answered inbound call with its recording and checks that the
// portal has it registered, finished under the answering employee and with the recording.
func checkDelivered(t *testing.T, e *env, id string) {
	t.Helper()
	rec := answeredInbound(e, id, "101")
	e.deliver(rec)
	c := onlyCall(t, e.fake.State(), rec.Key())
	mustf(t, c.State == "finished" && c.FinishUserID == 1269 && c.StatusCode == "200", "call %+v", c)
	mustf(t, c.Record != nil && c.Record.Size == 47404 && c.RecordAttaches == 1, "recording %+v", c.Record)
}

// TestBoxedWebhook: with an inbound webhook a boxed portal takes call cards, the call log and
// recordings (register, finish, attachRecord) without the cloud, over its self-signed HTTPS,
// trusted by tls.ca_file or a pin; crm test says click-to-call needs the module.
func TestBoxedWebhook(t *testing.T) {
	t.Parallel()
	for _, tc := range boxedTrusts {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBoxed(t)
			e := newEnv(t, b.Bitrix24, webhookMode(b, tc.trust))
			e.setup() // the start-up probe (telephony.externalLine.get) and the lines
			mustf(t, len(b.State().Lines) == 3, "lines %+v", b.State().Lines)
			checkDelivered(t, e, "1795305782.1")
			// A large recording takes the two-step upload, also to the portal's host.
			e.a.cfg.Recordings.ContentMaxBytes = 1000
			checkDelivered(t, e, "1795305782.2")

			e.a.cfg.ClickToCall.Enabled = true
			cs := e.a.Probe(context.Background())
			mustf(t, check(cs, "authorisation").OK && strings.Contains(check(cs, "authorisation").Detail, "inbound webhook"), "%+v", cs)
			mustf(t, check(cs, "telephony rights").OK, "%+v", cs)
			c2c := check(cs, "click-to-call")
			mustf(t, !c2c.OK && strings.Contains(c2c.Detail, "portal_token") && strings.Contains(c2c.Detail, "event.bind refuses webhooks"), "%+v", c2c)
			s := b.State()
			mustf(t, s.Requests["oauth/token"] == 0, "the cloud was asked %d times", s.Requests["oauth/token"])
		})
	}
}

// TestBoxedPortalToken: with the pbxbridge module's token, calls are delivered, the
// click-to-call events are bound to the module route, and a click in the CRM reaches the
// originate path through the module's signed event.
func TestBoxedPortalToken(t *testing.T) {
	t.Parallel()
	for _, tc := range boxedTrusts {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBoxed(t)
			e := newEnv(t, b.Bitrix24, portalTokenMode(b, tc.trust))
			e.setup()
			s := b.State()
			want := e.srv.URL + "/crm/b24/module/events"
			mustf(t, len(s.Bindings) == 2 && s.Bindings[0].Handler == want && s.Bindings[0].Module && s.Bindings[1].Module, "bindings %+v", s.Bindings)
			checkDelivered(t, e, "1795305782.1")

			callID, err := b.ClickToCall(context.Background(), 1269, "+79001234567", "+74951112233")
			if err != nil {
				t.Fatal(err)
			}
			r := e.originated()
			mustf(t, r.Extension == "101" && r.Number == "+79001234567" && r.ID != "", "originate %+v", r)
			// The binding: the module's first event binds the portal.
			acct, err := e.a.Account(context.Background())
			mustf(t, err == nil && acct.MemberID == b.MemberID() && acct.Domain == portalHost(b.URL()), "account %+v %v", acct, err)
			// The originate failing finishes the CALL_ID with the reason: through the portal token.
			e.orig.mu.Lock()
			e.orig.err = errors.New("busy")
			e.orig.mu.Unlock()
			callID2, err := b.ClickToCall(context.Background(), 1270, "+79001234567", "+74951112233")
			if err != nil {
				t.Fatal(err)
			}
			e.originated()
			waitFor(t, "the failed click-to-call finished", func() bool {
				return clickCall(b.State(), callID2).State == "finished"
			})
			mustf(t, clickCall(b.State(), callID).State == "registered", "the first click's call %+v", clickCall(b.State(), callID))

			cs := e.a.Probe(context.Background())
			for _, name := range []string{"authorisation", "telephony rights", "crm scope", "click-to-call"} {
				mustf(t, check(cs, name).OK, "%s: %+v", name, check(cs, name))
			}
			mustf(t, strings.Contains(check(cs, "authorisation").Detail, "pbxbridge module token"), "%+v", check(cs, "authorisation"))
			mustf(t, strings.Contains(check(cs, "click-to-call").Detail, "/module/events"), "%+v", check(cs, "click-to-call"))
			mustf(t, b.State().Requests["oauth/token"] == 0, "the cloud was asked")
		})
	}
}

// TestBoxedTLSRefusals: the same configuration without tls.ca_file fails with an error that
// names TLS and the setting to add, and holds the calls (an authorisation-class error, so no
// attempts are burnt); a wrong pin names the certificate the portal presented.
func TestBoxedTLSRefusals(t *testing.T) {
	t.Parallel()
	b := startBoxed(t)
	other, _, err := fakecrm.SelfSignedCert("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	wrongPin := func(_ *crmtest.BoxedBitrix24, c *Config) {
		sum := sha256.Sum256(other.Leaf.Raw)
		c.TLS.PinSHA256 = PinList{hex.EncodeToString(sum[:])}
	}
	otherCA := func(_ *crmtest.BoxedBitrix24, c *Config) {
		c.TLS.CAFile = filepath.Join(t.TempDir(), "other.pem")
		_, pemBytes, err := fakecrm.SelfSignedCert("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.TLS.CAFile, pemBytes, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gotFP := sha256.Sum256(b.Cert.Raw)
	for _, tc := range []struct {
		name  string
		mode  func(*crmtest.BoxedBitrix24, boxedTrust) envOpt
		trust boxedTrust
		want  []string
	}{
		{"webhook without ca_file", webhookMode, nil, []string{"TLS", "tls.ca_file", "unknown authority"}},
		{"portal token without ca_file", portalTokenMode, nil, []string{"TLS", "tls.ca_file", "tls.pin_sha256"}},
		{"another CA", portalTokenMode, otherCA, []string{"TLS", "tls.ca_file"}},
		{"wrong pin", portalTokenMode, wrongPin, []string{"TLS", "tls.pin_sha256", colonHex(gotFP[:])}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, b.Bitrix24, tc.mode(b, tc.trust))
			err := e.a.Deliver(context.Background(), answeredInbound(e, "1795305782.9", "101"))
			if err == nil {
				t.Fatal("delivered without trusting the portal")
			}
			var ce *crm.Error
			mustf(t, errors.As(err, &ce) && ce.Class == crm.ClassAuth, "class of %v", err)
			for _, w := range tc.want {
				mustf(t, strings.Contains(err.Error(), w), "the error lacks %q: %v", w, err)
			}
			a := check(e.a.Probe(context.Background()), "authorisation")
			mustf(t, !a.OK && strings.Contains(a.Detail, "TLS") && strings.Contains(a.Detail, tc.want[1]), "probe %+v", a)
			st := e.a.Status()
			mustf(t, strings.Contains(st.Detail, tc.want[1]), "status %+v", st)
			serr := e.a.setup(context.Background())
			mustf(t, serr != nil && strings.Contains(serr.Error(), tc.want[1]), "setup: %v", serr)
			// Each names the connector, the portal's host and the block the key goes in.
			for where, text := range map[string]string{"error": err.Error(), "crm test": a.Detail, "status": st.Detail, "set-up": serr.Error()} {
				for _, w := range []string{`connector "b24"`, hostPort(b.URL()), "connectors[].bitrix24.tls."} {
					mustf(t, strings.Contains(text, w), "the %s lacks %q: %s", where, w, text)
				}
			}
		})
	}
	mustf(t, len(b.State().Calls) == 0, "a call reached the portal: %+v", b.State().Calls)
}

// TestBoxedSelfSignedCertificate: a portal whose certificate is self-signed (no CA) is trusted by
// naming that certificate in tls.ca_file; without it, the refusal names the connector, the host
// and the key, and the certificate it presented.
func TestBoxedSelfSignedCertificate(t *testing.T) {
	t.Parallel()
	b := crmtest.StartSelfSignedBitrix24(t, fakecrm.B24PortalToken(testPortalToken), fakecrm.B24ModuleSecret(testModuleSecret))
	e := newEnv(t, b.Bitrix24, portalTokenMode(b, trustCAFile))
	e.setup()
	checkDelivered(t, e, "1795305782.1")

	bare := newEnv(t, b.Bitrix24, portalTokenMode(b, nil))
	a := check(bare.a.Probe(context.Background()), "authorisation")
	fp := sha256.Sum256(b.Cert.Raw)
	for _, w := range []string{`connector "b24"`, hostPort(b.URL()), "tls.ca_file", "connectors[].bitrix24.tls.ca_file", colonHex(fp[:])} {
		mustf(t, !a.OK && strings.Contains(a.Detail, w), "crm test lacks %q: %+v", w, a)
	}
}

// TestTLSProblemOtherHost: a certificate refused by another host than the portal's (the OAuth
// server, checked against the system's CAs) is not blamed on the portal's tls.* settings.
func TestTLSProblemOtherHost(t *testing.T) {
	t.Parallel()
	a := &Adapter{name: "b24", cfg: &Config{PortalURL: "https://b24.example.ru", Auth: AuthConfig{Mode: AuthOAuth}}}
	cert, _, err := fakecrm.SelfSignedCert("oauth.bitrix.info")
	if err != nil {
		t.Fatal(err)
	}
	ua := x509.UnknownAuthorityError{Cert: cert.Leaf}
	other := a.tlsProblem(fmt.Errorf("token: %w", &CertError{Host: "oauth.bitrix.info:443", Err: ua}))
	for _, w := range []string{`connector "b24"`, "oauth.bitrix.info:443", "system's CA certificates", "update-ca-certificates"} {
		mustf(t, strings.Contains(other, w), "lacks %q: %s", w, other)
	}
	mustf(t, !strings.Contains(other, "set tls.ca_file"), "blames the portal's settings: %s", other)
	portal := a.tlsProblem(fmt.Errorf("user.get: %w", &CertError{Host: "b24.example.ru:443", Err: ua}))
	mustf(t, strings.Contains(portal, "b24.example.ru:443") && strings.Contains(portal, "set tls.ca_file"), "%s", portal)
	mustf(t, a.tlsProblem(errors.New("connection refused")) == "", "not a certificate problem")
}

// TestBoxedWebhookRefusals: what a box answers a webhook, and what pbxbridge tells the admin.
func TestBoxedWebhookRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		fake   func(t *testing.T) *fakecrm.Bitrix24
		hook   func(f *fakecrm.Bitrix24) string
		faults func(*fakecrm.B24Faults)
		probe  string // check name
		want   []string
	}{
		{"plain http", func(t *testing.T) *fakecrm.Bitrix24 {
			t.Helper()
			return crmtest.StartBitrix24(t, fakecrm.B24Boxed(), fakecrm.B24Webhook(1, "b0x3dw3bh00k", "crm,telephony,user"))
		}, nil, nil, "authorisation", []string{"Https required", "REST_APAUTH_ALLOW_HTTP", "dbconn.php"}},
		{"http allowed", func(t *testing.T) *fakecrm.Bitrix24 {
			t.Helper()
			return crmtest.StartBitrix24(t, fakecrm.B24Boxed(), fakecrm.B24Webhook(1, "b0x3dw3bh00k", "crm,telephony,user"))
		}, nil, func(x *fakecrm.B24Faults) { x.WebhookHTTPSRequired = false }, "telephony rights", nil},
		{"wrong secret", boxedFake,
			func(f *fakecrm.Bitrix24) string { return f.URL() + "/rest/1/wrong/" }, nil,
			"authorisation", []string{"INVALID_CREDENTIALS", "auth.webhook_url"}},
		{"telephony only for applications", boxedFake, nil,
			func(x *fakecrm.B24Faults) { x.TelephonyAppOnly = true }, "telephony rights", []string{"WRONG_AUTH_TYPE", "portal_token", "pbxbridge portal module"}},
		{"missing scope", func(t *testing.T) *fakecrm.Bitrix24 {
			t.Helper()
			b := crmtest.StartBoxedBitrix24(t, fakecrm.B24Webhook(1, "b0x3dw3bh00k", "crm,user"))
			return b.Bitrix24
		}, nil, nil, "telephony rights", []string{"webhook lacks", `"telephony"`, "tick telephony"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := tc.fake(t)
			if tc.faults != nil {
				x := f.Faults()
				tc.faults(&x)
				f.SetFaults(x)
			}
			e := newEnv(t, f, func(_ *crm.Params, c *Config) {
				u := f.URL() + "/rest/1/b0x3dw3bh00k/"
				if tc.hook != nil {
					u = tc.hook(f)
				}
				c.Auth = AuthConfig{Mode: AuthWebhook, WebhookURL: configs.NewSecret(u)}
				c.PortalURL = ""
				if strings.HasPrefix(u, "https://") {
					c.TLS.CAFile = writeLeafPEM(t, f)
				}
			})
			ck := check(e.a.Probe(context.Background()), tc.probe)
			if tc.want == nil {
				mustf(t, ck.OK, "%+v", ck)
				return
			}
			mustf(t, !ck.OK, "%+v", ck)
			for _, w := range tc.want {
				mustf(t, strings.Contains(ck.Detail, w), "%s lacks %q: %s", tc.probe, w, ck.Detail)
			}
			// The start-up probe says the same.
			if err := e.a.setup(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want[0]) {
				t.Errorf("setup: %v", err)
			}
		})
	}
}

func boxedFake(t *testing.T) *fakecrm.Bitrix24 {
	t.Helper()
	return startBoxed(t).Bitrix24
}

// writeLeafPEM fetches the certificate of f's TLS listener into a PEM file.
func writeLeafPEM(t *testing.T, f *fakecrm.Bitrix24) string {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(f.URL(), "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	cert := conn.ConnectionState().PeerCertificates[0]
	return writeCertPEM(t, cert)
}

func writeCertPEM(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := fmt.Appendf(nil, "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n", base64.StdEncoding.EncodeToString(c.Raw))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBoxedCloudOAuthUnreachable: a local application on a box that lost the cloud: a refresh
// that cannot reach the OAuth server is transient (calls stay queued and are retried), never
// "re-authorise", and succeeds once the cloud is back.
func TestBoxedCloudOAuthUnreachable(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{fakecrm.CloudOAuthRefused, fakecrm.CloudOAuthBlackhole} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := crmtest.StartBoxedBitrix24(t)
			x := b.Faults()
			x.CloudOAuth = mode
			b.SetFaults(x)
			e := newEnv(t, b.Bitrix24, func(_ *crm.Params, c *Config) {
				c.TLS.CAFile = b.CAFile
				c.HTTPTimeout = time.Second
			})
			b.ExpireTokens()
			rec := answeredInbound(e, "1795305782.5", "101")
			err := e.a.Deliver(context.Background(), rec)
			var ce *crm.Error
			mustf(t, errors.As(err, &ce) && ce.Class == crm.ClassTransient, "delivery while the cloud is away: %v", err)
			st, cause := e.a.tokens.State()
			mustf(t, st == "ok", "state %s (%v): an unreachable OAuth server must not ask for re-authorisation", st, cause)
			mustf(t, testutil.ToFloat64(e.a.m.reauthorize) == 0, "re-authorise gauge set")
			mustf(t, b.State().CloudRefused >= 1, "the OAuth server was not asked")

			x.CloudOAuth = fakecrm.CloudOAuthUp
			b.SetFaults(x)
			e.deliver(rec)
			mustf(t, b.Logged(rec.Key()) == 1, "not delivered once the cloud is back")
		})
	}
}

// check returns the probe check called name (the zero Check when there is none).
func check(cs []crm.Check, name string) crm.Check {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return crm.Check{Name: name, Detail: "(no such check)"}
}
