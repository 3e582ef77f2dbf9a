package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/url"
	"strconv"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// Call types of telephony.externalCall.register (A.3.1).
const (
	TypeOutgoing      = 1
	TypeIncoming      = 2
	TypeIncomingRedir = 3
	TypeCallback      = 4
)

// RegisterParams are the parameters of telephony.externalCall.register. Set UserID or
// UserPhoneInner.
type RegisterParams struct {
	UserID         int    `json:"USER_ID,omitempty"`
	UserPhoneInner string `json:"USER_PHONE_INNER,omitempty"`
	PhoneNumber    string `json:"PHONE_NUMBER"`
	Type           int    `json:"TYPE"`
	CallStartDate  string `json:"CALL_START_DATE,omitempty"` // ISO-8601 with offset
	CRMCreate      int    `json:"CRM_CREATE"`
	CRMSource      string `json:"CRM_SOURCE,omitempty"`
	CRMEntityType  string `json:"CRM_ENTITY_TYPE,omitempty"`
	CRMEntityID    int    `json:"CRM_ENTITY_ID,omitempty"`
	Show           int    `json:"SHOW"`
	LineNumber     string `json:"LINE_NUMBER,omitempty"`
	ExternalCallID string `json:"EXTERNAL_CALL_ID,omitempty"`
}

// Entity is a CRM object bound to a call.
type Entity struct {
	EntityType String `json:"ENTITY_TYPE"`
	EntityID   Int    `json:"ENTITY_ID"`
}

// RegisterResult is the result of telephony.externalCall.register.
type RegisterResult struct {
	CallID             string   `json:"CALL_ID"`
	CRMCreatedLead     Int      `json:"CRM_CREATED_LEAD"`
	CRMCreatedEntities []Entity `json:"CRM_CREATED_ENTITIES"`
	CRMEntityType      String   `json:"CRM_ENTITY_TYPE"`
	CRMEntityID        Int      `json:"CRM_ENTITY_ID"`
	LeadCreationError  String   `json:"LEAD_CREATION_ERROR"`
}

// RegisterCall calls telephony.externalCall.register. With a unique ExternalCallID a repeat
// of the same request returns the same CALL_ID (the portal's 30-minute de-duplication), so it
// is sent as an idempotent request.
func (c *Client) RegisterCall(ctx context.Context, p RegisterParams) (*RegisterResult, error) {
	var r RegisterResult
	if p.ExternalCallID != "" {
		ctx = httpclient.Idempotent(ctx)
	}
	if _, err := c.Call(ctx, "telephony.externalCall.register", p, &r); err != nil {
		return nil, err
	}
	if r.CallID == "" {
		return nil, errors.New("telephony.externalCall.register: result without CALL_ID")
	}
	return &r, nil
}

// FinishParams are the parameters of telephony.externalCall.finish. Duration, StatusCode and
// AddToChat are always sent (the ADD_TO_CHAT default differs between doc versions).
type FinishParams struct {
	CallID         string `json:"CALL_ID"`
	UserID         int    `json:"USER_ID,omitempty"`
	UserPhoneInner string `json:"USER_PHONE_INNER,omitempty"`
	Duration       int    `json:"DURATION"`
	StatusCode     string `json:"STATUS_CODE"`
	FailedReason   string `json:"FAILED_REASON,omitempty"`
	AddToChat      int    `json:"ADD_TO_CHAT"`
	Vote           int    `json:"VOTE,omitempty"`
}

// FinishResult is the result of telephony.externalCall.finish.
type FinishResult struct {
	ID             Int    `json:"ID"`
	CallID         string `json:"CALL_ID"`
	ExternalCallID String `json:"EXTERNAL_CALL_ID"`
	PortalUserID   Int    `json:"PORTAL_USER_ID"`
	CallDuration   Int    `json:"CALL_DURATION"`
	CallFailedCode String `json:"CALL_FAILED_CODE"`
	CRMActivityID  Int    `json:"CRM_ACTIVITY_ID"`
	CRMEntityType  String `json:"CRM_ENTITY_TYPE"`
	CRMEntityID    Int    `json:"CRM_ENTITY_ID"`
}

