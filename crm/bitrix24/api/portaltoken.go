package api

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrPortalTokenRejected means the portal refused the token the pbxbridge portal module issued
// (expired, revoked, or the module was removed); calls can only succeed once an admin issues a
// new token on the module's settings page and puts it into the configuration.
var ErrPortalTokenRejected = errors.New("the portal refused the pbxbridge module's token: issue a new one on the module's settings page (Settings → Product settings → Module settings → pbxbridge, /bitrix/admin/settings.php?mid=pbxbridge.connector) and set auth.portal_token")

// PortalToken is the Authenticator of a portal whose pbxbridge module issues a long-lived,
// application-type token (auth.mode: portal_token): REST calls go to the portal's /rest/ with
// the token as "auth", exactly as a local application's, and nothing is ever refreshed (no
// OAuth server is involved).
type PortalToken struct {
	base  string
	token string
}

// NewPortalToken validates the portal's base URL and the token.
func NewPortalToken(portalURL, token string) (*PortalToken, error) {
	u, err := url.Parse(strings.TrimSpace(portalURL))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, errors.New("portal token: the portal URL must look like https://portal.example.ru")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, errors.New("portal token: the token is empty")
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return nil, errors.New("portal token: the token contains white space (copy it again from the module's settings page)")
	}
	return &PortalToken{base: strings.TrimRight(u.Scheme+"://"+u.Host, "/") + "/rest/", token: token}, nil
}

// Endpoint implements Authenticator.
func (p *PortalToken) Endpoint(context.Context) (string, string, error) { return p.base, p.token, nil }

// Refresh implements Authenticator: a module token cannot be refreshed; the portal answering
// expired_token means an admin must issue a new one.
func (p *PortalToken) Refresh(context.Context, string) error {
	return fmt.Errorf("%w (it expired)", ErrPortalTokenRejected)
}

// Domain returns the portal's host (with its port when it has one).
func (p *PortalToken) Domain() string {
	u, err := url.Parse(p.base)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}
