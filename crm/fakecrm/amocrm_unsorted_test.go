package fakecrm

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func (c amoClient) api(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	code, _, b := c.do(method, path, DemoLongLivedToken, "application/json", []byte(body))
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return code, m
}

// An incoming lead's contact is hidden (calls from its number are refused, 263) until it is
// accepted; the list shows waiting items only, filtered by uid and category.
func TestAmoUnsortedLifecycle(t *testing.T) {
	t.Parallel()
	f, c := newAmoTest(t, AmoOptions{RateLimit: -1})
	item := `[{"source_uid":"k1","source_name":"pbx","metadata":{"uniq":"k1","from":"+79990000009","phone":"+74951112233",` +
		`"called_at":1795305600,"duration":0,"link":"","service_code":"pbx","is_call_event_needed":true},` +
		`"_embedded":{"contacts":[{"name":"+79990000009","custom_fields_values":[{"field_code":"PHONE","values":[{"value":"+79990000009","enum_code":"WORK"}]}]}]}}]`
	if code, _ := c.api(http.MethodPost, "/api/v4/leads/unsorted/sip", item); code != http.StatusOK {
		t.Fatalf("add: %d", code)
	}
	call := `[{"direction":"inbound","duration":0,"source":"pbx","phone":"+79990000009","uniq":"k2"}]`
	if code, m := c.api(http.MethodPost, "/api/v4/calls", call); code != http.StatusBadRequest || !strings.Contains(toJSON(m), "263") {
		t.Fatalf("a call from the hidden contact's number: %d %v", code, m)
	}
	uid := f.State().Accounts[0].Unsorted[0].UID
	code, m := c.api(http.MethodGet, "/api/v4/leads/unsorted?filter[uid]="+uid, "")
	items, _ := m["_embedded"].(map[string]any)["unsorted"].([]any)
	if code != http.StatusOK || len(items) != 1 || items[0].(map[string]any)["category"] != "sip" {
		t.Fatalf("list by uid: %d %v", code, m)
	}
	if code, _ := c.api(http.MethodGet, "/api/v4/leads/unsorted?filter[category][]=forms", ""); code != http.StatusNoContent {
		t.Fatalf("list of forms: %d", code)
	}
	if code, _ := c.api(http.MethodPost, "/api/v4/leads/unsorted/"+uid+"/accept", "{}"); code != http.StatusOK {
		t.Fatalf("accept: %d", code)
	}
	if code, _ := c.api(http.MethodGet, "/api/v4/leads/unsorted?filter[uid]="+uid, ""); code != http.StatusNoContent {
		t.Fatalf("an accepted item is still listed: %d", code)
	}
	if code, m := c.api(http.MethodPost, "/api/v4/calls", call); code != http.StatusOK {
		t.Fatalf("a call after acceptance: %d %v", code, m)
	}
	if err := f.DeclineUnsorted("romashka", uid); err == nil {
		t.Fatal("declined an accepted item")
	}
}

// A call note on a lead counts as the call logged; one on a missing lead or with unknown
// params is refused and counted as a violation, like a call_responsible given as a string.
func TestAmoNotesAndViolations(t *testing.T) {
	t.Parallel()
	f, c := newAmoTest(t, AmoOptions{RateLimit: -1})
	note := `[{"entity_id":1,"note_type":"call_in","params":{"uniq":"k9","duration":3,"source":"pbx","phone":"+79001234567","call_status":4,"call_responsible":504141}}]`
	if code, m := c.api(http.MethodPost, "/api/v4/leads/notes", note); code != http.StatusOK {
		t.Fatalf("note: %d %v", code, m)
	}
	if n := f.Logged("k9"); n != 1 {
		t.Fatalf("logged %d", n)
	}
	bad := `[{"entity_id":999999,"note_type":"call_in","params":{"uniq":"k8","duration":3,"source":"pbx","colour":"red"}}]`
	if code, _ := c.api(http.MethodPost, "/api/v4/leads/notes", bad); code != http.StatusBadRequest {
		t.Fatalf("bad note: %d", code)
	}
	str := `[{"direction":"inbound","duration":0,"source":"pbx","phone":"+79001234567","call_responsible":"504141","created_at":4102444800}]`
	if code, _ := c.api(http.MethodPost, "/api/v4/calls", str); code != http.StatusOK {
		t.Fatalf("call: %d", code)
	}
	st := f.State()
	if st.Violations != 4 {
		t.Fatalf("violations %d: %v", st.Violations, st.ViolationList)
	}
	for _, want := range []string{"entity_id NotFound", "params.colour FieldNotExpected", "call_responsible is not a user id", "created_at is in the future"} {
		if !strings.Contains(strings.Join(st.ViolationList, "\n"), want) {
			t.Errorf("no violation %q in %v", want, st.ViolationList)
		}
	}
}

// StrictWindow refuses the eighth request of any rolling second; MaxPerSecond reports the most
// seen; ThrottleFor refuses everything, advising the time left.
func TestAmoRollingSecondAndThrottle(t *testing.T) {
	t.Parallel()
	now := time.Unix(1795305600, 0)
	f, c := newAmoTest(t, AmoOptions{RateLimit: 7, StrictWindow: true, Now: func() time.Time { return now }})
	for i := range 8 {
		code, _ := c.api(http.MethodGet, "/api/v4/account", "")
		if want := map[bool]int{true: http.StatusTooManyRequests, false: http.StatusOK}[i == 7]; code != want {
			t.Fatalf("request %d: %d", i+1, code)
		}
		now = now.Add(140 * time.Millisecond) // 8 requests in 0.98 s
	}
	if st := f.State(); st.MaxPerSecond != 8 || st.OverLimit != 1 || st.RateLimited != 1 {
		t.Fatalf("state: max %d, over %d, 429 %d", st.MaxPerSecond, st.OverLimit, st.RateLimited)
	}
	now = now.Add(2 * time.Second)
	f.ThrottleFor(20 * time.Second)
	code, hdr, b := c.do(http.MethodGet, "/api/v4/account", DemoLongLivedToken, "", nil)
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") != "20" || !strings.Contains(string(b), `"retry_after":20`) {
		t.Fatalf("throttled: %d %v %s", code, hdr, b)
	}
	now = now.Add(21 * time.Second)
	if code, _ := c.api(http.MethodGet, "/api/v4/account", ""); code != http.StatusOK {
		t.Fatalf("after the throttle: %d", code)
	}
	if st := f.State(); st.Throttled != 1 {
		t.Fatalf("throttled %d", st.Throttled)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
