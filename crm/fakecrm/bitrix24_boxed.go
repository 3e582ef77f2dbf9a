package fakecrm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// A boxed (on-premise) portal, as crm/bitrix24/README.md "On-premise (boxed) Bitrix24" and the
// module's README (crm/bitrix24/portal-module) describe it:
//
//   - the cloud OAuth server is out of reach (B24Faults.CloudOAuth "refused" or "blackhole"):
//     token requests fail at the transport, tokens issued before keep working until they
//     expire, and application events, which a box hands to the cloud's queue, are not delivered;
//   - inbound webhooks are checked by the portal itself: a wrong secret is INVALID_CREDENTIALS,
//     a webhook over plain http is refused with "Https required." (REST_APAUTH_ALLOW_HTTP not
//     defined), and telephony accepts webhooks unless TelephonyAppOnly says otherwise; event.*
//     never accepts them;
//   - the pbxbridge portal module, when configured (B24PortalToken, B24ModuleSecret) or
//     installed (InstallModule), issues a long-lived token of the application type (telephony
//     and event.bind accept it) and posts the events of handlers bound with it directly, signed
//     (X-Pbxbridge-Timestamp, X-Pbxbridge-Signature: sha256=hex HMAC-SHA256(secret, timestamp +
//     "." + body)), only to handlers under the pbxbridge URL saved on its page.
//
// Serve it over TLS with a certificate of a PrivateCA or a self-signed one from SelfSignedCert
// (crmtest.StartBoxedBitrix24 does it all).

// B24Boxed makes the fake a boxed portal without access to the Bitrix24 cloud: the OAuth
// server refuses connections, webhooks are checked as a box does (https required, telephony
// allowed) and their errors are the box's.
func B24Boxed() Bitrix24Option {
	return func(c *b24Config) {
		c.boxed = true
		c.faults.TelephonyAppOnly = false
		c.faults.CloudOAuth = CloudOAuthRefused
		c.faults.WebhookHTTPSRequired = true
	}
}

// B24PortalToken makes the portal accept token as the pbxbridge module's long-lived token:
// user 1 (an admin), every scope of the application, authorisation type "oauth".
func B24PortalToken(token string) Bitrix24Option {
	return func(c *b24Config) { c.portalToken = token }
}

// B24ModuleSecret is the pbxbridge module's secret: events of handlers bound with the portal
// token are posted directly and signed with it.
func B24ModuleSecret(secret string) Bitrix24Option {
	return func(c *b24Config) { c.moduleSecret = secret }
}

// B24ServerEndpoint sets the server_endpoint the fake names in installations and token answers
// (default: its own base URL + /rest/).
func B24ServerEndpoint(u string) Bitrix24Option {
	return func(c *b24Config) { c.serverEndpoint = u }
}

// Cloud OAuth server states (B24Faults.CloudOAuth).
const (
	CloudOAuthUp        = ""          // answers
	CloudOAuthRefused   = "refused"   // the connection is closed at once
	CloudOAuthBlackhole = "blackhole" // the request is read and never answered
)

// Module signature headers (see the comment at the top of this file).
const (
	ModuleTimestampHeader = "X-Pbxbridge-Timestamp"
	ModuleSignatureHeader = "X-Pbxbridge-Signature"
)

// SignModuleEvent returns the headers the pbxbridge module sends with body at ts.
func SignModuleEvent(secret string, ts time.Time, body []byte) http.Header {
	t := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t + "."))
	m.Write(body)
	h := http.Header{}
	h.Set(ModuleTimestampHeader, t)
	h.Set(ModuleSignatureHeader, "sha256="+hex.EncodeToString(m.Sum(nil)))
	return h
}

