package bitrix24

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
)

// Events of the pbxbridge portal module (portal_token mode).
//
// On an isolated box Bitrix24 cannot deliver application events (they go through the cloud's
// queue servers), so the pbxbridge module (crm/bitrix24/portal-module) replaces the portal's
// event provider for its own application and POSTs each event straight to the handler pbxbridge
// bound (<public url>/crm/<name>/module/events). Bitrix24 signs nothing, so the module does:
//
//	X-Pbxbridge-Timestamp: <unix seconds when the module sent it>
//	X-Pbxbridge-Signature: sha256=<hex HMAC-SHA256(module_secret, timestamp + "." + body)>
//
// with the body the usual form-encoded event (event, data[…], ts, auth[domain],
// auth[member_id], …). A request is accepted only with a valid signature (compared in constant
// time) whose timestamp is within moduleSkew of our clock; its auth[member_id] must be the
// configured or bound one (the first verified event binds it, as the first installation does in
// oauth mode); then it goes the way of every event (handleEvent: freshness, one acceptance per
// CALL_ID, the CallStore's memory), so a replayed request within the window does nothing.
const (
	pathModuleEvents      = "/module/events"
	moduleTimestampHeader = "X-Pbxbridge-Timestamp"
	moduleSignatureHeader = "X-Pbxbridge-Signature"
	moduleSignaturePrefix = "sha256="
	// moduleSkew is how far a module request's timestamp may be from our clock.
	moduleSkew = 5 * time.Minute
)

// Refusals of a module request (each is a webhook_rejected_total reason).
var (
	errModuleUnsigned = errors.New("the request is not signed (X-Pbxbridge-Timestamp and X-Pbxbridge-Signature are required)")
	errModuleBadSig   = errors.New("the signature does not match: check that auth.module_secret is the secret the module shows")
	errModuleStale    = errors.New("the signature's timestamp is too far from pbxbridge's clock (replayed, or a clock is wrong: keep both in sync with NTP)")
)

// moduleSignature is the signature of body sent at ts with secret: hex HMAC-SHA256 over
// ts + "." + body.
func moduleSignature(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// verifyModuleRequest checks a module request's headers against its body. It never panics on
// any input; a nil error means the module with secret sent body within moduleSkew of now.
func verifyModuleRequest(secret []byte, tsHeader, sigHeader string, body []byte, now time.Time) error {
	if len(secret) == 0 {
		return errModuleBadSig
	}
	tsHeader, sigHeader = strings.TrimSpace(tsHeader), strings.TrimSpace(sigHeader)
	if tsHeader == "" || sigHeader == "" {
		return errModuleUnsigned
	}
	if len(tsHeader) > 12 || strings.TrimLeft(tsHeader, "0123456789") != "" {
		return fmt.Errorf("%w: %s is not unix seconds", errModuleUnsigned, moduleTimestampHeader)
	}
	ts, err := strconv.ParseInt(tsHeader, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s is not unix seconds", errModuleUnsigned, moduleTimestampHeader)
	}
	hexSig, ok := strings.CutPrefix(sigHeader, moduleSignaturePrefix)
	if !ok || len(hexSig) != 2*sha256.Size {
		return fmt.Errorf("%w: %s must be %s<64 hex digits>", errModuleUnsigned, moduleSignatureHeader, moduleSignaturePrefix)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return fmt.Errorf("%w: %s must be %s<64 hex digits>", errModuleUnsigned, moduleSignatureHeader, moduleSignaturePrefix)
	}
	if !hmac.Equal(got, moduleSignature(secret, tsHeader, body)) {
		return errModuleBadSig
	}
	at := time.Unix(ts, 0)
	if at.Before(now.Add(-moduleSkew)) || at.After(now.Add(moduleSkew)) {
		return errModuleStale
	}
	return nil
}

// serveModuleEvent receives the events the pbxbridge portal module posts (see the comment at
// the top of this file). Only a portal_token connector has it; the body is bounded before it is
// read to its end.
func (a *Adapter) serveModuleEvent(w http.ResponseWriter, r *http.Request) {
	if a.portal == nil {
		a.reject(w, http.StatusNotFound, "module_not_configured", "this connector does not use the pbxbridge portal module (auth.mode: portal_token)")
		return
	}
	if r.ContentLength > api.MaxEventBody {
		a.reject(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the event is larger than %d bytes", api.MaxEventBody))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxEventBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			a.reject(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the event is larger than %d bytes", api.MaxEventBody))
			return
		}
		a.reject(w, http.StatusBadRequest, "malformed", "reading the request: "+err.Error())
		return
	}
	err = verifyModuleRequest([]byte(a.cfg.Auth.ModuleSecret.Value()), r.Header.Get(moduleTimestampHeader), r.Header.Get(moduleSignatureHeader), body, a.now())
	switch {
	case err == nil:
	case errors.Is(err, errModuleStale):
		a.reject(w, http.StatusUnauthorized, "module_stale", err.Error())
		return
	case errors.Is(err, errModuleBadSig):
		a.reject(w, http.StatusUnauthorized, "module_signature", err.Error())
		return
	default:
		a.reject(w, http.StatusUnauthorized, "module_unsigned", err.Error())
		return
	}
	ev, err := api.ParseEvent(body)
	if err != nil {
		a.reject(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	if !a.checkModulePortal(w, ev) {
		return
	}
	a.handleEvent(w, r, ev)
}

// checkModulePortal checks a verified module event's member_id: it must be auth.member_id when
// configured, else the bound one; the first verified event of an unbound connector binds it.
func (a *Adapter) checkModulePortal(w http.ResponseWriter, ev *api.Event) bool {
	member := strings.TrimSpace(ev.Auth["member_id"])
	if member == "" {
		a.reject(w, http.StatusBadRequest, "member_id", "the event carries no auth[member_id]")
		return false
	}
	want := a.cfg.Auth.MemberID
	if want == "" {
		bound, fresh, err := a.bindFirst(member, strings.ToLower(strings.TrimSpace(ev.Auth["domain"])))
		if err != nil {
			a.log.Warn("bitrix24: the portal binding could not be saved; it holds until the daemon stops", "err", err)
		}
		if fresh {
			a.log.Info("bitrix24: bound to the portal of the pbxbridge module's first event", "member_id", member, "domain", ev.Auth["domain"])
		}
		want = bound
	}
	if member != want {
		a.refuseRebind(want, member)
		a.reject(w, http.StatusForbidden, "member_id", "the event is not from the portal this connector is bound to (member_id): see the pbxbridge log")
		return false
	}
	return true
}
