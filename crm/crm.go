// Package crm defines what a CRM adapter is: the Adapter interface every connector type
// implements, the optional interfaces for live call cards, probes, HTTP endpoints and
// responsible-manager routing, the error classes the dispatcher acts on, and the registry of
// connector types.
//
// Contract between the daemon and an adapter:
//
//   - The daemon builds one Adapter per configured connector instance (config connectors[]) with
//     the Factory registered for its type, after the instance's config block was decoded strictly
//     into the value Factory.NewConfig returned and validated.
//   - Deliver is called by the dispatcher with a finished call Record taken from the durable
//     outbox. Deliver may run concurrently for different records, never for the same record at
//     once. Delivery is at-least-once: a record can be delivered again after a crash or a
//     retry, so Deliver must be idempotent per Record.Key() (look up before create, persist what
//     was created in the CallStore).
//   - Live (optional) is called for live events while a call rings; it is best-effort and must be
//     fast: the call card has to appear while the phone still rings. Live results that the final
//     delivery needs (Bitrix24 CALL_ID) go to the CallStore. The context of a ringing or show
//     action is cancelled once its moment has passed (see LiveHandler); an adapter then gives up
//     and returns an error wrapping ErrLiveStale.
//   - Errors returned by Deliver and Live are classified with the helpers below. An unclassified
//     error counts as transient.
//   - The daemon consults the licence gate before it calls Deliver or Live; adapters never check
//     licences themselves.
package crm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Adapter delivers finished calls to one CRM account.
type Adapter interface {
	// Deliver makes the CRM show the finished call rec: log/finish the call under the right
	// user, attach the recording, create the missed-call task or lead where configured.
	// It must be idempotent per rec.Key().
	Deliver(ctx context.Context, rec *call.Record) error
}

// LiveHandler is implemented by adapters that show something while a call is in progress
// (Bitrix24 call card, amoCRM/Kommo pop-up). Live is called in event order per call (events of
// different calls run concurrently); it should return within a few hundred milliseconds.
//
// A card shown after its call ended, or to an extension that no longer rings, is worse than
// none, so the daemon cancels the ctx it passes to Live once the action's moment has passed,
// with a *StaleError as the cancellation cause (context.Cause):
//
//   - LiveRinging of extension X: when the call ends (LiveHangup), when X stops ringing
//     (LiveStopRinging for X) or when another extension answers (LiveAnswered);
//   - LiveAnswered and LiveTransferred (they show the card to the extension that took the
//     call): when the call ends;
//   - LiveStopRinging and LiveHangup (they hide cards): never for staleness, only at shutdown or
//     after the daemon's time limit.
//
// An adapter waiting for its rate limiter or a lock gives up on ctx.Done and returns an error
// wrapping the cause (use LiveStale); the daemon counts it in
// pbxbridge_live_actions_dropped_total{connector,reason} instead of logging a failure. A request
// already sent should be left to finish (its answer says whether a card is now shown, which a
// later hide needs). An adapter must not let a stale show cancel the hide of a card it did show:
// hides run on a context without the staleness cancellation (context.WithoutCancel plus a
// timeout of their own).
type LiveHandler interface {
	Live(ctx context.Context, ev *call.Live) error
}

// ErrLiveStale is wrapped by the errors of live actions given up because their moment passed
// (the call ended, the extension stopped ringing, another extension answered, or the daemon's
// live queue was full). Match it with errors.Is.
var ErrLiveStale = errors.New("live action no longer wanted")

// Reasons a live action is dropped (StaleError.Reason and the reason label of
// pbxbridge_live_actions_dropped_total).
const (
	LiveDropCallEnded         = "call_ended"         // the call hung up
	LiveDropAnsweredElsewhere = "answered_elsewhere" // another extension answered
	LiveDropStoppedRinging    = "stopped_ringing"    // the extension stopped ringing (ring timeout, caller moved on)
	LiveDropQueueFull         = "queue_full"         // the daemon's live queue for the connector was full
)

// StaleError is the cancellation cause of a live action's context whose moment passed; it
// wraps ErrLiveStale.
type StaleError struct {
	Reason string // one of the LiveDrop* constants
}

