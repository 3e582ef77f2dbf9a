package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// CRM type ids (crm.activity.todo.add ownerTypeId).
const (
	OwnerLead    = 1
	OwnerDeal    = 2
	OwnerContact = 3
	OwnerCompany = 4
)

// OwnerTypeID maps LEAD/CONTACT/COMPANY/DEAL to its CRM type id (0 when unknown).
func OwnerTypeID(entityType string) int {
	switch entityType {
	case "LEAD":
		return OwnerLead
	case "DEAL":
		return OwnerDeal
	case "CONTACT":
		return OwnerContact
	case "COMPANY":
		return OwnerCompany
	}
	return 0
}

// TaskBinding is the UF_CRM_TASK binding of a CRM object ("C_797"); "" when unknown.
func TaskBinding(entityType string, id int) string {
	prefix := map[string]string{"LEAD": "L_", "DEAL": "D_", "CONTACT": "C_", "COMPANY": "CO_"}[entityType]
	if prefix == "" || id <= 0 {
		return ""
	}
	return fmt.Sprintf("%s%d", prefix, id)
}

// FindByComm calls crm.duplicate.findbycomm for phone numbers (up to 20). The result maps
// LEAD/CONTACT/COMPANY to ids; nothing found is an empty map.
func (c *Client) FindByComm(ctx context.Context, phones []string) (map[string][]int, error) {
	var raw json.RawMessage
	p := map[string]any{"type": "PHONE", "values": phones}
	if _, err := c.Call(httpclient.Idempotent(ctx), "crm.duplicate.findbycomm", p, &raw); err != nil {
		return nil, err
	}
	return DecodeFindByComm(raw)
}

// DecodeFindByComm decodes a findbycomm result: an object of id arrays, or [] when nothing was
// found (A.6.1).
func DecodeFindByComm(raw json.RawMessage) (map[string][]int, error) {
	raw = bytes.TrimSpace(raw)
	out := map[string][]int{}
	if len(raw) == 0 || raw[0] == '[' || string(raw) == "null" {
		var arr []json.RawMessage
		if len(raw) > 0 && raw[0] == '[' {
			if err := json.Unmarshal(raw, &arr); err != nil {
				return nil, fmt.Errorf("crm.duplicate.findbycomm: decoding result: %w", err)
			}
		}
		return out, nil
	}
	var m map[string][]Int
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("crm.duplicate.findbycomm: decoding result: %w", err)
	}
	for k, ids := range m {
		for _, id := range ids {
			out[k] = append(out[k], int(id))
		}
	}
	return out, nil
}

// Lead is what crm.lead.add needs for a missed-call lead.
type Lead struct {
	Title        string
	Name         string
	Phone        string
	SourceID     string
	AssignedByID int
	Comments     string
}

// AddLead calls crm.lead.add and returns the new lead id. Not repeated after an ambiguous
// failure (it creates).
func (c *Client) AddLead(ctx context.Context, l Lead) (int, error) {
	fields := map[string]any{
		"TITLE":     l.Title,
		"SOURCE_ID": l.SourceID,
		"PHONE":     []map[string]string{{"VALUE": l.Phone, "VALUE_TYPE": "WORK"}},
	}
	if l.Name != "" {
		fields["NAME"] = l.Name
	}
	if l.AssignedByID > 0 {
		fields["ASSIGNED_BY_ID"] = l.AssignedByID
	}
	if l.Comments != "" {
		fields["COMMENTS"] = l.Comments
	}
	var id Int
	p := map[string]any{"fields": fields, "params": map[string]string{"REGISTER_SONET_EVENT": "Y"}}
	if _, err := c.Call(ctx, "crm.lead.add", p, &id); err != nil {
		return 0, err
	}
	return int(id), nil
}

// Todo is a crm.activity.todo.add request.
type Todo struct {
	OwnerTypeID      int    `json:"ownerTypeId"`
	OwnerID          int    `json:"ownerId"`
	Deadline         string `json:"deadline"`
	Title            string `json:"title,omitempty"`
	Description      string `json:"description,omitempty"`
	ResponsibleID    int    `json:"responsibleId,omitempty"`
	ParentActivityID int    `json:"parentActivityId,omitempty"`
}

// todoResult is the result of crm.activity.todo.add.
type todoResult struct {
	ID Int `json:"id"`
}

// AddTodo calls crm.activity.todo.add and returns the activity id.
func (c *Client) AddTodo(ctx context.Context, t Todo) (int, error) {
	var r todoResult
	if _, err := c.Call(ctx, "crm.activity.todo.add", t, &r); err != nil {
		return 0, err
	}
	return int(r.ID), nil
}

// Task is a tasks.task.add request.
type Task struct {
	Title         string
	Description   string
	ResponsibleID int
	CreatedBy     int
	Deadline      string // ISO-8601 with offset
	CRMBindings   []string
}

// taskResult is the result of tasks.task.add (camelCase, the id a string).
type taskResult struct {
	Task struct {
		ID Int `json:"id"`
	} `json:"task"`
}

// AddTask calls tasks.task.add and returns the task id (a string in the camelCase answer).
func (c *Client) AddTask(ctx context.Context, t Task) (int, error) {
	fields := map[string]any{
		"TITLE":          t.Title,
		"RESPONSIBLE_ID": t.ResponsibleID,
	}
	if t.CreatedBy > 0 {
		fields["CREATED_BY"] = t.CreatedBy
	}
	if t.Description != "" {
		fields["DESCRIPTION"] = t.Description
	}
	if t.Deadline != "" {
		fields["DEADLINE"] = t.Deadline
	}
	if len(t.CRMBindings) > 0 {
		fields["UF_CRM_TASK"] = t.CRMBindings
	}
	var r taskResult
	if _, err := c.Call(ctx, "tasks.task.add", map[string]any{"fields": fields}, &r); err != nil {
		return 0, err
	}
	return int(r.Task.ID), nil
}

// BindEvent subscribes handler to event (event.bind). Binding a handler that is already bound
// is not an error.
func (c *Client) BindEvent(ctx context.Context, event, handler string) error {
	_, err := c.Call(httpclient.Idempotent(ctx), "event.bind", map[string]any{"event": event, "handler": handler}, nil)
	if err != nil && (DescriptionContains(err, "already") || IsCode(err, "ERROR_HANDLER_ALREADY_EXIST")) {
		return nil
	}
	return err
}
