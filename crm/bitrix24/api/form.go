package api

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Event names (upper case, as Bitrix24 sends them).
const (
	EventAppInstall            = "ONAPPINSTALL"
	EventAppUninstall          = "ONAPPUNINSTALL"
	EventExternalCallStart     = "ONEXTERNALCALLSTART"
	EventExternalCallbackStart = "ONEXTERNALCALLBACKSTART"
)

// Limits of ParseEvent.
const (
	MaxEventBody   = 64 << 10
	maxEventFields = 256
	maxKeyDepth    = 4
)

// Event is an event Bitrix24 posted to one of our handlers: a form-encoded body with PHP-style
// nested keys (A.4.1). Nested keys are flattened with dots: data[FIELDS][ID] → Data["FIELDS.ID"].
type Event struct {
	Name      string // "event", upper-cased
	HandlerID string
	TS        string
	Data      map[string]string
	Auth      map[string]string
}

// ParseEvent parses an event body. It rejects bodies over MaxEventBody, malformed escapes and
// malformed keys with an error; it never panics.
func ParseEvent(body []byte) (*Event, error) {
	if len(body) > MaxEventBody {
		return nil, fmt.Errorf("event: body of %d bytes exceeds %d", len(body), MaxEventBody)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("event: malformed form: %w", err)
	}
	if len(vals) > maxEventFields {
		return nil, fmt.Errorf("event: %d fields, at most %d", len(vals), maxEventFields)
	}
	ev := &Event{Data: map[string]string{}, Auth: map[string]string{}}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		base, path, err := SplitKey(k)
		if err != nil {
			return nil, fmt.Errorf("event: %w", err)
		}
		v := vals[k][len(vals[k])-1]
		switch base {
		case "event":
			ev.Name = strings.ToUpper(strings.TrimSpace(v))
		case "event_handler_id":
			ev.HandlerID = v
		case "ts":
			ev.TS = v
		case "data":
			if len(path) > 0 {
				ev.Data[strings.Join(path, ".")] = v
			}
		case "auth":
			if len(path) > 0 {
				ev.Auth[strings.Join(path, ".")] = v
			}
		}
	}
	if ev.Name == "" {
		return nil, errors.New("event: no event name")
	}
	return ev, nil
}

// SplitKey splits a PHP-style form key "a[b][c]" into "a" and [b c]. "a[]" gives an empty part.
func SplitKey(k string) (string, []string, error) {
	i := strings.IndexByte(k, '[')
	if i < 0 {
		if strings.IndexByte(k, ']') >= 0 {
			return "", nil, fmt.Errorf("malformed key %q", k)
		}
		return k, nil, nil
	}
	base, rest := k[:i], k[i:]
	if base == "" {
		return "", nil, fmt.Errorf("malformed key %q", k)
	}
	var path []string
	for rest != "" {
		if rest[0] != '[' {
			return "", nil, fmt.Errorf("malformed key %q", k)
		}
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			return "", nil, fmt.Errorf("malformed key %q: missing ]", k)
		}
		part := rest[1:j]
		if strings.ContainsAny(part, "[") {
			return "", nil, fmt.Errorf("malformed key %q", k)
		}
		path = append(path, part)
		if len(path) > maxKeyDepth {
			return "", nil, fmt.Errorf("key %q nested too deeply", k)
		}
		rest = rest[j+1:]
	}
	return base, path, nil
}

// ExternalCallStart is the data of ONEXTERNALCALLSTART (click-to-call, A.4.2).
type ExternalCallStart struct {
	PhoneNumber              string
	PhoneNumberInternational string
	Extension                string
	UserID                   int
	CallListID               int
	LineNumber               string
	IsMobile                 bool
	CallID                   string
	CRMEntityType            string
	CRMEntityID              int
}