// FinishCall calls telephony.externalCall.finish. It is not repeated after an ambiguous
// failure: a second finish of a finished call answers "Call is not found".
func (c *Client) FinishCall(ctx context.Context, p FinishParams) (*FinishResult, error) {
	var r FinishResult
	if _, err := c.Call(ctx, "telephony.externalCall.finish", p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// attachResult is the result of telephony.externalCall.attachRecord in its three modes.
type attachResult struct {
	FileID    Int    `json:"FILE_ID"`
	UploadURL string `json:"uploadUrl"`
	FieldName string `json:"fieldName"`
}

// AttachRecord uploads a recording with its content (Base64 in the request): one request. It is
// never sent inside batch (A.3.3). Attaching again replaces the recording, so it is idempotent.
func (c *Client) AttachRecord(ctx context.Context, callID, filename string, content []byte) (int, error) {
	p := map[string]any{
		"CALL_ID":      callID,
		"FILENAME":     filename,
		"FILE_CONTENT": base64.StdEncoding.EncodeToString(content),
	}
	var r attachResult
	if _, err := c.Call(httpclient.Idempotent(ctx), "telephony.externalCall.attachRecord", p, &r); err != nil {
		return 0, err
	}
	return int(r.FileID), nil
}

// AttachRecordURL lets the portal download the recording from recordURL.
func (c *Client) AttachRecordURL(ctx context.Context, callID, filename, recordURL string) (int, error) {
	p := map[string]any{"CALL_ID": callID, "RECORD_URL": recordURL}
	if filename != "" {
		p["FILENAME"] = filename
	}
	var r attachResult
	if _, err := c.Call(httpclient.Idempotent(ctx), "telephony.externalCall.attachRecord", p, &r); err != nil {
		return 0, err
	}
	return int(r.FileID), nil
}

// UploadTarget is the first answer of the two-step recording upload.
type UploadTarget struct {
	URL       string // carries a one-time credential: never log it unredacted
	FieldName string
}

// AttachRecordUpload asks for an upload URL (FILENAME without FILE_CONTENT). It also tells
// whether a call is finished: an unfinished call answers ERROR_CORE "... not finished yet".
func (c *Client) AttachRecordUpload(ctx context.Context, callID, filename string) (*UploadTarget, error) {
	p := map[string]any{"CALL_ID": callID, "FILENAME": filename}
	var r attachResult
	if _, err := c.Call(httpclient.Idempotent(ctx), "telephony.externalCall.attachRecord", p, &r); err != nil {
		return nil, err
	}
	if r.UploadURL == "" {
		return nil, errors.New("telephony.externalCall.attachRecord: no uploadUrl in the answer")
	}
	if r.FieldName == "" {
		r.FieldName = "file"
	}
	return &UploadTarget{URL: r.UploadURL, FieldName: r.FieldName}, nil
}

// Upload posts the recording to an upload URL as multipart/form-data (second step). The
// answer of that request is not documented (Part E.4): a 2xx without an error envelope counts
// as success, and a FILE_ID is returned when one is given.
func (c *Client) Upload(ctx context.Context, t *UploadTarget, filename string, r io.Reader) (int, error) {
	const method = "upload"
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return 0, errors.New("upload: the portal gave an invalid upload URL")
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile(t.FieldName, filename)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	if _, err := io.Copy(fw, r); err != nil {
		return 0, fmt.Errorf("upload: reading the recording: %w", err)
	}
	if err := mw.Close(); err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	crm.Trace(ctx, "request", "POST upload "+filename, httpclient.Redact(t.URL))
	start := time.Now()
	resp, err := c.upload.R().
		SetContext(httpclient.Idempotent(ctx)).
		SetHeader("Content-Type", mw.FormDataContentType()).
		SetBody(buf.Bytes()).
		Post(t.URL)
	out := Outcome{Method: method, Duration: time.Since(start)}
	if err != nil {
		err = transportError(ctx, method, err)
		out.Err = err
		c.report(out)
		return 0, err
	}
	c.observeDate(resp.Header())
	out.Status = resp.StatusCode()
	raw, _, derr := DecodeEnvelope(method, resp.StatusCode(), resp.Body())
	if derr != nil {
		// An undocumented non-JSON 2xx answer still means the file arrived.
		var e *Error
		if resp.StatusCode() >= 200 && resp.StatusCode() < 300 && !errors.As(derr, &e) {
			c.report(out)
			return 0, nil
		}
		out.Err = derr
		c.report(out)
		return 0, derr
	}
	c.report(out)
	trace(ctx, "response", "upload: http "+strconv.Itoa(resp.StatusCode()), raw)
	var res attachResult
	_ = json.Unmarshal(raw, &res)
	return int(res.FileID), nil
}

// ShowCall shows the call card to users (telephony.externalCall.show). It reports false when
// the portal does not know the call.
func (c *Client) ShowCall(ctx context.Context, callID string, users ...int) (bool, error) {
	return c.showHide(ctx, "telephony.externalCall.show", callID, users)
}

// HideCall hides the call card from users (telephony.externalCall.hide).
func (c *Client) HideCall(ctx context.Context, callID string, users ...int) (bool, error) {
	return c.showHide(ctx, "telephony.externalCall.hide", callID, users)
}

func (c *Client) showHide(ctx context.Context, method, callID string, users []int) (bool, error) {
	p := map[string]any{"CALL_ID": callID}
	switch len(users) {
	case 0:
	case 1:
		p["USER_ID"] = users[0]
	default:
		p["USER_ID"] = users
	}
	var ok Bool
	if _, err := c.Call(httpclient.Idempotent(ctx), method, p, &ok); err != nil {
		return false, err
	}
	return bool(ok), nil
}

// CrmMatch is one element of telephony.externalCall.searchCrmEntities.
type CrmMatch struct {
	EntityType   string `json:"CRM_ENTITY_TYPE"`
	EntityID     Int    `json:"CRM_ENTITY_ID"`
	AssignedByID Int    `json:"ASSIGNED_BY_ID"`
	Name         String `json:"NAME"`
	AssignedBy   struct {
		ID             Int    `json:"ID"`
		TimemanStatus  String `json:"TIMEMAN_STATUS"`
		UserPhoneInner String `json:"USER_PHONE_INNER"`
	} `json:"ASSIGNED_BY"`
}

// SearchCrmEntities finds the CRM objects with a phone number (A.3.5).
func (c *Client) SearchCrmEntities(ctx context.Context, phone string) ([]CrmMatch, error) {
	var raw json.RawMessage
	if _, err := c.Call(httpclient.Idempotent(ctx), "telephony.externalCall.searchCrmEntities", map[string]any{"PHONE_NUMBER": phone}, &raw); err != nil {
		return nil, err
	}
	return DecodeCrmMatches(raw)
}

// DecodeCrmMatches decodes a searchCrmEntities result: an array, possibly empty, or (tolerated)
// an object keyed by index.
func DecodeCrmMatches(raw json.RawMessage) ([]CrmMatch, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "false" {
		return nil, nil
	}
	if raw[0] == '{' {
		var m map[string]CrmMatch
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("telephony.externalCall.searchCrmEntities: decoding result: %w", err)
		}
		out := make([]CrmMatch, 0, len(m))
		for _, v := range m {
			out = append(out, v)
		}
		return out, nil
	}
	var out []CrmMatch
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("telephony.externalCall.searchCrmEntities: decoding result: %w", err)
	}
	return out, nil
}

