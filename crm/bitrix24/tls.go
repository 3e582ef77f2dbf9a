package bitrix24

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
)

// TLSConfig is how the connector trusts the portal's HTTPS certificate. Without it, the system's
// CA certificates decide (a cloud portal, or a box with a publicly trusted certificate). It
// applies to every request to the portal's host (REST, batch, recording uploads); requests to
// other hosts (the OAuth server) keep the system's trust. There is deliberately no way to switch
// verification off.
type TLSConfig struct {
	// CAFile is a PEM file of CA certificates (or the portal's self-signed certificate itself).
	// When set, these certificates REPLACE the system's for the portal: its certificate must chain
	// to one of them and name the portal's host.
	CAFile string `yaml:"ca_file"`
	// PinSHA256 pins the portal's certificate: each entry is either the SHA-256 fingerprint of
	// the certificate (64 hex digits, colons allowed, as `openssl x509 -noout -fingerprint
	// -sha256` prints it) or the SHA-256 of its public key (SubjectPublicKeyInfo) in base64, with
	// or without curl's "sha256//" prefix (it survives a renewal with the same key). The
	// certificate the portal presents must match one entry. With a pin alone, the certificate's
	// issuer and host name are not checked (a self-signed certificate); with ca_file too, both are.
	PinSHA256 PinList `yaml:"pin_sha256"`
}

// PinList is a list of pins; YAML gives it as one string or a list of strings.
type PinList []string

// UnmarshalYAML accepts a string or a sequence of strings.
func (p *PinList) UnmarshalYAML(b []byte) error {
	var one string
	if err := yaml.Unmarshal(b, &one); err == nil {
		if one == "" {
			*p = nil
		} else {
			*p = PinList{one}
		}
		return nil
	}
	var many []string
	if err := yaml.Unmarshal(b, &many); err != nil {
		return errors.New("pin_sha256 must be a string or a list of strings")
	}
	*p = many
	return nil
}

// set reports whether any TLS option is configured.
func (t TLSConfig) set() bool { return t.CAFile != "" || len(t.PinSHA256) > 0 }

// validate reports the problems of the block (paths relative to the connector's block).
func (t TLSConfig) validate(add func(path, format string, a ...any)) {
	if t.CAFile != "" {
		if _, err := loadCAFile(t.CAFile); err != nil {
			add("tls.ca_file", "%v", err)
		}
	}
	for i, p := range t.PinSHA256 {
		if _, err := parsePin(p); err != nil {
			add(fmt.Sprintf("tls.pin_sha256[%d]", i), "%v", err)
		}
	}
}

// clientConfig builds the TLS configuration of requests to the portal; nil when none is
// configured (the system's trust applies).
func (t TLSConfig) clientConfig() (*tls.Config, error) {
	if !t.set() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var roots *x509.CertPool
	if t.CAFile != "" {
		p, err := loadCAFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		roots = p
	}
	pins := make([]pin, 0, len(t.PinSHA256))
	for i, s := range t.PinSHA256 {
		p, err := parsePin(s)
		if err != nil {
			return nil, fmt.Errorf("tls.pin_sha256[%d]: %w", i, err)
		}
		pins = append(pins, p)
	}
	if len(pins) == 0 {
		cfg.RootCAs = roots // the standard verification, with our CAs only
		return cfg, nil
	}
	// With pins the standard verification cannot run (a self-signed certificate has no issuer
	// to trust): VerifyConnection does all of it, and refuses every certificate that does not
	// match a pin.
	cfg.InsecureSkipVerify = true // verification is VerifyConnection's: the pin, and the CA and host name when ca_file is set
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the portal presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		if roots != nil {
			opts := x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := leaf.Verify(opts); err != nil {
				return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
			}
		}
		for _, p := range pins {
			if p.matches(leaf) {
				return nil
			}
		}
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: newPinMismatch(leaf)}
	}
	return cfg, nil
}

// loadCAFile reads a PEM bundle; every CERTIFICATE block must parse, and there must be one.
func loadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue // a key or parameters in the same file are not ours to use
		}
		n++
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d in %s: %w", n, path, err)
		}
		pool.AddCert(c)
	}
	if n == 0 {
		if len(bytes.TrimSpace(b)) > 0 && !bytes.Contains(b, []byte("-----BEGIN")) {
			return nil, fmt.Errorf("%s is not PEM (a DER file? convert it: openssl x509 -inform der -in cert.cer -out cert.pem)", path)
		}
		return nil, fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path)
	}
	return pool, nil
}

// pin is one parsed pin_sha256 entry.
type pin struct {
	spki bool // the public key's digest; else the certificate's
	sum  [sha256.Size]byte
}

