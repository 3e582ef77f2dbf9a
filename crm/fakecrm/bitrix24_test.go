package fakecrm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

type b24Resp struct {
	status int
	body   map[string]any
}

func (r b24Resp) code() string { s, _ := r.body["error"].(string); return s }

func post(t *testing.T, u string, body any) b24Resp {
	t.Helper()
	var rd io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case url.Values:
		rd, ct = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	resp := do(t, http.MethodPost, u, ct, rd)
	defer func() { _ = resp.Body.Close() }()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s: body is not JSON: %v", u, err)
	}
	return b24Resp{resp.StatusCode, m}
}

func TestB24Routing(t *testing.T) {
	f := startBitrix24(t, B24Webhook(1, "code", "crm,user,telephony"))
	tok := f.IssueTokens()
	// OAuth, mixed-case method with .json, auth in a form body.
	r := post(t, f.URL()+"/rest/User.Get.json", url.Values{"auth": {tok.AccessToken}, "FILTER[UF_PHONE_INNER]": {"101"}})
	users, _ := r.body["result"].([]any)
	if r.status != 200 || len(users) != 1 || r.body["time"] == nil {
		t.Fatalf("user.get: %+v", r)
	}
	// GET with the auth in the query string.
	resp := do(t, http.MethodGet, f.URL()+"/rest/user.get?auth="+tok.AccessToken+"&FILTER[ID]=1270", "", nil)
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	_ = resp.Body.Close()
	if us, _ := m["result"].([]any); len(us) != 1 {
		t.Fatalf("GET user.get: %v", m)
	}
	// Webhook.
	if r := post(t, f.URL()+"/rest/1/code/user.get", map[string]any{}); r.status != 200 {
		t.Fatalf("webhook: %+v", r)
	}
	for _, tc := range []struct {
		url  string
		body any
		st   int
		code string
	}{
		{f.URL() + "/rest/1/wrong/user.get", map[string]any{}, 401, "NO_AUTH_FOUND"},
		{f.URL() + "/rest/user.get", map[string]any{"auth": "nope"}, 401, "NO_AUTH_FOUND"},
		{f.URL() + "/rest/user.get", map[string]any{}, 401, "NO_AUTH_FOUND"},
		{f.URL() + "/rest/1/code/telephony.externalCall.register", map[string]any{"USER_ID": 1, "PHONE_NUMBER": "1", "TYPE": 2}, 403, "WRONG_AUTH_TYPE"},
		{f.URL() + "/rest/1/code/tasks.task.add", map[string]any{}, 403, "insufficient_scope"},
		{f.URL() + "/rest/no.such.method", map[string]any{"auth": tok.AccessToken}, 404, "ERROR_METHOD_NOT_FOUND"},
	} {
		if r := post(t, tc.url, tc.body); r.status != tc.st || r.code() != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.url, r.status, r.code(), tc.st, tc.code)
		}
	}
	f.ExpireTokens()
	if r := post(t, f.URL()+"/rest/user.get", map[string]any{"auth": tok.AccessToken}); r.status != 401 || r.code() != "expired_token" {
		t.Fatalf("expired: %+v", r)
	}
	if s := f.State(); s.Requests["user.get"] < 5 {
		t.Fatalf("requests not counted: %v", s.Requests)
	}
}

func TestB24RateLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := startBitrix24(t, B24RateLimit(2, 50), B24Clock(clock))
	tok := f.IssueTokens()
	ok := 0
	for range 60 {
		if r := post(t, f.URL()+"/rest/user.get", map[string]any{"auth": tok.AccessToken}); r.status == 200 {
			ok++
		} else if r.status != 503 || r.code() != "QUERY_LIMIT_EXCEEDED" {
			t.Fatalf("refusal %+v", r)
		}
	}
	if ok != 51 || f.State().RateLimited != 9 {
		t.Fatalf("%d accepted, %d refused; want 51 (the level may reach 50 before refusing) and 9", ok, f.State().RateLimited)
	}
	mu.Lock()
	now = now.Add(time.Second) // drains 2
	mu.Unlock()
	if r := post(t, f.URL()+"/rest/user.get", map[string]any{"auth": tok.AccessToken}); r.status != 200 {
		t.Fatalf("after draining: %+v", r)
	}
}

