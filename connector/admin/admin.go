// Package admin defines the admin API of a running daemon: the JSON wire types its endpoints
// answer with (StatusReport, CallReport, OutboxItem, …) and Client, which talks to them over the
// daemon's admin socket. The daemon (package connector) serves the API; the command line
// (connector/cli) is its client, so the CLI never opens the state the daemon writes.
//
// The socket is created 0600 in the state directory: only root and the service user reach it.
// Endpoints, all JSON:
//
//	GET  /v1/status                 StatusReport
//	GET  /v1/license                licensing.Status
//	POST /v1/reload                 {"result": "reloaded"}; 409 with the problems
//	GET  /v1/outbox?connector=&key=&state=&since=&until=&limit=   []OutboxItem
//	POST /v1/outbox/{retry,drop,redeliver}   OutboxRequest → {"count": n}
//	POST /v1/outbox/import          JSON lines of call records → {"count": n}
//	POST /v1/outbox/check           SQLite's full integrity check → {"result": "ok"}; 409 with the problems
//	GET  /v1/calls                  []RecentCall, newest first
//	GET  /v1/calls/{key}            CallReport; 404 when the call is unknown
//	POST /v1/forget                 ForgetRequest → ForgetReport; 400 for a bad number
//	POST /v1/backup                 BackupResult: one backup generation written now
package admin

import (
	"fmt"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/connector/dispatch"
	"github.com/pbxbridge/pbxbridge/connector/outbox"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/licensing"
)

// StatusReport is what `pbxbridge status` shows.
type StatusReport struct {
	Version    string                  `json:"version"`
	StartedAt  time.Time               `json:"started_at"`
	Ready      bool                    `json:"ready"`
	Checks     []Check                 `json:"checks"`
	PBX        []asterisk.SourceStatus `json:"pbx"`
	Connectors []ConnectorReport       `json:"connectors"`
	Outbox     []outbox.ConnectorStats `json:"outbox"`
	HeldCalls  int                     `json:"held_calls"` // finished calls held in memory because the outbox cannot write
	// UnstoredCalls counts finished calls not in the outbox yet (queued or being written).
	UnstoredCalls int `json:"unstored_calls"`
}

// Check is one line of readiness (/readyz and the status).
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// ConnectorReport is one connector's part of the status.
type ConnectorReport struct {
	Name     string                     `json:"name"`
	Type     string                     `json:"type"`
	Delivery dispatch.Status            `json:"delivery"`
	CRM      crm.Status                 `json:"crm"`
	Licence  *licensing.ConnectorStatus `json:"licence,omitempty"`
	LiveDrop int64                      `json:"live_dropped"`
}

// OutboxItem is one outbox row as the admin API lists it.
type OutboxItem struct {
	ID            int64     `json:"id"`
	Key           string    `json:"key"`
	Connector     string    `json:"connector"`
	State         string    `json:"state"`
	Attempts      int       `json:"attempts"`
	StartedAt     time.Time `json:"started_at"`
	EnqueuedAt    time.Time `json:"enqueued_at"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	LastError     string    `json:"last_error,omitempty"`
	Direction     string    `json:"direction,omitempty"`
	Customer      string    `json:"customer,omitempty"`
	Disposition   string    `json:"disposition,omitempty"`
}

// OutboxRequest selects rows for retry, drop and redeliver.
type OutboxRequest struct {
	IDs       []int64   `json:"ids,omitempty"`
	Key       string    `json:"key,omitempty"`
	Connector string    `json:"connector,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Until     time.Time `json:"until,omitzero"`
}

// Filter is the outbox selection of the request.
func (o OutboxRequest) Filter() outbox.Filter {
	return outbox.Filter{IDs: o.IDs, Key: o.Key, Connector: o.Connector, Since: o.Since, Until: o.Until}
}

// CallReport is `pbxbridge calls show`: the call, its timeline and its delivery rows.
type CallReport struct {
	Key      string                 `json:"key"`
	Record   *call.Record           `json:"record,omitempty"`
	Timeline []outbox.TimelineEntry `json:"timeline"`
	Rows     []OutboxItem           `json:"rows"`
}

// RecentCall is one of the last finished calls, for the status page and `calls list`.
type RecentCall struct {
	Record     call.Record `json:"record"`
	Connectors []string    `json:"connectors"` // where it was queued
}

// ParseTime accepts RFC 3339 or YYYY-MM-DD (midnight UTC); "" is the zero time.
func ParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want YYYY-MM-DD or RFC 3339, got %q", s)
	}
	return t, nil
}

// ForgetRequest asks the daemon to erase every trace of a phone number (`pbxbridge forget`).
type ForgetRequest struct {
	Number string `json:"number"`
}

// ForgetReport says what `pbxbridge forget` erased.
type ForgetReport struct {
	// Number as given, and its E.164 form ("" when it does not parse).
	Number string `json:"number"`
	E164   string `json:"e164,omitempty"`
	// Outbox is what was erased from the outbox database, by table.
	Outbox outbox.ForgetResult `json:"outbox"`
	// Recent calls removed from the in-memory list of the status page.
	Recent int `json:"recent"`
	// Caches lists the connectors whose look-up caches were told to forget the number.
	Caches []string `json:"caches,omitempty"`
	// InProgress counts calls of the number still in progress: they are stored when they end
	// (run forget again then).
	InProgress int `json:"in_progress"`
	// Backups lists the backup files that still hold the earlier state; they go when they age
	// out of backup.keep, or delete them.
	Backups []string `json:"backups,omitempty"`
	// Offline: the daemon was not running; the CLI erased the outbox itself (in-memory lists
	// and caches were empty).
	Offline bool `json:"offline,omitempty"`
}

// BackupResult describes one backup generation (`pbxbridge backup now`, the automatic backups).
type BackupResult struct {
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
	// Files are the state files in the backup (outbox.db, connectors/…, license-state.json, …).
	Files []string `json:"files"`
	// Removed are the older backups deleted to keep backup.keep generations.
	Removed []string `json:"removed,omitempty"`
	Offline bool     `json:"offline,omitempty"`
}