// parsePin parses a certificate fingerprint (hex) or a public-key digest (base64).
func parsePin(s string) (pin, error) {
	s = strings.TrimSpace(s)
	raw := strings.NewReplacer(":", "", " ", "").Replace(s)
	if len(raw) == 2*sha256.Size {
		if b, err := hex.DecodeString(raw); err == nil {
			var p pin
			copy(p.sum[:], b)
			return p, nil
		}
	}
	b64 := strings.TrimPrefix(s, "sha256//")
	if b, err := base64.StdEncoding.DecodeString(b64); err == nil && len(b) == sha256.Size {
		p := pin{spki: true}
		copy(p.sum[:], b)
		return p, nil
	}
	if strings.HasPrefix(strings.ToLower(s), "sha1") || len(raw) == 40 {
		return pin{}, fmt.Errorf("%q looks like a SHA-1 fingerprint: pins are SHA-256 (openssl x509 -noout -fingerprint -sha256 -in portal.pem)", s)
	}
	return pin{}, fmt.Errorf("%q is neither a SHA-256 certificate fingerprint (64 hex digits, colons allowed) nor a SHA-256 public-key pin (sha256//<base64>)", s)
}

func (p pin) matches(c *x509.Certificate) bool {
	var got [sha256.Size]byte
	if p.spki {
		got = sha256.Sum256(c.RawSubjectPublicKeyInfo)
	} else {
		got = sha256.Sum256(c.Raw)
	}
	return subtle.ConstantTimeCompare(got[:], p.sum[:]) == 1
}

// PinMismatchError says which certificate the portal presented when no pin matched it.
type PinMismatchError struct {
	Fingerprint string // SHA-256 of the certificate, colon-separated hex
	SPKI        string // sha256//<base64> of its public key
	Subject     string
}

func newPinMismatch(c *x509.Certificate) *PinMismatchError {
	fp := sha256.Sum256(c.Raw)
	spki := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return &PinMismatchError{Fingerprint: colonHex(fp[:]), SPKI: "sha256//" + base64.StdEncoding.EncodeToString(spki[:]), Subject: c.Subject.String()}
}

func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("the portal's certificate (%s, SHA-256 fingerprint %s, public key %s) matches no tls.pin_sha256", e.Subject, e.Fingerprint, e.SPKI)
}

func colonHex(b []byte) string {
	var sb strings.Builder
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02X", x)
	}
	return sb.String()
}

// CertError is a certificate failure of a request, with the host (host:port) it happened with:
// the REST client strips URLs from transport errors (a webhook's carries its secret), so the
// transport (certHostErrors) names the host here.
type CertError struct {
	Host string
	Err  error
}

func (e *CertError) Error() string { return "TLS with " + e.Host + ": " + e.Err.Error() }
func (e *CertError) Unwrap() error { return e.Err }

// certHostErrors wraps the certificate failures of its requests in a *CertError.
type certHostErrors struct{ next http.RoundTripper }

func (c certHostErrors) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil && isCertFailure(err) {
		return nil, &CertError{Host: hostPort(r.URL.String()), Err: err}
	}
	return resp, err
}

// isCertFailure reports whether err is a refused certificate, or TLS spoken to a port that does
// not speak it.
func isCertFailure(err error) bool {
	var (
		pm  *PinMismatchError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		cve *tls.CertificateVerificationError
		rhe tls.RecordHeaderError
	)
	return errors.As(err, &pm) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) ||
		errors.As(err, &cve) || errors.As(err, &rhe)
}

// withCertHost returns base with certHostErrors around its transport.
func withCertHost(base *http.Client) *http.Client {
	next := base.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *base
	c.Transport = certHostErrors{next: next}
	return &c
}