func register(t *testing.T, f *Bitrix24, tok string, ext string) string {
	t.Helper()
	r := post(t, f.URL()+"/rest/telephony.externalcall.register", map[string]any{"auth": tok, "USER_PHONE_INNER": "101",
		"PHONE_NUMBER": "+79001234567", "TYPE": 2, "LINE_NUMBER": "+74951112233", "EXTERNAL_CALL_ID": ext,
		"CALL_START_DATE": "2026-11-22T03:03:02+03:00"})
	res, _ := r.body["result"].(map[string]any)
	id, _ := res["CALL_ID"].(string)
	if r.status != 200 || id == "" {
		t.Fatalf("register: %+v", r)
	}
	if res["CRM_ENTITY_TYPE"] != "CONTACT" {
		t.Fatalf("register did not bind the contact: %v", res)
	}
	return id
}

func TestB24TelephonyStateMachine(t *testing.T) {
	f := startBitrix24(t)
	tok := f.IssueTokens().AccessToken
	a := register(t, f, tok, "pbx/1")
	if b := register(t, f, tok, "pbx/1"); b != a {
		t.Fatal("repeat register with the same EXTERNAL_CALL_ID got a new CALL_ID")
	}
	if b := register(t, f, tok, "pbx/2"); b == a {
		t.Fatal("another call got the same CALL_ID without the bug")
	}
	u := f.URL() + "/rest/telephony.externalCall."
	if r := post(t, u+"attachRecord", map[string]any{"auth": tok, "CALL_ID": a, "FILENAME": "a.wav", "FILE_CONTENT": "UklGRg=="}); r.code() != "ERROR_CORE" {
		t.Fatalf("attach before finish: %+v", r)
	}
	if r := post(t, u+"finish", map[string]any{"auth": tok, "CALL_ID": 5, "USER_ID": 1269}); r.code() != "INVALID_ARGUMENT" {
		t.Fatalf("finish with a numeric CALL_ID: %+v", r)
	}
	if r := post(t, u+"show", map[string]any{"auth": tok, "CALL_ID": a, "USER_ID": []int{1270, 1271}}); r.body["result"] != true {
		t.Fatalf("show: %+v", r)
	}
	r := post(t, u+"finish", map[string]any{"auth": tok, "CALL_ID": a, "USER_ID": 1269, "DURATION": 95, "ADD_TO_CHAT": 0})
	res, _ := r.body["result"].(map[string]any)
	if r.status != 200 || res["CALL_FAILED_CODE"] != "200" || res["CRM_ACTIVITY_ID"] == nil {
		t.Fatalf("finish: %+v", r)
	}
	if r := post(t, u+"finish", map[string]any{"auth": tok, "CALL_ID": a, "USER_ID": 1269}); r.code() != "ERROR_CORE" {
		t.Fatalf("second finish: %+v", r)
	}
	if r := post(t, u+"hide", map[string]any{"auth": tok, "CALL_ID": a}); r.body["result"] != false {
		t.Fatalf("hide after finish: %+v", r)
	}
	if r := post(t, u+"attachRecord", map[string]any{"auth": tok, "CALL_ID": a, "FILENAME": "a.ogg", "FILE_CONTENT": "UklGRg=="}); !strings.Contains(fmt.Sprint(r.body["error_description"]), "wav and mp3") {
		t.Fatalf("ogg: %+v", r)
	}
	if r := post(t, u+"attachRecord", map[string]any{"auth": tok, "CALL_ID": a, "FILENAME": "a.wav", "FILE_CONTENT": "!!"}); !strings.Contains(fmt.Sprint(r.body["error_description"]), "Base64") {
		t.Fatalf("bad base64: %+v", r)
	}
	// Two-step upload.
	r = post(t, u+"attachRecord", map[string]any{"auth": tok, "CALL_ID": a, "FILENAME": "a.mp3"})
	res, _ = r.body["result"].(map[string]any)
	up, _ := res["uploadUrl"].(string)
	if up == "" || res["fieldName"] != "file" {
		t.Fatalf("upload url: %+v", r)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "a.mp3")
	_, _ = fw.Write(make([]byte, 1234))
	_ = mw.Close()
	resp := do(t, http.MethodPost, up, mw.FormDataContentType(), &buf)
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %v", resp)
	}
	_ = resp.Body.Close()
	s := f.State()
	c := s.Calls[0]
	if c.Record == nil || c.Record.Mode != "upload" || c.Record.Size != 1234 || c.State != "finished" || c.AddToChat != "0" {
		t.Fatalf("call %+v", c)
	}
	if len(s.Cards) < 3 || s.Cards[len(s.Cards)-1].Action != "finish" {
		t.Fatalf("cards %+v", s.Cards)
	}
}

