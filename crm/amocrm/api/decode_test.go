package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDecodeError(t *testing.T) {
	e := DecodeError(429, []byte(`{"title":"Too Many Requests","status":429,"detail":"slow down","retry_after":300}`), "")
	if e.RetryAfter != 300*time.Second || e.Title != "Too Many Requests" {
		t.Fatalf("%+v", e)
	}
	e = DecodeError(429, []byte("<html>429 Too Many Requests</html>"), "7")
	if e.RetryAfter != 7*time.Second || e.Excerpt == "" {
		t.Fatalf("%+v", e)
	}
	e = DecodeError(400, []byte(`{"_total_items":0,"errors":[{"request_id":"c2","title":"Entity not found","status":263}]}`), "")
	if !e.AllItems(ErrEntityNotFound) || e.Items[0].RequestID != "c2" {
		t.Fatalf("%+v", e)
	}
	e = DecodeError(400, []byte(`{"validation-errors":[{"request_id":"0","errors":[{"code":"FieldMissing","path":"phone","detail":"x"}]}],"title":"Bad Request","status":400,"detail":"Request validation failed"}`), "")
	if len(e.Validation) != 1 || !strings.Contains(e.Error(), "phone FieldMissing") {
		t.Fatalf("%v", e)
	}
	e = DecodeError(400, []byte(`{"hint":"Authorization code has expired","title":"Некорректный запрос","status":400}`), "")
	if !strings.Contains(e.Error(), "Authorization code has expired") || !IsStatus(e, http.StatusBadRequest) {
		t.Fatalf("%v", e)
	}
}

func TestDecodeCallsResult(t *testing.T) {
	body := `{"_total_items":1,"errors":[{"request_id":"c2","title":"Entity not found","status":"263"}],
	 "_embedded":{"calls":[{"id":8791,"entity_id":15256433,"entity_type":"contacts","account_id":28805383,"request_id":["c1"]}]}}`
	var r CallsResult
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	c := r.Embedded.Calls[0]
	if c.RequestID != "c1" || EntityPlural(c.EntityType.String()) != "contacts" || r.Errors[0].Code() != 263 {
		t.Fatalf("%+v", r)
	}
	var n PlacedCall
	if err := json.Unmarshal([]byte(`{"entity_type":2,"request_id":7}`), &n); err != nil || EntityPlural(n.EntityType.String()) != "leads" || n.RequestID != "7" {
		t.Fatalf("%+v %v", n, err)
	}
}

func FuzzDecodeError(f *testing.F) {
	f.Add(429, []byte(`{"title":"Too Many Requests","retry_after":300}`), "")
	f.Add(400, []byte(`{"_total_items":0,"errors":[{"request_id":"c2","title":"Entity not found","status":263}]}`), "")
	f.Add(400, []byte(`{"validation-errors":[{"request_id":["0"],"errors":[{"code":"FieldMissing","path":"phone"}]}]}`), "")
	f.Add(403, []byte("403 Forbidden"), "Wed, 21 Oct 2026 07:28:00 GMT")
	f.Add(500, []byte{0xff, 0xfe, '{'}, "-1")
	f.Fuzz(func(t *testing.T, status int, body []byte, header string) {
		e := DecodeError(status, body, header)
		_ = e.Error()
		_ = e.AllItems(263)
		if e.RetryAfter < 0 || e.RetryAfter > 7*24*time.Hour {
			t.Fatalf("retry after %v", e.RetryAfter)
		}
	})
}

func FuzzDecodeCallsResult(f *testing.F) {
	f.Add([]byte(`{"_total_items":1,"errors":[],"_embedded":{"calls":[{"id":1,"entity_id":2,"entity_type":"lead","request_id":"c1"}]}}`))
	f.Add([]byte(`{"errors":[{"request_id":null,"status":true}],"_embedded":{"calls":[{"entity_type":{},"request_id":[1,2]}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r CallsResult
		if err := json.Unmarshal(body, &r); err != nil {
			return
		}
		for i := range r.Errors {
			_ = r.Errors[i].Code()
		}
		for _, c := range r.Embedded.Calls {
			_ = EntityPlural(c.EntityType.String())
		}
		var cs []Contact
		_ = json.Unmarshal(body, &cs)
		for i := range cs {
			_ = cs[i].Phones()
		}
	})
}
