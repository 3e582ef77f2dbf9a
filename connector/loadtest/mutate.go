package loadtest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
)

// hostileMethods are the methods of the handler fuzz targets (connector/security/fuzz_test.go):
// an input's method byte indexes them.
var hostileMethods = []string{"GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "PROPFIND", "BREW"}

// oddMethods are methods no client of the daemon sends.
var oddMethods = []string{"", "get", "GET\x00", "CONNECT", "TRACE", "PRI", "M-SEARCH", strings.Repeat("X", 300), "G\xc3\xa9T"}

// hostileReq is one complete request: its framing (Content-Length, Connection: close) is always
// consistent, so the daemon has everything it needs to answer at once.
type hostileReq struct {
	target string
	method string
	path   string
	host   string
	header []string // "Name: value" lines, no framing headers
	body   []byte
	what   string // the mutations applied, for the report
}

// framingHeaders are left out of the inputs' header lines: the harness frames every request
// itself (a wrong length or an Expect would make the daemon wait for bytes never sent).
var framingHeaders = map[string]bool{"content-length": true, "transfer-encoding": true, "expect": true,
	"connection": true, "host": true, "te": true, "trailer": true, "keep-alive": true}

// wire is the request as sent.
func (r *hostileReq) wire() []byte {
	var b bytes.Buffer
	b.Grow(len(r.path) + len(r.body) + 256)
	b.WriteString(r.method)
	b.WriteByte(' ')
	b.WriteString(r.path)
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(r.host)
	b.WriteString("\r\n")
	for _, h := range r.header {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n", len(r.body))
	b.Write(r.body)
	return b.Bytes()
}

// describe is the request in one line for the report (long parts cut).
func (r *hostileReq) describe() string {
	return fmt.Sprintf("%.20q %.60q to %s, %d header lines, %d-byte body [%s]", r.method, r.path, r.target, len(r.header), len(r.body), r.what)
}

// mutator turns corpus inputs into hostile requests.
type mutator struct {
	r       *rand.Rand
	token   string          // the admin listener's real token
	keys    func() []string // record keys of calls the daemon has seen
	maxBody int
	hosts   map[string]string // target → its Host header
}

func (m *mutator) chance(p float64) bool { return m.r.Float64() < p }

func (m *mutator) randHex(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(m.r.UintN(256))
	}
	return hex.EncodeToString(b)
}

func (m *mutator) randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(m.r.UintN(256))
	}
	return b
}

// harnessNames maps the demo's connector names in the seeds to the harness's.
var harnessNames = strings.NewReplacer("/crm/b24-demo/", "/crm/b24/", "/crm/amo-demo/", "/crm/amo/", "connector=b24-demo", "connector=b24")

// request builds a hostile request from a corpus input: the input as the fuzz target would
// send it, then up to three random mutations.
func (m *mutator) request(in HostileInput) hostileReq {
	req := hostileReq{target: in.Target, method: hostileMethods[int(in.Method)%len(hostileMethods)],
		path: in.Path, host: m.hosts[in.Target], body: bytes.Clone(in.Body)}
	if !strings.HasPrefix(req.path, "/") {
		req.path = "/" + req.path
	}
	req.path = harnessNames.Replace(req.path)
	for line := range strings.SplitSeq(in.Header, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue // an empty line would end the header early
		}
		k, _, _ := strings.Cut(line, ":")
		if framingHeaders[strings.ToLower(strings.TrimSpace(k))] {
			continue
		}
		req.header = append(req.header, line)
	}
	// Half the requests to the admin listener carry its real token, so that they reach the
	// handlers behind it; the others carry none or a forged one.
	if in.Target == HostileAdmin && m.token != "" && m.chance(0.5) {
		req.header = append(req.header, "Authorization: Bearer "+m.token)
	}
	var what []string
	for range m.r.IntN(4) {
		what = append(what, m.mutate(&req))
	}
	req.what = strings.Join(what, ",")
	req.path = strings.NewReplacer("\r", "%0D", "\n", "%0A").Replace(req.path)
	if in.Target == HostileSocket && destructive(req.path) {
		req.path = "/v1/status"
	}
	return req
}