// ExternalCallStart decodes the event's data; CALL_ID, USER_ID and PHONE_NUMBER are required.
func (e *Event) ExternalCallStart() (*ExternalCallStart, error) {
	d := e.Data
	s := &ExternalCallStart{
		PhoneNumber:              strings.TrimSpace(d["PHONE_NUMBER"]),
		PhoneNumberInternational: strings.TrimSpace(d["PHONE_NUMBER_INTERNATIONAL"]),
		Extension:                strings.TrimSpace(d["EXTENSION"]),
		LineNumber:               strings.TrimSpace(d["LINE_NUMBER"]),
		IsMobile:                 d["IS_MOBILE"] == "1" || strings.EqualFold(d["IS_MOBILE"], "Y"),
		CallID:                   strings.TrimSpace(d["CALL_ID"]),
		CRMEntityType:            strings.ToUpper(strings.TrimSpace(d["CRM_ENTITY_TYPE"])),
	}
	var err error
	if s.UserID, err = atoiField(d, "USER_ID"); err != nil {
		return nil, err
	}
	if s.CallListID, err = atoiField(d, "CALL_LIST_ID"); err != nil {
		return nil, err
	}
	if s.CRMEntityID, err = atoiField(d, "CRM_ENTITY_ID"); err != nil {
		return nil, err
	}
	switch {
	case s.CallID == "":
		return nil, errors.New("ONEXTERNALCALLSTART: data[CALL_ID] is missing")
	case s.UserID <= 0:
		return nil, errors.New("ONEXTERNALCALLSTART: data[USER_ID] is missing")
	case s.PhoneNumber == "" && s.PhoneNumberInternational == "":
		return nil, errors.New("ONEXTERNALCALLSTART: data[PHONE_NUMBER] is missing")
	}
	return s, nil
}

// ExternalCallbackStart is the data of ONEXTERNALCALLBACKSTART (A.4.3).
type ExternalCallbackStart struct {
	PhoneNumber   string
	Text          string
	Voice         string
	CRMEntityType string
	CRMEntityID   int
	LineNumber    string
}

// ExternalCallbackStart decodes the event's data; PHONE_NUMBER is required.
func (e *Event) ExternalCallbackStart() (*ExternalCallbackStart, error) {
	d := e.Data
	s := &ExternalCallbackStart{
		PhoneNumber:   strings.TrimSpace(d["PHONE_NUMBER"]),
		Text:          d["TEXT"],
		Voice:         d["VOICE"],
		CRMEntityType: strings.ToUpper(strings.TrimSpace(d["CRM_ENTITY_TYPE"])),
		LineNumber:    strings.TrimSpace(d["LINE_NUMBER"]),
	}
	var err error
	if s.CRMEntityID, err = atoiField(d, "CRM_ENTITY_ID"); err != nil {
		return nil, err
	}
	if s.PhoneNumber == "" {
		return nil, errors.New("ONEXTERNALCALLBACKSTART: data[PHONE_NUMBER] is missing")
	}
	return s, nil
}

// InstallTokens decodes the auth[...] part of ONAPPINSTALL (A.1.5).
func (e *Event) InstallTokens(now time.Time) (Tokens, error) {
	a := e.Auth
	t := Tokens{
		AccessToken:      a["access_token"],
		RefreshToken:     a["refresh_token"],
		ClientEndpoint:   a["client_endpoint"],
		ServerEndpoint:   a["server_endpoint"],
		Domain:           strings.ToLower(strings.TrimSpace(a["domain"])),
		MemberID:         a["member_id"],
		Scope:            a["scope"],
		Status:           a["status"],
		ApplicationToken: a["application_token"],
	}
	if n, err := strconv.Atoi(strings.TrimSpace(a["expires_in"])); err == nil && n > 0 && n < 1<<31 {
		t.Expires = now.Add(time.Duration(n) * time.Second).UTC()
	}
	if n, err := strconv.Atoi(strings.TrimSpace(a["user_id"])); err == nil && n > 0 {
		t.UserID = n
	}
	switch {
	case t.AccessToken == "" || t.RefreshToken == "":
		return t, errors.New("ONAPPINSTALL: auth[access_token] and auth[refresh_token] are required")
	case t.ApplicationToken == "":
		return t, errors.New("ONAPPINSTALL: auth[application_token] is missing")
	case t.MemberID == "":
		return t, errors.New("ONAPPINSTALL: auth[member_id] is missing")
	}
	return t, nil
}

func atoiField(d map[string]string, k string) (int, error) {
	v := strings.TrimSpace(d[k])
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("data[%s]: %q is not a number", k, v)
	}
	return n, nil
}