// Line is an external line (telephony.externalLine.*).
type Line struct {
	Number        String `json:"NUMBER"`
	Name          String `json:"NAME"`
	CRMAutoCreate String `json:"CRM_AUTO_CREATE"`
}

// ExternalLines lists the application's external lines.
func (c *Client) ExternalLines(ctx context.Context) ([]Line, error) {
	var raw json.RawMessage
	if _, err := c.Call(httpclient.Idempotent(ctx), "telephony.externalLine.get", nil, &raw); err != nil {
		return nil, err
	}
	return DecodeExternalLines(raw)
}

// DecodeExternalLines decodes a telephony.externalLine.get result: an array of lines; anything
// else (an empty object, false) means no lines.
func DecodeExternalLines(raw json.RawMessage) ([]Line, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil, nil
	}
	var out []Line
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("telephony.externalLine.get: decoding result: %w", err)
	}
	return out, nil
}

// AddExternalLine adds an external line. An existing line is not an error.
func (c *Client) AddExternalLine(ctx context.Context, number, name string, crmAutoCreate bool) error {
	p := map[string]any{"NUMBER": number, "CRM_AUTO_CREATE": YN(crmAutoCreate)}
	if name != "" {
		p["NAME"] = name
	}
	_, err := c.Call(ctx, "telephony.externalLine.add", p, nil)
	if err != nil && DescriptionContains(err, "already exists") {
		return nil
	}
	return err
}

// Values returns p as the parameters of a batch command (BatchCmd.Params).
func (p FinishParams) Values() url.Values {
	v := url.Values{"CALL_ID": {p.CallID}, "DURATION": {strconv.Itoa(p.Duration)}, "STATUS_CODE": {p.StatusCode},
		"ADD_TO_CHAT": {strconv.Itoa(p.AddToChat)}}
	if p.UserID > 0 {
		v.Set("USER_ID", strconv.Itoa(p.UserID))
	}
	if p.UserPhoneInner != "" {
		v.Set("USER_PHONE_INNER", p.UserPhoneInner)
	}
	if p.FailedReason != "" {
		v.Set("FAILED_REASON", p.FailedReason)
	}
	if p.Vote > 0 {
		v.Set("VOTE", strconv.Itoa(p.Vote))
	}
	return v
}

// ShowHideValues returns the parameters of telephony.externalCall.show or hide for a batch
// command: USER_ID, or USER_ID[0], USER_ID[1]... for several users.
func ShowHideValues(callID string, users []int) url.Values {
	v := url.Values{"CALL_ID": {callID}}
	switch len(users) {
	case 0:
	case 1:
		v.Set("USER_ID", strconv.Itoa(users[0]))
	default:
		for i, u := range users {
			v.Set(fmt.Sprintf("USER_ID[%d]", i), strconv.Itoa(u))
		}
	}
	return v
}