// tlsProblem explains a certificate failure of a request in an admin's words: the connector, the
// host whose certificate was refused, the certificate it presented, and the setting that fixes
// it; "" when err is not one.
func (a *Adapter) tlsProblem(err error) string {
	if err == nil || !isCertFailure(err) {
		return ""
	}
	portal := hostPort(a.cfg.restURL())
	host := portal
	var ce *CertError
	if errors.As(err, &ce) && ce.Host != "" {
		host = ce.Host
	}
	conn := strconv.Quote(a.name)
	key := func(k string) string {
		return k + " in the bitrix24 block of connector " + conn + " (connectors[].bitrix24." + k + ")"
	}
	presented := ""
	if c := presentedCert(err); c != nil {
		fp := sha256.Sum256(c.Raw)
		presented = fmt.Sprintf("; it presented %q, issued by %q, SHA-256 fingerprint %s", c.Subject.String(), c.Issuer.String(), colonHex(fp[:]))
	}
	if host != portal {
		// tls.* applies to the portal's host only: another host (the OAuth server) is checked
		// against the system's CA certificates.
		return fmt.Sprintf("connector %s: TLS: the certificate of %s was refused (%v)%s: that host is checked against the system's CA certificates "+
			"(tls.* of a connector applies to its portal only): add the CA to the system store (/usr/local/share/ca-certificates, update-ca-certificates) if it is yours",
			conn, host, rootCause(err), presented)
	}
	var (
		pm  *PinMismatchError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		rhe tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &pm):
		return fmt.Sprintf("connector %s: TLS: the certificate of %s matches no pin (%s): if the portal's certificate was replaced, put its fingerprint into %s",
			conn, host, pm.Error(), key("tls.pin_sha256"))
	case errors.As(err, &ua):
		set := "set " + key("tls.ca_file") + " to the PEM file of the portal's CA (or of its self-signed certificate), or tls.pin_sha256 to the certificate's fingerprint"
		if a.cfg.TLS.CAFile != "" {
			set = key("tls.ca_file") + " names " + a.cfg.TLS.CAFile + ", which does not hold the CA that signed it: put the portal's CA certificate (or its self-signed certificate) there"
		}
		return fmt.Sprintf("connector %s: TLS: the certificate of %s is not signed by a CA pbxbridge trusts (%v)%s: %s", conn, host, ua.Error(), presented, set)
	case errors.As(err, &he):
		return fmt.Sprintf("connector %s: TLS: the certificate of %s is not valid for that host name (%v)%s: use a host name the certificate names in portal_url, or pin the certificate with %s",
			conn, host, he.Error(), presented, key("tls.pin_sha256"))
	case errors.As(err, &ci):
		return fmt.Sprintf("connector %s: TLS: the certificate of %s is not valid (%v)%s: renew it on the portal, or pin it with %s", conn, host, ci.Error(), presented, key("tls.pin_sha256"))
	case errors.As(err, &rhe):
		return fmt.Sprintf("connector %s: TLS: %s does not speak HTTPS: check the scheme and port of portal_url", conn, host)
	}
	return fmt.Sprintf("connector %s: TLS: the certificate of %s was refused (%v)%s: check %s and tls.pin_sha256", conn, host, rootCause(err), presented, key("tls.ca_file"))
}

// presentedCert is the certificate a verification error is about, or nil.
func presentedCert(err error) *x509.Certificate {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		cve *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &ua) && ua.Cert != nil:
		return ua.Cert
	case errors.As(err, &he) && he.Certificate != nil:
		return he.Certificate
	case errors.As(err, &ci) && ci.Cert != nil:
		return ci.Cert
	case errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0:
		return cve.UnverifiedCertificates[0]
	}
	return nil
}

// rootCause is the innermost error of a chain (its own words, without the wrappers').
func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// portalTransport returns a client whose requests to the portal's host use tc and all others
// the base client's transport. The base transport is either an *http.Transport (cloned) or one
// that can make a copy of itself with another TLS configuration (the daemon's instrumented
// transport: WithTLSConfig(*tls.Config) http.RoundTripper), so that the daemon's metrics and
// resolution stay in place.
func portalTransport(base *http.Client, portalURL string, tc *tls.Config) (*http.Client, error) {
	host := hostPort(portalURL)
	if host == "" {
		return nil, fmt.Errorf("tls: cannot tell the portal's host from %q", portalURL)
	}
	next := base.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	var portal http.RoundTripper
	switch t := next.(type) {
	case interface {
		WithTLSConfig(*tls.Config) http.RoundTripper
	}:
		portal = t.WithTLSConfig(tc)
		if portal == nil {
			return nil, fmt.Errorf("tls: the HTTP transport %T cannot take this connector's TLS settings", next)
		}
	case *http.Transport:
		c := t.Clone()
		c.TLSClientConfig = tc
		portal = c
	default:
		return nil, fmt.Errorf("tls: the HTTP transport %T cannot take this connector's TLS settings", next)
	}
	c := *base
	c.Transport = &hostRouter{host: host, portal: portal, other: next}
	return &c, nil
}

// hostRouter sends requests to one host through portal, all others through other.
type hostRouter struct {
	host   string // lower-case host:port
	portal http.RoundTripper
	other  http.RoundTripper
}

func (h *hostRouter) RoundTrip(r *http.Request) (*http.Response, error) {
	if hostPort(r.URL.String()) == h.host {
		return h.portal.RoundTrip(r)
	}
	return h.other.RoundTrip(r)
}

// hostPort returns the lower-case host:port of a URL, with the scheme's default port filled in.
func hostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		default:
			return ""
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