func TestB24ReuseBug(t *testing.T) {
	f := startBitrix24(t, B24ReuseCallID(true))
	tok := f.IssueTokens().AccessToken
	if a, b := register(t, f, tok, "pbx/1"), register(t, f, tok, "pbx/2"); a != b {
		t.Fatal("the bug is not reproduced")
	}
}

func TestB24BatchAndCRM(t *testing.T) {
	f := startBitrix24(t)
	tok := f.IssueTokens().AccessToken
	r := post(t, f.URL()+"/rest/batch", map[string]any{"auth": tok, "halt": 0, "cmd": map[string]string{
		"u": "user.get?FILTER[UF_PHONE_INNER]=101",
		"d": "crm.duplicate.findbycomm?type=PHONE&values[]=79001234567",
		"n": "crm.duplicate.findbycomm?type=PHONE&values[]=70000000000",
		"x": "crm.duplicate.findbycomm?values[]=1",
		"a": "telephony.externalCall.attachRecord?CALL_ID=1",
	}})
	res, _ := r.body["result"].(map[string]any)
	results, _ := res["result"].(map[string]any)
	errs, _ := res["result_error"].(map[string]any)
	if r.status != 200 || len(results) != 3 || len(errs) != 2 {
		t.Fatalf("batch: %+v", r)
	}
	if d, _ := results["d"].(map[string]any); d["CONTACT"] == nil {
		t.Fatalf("findbycomm in batch: %v", results["d"])
	}
	if n, ok := results["n"].([]any); !ok || len(n) != 0 {
		t.Fatalf("nothing found must be []: %v", results["n"])
	}
	if e, _ := errs["a"].(map[string]any); e["error"] != "ERROR_BATCH_METHOD_NOT_ALLOWED" {
		t.Fatalf("attachRecord in batch: %v", errs["a"])
	}
	if _, isArr := res["result_next"].([]any); !isArr {
		t.Fatalf("empty section must be []: %v", res["result_next"])
	}
	cmds := map[string]string{}
	for i := range 51 {
		cmds[fmt.Sprint(i)] = "user.get"
	}
	if r := post(t, f.URL()+"/rest/batch", map[string]any{"auth": tok, "cmd": cmds}); r.code() != "ERROR_BATCH_LENGTH_EXCEEDED" {
		t.Fatalf("51 commands: %+v", r)
	}
	// Tasks need a title and a known responsible; ids come back as strings.
	if r := post(t, f.URL()+"/rest/tasks.task.add", map[string]any{"auth": tok, "fields": map[string]any{"TITLE": "x", "RESPONSIBLE_ID": 424242}}); r.code() != "ERROR_CORE" {
		t.Fatalf("unknown responsible: %+v", r)
	}
	r = post(t, f.URL()+"/rest/tasks.task.add", map[string]any{"auth": tok, "fields": map[string]any{"TITLE": "x", "RESPONSIBLE_ID": 1269}})
	task, _ := r.body["result"].(map[string]any)["task"].(map[string]any)
	if _, isStr := task["id"].(string); !isStr {
		t.Fatalf("task: %+v", r)
	}
	if r := post(t, f.URL()+"/rest/crm.activity.todo.add", map[string]any{"auth": tok, "ownerTypeId": 3, "ownerId": 1, "deadline": "2026-02-03T15:00:00"}); r.code() != "OWNER_NOT_FOUND" {
		t.Fatalf("todo on an unknown owner: %+v", r)
	}
	r = post(t, f.URL()+"/rest/crm.lead.add", map[string]any{"auth": tok, "fields": map[string]any{"TITLE": "Missed", "PHONE": []map[string]string{{"VALUE": "+79990000000", "VALUE_TYPE": "WORK"}}}})
	if id, _ := r.body["result"].(float64); id <= 0 {
		t.Fatalf("lead: %+v", r)
	}
	r = post(t, f.URL()+"/rest/telephony.externalCall.searchCrmEntities", map[string]any{"auth": tok, "PHONE_NUMBER": "89990000000"})
	if ms, _ := r.body["result"].([]any); len(ms) != 1 {
		t.Fatalf("the new lead is not found by phone: %+v", r)
	}
}

