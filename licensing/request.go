package licensing

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"time"
)

// Request is an offline activation request (§3.14): what the vendor needs to issue a bound
// licence. It holds no secrets: host factors are HMAC'd, the CRM account is an identifier.
type Request struct {
	V         int         `json:"v"`
	Connector string      `json:"connector"`
	Version   string      `json:"daemon_version,omitempty"`
	Host      Fingerprint `json:"host"`
	CRM       *CRMBinding `json:"crm,omitempty"`
	Nonce     string      `json:"nonce"`
	Created   time.Time   `json:"created"`
}

// requestPrefix starts every request code.
const requestPrefix = "pbxreq1."

// NewRequest builds a request with a fresh nonce for a connector type of cs; crm, when set, must
// have the shape of the type's binding kind.
func NewRequest(cs Connectors, connector, version string, fp Fingerprint, crm *CRMBinding, now time.Time) (Request, error) {
	kind, ok := cs.Binding(connector)
	if !ok {
		return Request{}, cs.unknownConnector(connector)
	}
	if err := checkBinding(kind, connector, crm); err != nil {
		return Request{}, err
	}
	var n [8]byte
	if _, err := rand.Read(n[:]); err != nil {
		return Request{}, err
	}
	return Request{V: 1, Connector: connector, Version: version, Host: fp, CRM: crm, Nonce: hex.EncodeToString(n[:]),
		Created: now.UTC().Truncate(time.Second)}, nil
}

// EncodeRequest renders the request code: "pbxreq1." base64url(JSON) "." CRC-32 (hex) of the
// JSON, so a mistyped code is detected.
func EncodeRequest(r Request) (string, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%s.%08x", requestPrefix, base64.RawURLEncoding.EncodeToString(js), crc32.ChecksumIEEE(js)), nil
}

// DecodeRequest parses a request code; whitespace (line wrapping in e-mails) is ignored. It checks
// the connector's syntax only: the issuer checks the type against what it sells.
func DecodeRequest(code string) (Request, error) {
	code = strings.Join(strings.Fields(code), "")
	if len(code) > 8<<10 {
		return Request{}, errors.New("request code too long")
	}
	rest, ok := strings.CutPrefix(code, requestPrefix)
	if !ok {
		return Request{}, fmt.Errorf("request code must start with %q", requestPrefix)
	}
	body, sum, ok := strings.Cut(rest, ".")
	if !ok {
		return Request{}, errors.New("request code: missing checksum")
	}
	js, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return Request{}, fmt.Errorf("request code: %w", err)
	}
	if fmt.Sprintf("%08x", crc32.ChecksumIEEE(js)) != sum {
		return Request{}, errors.New("request code: checksum mismatch (was it copied completely?)")
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("request code: %w", err)
	}
	if r.V != 1 || !ValidConnectorName(r.Connector) || r.Host.FPV != FingerprintVersion {
		return Request{}, errors.New("request code: unsupported version, connector or fingerprint")
	}
	return r, nil
}
