package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// TokenRequest is the body of POST /oauth2/access_token (docs/crm-apis.md B.2.2).
type TokenRequest struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	GrantType    string `json:"grant_type"` // authorization_code | refresh_token
	Code         string `json:"code,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	RedirectURI  string `json:"redirect_uri"`
}

// Token is the answer of POST /oauth2/access_token.
type Token struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	ServerTime   int64  `json:"server_time,omitempty"` // Kommo; optional in amoCRM
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// Account is GET /api/v4/account.
type Account struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Subdomain string `json:"subdomain"`
	Country   string `json:"country,omitempty"`
	Currency  string `json:"currency,omitempty"`
}

// User is one item of GET /api/v4/users (B.11).
type User struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Email       string `json:"email"`
	PhoneNumber string `json:"phone_number,omitempty"`
	Rights      struct {
		IsActive *bool `json:"is_active,omitempty"`
		IsAdmin  bool  `json:"is_admin"`
	} `json:"rights"`
}

// Active reports whether the user is active (absent means active).
func (u *User) Active() bool { return u.Rights.IsActive == nil || *u.Rights.IsActive }

// usersPage is one page of GET /api/v4/users.
type usersPage struct {
	Embedded struct {
		Users []User `json:"users"`
	} `json:"_embedded"`
	Links struct {
		Next *struct{} `json:"next"`
	} `json:"_links"`
}

// contactsPage is the answer of GET /api/v4/contacts.
type contactsPage struct {
	Embedded struct {
		Contacts []Contact `json:"contacts"`
	} `json:"_embedded"`
}

// tasksPage is the answer of GET /api/v4/tasks.
type tasksPage struct {
	Embedded struct {
		Tasks []Task `json:"tasks"`
	} `json:"_embedded"`
}

// notesPage is the answer of GET /api/v4/{entity}/notes.
type notesPage struct {
	Embedded struct {
		Notes []struct {
			CallNote
			Params json.RawMessage `json:"params"`
		} `json:"notes"`
	} `json:"_embedded"`
}

// callNotes returns the page's notes with the uniq of their params.
func (p *notesPage) callNotes() []CallNote {
	var notes []CallNote
	for _, n := range p.Embedded.Notes {
		var params struct {
			Uniq any `json:"uniq"`
		}
		// params is an object for call notes; anything else (amoCRM writes [] for an empty
		// object) carries no uniq.
		if json.Unmarshal(n.Params, &params) == nil {
			switch u := params.Uniq.(type) {
			case string:
				n.Uniq = u
			case float64:
				n.Uniq = strconv.FormatFloat(u, 'f', -1, 64)
			}
		}
		notes = append(notes, n.CallNote)
	}
	return notes
}

// Contact is one item of GET /api/v4/contacts (B.6.1).
type Contact struct {
	ID                int64         `json:"id"`
	Name              string        `json:"name"`
	ResponsibleUserID int64         `json:"responsible_user_id"`
	CustomFields      []CustomField `json:"custom_fields_values"`
	Embedded          struct {
		Leads []struct {
			ID int64 `json:"id"`
		} `json:"leads"`
	} `json:"_embedded"`
}

// Phones returns the values of the contact's PHONE field.
func (c *Contact) Phones() []string {
	var out []string
	for _, f := range c.CustomFields {
		if f.FieldCode != "PHONE" {
			continue
		}
		for _, v := range f.Values {
			if s := v.Value.String(); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// CustomField is a custom_fields_values item. Values are read as text whatever their JSON type.
type CustomField struct {
	FieldID   int64  `json:"field_id,omitempty"`
	FieldName string `json:"field_name,omitempty"`
	FieldCode string `json:"field_code,omitempty"`
	FieldType string `json:"field_type,omitempty"`
	Values    []struct {
		Value    Text   `json:"value"`
		EnumID   int64  `json:"enum_id,omitempty"`
		Enum     string `json:"enum,omitempty"`
		EnumCode string `json:"enum_code,omitempty"`
	} `json:"values"`
}

// PhoneField builds the PHONE custom field for a create request.
func PhoneField(number string) []map[string]any {
	return []map[string]any{{
		"field_code": "PHONE",
		"values":     []map[string]any{{"value": number, "enum_code": "WORK"}},
	}}
}

// NewContact is one item of POST /api/v4/contacts.
type NewContact struct {
	Name              string           `json:"name"`
	ResponsibleUserID int64            `json:"responsible_user_id,omitempty"`
	CreatedBy         int64            `json:"created_by,omitempty"`
	CustomFields      []map[string]any `json:"custom_fields_values,omitempty"`
	RequestID         string           `json:"request_id,omitempty"`
}

// Call is one item of POST /api/v4/calls (B.5).
type Call struct {
	Direction         string `json:"direction"` // inbound | outbound
	Duration          int    `json:"duration"`
	Source            string `json:"source"`
	Phone             string `json:"phone"`
	Uniq              string `json:"uniq,omitempty"`
	Link              string `json:"link,omitempty"`
	CallResult        string `json:"call_result,omitempty"`
	CallStatus        int    `json:"call_status,omitempty"`
	CallResponsible   int64  `json:"call_responsible,omitempty"`
	ResponsibleUserID int64  `json:"responsible_user_id,omitempty"`
	CreatedBy         int64  `json:"created_by,omitempty"`
	CreatedAt         int64  `json:"created_at,omitempty"`
	RequestID         string `json:"request_id,omitempty"`
}

// Call statuses (B.5; mapping policy in docs/crm-apis.md Part D).
const (
	StatusVoicemail    = 1
	StatusCallBack     = 2
	StatusNotAvailable = 3
	StatusTalked       = 4
	StatusWrongNumber  = 5
	StatusNoAnswer     = 6
	StatusBusy         = 7
)

// ErrEntityNotFound is the per-item status amoCRM gives a call whose phone matches no contact or
// company (observed as {"title":"Entity not found","status":263}).
const ErrEntityNotFound = 263

// CallsResult is the answer of POST /api/v4/calls: the calls placed and the per-item failures.
type CallsResult struct {
	TotalItems int         `json:"_total_items"`
	Errors     []ItemError `json:"errors"`
	Embedded   struct {
		Calls []PlacedCall `json:"calls"`
	} `json:"_embedded"`
}

// PlacedCall is a call amoCRM attached to an entity.
type PlacedCall struct {
	ID         int64     `json:"id"`
	EntityID   int64     `json:"entity_id"`
	EntityType Text      `json:"entity_type"` // contact(s), company, lead(s), customer(s), or a number
	AccountID  int64     `json:"account_id"`
	RequestID  RequestID `json:"request_id"`
}

// ItemError is one item of the errors[] of a batch answer.
type ItemError struct {
	RequestID RequestID `json:"request_id"`
	Title     string    `json:"title"`
	Status    Text      `json:"status"` // 263 as a number, sometimes a string
	Detail    string    `json:"detail,omitempty"`
}

// Code returns the numeric status of the item error, 0 when absent or not a number.
func (e *ItemError) Code() int {
	n, _ := strconv.Atoi(e.Status.String())
	return n
}

// EntityPlural normalises an entity type of a calls answer to the plural API form (contacts,
// companies, leads, customers); "" when unknown.
func EntityPlural(t string) string {
	switch t {
	case "contact", "contacts", "1":
		return "contacts"
	case "lead", "leads", "2":
		return "leads"
	case "company", "companies", "3":
		return "companies"
	case "customer", "customers", "12":
		return "customers"
	}
	return ""
}

// UnsortedSIP is one item of POST /api/v4/leads/unsorted/sip (B.8).
type UnsortedSIP struct {
	SourceUID  string      `json:"source_uid"`
	SourceName string      `json:"source_name"`
	PipelineID int64       `json:"pipeline_id,omitempty"`
	CreatedAt  int64       `json:"created_at,omitempty"`
	RequestID  string      `json:"request_id,omitempty"`
	Metadata   SIPMetadata `json:"metadata"`
	Embedded   struct {
		Leads    []map[string]any `json:"leads,omitempty"`
		Contacts []map[string]any `json:"contacts,omitempty"`
	} `json:"_embedded"`
}

// SIPMetadata is the metadata of an unsorted sip item.
type SIPMetadata struct {
	Uniq              string `json:"uniq"`
	From              string `json:"from"`
	Phone             string `json:"phone"`
	CalledAt          int64  `json:"called_at"`
	Duration          int    `json:"duration"`
	Link              string `json:"link"`
	ServiceCode       string `json:"service_code"`
	CallResponsible   int64  `json:"call_responsible,omitempty"`
	IsCallEventNeeded bool   `json:"is_call_event_needed"`
}

// UnsortedResult is the answer of POST /api/v4/leads/unsorted/sip.
type UnsortedResult struct {
	Embedded struct {
		Unsorted []struct {
			UID       string    `json:"uid"`
			RequestID RequestID `json:"request_id"`
			Embedded  struct {
				Leads    []struct{ ID int64 } `json:"leads"`
				Contacts []struct{ ID int64 } `json:"contacts"`
			} `json:"_embedded"`
		} `json:"unsorted"`
	} `json:"_embedded"`
}

// Task is one item of POST /api/v4/tasks and GET /api/v4/tasks (B.10).
type Task struct {
	ID                int64  `json:"id,omitempty"`
	TaskTypeID        int    `json:"task_type_id"`
	Text              string `json:"text"`
	CompleteTill      int64  `json:"complete_till"`
	EntityID          int64  `json:"entity_id,omitempty"`
	EntityType        string `json:"entity_type,omitempty"`
	ResponsibleUserID int64  `json:"responsible_user_id"`
	CreatedBy         int64  `json:"created_by,omitempty"`
	RequestID         string `json:"request_id,omitempty"`
}

// TaskTypeCall is the standard "call" task type.
const TaskTypeCall = 1

// CreatedIDs is the answer of create endpoints: _embedded.<kind>[].{id, request_id}.
type CreatedIDs struct {
	Embedded map[string][]struct {
		ID        int64     `json:"id"`
		RequestID RequestID `json:"request_id"`
	} `json:"_embedded"`
}

// Event is one item of POST /api/v2/events (B.12).
type Event struct {
	Type        string  `json:"type"` // phone_call
	PhoneNumber string  `json:"phone_number"`
	Users       []int64 `json:"users,omitempty"`
}

// Text decodes a JSON string, number or boolean as text (fields whose type varies between
// amoCRM, Kommo and API versions). null and absent decode to "".
type Text string

// String returns the text.
func (t Text) String() string { return string(t) }

// UnmarshalJSON implements json.Unmarshaler.
func (t *Text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*t = ""
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = Text(s)
	case b[0] == '{' || b[0] == '[':
		return fmt.Errorf("expected a string or number, got %.20s", b)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			var v bool
			if err2 := json.Unmarshal(b, &v); err2 != nil {
				return err
			}
			*t = Text(strconv.FormatBool(v))
			return nil
		}
		*t = Text(n.String())
	}
	return nil
}

// RequestID decodes the request_id echo: a string, a number, or (leads/complex) an array whose
// first element is taken.
type RequestID string

// UnmarshalJSON implements json.Unmarshaler.
func (r *RequestID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var all []Text
		if err := json.Unmarshal(b, &all); err != nil {
			return err
		}
		*r = ""
		if len(all) > 0 {
			*r = RequestID(all[0])
		}
		return nil
	}
	var t Text
	if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	*r = RequestID(t)
	return nil
}

// UnsortedItem is one incoming lead of GET /api/v4/leads/unsorted (B.8).
type UnsortedItem struct {
	UID        string `json:"uid"`
	SourceUID  string `json:"source_uid"`
	Category   string `json:"category"`
	PipelineID int64  `json:"pipeline_id"`
	CreatedAt  int64  `json:"created_at"`
	// Metadata depends on the category; for sip it is SIPMetadata (From and Phone are read
	// from it, whatever their JSON type).
	Metadata json.RawMessage `json:"metadata"`
	Embedded struct {
		Leads    []struct{ ID int64 } `json:"leads"`
		Contacts []struct{ ID int64 } `json:"contacts"`
	} `json:"_embedded"`
}

// Numbers returns the from and phone of a sip item's metadata ("" when absent or not sip).
func (u *UnsortedItem) Numbers() (from, phone string) {
	var md struct {
		From  Text `json:"from"`
		Phone Text `json:"phone"`
	}
	if json.Unmarshal(u.Metadata, &md) != nil {
		return "", ""
	}
	return md.From.String(), md.Phone.String()
}

// LeadID and ContactID return the ids of the item's lead and contact (0 when none).
func (u *UnsortedItem) LeadID() int64 {
	if len(u.Embedded.Leads) == 0 {
		return 0
	}
	return u.Embedded.Leads[0].ID
}

// ContactID returns the id of the item's contact (0 when none).
func (u *UnsortedItem) ContactID() int64 {
	if len(u.Embedded.Contacts) == 0 {
		return 0
	}
	return u.Embedded.Contacts[0].ID
}

// unsortedPage is the answer of GET /api/v4/leads/unsorted.
type unsortedPage struct {
	Embedded struct {
		Unsorted []UnsortedItem `json:"unsorted"`
	} `json:"_embedded"`
}

// NewCallNote is one item of POST /api/v4/{entity}/notes for a call (B.9).
type NewCallNote struct {
	EntityID  int64          `json:"entity_id"`
	NoteType  string         `json:"note_type"` // call_in | call_out
	Params    CallNoteParams `json:"params"`
	CreatedBy int64          `json:"created_by,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
}

// CallNoteParams are the params of a call_in / call_out note.
type CallNoteParams struct {
	Uniq            string `json:"uniq"`
	Duration        int    `json:"duration"`
	Source          string `json:"source"`
	Link            string `json:"link,omitempty"`
	Phone           string `json:"phone"`
	CallStatus      int    `json:"call_status,omitempty"`
	CallResponsible int64  `json:"call_responsible,omitempty"`
}
