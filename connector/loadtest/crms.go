package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The reserved names the fake CRMs answer to (RFC 2606 .invalid; the demo licences are bound to
// them, so they can never unlock a real CRM account).
const (
	B24Host = "demo-bitrix24.invalid"
	AmoHost = "demo-amocrm.invalid"
)

// The CRM names of Request.CRM.
const (
	CRMBitrix24 = "bitrix24"
	CRMAmo      = "amocrm"
)

// CRMOptions set the behaviour of the fake CRMs. The zero value is unlimited and instant.
type CRMOptions struct {
	// B24RPS and B24Burst: the portal's leaky bucket per client (Bitrix24 cloud: 2 req/s, burst
	// 50); 0 disables it.
	B24RPS   float64
	B24Burst int
	// AmoRPS: amoCRM's token bucket per account and client (7 req/s); 0 disables it.
	AmoRPS float64
	// AmoStrictWindow makes the amoCRM fake refuse (429) a request when AmoRPS others arrived
	// in the rolling second before it, instead of the token bucket.
	AmoStrictWindow bool
	// Latency is added to every request by the fakes themselves.
	Latency time.Duration
}

// Request is one HTTP request a fake CRM received, as the proxy saw it.
type Request struct {
	CRM string // CRMBitrix24 or CRMAmo
	// Method: a Bitrix24 REST method in lower case ("telephony.externalcall.register", "batch",
	// "oauth/token"), or "METHOD /path" for amoCRM ("POST /api/v4/calls").
	Method string
	// Keys are the record keys the request names: Bitrix24 EXTERNAL_CALL_ID (register, also
	// inside a batch), amoCRM uniq (calls, unsorted leads).
	Keys []string
	// CallIDs are the Bitrix24 CALL_IDs the request names (finish, also inside a batch).
	CallIDs []string
	// Cmds are the Bitrix24 commands of the request: the method itself, or each command of a
	// batch.
	Cmds []B24Cmd
	// Popups are amoCRM pop-ups (POST /api/v2/events): phone and users of each.
	Popups []Popup
	// Arrived is when the request reached the proxy, Answered when its answer was written.
	Arrived, Answered time.Time
	Status            int
}

// B24Cmd is one Bitrix24 command as the proxy saw it.
type B24Cmd struct {
	Method string // lower case, e.g. "telephony.externalcall.finish"
	Key    string // EXTERNAL_CALL_ID (register)
	CallID string // CALL_ID (finish, show, hide, attachRecord)
	// Shows is true for a command that pops up a card: register with SHOW other than 0, show.
	Shows bool
	Users []int // USER_ID of register, show and hide
}

// Popup is one amoCRM pop-up request item.
type Popup struct {
	Phone string
	Users []int64
}

// CRMs are the fake Bitrix24 and amoCRM behind one loopback HTTP proxy. Requests for other
// hosts get 502. It is safe for concurrent use.
type CRMs struct {
	B24 *fakecrm.Bitrix24
	Amo *fakecrm.AmoCRM

	ln  net.Listener
	srv *http.Server

	down     atomic.Bool
	delay    atomic.Int64 // nanoseconds
	inFlight atomic.Int64
	maxIn    atomic.Int64

	mu   sync.Mutex
	reqs []Request
}

// StartCRMs starts the fakes and their proxy on a free loopback port.
func StartCRMs(o CRMOptions) (*CRMs, error) {
	var b24opts []fakecrm.Bitrix24Option
	if o.B24RPS > 0 {
		b24opts = append(b24opts, fakecrm.B24RateLimit(o.B24RPS, o.B24Burst))
	}
	if o.Latency > 0 {
		b24opts = append(b24opts, fakecrm.B24Latency(o.Latency))
	}
	b24 := fakecrm.NewBitrix24(b24opts...)
	b24.SetBaseURL("http://" + B24Host)
	rps := o.AmoRPS
	if rps <= 0 {
		rps = -1 // disabled
	}
	amo := fakecrm.NewAmoCRM(fakecrm.AmoOptions{RateLimit: rps, RateBurst: max(1, int(o.AmoRPS)), Latency: o.Latency, StrictWindow: o.AmoStrictWindow})
	acc := fakecrm.AmoDemoAccount()
	acc.Subdomain = AmoHost
	amo.AddAccount(acc)
	amo.AddLongLivedToken(AmoHost, fakecrm.DemoLongLivedToken, fakecrm.DemoLongLivedTTL)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("loadtest: crm proxy: %w", err)
	}
	c := &CRMs{B24: b24, Amo: amo, ln: ln}
	c.srv = &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

// ProxyURL is the value of HTTP_PROXY that sends the daemon's CRM requests to the fakes.
func (c *CRMs) ProxyURL() string { return "http://" + c.ln.Addr().String() }

// Close stops the proxy (requests in progress are cut).
func (c *CRMs) Close() error { return c.srv.Close() }

// SetDown makes every CRM answer 503 Service Unavailable (down) or work again.
func (c *CRMs) SetDown(down bool) { c.down.Store(down) }

// SetDelay makes every CRM answer d later (a slow CRM); 0 restores.
func (c *CRMs) SetDelay(d time.Duration) { c.delay.Store(int64(d)) }

// MaxInFlight is the largest number of requests the proxy had in progress at once so far.
func (c *CRMs) MaxInFlight() int64 { return c.maxIn.Load() }

// Requests returns a copy of the requests recorded so far, in the order they were answered.
func (c *CRMs) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Request(nil), c.reqs...)
}