// Methods that may go into a BatchWrite.
const (
	MethodFinish = "telephony.externalCall.finish"
	MethodShow   = "telephony.externalCall.show"
	MethodHide   = "telephony.externalCall.hide"
)

// DecodeFinish decodes the result of telephony.externalCall.finish (alone or from a batch).
func DecodeFinish(raw json.RawMessage) (*FinishResult, error) {
	var r FinishResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("telephony.externalCall.finish: decoding result: %w", err)
	}
	return &r, nil
}

// DecodeBool decodes a boolean result (show, hide).
func DecodeBool(method string, raw json.RawMessage) (bool, error) {
	var b Bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, fmt.Errorf("%s: decoding result: %w", method, err)
	}
	return bool(b), nil
}

// Statistic is one row of the telephony statistics (voximplant.statistic.get, A.3.6): a call
// that was finished.
type Statistic struct {
	ID             Int    `json:"ID"`
	CallID         String `json:"CALL_ID"`
	ExternalCallID String `json:"EXTERNAL_CALL_ID"`
	PortalUserID   Int    `json:"PORTAL_USER_ID"`
	CallDuration   Int    `json:"CALL_DURATION"`
	CallFailedCode String `json:"CALL_FAILED_CODE"`
	CRMActivityID  Int    `json:"CRM_ACTIVITY_ID"`
	CRMEntityType  String `json:"CRM_ENTITY_TYPE"`
	CRMEntityID    Int    `json:"CRM_ENTITY_ID"`
	// RecordFileID is the attached recording's file (0: none attached); CallRecordURL the
	// recording's address when it came as a URL.
	RecordFileID  Int    `json:"RECORD_FILE_ID"`
	CallRecordURL String `json:"CALL_RECORD_URL"`
}

// MethodStatistic is the statistics method: finished external calls are listed there too.
const MethodStatistic = "voximplant.statistic.get"

// The statistics fields FindStatistic and FindStatisticByExternalID filter on.
const (
	FieldCallID         = "CALL_ID"
	FieldExternalCallID = "EXTERNAL_CALL_ID"
)

// FindStatistic looks a call up in the telephony statistics by its CALL_ID. Only finished calls
// are there, so it tells whether an earlier finish whose answer was lost went through. It
// returns nil (and no error) when the call is not there. The method needs the "Call statistics:
// view" permission for the application's user; without it the portal answers ACCESS_DENIED.
func (c *Client) FindStatistic(ctx context.Context, callID string) (*Statistic, error) {
	return c.findStatistic(ctx, FieldCallID, callID, func(s *Statistic) string { return string(s.CallID) })
}

// FindStatisticByExternalID looks a finished call up in the telephony statistics by the
// EXTERNAL_CALL_ID it was registered with (the record key), like FindStatistic. Calls Bitrix24
// registered itself (click-to-call) have none.
func (c *Client) FindStatisticByExternalID(ctx context.Context, externalCallID string) (*Statistic, error) {
	return c.findStatistic(ctx, FieldExternalCallID, externalCallID, func(s *Statistic) string { return string(s.ExternalCallID) })
}

// findStatistic asks for the rows whose field equals value and returns the first whose value
// (of) matches exactly, or nil.
func (c *Client) findStatistic(ctx context.Context, field, value string, of func(*Statistic) string) (*Statistic, error) {
	if value == "" {
		return nil, fmt.Errorf("%s: empty %s", MethodStatistic, field)
	}
	var raw json.RawMessage
	p := map[string]any{"FILTER": map[string]string{field: value}}
	if _, err := c.Call(httpclient.Idempotent(ctx), MethodStatistic, p, &raw); err != nil {
		return nil, err
	}
	rows, err := DecodeStatistics(raw)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		if of(&rows[i]) == value {
			return &rows[i], nil
		}
	}
	return nil, nil
}

// DecodeStatistics decodes a voximplant.statistic.get result: an array of rows (possibly
// empty), or (tolerated) an object keyed by index; false or null mean none.
func DecodeStatistics(raw json.RawMessage) ([]Statistic, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "false" {
		return nil, nil
	}
	if raw[0] == '{' {
		var m map[string]Statistic
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%s: decoding result: %w", MethodStatistic, err)
		}
		out := make([]Statistic, 0, len(m))
		for _, v := range m {
			out = append(out, v)
		}
		return out, nil
	}
	var out []Statistic
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%s: decoding result: %w", MethodStatistic, err)
	}
	return out, nil
}