func TestB24OAuth(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := startBitrix24(t, B24Clock(clock))
	tok := f.IssueTokens()
	token := func(v url.Values) (int, map[string]any) {
		v.Set("client_id", f.ClientID())
		if v.Get("client_secret") == "" {
			v.Set("client_secret", f.ClientSecret())
		}
		resp := do(t, http.MethodGet, f.URL()+"/oauth/token/?"+v.Encode(), "", nil)
		defer func() { _ = resp.Body.Close() }()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	st, m := token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}})
	if st != 200 || m["refresh_token"] == tok.RefreshToken || m["member_id"] != f.MemberID() {
		t.Fatalf("refresh: %d %v", st, m)
	}
	if st, m := token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}); st != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("reused refresh token: %d %v", st, m)
	}
	if st, m := token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_secret": {"bad"}}); st != 401 || m["error"] != "invalid_client" {
		t.Fatalf("bad secret: %d %v", st, m)
	}
	// Authorisation codes live 30 s.
	resp := do(t, http.MethodGet, f.URL()+"/oauth/authorize/?client_id="+f.ClientID(), "", nil)
	var c struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&c)
	_ = resp.Body.Close()
	mu.Lock()
	now = now.Add(31 * time.Second)
	mu.Unlock()
	if st, m := token(url.Values{"grant_type": {"authorization_code"}, "code": {c.Code}}); st != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("stale code: %d %v", st, m)
	}
	if f.State().TokenRefreshes != 1 {
		t.Fatalf("refreshes %d", f.State().TokenRefreshes)
	}
}

func TestB24ControlEndpoints(t *testing.T) {
	f := startBitrix24(t)
	resp := do(t, http.MethodPost, f.URL()+"/_fake/faults", "application/json", strings.NewReader(`{"latency":"5ms","rate_limit_rps":2,"rate_limit_burst":50,"reuse_call_id":true}`))
	if resp.StatusCode != 200 {
		t.Fatalf("faults: %v", resp)
	}
	_ = resp.Body.Close()
	x := f.Faults()
	if x.Latency != 5*time.Millisecond || x.RateLimitRPS != 2 || !x.ReuseCallID || !x.TelephonyAppOnly {
		t.Fatalf("faults after a partial update: %+v", x)
	}
	resp = do(t, http.MethodPost, f.URL()+"/_fake/faults", "application/json", strings.NewReader(`{"nope":1}`))
	if resp.StatusCode != 400 {
		t.Fatalf("unknown fault accepted: %d", resp.StatusCode)
	}
	_ = resp.Body.Close()
	resp = do(t, http.MethodGet, f.URL()+"/_fake/state", "", nil)
	var s B24State
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || len(s.Users) != 5 || s.Calls == nil {
		t.Fatalf("state: %+v %v", s, err)
	}
	_ = resp.Body.Close()
}