// cloudOAuth applies B24Faults.CloudOAuth to an OAuth server request; it reports whether the
// request was swallowed (the caller must not answer).
func (f *Bitrix24) cloudOAuth(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	mode := f.faults.CloudOAuth
	if mode != CloudOAuthUp {
		f.requests["oauth/token"]++
		f.cloudRefused++
	}
	f.mu.Unlock()
	switch mode {
	case CloudOAuthRefused:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		// No hijacking (HTTP/2): the closest is an answer that is not the OAuth server's.
		http.Error(w, "connection refused", http.StatusBadGateway)
		return true
	case CloudOAuthBlackhole:
		<-r.Context().Done()
		return true
	}
	return false
}

// boxedWebhookErr is the box's refusal of a webhook request, or nil.
func (f *Bitrix24) boxedWebhookErr(r *http.Request) *b24Err {
	f.mu.Lock()
	https := f.faults.WebhookHTTPSRequired
	f.mu.Unlock()
	if f.cfg.boxed && https && r.TLS == nil {
		return &b24Err{http.StatusBadRequest, "INVALID_REQUEST", "Https required."}
	}
	return nil
}

// badWebhook is the answer to an unknown webhook: the box's INVALID_CREDENTIALS, the cloud's
// NO_AUTH_FOUND.
func (f *Bitrix24) badWebhook() *b24Err {
	if !f.cfg.boxed {
		return &b24Err{http.StatusUnauthorized, "NO_AUTH_FOUND", "Wrong authorization data"}
	}
	f.mu.Lock()
	st := f.faults.InvalidCredentialsStatus
	f.mu.Unlock()
	if st == 0 {
		st = http.StatusUnauthorized
	}
	return &b24Err{st, "INVALID_CREDENTIALS", "Invalid request credentials"}
}

// B24ModuleInstall is what the pbxbridge module's settings page shows once the module is
// installed, pbxbridge's URL saved and a token issued: the values of the connector's block.
type B24ModuleInstall struct {
	PortalURL string `json:"portal_url"`
	Token     string `json:"portal_token"`
	Secret    string `json:"module_secret"`
	MemberID  string `json:"member_id"`
}

// InstallModule installs the pbxbridge portal module as an administrator does on its settings
// page (crm/bitrix24/portal-module/README.md): it saves pbxbridgeURL (pbxbridge's public URL:
// the module posts events only to handlers under it), issues a new token for user 1 (the
// previous one stops working) and makes a module secret unless there is one. It returns what
// the page shows.
func (f *Bitrix24) InstallModule(pbxbridgeURL string) (B24ModuleInstall, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(pbxbridgeURL), "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		return B24ModuleInstall{}, fmt.Errorf("fake bitrix24: the pbxbridge URL must look like https://pbx.example.ru, got %q", pbxbridgeURL)
	}
	tok := make([]byte, 24)
	_, _ = rand.Read(tok)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg.moduleURL = u.String()
	f.cfg.portalToken = "pbx." + hex.EncodeToString(tok)
	if f.cfg.moduleSecret == "" {
		sec := make([]byte, 32)
		_, _ = rand.Read(sec)
		f.cfg.moduleSecret = hex.EncodeToString(sec)
	}
	return B24ModuleInstall{PortalURL: f.baseURL, Token: f.cfg.portalToken, Secret: f.cfg.moduleSecret, MemberID: f.cfg.memberID}, nil
}

// portalTokenCaller authenticates the module's token; ok is false when tok is not it.
func (f *Bitrix24) portalTokenCaller(tok string) (b24Caller, *b24Err, bool) {
	f.mu.Lock()
	want, expired := f.cfg.portalToken, f.faults.PortalTokenExpired
	f.mu.Unlock()
	if want == "" || !hmac.Equal([]byte(tok), []byte(want)) {
		return b24Caller{}, nil, false
	}
	if expired {
		return b24Caller{}, &b24Err{http.StatusUnauthorized, "expired_token", "The access token provided has expired."}, true
	}
	return b24Caller{userID: 1, scope: f.cfg.scope, token: tok, module: true}, nil, true
}