func (e *StaleError) Error() string {
	switch e.Reason {
	case LiveDropCallEnded:
		return "live action dropped: the call has ended"
	case LiveDropAnsweredElsewhere:
		return "live action dropped: another extension answered"
	case LiveDropStoppedRinging:
		return "live action dropped: the extension stopped ringing"
	case LiveDropQueueFull:
		return "live action dropped: the live queue was full"
	}
	return "live action dropped: " + e.Reason
}

// Unwrap returns ErrLiveStale.
func (e *StaleError) Unwrap() error { return ErrLiveStale }

// LiveStale returns the cancellation cause of ctx when the daemon cancelled it because the live
// action's moment passed (a *StaleError), and nil otherwise (not cancelled, shutdown, timeout).
func LiveStale(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	if c := context.Cause(ctx); errors.Is(c, ErrLiveStale) {
		return c
	}
	return nil
}

// StaleReason returns the reason of a stale live action's error (the *StaleError in err's
// chain), or "" when err carries none.
func StaleReason(err error) string {
	var se *StaleError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// Starter is implemented by adapters with background work (token refresh, user-cache refresh,
// event.bind). Start is called once before the first Deliver or Live and must return promptly;
// background goroutines stop when ctx is cancelled.
type Starter interface {
	Start(ctx context.Context) error
}

// Closer is implemented by adapters holding resources. Close is called once, after the last
// Deliver and Live have returned.
type Closer interface {
	Close(ctx context.Context) error
}

// Prober is implemented by adapters that can check their CRM account before going live
// (`pbxbridge crm test`, `pbxbridge doctor`). Each Check is one line of the report.
type Prober interface {
	Probe(ctx context.Context) []Check
}

// Check is one result line of a probe.
type Check struct {
	Name string `json:"name"` // e.g. "authorisation", "telephony scope", "user mapping"
	OK   bool   `json:"ok"`
	// Detail says what was found; when !OK it says in plain words how to fix it.
	Detail string `json:"detail"`
}

// AccountIdentifier is implemented by adapters that can tell which CRM account they are
// authenticated to; the licence gate binds licences to it.
type AccountIdentifier interface {
	Account(ctx context.Context) (Account, error)
}

// Account identifies a CRM account for licence binding.
type Account struct {
	Domain    string `json:"domain,omitempty"`     // Bitrix24 portal domain, e.g. romashka.bitrix24.ru
	MemberID  string `json:"member_id,omitempty"`  // Bitrix24 member_id
	AccountID int64  `json:"account_id,omitempty"` // amoCRM/Kommo account id
	Subdomain string `json:"subdomain,omitempty"`  // amoCRM/Kommo subdomain
}

// HTTPRoutes is implemented by adapters that receive HTTP requests from their CRM (click-to-call
// webhooks, OAuth install callbacks, widget endpoints). The daemon mounts each route under
// /crm/<connector name>/ on its public listener; Pattern is relative to that prefix and uses
// net/http ServeMux syntax ("POST /click2call"). Handlers authenticate requests themselves.
type HTTPRoutes interface {
	Routes() []Route
}

// Route is one HTTP endpoint of an adapter.
type Route struct {
	Pattern string
	Handler http.Handler
}

// Router is implemented by adapters that can answer who should take a customer's call
// (responsible-manager routing for the dialplan's CURL()) and what the customer is called.
// Both must answer within the ctx deadline (the daemon gives them about 300 ms) and return
// ("", nil) when they do not know.
type Router interface {
	Responsible(ctx context.Context, number string) (ext string, err error)
	Lookup(ctx context.Context, number string) (name string, err error)
}

// Forgetter is implemented by adapters that keep customers' phone numbers in memory (look-up
// caches): Forget drops every entry of number. `pbxbridge forget` calls it once per form of the
// number it knows (as given, and E.164). It must return promptly and never call the CRM: what
// the CRM holds is erased in the CRM.
type Forgetter interface {
	Forget(ctx context.Context, number string)
}

// Reconciler is implemented by adapters whose defence against logging a call twice is state in
// the CallStore, and that can look a call up in the CRM instead. After the daemon's state was
// restored from a backup taken at since, the CallStore may have forgotten calls the CRM got after
// that time; before the first delivery the daemon calls Uncertain for every call still queued
// for the connector, and the adapter's next Deliver of such a call first asks the CRM whether it
// has it. Uncertain must not call the CRM; a call the CallStore knows as logged stays as it is.
type Reconciler interface {
	Uncertain(ctx context.Context, key string, since time.Time) error
}

// CodeAuthorizer is implemented by adapters whose CRM gives the admin a one-time authorisation
// code (amoCRM/Kommo OAuth integrations): `pbxbridge crm auth NAME --code CODE` builds the adapter
// and calls AuthorizeCode, which trades the code for tokens and stores them in the adapter's
// state directory. It returns the account the code belongs to.
type CodeAuthorizer interface {
	AuthorizeCode(ctx context.Context, code string) (Account, error)
}

// ConcurrencyHinter is implemented by adapters that deliver best with more concurrent Deliver
// calls than dispatch.workers (amoCRM batches up to batch.max calls per request); the dispatcher
// runs at least DeliverConcurrency deliveries at once.
type ConcurrencyHinter interface {
	DeliverConcurrency() int
}

// StatusReporter is implemented by adapters with state worth showing on the status page, such as
// the CRM authorisation.
type StatusReporter interface {
	Status() Status
}

// Status is an adapter's state for the status page.
type Status struct {
	// Auth is "ok", "missing" (never authorised), "reauthorize" (refresh token rejected) or "".
	Auth string `json:"auth,omitempty"`
	// ConnectURL is where an admin authorises the integration when Auth is not ok.
	ConnectURL string `json:"connect_url,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

// UserDirectory is implemented by adapters that know the CRM's users and which PBX extension
// each one answers (Bitrix24: the users' Internal phone and users.map; amoCRM/Kommo: users and
// auto_map_users). The status page shows it next to the extensions seen in calls, so that an
// admin sees which extension reaches nobody and which user no call can reach.
//
// Users is called on every status page load: it answers from what the adapter keeps, asking the
// CRM at most every few minutes, and returns within the ctx deadline. When the list is
// incomplete (the CRM could not be asked yet) it returns what it knows (the configured
// mapping) together with an error saying why; callers show both.
type UserDirectory interface {
	Users(ctx context.Context) ([]User, error)
}

// NameOf is the name of the user extension ext reaches in users ("" when none or not known
// yet), for "Anna Smith (101)" rather than "101".
func NameOf(users []User, ext string) string {
	for _, u := range users {
		if u.Ext == ext && ext != "" {
			return u.Name
		}
	}
	return ""
}

// User is one CRM user as a UserDirectory knows it.
type User struct {
	// ID is the CRM's user id in its text form.
	ID string `json:"id"`
	// Name is the user's display name ("" when the CRM was not asked yet).
	Name string `json:"name,omitempty"`
	// Ext is the PBX extension that reaches the user ("" when none). A user with several
	// extensions appears once per extension; when several users claim one extension, the first
	// listed is the one calls go to.
	Ext string `json:"ext,omitempty"`
	// Active is false for users the CRM reports as dismissed or blocked.
	Active bool `json:"active"`
	// Source says where the mapping comes from: "config" (the connector's users map), "crm" (the
	// user's profile in the CRM), or "" for a user without an extension.
	Source string `json:"source,omitempty"`
}

// User sources.
const (
	UserFromConfig = "config"
	UserFromCRM    = "crm"
)

// CallStore keeps small per-call values across restarts (e.g. the Bitrix24 CALL_ID obtained
// while the phone rang). Keys are Record.Key(); values are scoped to one connector instance.
type CallStore interface {
	Get(ctx context.Context, key, field string) (value string, ok bool, err error)
	Set(ctx context.Context, key, field, value string) error
}

// CallStoreBatch is implemented by CallStores that read or write several fields of a call at
// once: one query, one durable write. Adapters that keep several fields use it when present
// (the daemon's store has it) and fall back to Get and Set field by field.
type CallStoreBatch interface {
	// GetAll returns every field set for the call key (an empty map when none).
	GetAll(ctx context.Context, key string) (map[string]string, error)
	// SetMany sets the fields of the call key together: all or none.
	SetMany(ctx context.Context, key string, fields map[string]string) error
}

// CallStoreLazy is implemented by CallStores that can write without an fsync'd commit of their
// own (the daemon's store has it). Set is durable when it returns, which costs the disk an fsync;
// a delivered call should cost at most two (its record and its acknowledgement), so adapters
// write per-call state through these when present and fall back to Set otherwise:
type CallStoreLazy interface {
	// SetLazy sets the fields of the call key together, committed but not fsync'd: when it
	// returns nil they survive a crash of the daemon; a power loss may undo them until the
	// store's next durable commit (at the latest the acknowledgement of the delivery in
	// progress). For write-ahead markers: a request that creates something in the CRM is about
	// to go out.
	SetLazy(ctx context.Context, key string, fields map[string]string) error
	// SetLater sets the fields of the call key without waiting: they are written with the
	// store's next commit, within moments, and Get and GetAll see them at once. A crash in
	// between loses them: for state whose loss is harmless (a card shown), and for what a
	// delivery learned just before it ends (its acknowledgement follows at once and carries
	// them).
	SetLater(key string, fields map[string]string) error
}

// Params is what a Factory gets to build one connector instance.
type Params struct {
	// Name is the connector instance name (config connectors[].name); Type its type.
	Name string
	Type string
	// Config is the value Factory.NewConfig returned, decoded from the instance's config block
	// and validated.
	Config any
	Logger *slog.Logger
	// Metrics registers the adapter's own metrics; it already carries the connector label.
	Metrics prometheus.Registerer
	// StateDir is a private directory for this instance (OAuth tokens), created 0700.
	StateDir string
	// Calls is the instance's per-call store.
	Calls CallStore
	// Originator places click-to-call calls on the PBX that serves this connector; nil when
	// no PBX supports originate.
	Originator asterisk.Originator
	// PublicURL is the daemon's externally reachable base URL (config http.public.url), used to
	// build webhook, OAuth redirect and recording links; "" when not configured.
	PublicURL string
	// RouteURL is PublicURL joined with this instance's route prefix (/crm/<name>).
	RouteURL string
	// Recordings turns a recording path from a Record into a URL a CRM user's browser can play,
	// and opens the file for upload; nil when recordings are not configured.
	Recordings Recordings
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// MaxResponseBody bounds each CRM answer the adapter reads, in bytes (config
	// connectors[].max_response_bytes; 0 means the shared client's default, 8 MiB).
	MaxResponseBody int64
	// HTTPClient is the transport to use for CRM requests (instrumented, timeouts set); nil
	// means the adapter builds its own with crm/internal/httpclient defaults.
	HTTPClient *http.Client
	// ObserveServerDate, when non-nil, is given the Date header of each TLS-verified CRM
	// response (licensing time floor, docs/licensing-design.md §3.5).
	ObserveServerDate func(time.Time)
	// Hooks are the instance's configured overrides of its decisions (docs/hooks.md); nil
	// when none are configured.
	Hooks Hooks
	// AuthRenewed, when non-nil, is called by the adapter when new CRM credentials arrive (an
	// application installed, an OAuth code traded for tokens): calls that wait on a broken
	// authorisation are delivered at once instead of after the dispatcher's pause. It never
	// blocks.
	AuthRenewed func()
}

// Recordings gives adapters access to call recordings.
type Recordings interface {
	// URL returns a signed link to the recording at path, or "" when it cannot be served.
	URL(path string) string
	// Open opens the recording for upload. The caller closes it.
	Open(path string) (Recording, error)
}

// Recording is an open recording file.
type Recording interface {
	Read(p []byte) (int, error)
	Close() error
	Size() int64
	Name() string // file name for uploads
}

// ConfigValidator is implemented by config values (Factory.NewConfig) that check themselves after
// decoding. Validate returns every problem, preferably as *FieldError so the message names the
// field and line.
type ConfigValidator interface {
	Validate() []error
}

// ExtensionMapper is implemented by config values that map PBX extensions to CRM users; the
// licence gate counts the mapped extensions as seats.
type ExtensionMapper interface {
	MappedExtensions() []string
}

// AccountConfigurer is implemented by config values that name their CRM account (the portal's
// domain, the account's subdomain), so offline tools (`license request`) know the account
// before any adapter has talked to the CRM.
type AccountConfigurer interface {
	ConfiguredAccount() Account
}

// Errors the daemon's click-to-call gate returns from Params.Originator before the PBX is asked
// (wrapped; match with errors.Is). Adapters show them to the CRM user in plain words.
var (
	// ErrClickToCallUnlicensed: the connector has no licence for CRM actions.
	ErrClickToCallUnlicensed = errors.New("click-to-call: the connector has no licence for CRM actions")
	// ErrClickToCallDenied: the number is not allowed by the PBX's click-to-call policy
	// (premium-rate, satellite, international, feature codes unless the admin allows them).
	ErrClickToCallDenied = errors.New("click-to-call: the number is not allowed by the PBX's click-to-call policy")
	// ErrClickToCallRate: the extension started too many calls in the last minute.
	ErrClickToCallRate = errors.New("click-to-call: too many calls from this extension in the last minute")
)

// Factory builds adapters of one connector type.
type Factory struct {
	// Type is the connector type name used in config (bitrix24, amocrm, kommo, fake).
	Type string
	// NewConfig returns a pointer to a config value with defaults applied. The daemon decodes
	// the instance's config block into it strictly. If the value implements ConfigValidator,
	// it is called after decoding.
	NewConfig func() any
	// New builds an adapter. It must not do network I/O (that belongs in Start or Deliver).
	New func(p Params) (Adapter, error)
	// Licence says whether the type is sold (needs a licence) and how a licence binds to its CRM
	// account; "" for types that need none (the test CRM).
	Licence LicenceBinding
}

// LicenceBinding is how licences of a connector type bind to a CRM account (the licensing
// package's binding kinds).
type LicenceBinding string

// Licence bindings.
const (
	// LicenceDomain: the portal's domain and member_id (Account.Domain, Account.MemberID).
	LicenceDomain LicenceBinding = "domain"
	// LicenceAccount: the account id and/or subdomain (Account.AccountID, Account.Subdomain).
	LicenceAccount LicenceBinding = "account"
)

// FieldError is a validation problem of one config field. Path is relative to the instance's
// type block (e.g. "oauth.client_id"); the loader prefixes it with the instance's path and adds
// the line number.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Class is how the dispatcher treats a failed delivery.
type Class int

// Error classes.
const (
	// ClassTransient: retry with exponential backoff and jitter (network errors, 5xx, timeouts).
	ClassTransient Class = iota
	// ClassRateLimited: retry after RetryAfter (429, QUERY_LIMIT_EXCEEDED).
	ClassRateLimited
	// ClassPermanent: the record can never be delivered as it is; dead-letter it with the
	// reason so an operator can see it in `pbxbridge outbox list --dead`.
	ClassPermanent
	// ClassAuth: the CRM authorisation is broken (refresh token rejected, app uninstalled).
	// Records stay queued without burning attempts until an admin re-authorises.
	ClassAuth
)

func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassRateLimited:
		return "rate_limited"
	case ClassPermanent:
		return "permanent"
	case ClassAuth:
		return "auth"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Error is a classified adapter error.
type Error struct {
	Class      Class
	RetryAfter time.Duration // ClassRateLimited: how long to wait (0 = dispatcher default)
	Err        error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Transient marks err as transient.
func Transient(err error) error { return &Error{Class: ClassTransient, Err: err} }

// Permanent marks err as permanent.
func Permanent(err error) error { return &Error{Class: ClassPermanent, Err: err} }

// RateLimited marks err as a rate-limit refusal to retry after d.
func RateLimited(err error, d time.Duration) error {
	return &Error{Class: ClassRateLimited, RetryAfter: d, Err: err}
}

// AuthBroken marks err as a broken CRM authorisation.
func AuthBroken(err error) error { return &Error{Class: ClassAuth, Err: err} }

// Classify returns the class of err and, for rate limits, how long to wait. Errors that are not
// classified are transient; context cancellation is transient too (the record stays queued).
func Classify(err error) (Class, time.Duration) {
	var e *Error
	if errors.As(err, &e) {
		return e.Class, e.RetryAfter
	}
	return ClassTransient, 0
}
