package asterisk

import (
	"context"
	"errors"
	"time"
)

// Source delivers the normalised events of one PBX connection.
//
// Run connects, logs in and sends events to out until ctx is cancelled, reconnecting on its own
// with capped, jittered backoff; it returns ctx.Err() after cancellation, or an error only for a
// problem no retry can fix (for example a rejected login is retried, a malformed address is not).
// Run sends on out with backpressure (it never drops an event to make room); a slow consumer
// slows the reader, and the reader's lag is exported as a metric by the implementation.
//
// After every successful (re)login the source sends TypeConnected; after a reconnect it sets
// Resync and then sends one TypeSnapshot per channel the PBX still has and a TypeSnapshotEnd, so
// the model can finish calls that ended while the connection was down. A lost connection is
// announced with TypeDisconnected before the reconnect attempts start.
//
// Run must be called at most once per Source. Status may be called concurrently with Run.
type Source interface {
	Name() string
	Run(ctx context.Context, out chan<- Event) error
	Status() SourceStatus
}

// SourceStatus is a point-in-time view of a Source for the status page and /readyz.
type SourceStatus struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"` // "ami" or "ari"
	Address     string    `json:"address"`
	Connected   bool      `json:"connected"`
	Since       time.Time `json:"since"` // when Connected last changed
	LastError   string    `json:"last_error,omitempty"`
	Reconnects  int64     `json:"reconnects"`
	Events      int64     `json:"events"`
	LoggedInAt  time.Time `json:"logged_in_at"`
	PBXVersion  string    `json:"pbx_version,omitempty"` // banner / ARI asterisk info when known
	FirstLogin  bool      `json:"first_login"`           // true once the first login succeeded
	Description string    `json:"description,omitempty"`
}

// OriginateRequest asks the PBX to ring an agent's extension first and, once the agent answers,
// dial the customer (click-to-call).
type OriginateRequest struct {
	// Extension is the agent's extension (e.g. "101"); the channel to ring is built from the
	// PBX's configured channel template.
	Extension string
	// Number is the customer's number as it should be dialled through the outbound route.
	Number string
	// CallerIDName shown on the agent's phone while it rings (optional).
	CallerIDName string
	// ID correlates the resulting call with the CRM request; it is set as the inherited channel
	// variable __PBXBRIDGE_ORIGINATE_ID so the call model can report it.
	ID string
	// Variables are extra channel variables (inherited when the name starts with "__").
	Variables map[string]string
	// Timeout is how long the agent's phone rings before giving up (0 = the PBX default).
	Timeout time.Duration
	// Requester says who asked for the call, for logs and the call's timeline (e.g. "bitrix24
	// user 5"); transports ignore it.
	Requester string
}

// OriginateResult identifies the call an Originate created.
type OriginateResult struct {
	Uniqueid string // of the agent leg, when the PBX reported it
}

// Originator places click-to-call calls. Originate returns when the PBX has accepted or refused
// the request: after the agent answered and the customer leg started, or with an error. Errors
// wrap one of the sentinels below when the cause is known, so the CRM endpoint can answer the
// user in plain words.
type Originator interface {
	Originate(ctx context.Context, req OriginateRequest) (OriginateResult, error)
}

// Originate failure causes.
var (
	ErrExtensionUnknown     = errors.New("extension unknown")     // no such extension / not configured
	ErrExtensionBusy        = errors.New("extension busy")        // agent's phone busy or DND
	ErrExtensionUnreachable = errors.New("extension unreachable") // not registered / congestion
	ErrNoAnswer             = errors.New("agent did not answer")  // rang out
	ErrNotConnected         = errors.New("pbx not connected")     // the source is down
)