// destructive reports whether a path names an admin socket action that changes the daemon's
// state on purpose (reload, dropping, redelivering, forgetting, importing, backing up): a root
// operator's legitimate actions, left out so that every call must still reach the CRMs once.
func destructive(path string) bool {
	p := path
	if u, err := url.PathUnescape(path); err == nil {
		p = u
	}
	p = strings.ToLower(p)
	for _, s := range []string{"reload", "drop", "redeliver", "forget", "backup", "import"} {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}

// mutate applies one random mutation and names it.
func (m *mutator) mutate(req *hostileReq) string {
	switch m.r.IntN(14) {
	case 0:
		req.path = string(m.flip([]byte(req.path)))
		return "flip-path"
	case 1:
		req.header = strings.Split(string(m.flip([]byte(strings.Join(req.header, "\n")))), "\n")
		req.header = dropFraming(req.header)
		return "flip-header"
	case 2:
		req.body = m.flip(req.body)
		return "flip-body"
	case 3:
		req.path = m.idPath(req.target)
		return "id"
	case 4:
		req.header = append(req.header, m.forgedAuth())
		return "forged-token"
	case 5:
		if m.chance(0.3) {
			m.hugeBody(req)
			return "huge-body"
		}
		req.body = append(req.body, m.randBytes(m.r.IntN(4096))...)
		return "more-body"
	case 6:
		n := 50 + m.r.IntN(700)
		for i := range n {
			req.header = append(req.header, fmt.Sprintf("X-Hostile-%d: %s", i, strings.Repeat("v", m.r.IntN(60))))
		}
		return "headers-" + strconv.Itoa(n)
	case 7:
		req.path += "/" + strings.Repeat("a", m.r.IntN(48<<10))
		return "long-path"
	case 8:
		req.method = oddMethods[m.r.IntN(len(oddMethods))]
		return "odd-method"
	case 9:
		var q strings.Builder
		for i := range 1 + m.r.IntN(800) {
			if i > 0 {
				q.WriteByte('&')
			}
			fmt.Fprintf(&q, "%s=%s", []string{"number", "connector", "state", "code", "sig", "exp", "limit", "since", "a[]", "auth[domain]"}[m.r.IntN(10)], m.randHex(m.r.IntN(20)))
		}
		sep := "?"
		if strings.Contains(req.path, "?") {
			sep = "&"
		}
		req.path += sep + q.String()
		return "query"
	case 10:
		req.host = []string{"evil.example", "127.0.0.1.evil.example", "[::1", "", "localhost:99999", string(m.randBytes(8))}[m.r.IntN(6)]
		req.host = strings.NewReplacer("\r", "", "\n", "").Replace(req.host)
		return "host"
	case 11:
		junk := []string{"%", "%zz", "%00", "/../", "//", "/./", "%2e%2e/", "%2F", ";", "\x00", "\xff", " ", "#"}
		i := m.r.IntN(len(req.path) + 1)
		req.path = req.path[:i] + junk[m.r.IntN(len(junk))] + req.path[i:]
		return "path-junk"
	case 12:
		req.header = append(req.header, []string{
			"Content-Type: multipart/form-data; boundary=" + m.randHex(m.r.IntN(80)),
			"Content-Type: application/json; charset=" + m.randHex(4),
			"Content-Type: application/x-www-form-urlencoded",
			"Content-Encoding: gzip",
			"Cookie: " + strings.Repeat("a=b; ", m.r.IntN(2000)),
			"Range: bytes=" + strings.Repeat("0-1,", m.r.IntN(1000)) + "0-",
			"Origin: https://evil.example",
			"Sec-Fetch-Site: same-origin",
			"X-Forwarded-For: " + m.randHex(4),
		}[m.r.IntN(9)])
		return "header"
	default:
		req.body = m.forgedBody()
		return "forged-body"
	}
}

func dropFraming(lines []string) []string {
	out := lines[:0]
	for _, l := range lines {
		l = strings.TrimRight(l, "\r")
		k, _, _ := strings.Cut(l, ":")
		if strings.TrimSpace(l) == "" || framingHeaders[strings.ToLower(strings.TrimSpace(k))] {
			continue
		}
		out = append(out, l)
	}
	return out
}

// flip flips up to 8 random bits of b (or adds a byte to an empty b).
func (m *mutator) flip(b []byte) []byte {
	if len(b) == 0 {
		return []byte{byte(m.r.UintN(256))}
	}
	b = bytes.Clone(b)
	for range 1 + m.r.IntN(8) {
		b[m.r.IntN(len(b))] ^= 1 << m.r.UintN(8)
	}
	return b
}

// idPath is a route of the target with an unknown (or, sometimes, a real) id.
func (m *mutator) idPath(target string) string {
	key := m.randHex(1+m.r.IntN(8)) + "." + strconv.Itoa(m.r.IntN(1000))
	if keys := m.keys(); len(keys) > 0 && m.chance(0.3) {
		key = keys[m.r.IntN(len(keys))]
	}
	esc := url.PathEscape(key)
	switch target {
	case HostilePublic:
		return []string{
			"/crm/" + m.randHex(4) + "/events",
			"/crm/b24/" + m.randHex(3),
			"/crm/amo/" + m.randHex(3),
			"/rec/" + m.randHex(8) + ".wav?exp=" + strconv.Itoa(2000000000+m.r.IntN(1e6)) + "&sig=" + m.randHex(32),
			"/rec/" + esc + ".wav?exp=1&sig=" + m.randHex(16),
			"/crm/b24/events?member_id=" + m.randHex(16),
		}[m.r.IntN(6)]
	case HostileAdmin:
		return []string{"/calls/" + esc, "/calls/lab/" + esc, "/v1/lookup?number=%2B7" + strconv.Itoa(m.r.IntN(1e9)),
			"/v1/responsible?number=" + strconv.Itoa(m.r.IntN(1e6)) + "&connector=" + m.randHex(3)}[m.r.IntN(4)]
	default:
		return []string{"/v1/calls/" + esc, "/v1/outbox?state=" + m.randHex(2) + "&limit=" + strconv.Itoa(m.r.IntN(1e7)),
			"/v1/outbox?since=" + m.randHex(5)}[m.r.IntN(3)]
	}
}

// forgedAuth is a forged credential.
func (m *mutator) forgedAuth() string {
	switch m.r.IntN(4) {
	case 0:
		return "Authorization: Bearer " + m.randHex(16)
	case 1:
		return "Authorization: Basic " + m.randHex(12)
	case 2: // a JWT-shaped token, as amoCRM sends
		return "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9." + m.randHex(40) + "." + m.randHex(64)
	default:
		return "Authorization: " + strings.Repeat("Bearer ", 1+m.r.IntN(50))
	}
}

// forgedBody is a CRM callback with forged credentials.
func (m *mutator) forgedBody() []byte {
	switch m.r.IntN(4) {
	case 0:
		return fmt.Appendf(nil, "event=%s&auth[application_token]=%s&auth[member_id]=%s&auth[domain]=demo-b24.invalid&data[CALL_ID]=%s",
			[]string{"ONAPPINSTALL", "ONAPPUNINSTALL", "ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART"}[m.r.IntN(4)], m.randHex(16), m.randHex(16), m.randHex(8))
	case 1:
		return fmt.Appendf(nil, `{"user_id":%d,"phone":"+7%d","token":"%s","account_id":%d}`, m.r.IntN(1e6), m.r.IntN(1e10), m.randHex(16), m.r.IntN(1e8))
	case 2:
		return fmt.Appendf(nil, `{"filter":{"state":"%s","connector":"%s"},"limit":%d}`, m.randHex(3), m.randHex(3), m.r.IntN(1e9))
	default:
		return m.randBytes(m.r.IntN(2048))
	}
}

// hugeBody replaces the body with one of 64 KiB to maxBody.
func (m *mutator) hugeBody(req *hostileReq) {
	n := 64<<10 + m.r.IntN(max(1, m.maxBody-64<<10))
	switch m.r.IntN(4) {
	case 0:
		req.body = m.randBytes(n)
	case 1: // a form with one enormous value
		req.body = append([]byte("event=ONEXTERNALCALLSTART&data[PHONE_NUMBER]="), bytes.Repeat([]byte("9"), n)...)
	case 2: // deeply nested JSON
		req.body = append(bytes.Repeat([]byte("["), n/2), bytes.Repeat([]byte("]"), n/2)...)
	default:
		seed := req.body
		if len(seed) == 0 {
			seed = []byte("A")
		}
		req.body = bytes.Repeat(seed, n/len(seed)+1)[:n]
	}
}
