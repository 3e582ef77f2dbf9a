package api

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// User is an employee as user.get returns it (A.5). ID is a string there.
type User struct {
	ID             Int    `json:"ID"`
	Active         Bool   `json:"ACTIVE"`
	Name           String `json:"NAME"`
	LastName       String `json:"LAST_NAME"`
	Email          String `json:"EMAIL"`
	UFPhoneInner   String `json:"UF_PHONE_INNER"`
	UserType       String `json:"USER_TYPE"`
	TimemanStatus  String `json:"TIMEMAN_STATUS"`
	WorkPhone      String `json:"WORK_PHONE"`
	PersonalMobile String `json:"PERSONAL_MOBILE"`
}

// FullName is "Name LastName" (or whichever part is set).
func (u User) FullName() string {
	switch {
	case u.Name != "" && u.LastName != "":
		return string(u.Name) + " " + string(u.LastName)
	case u.Name != "":
		return string(u.Name)
	default:
		return string(u.LastName)
	}
}

// UserPageSize is user.get's fixed page size.
const UserPageSize = 50

// GetUsers calls user.get with a filter, from offset start. It returns the page, the next
// offset (0 when it was the last page) and the total.
func (c *Client) GetUsers(ctx context.Context, filter map[string]any, start int) ([]User, int, int, error) {
	p := map[string]any{"FILTER": filter}
	if start > 0 {
		p["start"] = start
	}
	var users []User
	meta, err := c.Call(httpclient.Idempotent(ctx), "user.get", p, &users)
	if err != nil {
		return nil, 0, 0, err
	}
	return users, meta.Next, meta.Total, nil
}

// DecodeUsers decodes a user.get result (used for batch answers).
func DecodeUsers(raw json.RawMessage) ([]User, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var users []User
	if err := json.Unmarshal(raw, &users); err != nil {
		return nil, fmt.Errorf("user.get: decoding result: %w", err)
	}
	return users, nil
}