// ServeHTTP implements the proxy: it routes by Host to a fake and records the request.
func (c *CRMs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		m := c.maxIn.Load()
		if n <= m || c.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var h http.Handler
	var name string
	switch strings.ToLower(host) {
	case B24Host:
		h, name = c.B24, CRMBitrix24
	case AmoHost:
		h, name = c.Amo, CRMAmo
	default:
		http.Error(w, "loadtest proxy: unknown host "+host, http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		http.Error(w, "loadtest proxy: reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if d := time.Duration(c.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	sw := &statusWriter{ResponseWriter: w}
	if c.down.Load() {
		http.Error(sw, "Service Unavailable", http.StatusServiceUnavailable)
	} else {
		h.ServeHTTP(sw, r)
	}
	req := Request{CRM: name, Arrived: arrived, Answered: time.Now(), Status: sw.code()}
	if name == CRMBitrix24 {
		parseB24(&req, r.URL.Path, body)
	} else {
		parseAmo(&req, r.Method, r.URL.Path, body)
	}
	c.mu.Lock()
	c.reqs = append(c.reqs, req)
	c.mu.Unlock()
}

// parseB24 fills the method, keys, CALL_IDs and commands of a Bitrix24 REST request (JSON
// bodies, as the adapter sends them; batch commands are query strings).
func parseB24(req *Request, path string, body []byte) {
	if rest, ok := strings.CutPrefix(path, "/rest/"); ok {
		parts := strings.Split(strings.Trim(rest, "/"), "/")
		req.Method = strings.ToLower(strings.TrimSuffix(parts[len(parts)-1], ".json"))
	} else {
		req.Method = strings.Trim(path, "/")
		return
	}
	var p map[string]any
	if json.Unmarshal(body, &p) != nil {
		return
	}
	add := func(method string, get func(string) string, users []int) {
		c := B24Cmd{Method: strings.ToLower(method), Key: get("EXTERNAL_CALL_ID"), CallID: get("CALL_ID"), Users: users}
		switch c.Method {
		case "telephony.externalcall.register":
			c.Shows = get("SHOW") != "0" && get("SHOW") != "false"
		case "telephony.externalcall.show":
			c.Shows = true
		}
		if c.Key != "" {
			req.Keys = append(req.Keys, c.Key)
		}
		if c.CallID != "" {
			req.CallIDs = append(req.CallIDs, c.CallID)
		}
		req.Cmds = append(req.Cmds, c)
	}
	if req.Method != "batch" {
		get := func(k string) string {
			switch v := p[k].(type) {
			case string:
				return v
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64)
			case bool:
				return strconv.FormatBool(v)
			}
			return ""
		}
		var users []int
		switch u := p["USER_ID"].(type) {
		case float64:
			users = []int{int(u)}
		case []any:
			for _, x := range u {
				if f, ok := x.(float64); ok {
					users = append(users, int(f))
				}
			}
		}
		add(req.Method, get, users)
		return
	}
	cmds, _ := p["cmd"].(map[string]any)
	keys := make([]string, 0, len(cmds))
	for k := range cmds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s, _ := cmds[k].(string)
		method, q, _ := strings.Cut(s, "?")
		vals, err := url.ParseQuery(q)
		if err != nil {
			continue
		}
		var users []int
		for name, vs := range vals {
			if name == "USER_ID" || strings.HasPrefix(name, "USER_ID[") {
				for _, v := range vs {
					if n, err := strconv.Atoi(v); err == nil {
						users = append(users, n)
					}
				}
			}
		}
		add(method, vals.Get, users)
	}
}

// parseAmo fills the method, uniq keys and pop-ups of an amoCRM API request.
func parseAmo(req *Request, method, path string, body []byte) {
	path = strings.TrimSuffix(path, "/")
	req.Method = method + " " + path
	switch path {
	case "/api/v4/calls", "/api/v4/leads/unsorted/sip", "/api/v4/leads/notes":
		var items []struct {
			Uniq     string `json:"uniq"`
			Metadata struct {
				Uniq string `json:"uniq"`
			} `json:"metadata"`
			Params struct {
				Uniq string `json:"uniq"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &items) == nil {
			for _, it := range items {
				for _, k := range []string{it.Uniq, it.Metadata.Uniq, it.Params.Uniq} {
					if k != "" {
						req.Keys = append(req.Keys, k)
						break
					}
				}
			}
		}
	case "/api/v2/events":
		var in struct {
			Add []struct {
				PhoneNumber string  `json:"phone_number"`
				Users       []int64 `json:"users"`
			} `json:"add"`
		}
		if json.Unmarshal(body, &in) == nil {
			for _, e := range in.Add {
				req.Popups = append(req.Popups, Popup{Phone: e.PhoneNumber, Users: e.Users})
			}
		}
	}
}

// InstallB24 installs the Bitrix24 local application into the daemon at baseURL (the portal
// POSTs ONAPPINSTALL with the first tokens), as a portal admin would.
func (c *CRMs) InstallB24(ctx context.Context, baseURL, connector string) error {
	if err := c.B24.Install(ctx, strings.TrimRight(baseURL, "/")+"/crm/"+connector+"/install"); err != nil {
		return fmt.Errorf("loadtest: installing the bitrix24 application: %w", err)
	}
	return nil
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
