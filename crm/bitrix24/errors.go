package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// Retry hints for refusals without a Retry-After.
const (
	queryLimitWait = 5 * time.Second
	operatingWait  = time.Minute
	overloadWait   = 15 * time.Minute
)

// authCodes are answers no retry fixes until an admin acts on the account or the app.
var authCodes = []string{
	api.CodeNoAuthFound, api.CodeInvalidToken, api.CodeWrongAuthType, api.CodeInsufficientScope,
	api.CodeInvalidCredentials, api.CodeAccessDenied, api.CodeUserAccessError, api.CodePaymentRequired,
	api.CodePortalDeleted,
}

// classify turns an error into a crm error class, prefixed "bitrix24: <what>: ". An error that
// is already classified keeps its class.
func (a *Adapter) classify(what string, err error) error {
	if err == nil {
		return nil
	}
	wrapped := fmt.Errorf("bitrix24: %s: %w", what, err)
	var ce *crm.Error
	if errors.As(err, &ce) {
		return &crm.Error{Class: ce.Class, RetryAfter: ce.RetryAfter, Err: wrapped}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return crm.Transient(wrapped)
	}
	if errors.Is(err, api.ErrNotAuthorized) || errors.Is(err, api.ErrReauthorize) {
		return crm.AuthBroken(wrapped)
	}
	if errors.Is(err, api.ErrPortalTokenRejected) {
		a.noteAuthProblem(err)
		return crm.AuthBroken(wrapped)
	}
	// The portal's certificate is not trusted (or not the pinned one): no request can succeed
	// until an admin fixes tls.*, so calls stay queued without burning attempts.
	if h := a.tlsProblem(err); h != "" {
		a.noteAuthProblem(err)
		return crm.AuthBroken(fmt.Errorf("bitrix24: %s: %s: %w", what, h, err))
	}
	var le *api.LimitError
	if errors.As(err, &le) {
		return crm.RateLimited(wrapped, le.Wait)
	}
	var e *api.Error
	if !errors.As(err, &e) {
		return crm.Transient(wrapped)
	}
	switch {
	case api.IsCode(err, api.CodeQueryLimitExceeded):
		return crm.RateLimited(wrapped, max(e.RetryAfter, queryLimitWait))
	case api.IsCode(err, api.CodeOperationTimeLimit):
		return crm.RateLimited(wrapped, max(e.RetryAfter, operatingWait))
	case api.IsCode(err, api.CodeOverloadLimit):
		return crm.RateLimited(wrapped, max(e.RetryAfter, overloadWait))
	case api.IsCode(err, authCodes...):
		a.noteAuthProblem(err)
		return crm.AuthBroken(wrapped)
	case e.Status >= 500 || e.Status == 0 || api.IsCode(err, api.CodeExpiredToken):
		return crm.Transient(wrapped)
	}
	return crm.Permanent(wrapped)
}

// permanentIfScope marks scope and access answers to optional steps (missed-call leads and
// follow-ups) as permanent instead of an authorisation problem, so that a missing "task" scope
// never holds up the delivery of other calls; the call itself is already logged by then.
func permanentIfScope(err error) error {
	if err != nil && api.IsCode(err, api.CodeInsufficientScope, api.CodeAccessDenied, api.CodeUserAccessError) {
		return crm.Permanent(err)
	}
	return err
}