func do(t *testing.T, method, u, contentType string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// startBitrix24 serves a new fake on an httptest server closed at the end of the test (what
// crmtest.StartBitrix24 does for other packages; crmtest imports this package).
func startBitrix24(tb testing.TB, opts ...Bitrix24Option) *Bitrix24 {
	tb.Helper()
	f := NewBitrix24(opts...)
	srv := httptest.NewServer(f)
	tb.Cleanup(srv.Close)
	f.SetBaseURL(srv.URL)
	return f
}

// TestB24StatisticAndBatchedFinish: finish, show and hide run inside a batch like alone;
// voximplant.statistic.get lists finished calls by CALL_ID (an unfinished call is not there);
// the permission fault answers ACCESS_DENIED; a garbled answer does not decode but the method ran.
func TestB24StatisticAndBatchedFinish(t *testing.T) {
	f := startBitrix24(t)
	tok := f.IssueTokens()
	a := register(t, f, tok.AccessToken, "pbx/1")
	b := register(t, f, tok.AccessToken, "pbx/2")
	stat := func(id string) []any {
		t.Helper()
		r := post(t, f.URL()+"/rest/voximplant.statistic.get", map[string]any{"auth": tok.AccessToken, "FILTER": map[string]any{"CALL_ID": id}})
		rows, ok := r.body["result"].([]any)
		if r.status != 200 || !ok {
			t.Fatalf("statistic: %+v", r)
		}
		return rows
	}
	if rows := stat(a); len(rows) != 0 {
		t.Fatalf("an unfinished call is in the statistics: %v", rows)
	}
	cmd := map[string]any{
		"c1": "telephony.externalCall.show?" + url.Values{"CALL_ID": {b}, "USER_ID[0]": {"1270"}, "USER_ID[1]": {"1271"}}.Encode(),
		"c2": "telephony.externalCall.hide?" + url.Values{"CALL_ID": {b}, "USER_ID": {"1271"}}.Encode(),
		"c3": "telephony.externalCall.finish?" + url.Values{"CALL_ID": {a}, "USER_ID": {"1269"}, "DURATION": {"7"}, "STATUS_CODE": {"200"}, "ADD_TO_CHAT": {"1"}}.Encode(),
		"c4": "telephony.externalCall.finish?" + url.Values{"CALL_ID": {"externalCall.nope"}, "USER_ID": {"1269"}}.Encode(),
	}
	r := post(t, f.URL()+"/rest/batch", map[string]any{"auth": tok.AccessToken, "halt": 0, "cmd": cmd})
	res, _ := r.body["result"].(map[string]any)
	results, _ := res["result"].(map[string]any)
	errs, _ := res["result_error"].(map[string]any)
	if r.status != 200 || results["c1"] != true || results["c2"] != true || results["c3"] == nil || errs["c4"] == nil {
		t.Fatalf("batch: %+v", r)
	}
	s := f.State()
	for _, c := range s.Calls {
		switch c.CallID {
		case a:
			if c.State != "finished" || c.Duration != 7 || c.FinishUserID != 1269 {
				t.Fatalf("batched finish: %+v", c)
			}
		case b:
			if len(c.VisibleTo) != 2 || c.VisibleTo[0] != 1269 || c.VisibleTo[1] != 1270 {
				t.Fatalf("batched show/hide: visible to %v", c.VisibleTo)
			}
		}
	}
	if s.Requests["batch"] != 1 || s.BatchCommands["telephony.externalcall.finish"] != 2 {
		t.Fatalf("requests %v, batch commands %v", s.Requests, s.BatchCommands)
	}
	rows := stat(a)
	row, _ := rows[0].(map[string]any)
	if len(rows) != 1 || row["CALL_ID"] != a || row["CALL_FAILED_CODE"] != "200" || row["CRM_ACTIVITY_ID"] == "" {
		t.Fatalf("statistics of the finished call: %v", rows)
	}
	f.SetFaults(B24Faults{TelephonyAppOnly: true, StatisticDenied: true, GarbleMethods: []string{"telephony.externalCall.finish"}})
	r = post(t, f.URL()+"/rest/voximplant.statistic.get", map[string]any{"auth": tok.AccessToken, "FILTER": map[string]any{"CALL_ID": a}})
	if r.status != 403 || r.code() != "ACCESS_DENIED" {
		t.Fatalf("denied statistics: %+v", r)
	}
	resp := do(t, http.MethodPost, f.URL()+"/rest/telephony.externalCall.finish", "application/json",
		strings.NewReader(fmt.Sprintf(`{"auth":%q,"CALL_ID":%q,"USER_ID":1270}`, tok.AccessToken, b)))
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || json.Valid(body) {
		t.Fatalf("garbled finish: %d %s", resp.StatusCode, body)
	}
	if f.Logged("pbx/2") != 1 {
		t.Fatal("the garbled finish did not run")
	}
}

// TestB24ClientBucketNeverRefused: pbxbridge's client-side bucket (crm/bitrix24/api, default
// settings 2/s, burst 50, live reserve 5) against the portal's rule as this fake enforces it
// (docs/crm-apis.md A.1.4: refused once the level is above 50), on a virtual clock: rushes of
// requests granted as fast as the client allows, live only (they may use the whole burst) or
// mixed with deliveries, reach the portal up to 250 ms after they were granted (network jitter,
// reordering). The portal never refuses one; a client burst of 52 would be refused.
func TestB24ClientBucketNeverRefused(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	client := api.NewBucket(2, 50, 5, clock)
	rng := mrand.New(mrand.NewPCG(7, 7))
	var arrivals []time.Time
	// take gets a slot on the virtual clock: Wait answers at once with the wait when the slot is
	// not there (a deadline before it), and the caller "sleeps" by moving the clock.
	take := func(priority bool) {
		for range 1000 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			_, err := client.Wait(ctx, priority)
			cancel()
			if err == nil {
				return
			}
			var le *api.LimitError
			d := time.Millisecond
			if errors.As(err, &le) {
				d = le.Wait
			}
			now = now.Add(d)
		}
		t.Fatal("no slot after 1000 waits")
	}
	for round := range 200 {
		// A pause (the bucket refills partly or fully), then a rush: only live cards (they may
		// use the whole burst) or cards and deliveries mixed.
		now = now.Add(time.Duration(rng.Int64N(int64(40 * time.Second))))
		for i := range 40 + rng.IntN(60) {
			take(round%2 == 0 || i%3 == 0)
			arrivals = append(arrivals, now.Add(time.Duration(rng.Int64N(int64(250*time.Millisecond)))))
		}
	}
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	portal := &b24Bucket{last: arrivals[0]}
	for i, at := range arrivals {
		if !portal.admit(at, 2, 50) {
			t.Fatalf("request %d refused at level %.2f", i, portal.level)
		}
	}
}
