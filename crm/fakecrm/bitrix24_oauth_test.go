package fakecrm

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
)

// TestB24OAuthOutageAndMemberID: OAuthFailStatus makes the OAuth server answer 5xx without
// consuming the refresh token, and B24MemberID is what the refresh answer reports.
func TestB24OAuthOutageAndMemberID(t *testing.T) {
	t.Parallel()
	f := startBitrix24(t, B24MemberID("0123456789abcdef0123456789abcdef"))
	tok := f.IssueTokens()
	if tok.MemberID != "0123456789abcdef0123456789abcdef" || f.MemberID() != tok.MemberID {
		t.Fatalf("member_id %q / %q", tok.MemberID, f.MemberID())
	}
	refresh := func() (int, map[string]any) {
		v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken},
			"client_id": {f.ClientID()}, "client_secret": {f.ClientSecret()}}
		resp := do(t, http.MethodGet, f.URL()+"/oauth/token/?"+v.Encode(), "", nil)
		defer func() { _ = resp.Body.Close() }()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	f.SetFaults(B24Faults{TelephonyAppOnly: true, OAuthFailStatus: http.StatusServiceUnavailable})
	if st, m := refresh(); st != http.StatusServiceUnavailable {
		t.Fatalf("refresh during an outage: %d %v", st, m)
	}
	f.SetFaults(B24Faults{TelephonyAppOnly: true})
	st, m := refresh()
	if st != http.StatusOK || m["member_id"] != tok.MemberID || m["client_endpoint"] != f.URL()+"/rest/" {
		t.Fatalf("refresh after the outage: %d %v", st, m)
	}
	if s := f.State(); s.Requests["oauth/token"] != 2 || s.TokenRefreshes != 1 {
		t.Fatalf("requests %v, refreshes %d", s.Requests, s.TokenRefreshes)
	}
}
