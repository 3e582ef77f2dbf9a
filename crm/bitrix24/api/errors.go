package api

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Bitrix24 error codes the client and the adapter act on (docs/crm-apis.md A.1.3). Codes arrive in
// upper and lower case: compare them with IsCode.
//
//nolint:gosec // error codes, not credentials
const (
	CodeExpiredToken       = "expired_token"
	CodeInvalidToken       = "invalid_token"
	CodeNoAuthFound        = "NO_AUTH_FOUND"
	CodeQueryLimitExceeded = "QUERY_LIMIT_EXCEEDED"
	CodeOperationTimeLimit = "OPERATION_TIME_LIMIT"
	CodeOverloadLimit      = "OVERLOAD_LIMIT"
	CodeWrongAuthType      = "WRONG_AUTH_TYPE"
	CodeInsufficientScope  = "insufficient_scope"
	CodeAccessDenied       = "ACCESS_DENIED"
	CodeInvalidCredentials = "INVALID_CREDENTIALS"
	CodeUserAccessError    = "user_access_error"
	CodePortalDeleted      = "PORTAL_DELETED"
	CodePaymentRequired    = "PAYMENT_REQUIRED"
	CodeMethodNotFound     = "ERROR_METHOD_NOT_FOUND"
	CodeCore               = "ERROR_CORE"
	CodeInternal           = "INTERNAL_SERVER_ERROR"
	CodeBatchNotAllowed    = "ERROR_BATCH_METHOD_NOT_ALLOWED"
	CodeBatchLength        = "ERROR_BATCH_LENGTH_EXCEEDED"
	CodeEventNotFound      = "ERROR_EVENT_NOT_FOUND"

	// OAuth server codes (A.1.5).
	CodeInvalidGrant   = "invalid_grant"
	CodeInvalidClient  = "invalid_client"
	CodeInvalidRequest = "invalid_request"
	CodeInvalidScope   = "invalid_scope"
)

// Error is an error answer of the portal: the HTTP status plus the Bitrix24 error envelope.
type Error struct {
	Method      string // REST method, e.g. telephony.externalCall.register
	Status      int    // HTTP status (200 for an error inside a batch)
	Code        string // Bitrix24 "error" as sent (may be "" or plain text)
	Description string // "error_description"
	// RetryAfter is how long the portal asked us to wait (Retry-After header, or the
	// operating_reset_at of an OPERATION_TIME_LIMIT answer); 0 when it did not say.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Method != "" {
		b.WriteString(e.Method)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "http %d", e.Status)
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	return b.String()
}

// IsCode reports whether err is (or wraps) a portal or OAuth error with one of codes,
// compared case-insensitively.
func IsCode(err error, codes ...string) bool {
	var code string
	var e *Error
	var oe *OAuthError
	switch {
	case errors.As(err, &e):
		code = e.Code
	case errors.As(err, &oe):
		code = oe.Code
	default:
		return false
	}
	for _, c := range codes {
		if strings.EqualFold(code, c) {
			return true
		}
	}
	return false
}

// DescriptionContains reports whether err is a portal error whose description contains s
// (case-insensitive). ERROR_CORE answers are told apart only by their text.
func DescriptionContains(err error, s string) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return strings.Contains(strings.ToLower(e.Description), strings.ToLower(s))
}

// OAuthError is an error answer of the OAuth server (oauth.bitrix.info).
type OAuthError struct {
	Status      int
	Code        string
	Description string
}

func (e *OAuthError) Error() string {
	s := fmt.Sprintf("oauth server: http %d: %s", e.Status, e.Code)
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Authorisation states and sentinels.
var (
	// ErrNotAuthorized: no tokens yet (the local application was never installed).
	ErrNotAuthorized = errors.New("not authorised: install the local application in Bitrix24")
	// ErrReauthorize: the refresh token or the application credentials were rejected; calls
	// can only succeed after an admin authorises the application again.
	ErrReauthorize = errors.New("authorisation revoked: re-authorise the application in Bitrix24")
	// ErrLocalRateLimit is wrapped by *LimitError.
	ErrLocalRateLimit = errors.New("client-side rate limit")
)

// LimitError is returned when the client-side bucket cannot grant a request before the
// context deadline: Wait says how long a caller would have had to wait.
type LimitError struct{ Wait time.Duration }

func (e *LimitError) Error() string {
	return fmt.Sprintf("client-side rate limit: next request slot in %v, after the deadline", e.Wait.Round(time.Millisecond))
}

// Unwrap returns ErrLocalRateLimit.
func (e *LimitError) Unwrap() error { return ErrLocalRateLimit }