// cloudEventsBlocked reports why an application's event cannot be delivered ("" when it can):
// a box hands events to the cloud, so without the cloud only the module's are.
func (f *Bitrix24) cloudEventsBlockedLocked(b B24Binding) string {
	if f.cfg.boxed && !b.Module && f.faults.CloudOAuth != CloudOAuthUp {
		return "fake bitrix24: a boxed portal without the cloud does not deliver application events (the cloud's queue sends them)"
	}
	return ""
}

// bindingLocked returns the last binding of event.
func (f *Bitrix24) bindingLocked(event string) (B24Binding, bool) {
	for i := len(f.bindings) - 1; i >= 0; i-- {
		if strings.EqualFold(f.bindings[i].Event, event) {
			return f.bindings[i], true
		}
	}
	return B24Binding{}, false
}

// moduleFormLocked sets the auth part the pbxbridge module sends with an event: no access
// token, the portal's identity and the application's token.
func (f *Bitrix24) moduleFormLocked(form url.Values) {
	form.Set("auth[domain]", f.hostLocked())
	form.Set("auth[member_id]", f.cfg.memberID)
	form.Set("auth[application_token]", f.appToken)
	form.Set("auth[client_endpoint]", f.baseURL+"/rest/")
}

// moduleRefusesLocked is why the module does not post an event to handler ("" when it does):
// like the real module, only to handlers under the pbxbridge URL saved on its page.
func (f *Bitrix24) moduleRefusesLocked(handler string) string {
	if f.cfg.moduleURL != "" && !strings.HasPrefix(handler, f.cfg.moduleURL+"/") {
		return "fake bitrix24: the pbxbridge module sends no event to " + handler + ": the handler is not under the pbxbridge URL set on the module page (" + f.cfg.moduleURL + ")"
	}
	return ""
}

// postModule posts a module event, signed.
func (f *Bitrix24) postModule(ctx context.Context, u string, form url.Values) (int, error) {
	body := []byte(form.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(string(body)))
	if err != nil {
		return 0, fmt.Errorf("fake bitrix24: %w", err)
	}
	f.mu.Lock()
	secret, why := f.cfg.moduleSecret, f.moduleRefusesLocked(u)
	f.mu.Unlock()
	if why != "" {
		return 0, errors.New(why)
	}
	req.Header = SignModuleEvent(secret, f.now(), body)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("fake bitrix24: posting event: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// SelfSignedCert makes a self-signed certificate for hosts (DNS names and IP addresses): ECDSA
// P-256, valid from an hour ago for a year, usable as its own CA (a box's certificate as admins
// make it with openssl). It returns the certificate with its key and the certificate's PEM.
func SelfSignedCert(hosts ...string) (tls.Certificate, []byte, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, nil, errors.New("self-signed certificate: no host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"fake boxed Bitrix24"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, certPEM, nil
}

// PrivateCA is a company's own certificate authority, as admins make one for the servers of
// their network (a boxed portal's certificate issued by it is trusted by nothing else).
type PrivateCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA's certificate: what tls.ca_file names.
	PEM []byte
}

// NewPrivateCA makes a CA (ECDSA P-256, valid from an hour ago for ten years).
func NewPrivateCA(name string) (*PrivateCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("private CA: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("private CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"fake boxed Bitrix24"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("private CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("private CA: %w", err)
	}
	return &PrivateCA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue makes a server certificate for hosts (DNS names and IP addresses) signed by the CA,
// valid from an hour ago for a year.
func (ca *PrivateCA) Issue(hosts ...string) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("private CA: no host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("private CA: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("private CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"fake boxed Bitrix24"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("private CA: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("private CA: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// postModuleOK posts a module event and wants a 2xx answer.
func (f *Bitrix24) postModuleOK(ctx context.Context, u string, form url.Values) error {
	st, err := f.postModule(ctx, u, form)
	if err != nil {
		return err
	}
	if st >= 300 {
		return fmt.Errorf("fake bitrix24: handler answered http %d", st)
	}
	return nil
}
