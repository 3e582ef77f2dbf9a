package api

import (
	"net/url"
	"strings"
)

// DefaultOAuthServer is the OAuth server a local application uses when nothing else is known.
const DefaultOAuthServer = "https://oauth.bitrix.info"

// BitrixOAuthServers are Bitrix24's own OAuth servers: the international one and the one Russian
// portals name in server_endpoint since 2025 (docs/crm-apis.md A.1.5). A server_endpoint the
// portal sends may move token requests to one of these, or to a configured one, and nowhere else.
var BitrixOAuthServers = []string{"https://oauth.bitrix.info", "https://oauth.bitrix24.tech"}

// OAuthServers decides which OAuth server token requests go to. Bitrix24 names the server in
// server_endpoint (the installation event, every token answer); that name is followed only when
// its origin (scheme, host and port) is one of Allowed, because the installation event is posted
// by whoever reaches pbxbridge: a hostile installation naming its own server would otherwise
// receive our client secret and the portal's refresh tokens. The zero value follows no
// server_endpoint and uses DefaultOAuthServer.
type OAuthServers struct {
	// Fallback is used when server_endpoint is absent or not allowed ("" means
	// DefaultOAuthServer).
	Fallback string
	// Allowed are the origins server_endpoint may name, as base URLs (https://oauth.bitrix.info).
	Allowed []string
}

// NewOAuthServers returns the policy of a connector: configured, when not empty, is the
// oauth_url of its configuration (a box whose BITRIX_OAUTH_URL names another server): it is the
// fallback and allowed besides Bitrix24's own servers.
func NewOAuthServers(configured string) OAuthServers {
	s := OAuthServers{Fallback: DefaultOAuthServer, Allowed: append([]string(nil), BitrixOAuthServers...)}
	if configured != "" {
		s.Fallback = strings.TrimRight(configured, "/")
		s.Allowed = append(s.Allowed, s.Fallback)
	}
	return s
}

// For returns the base URL of the OAuth server for tokens whose server_endpoint is endpoint
// (https://oauth.bitrix.info/rest/): the endpoint's origin when it is allowed, else the fallback.
func (s OAuthServers) For(endpoint string) string {
	if o := origin(endpoint); o != "" {
		for _, a := range s.Allowed {
			if strings.EqualFold(o, origin(a)) {
				return o
			}
		}
	}
	if s.Fallback == "" {
		return DefaultOAuthServer
	}
	return s.Fallback
}

// origin returns scheme://host[:port] of an http(s) URL without credentials, lower-cased, with
// the scheme's default port dropped; "" for anything else.
func origin(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.User != nil || u.Host == "" || u.Opaque != "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return ""
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return ""
	}
	port := u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return scheme + "://" + host + ":" + port
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host
}
