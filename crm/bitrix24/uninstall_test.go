package bitrix24

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
)

// TestUninstallRemovesTokens: an authenticated uninstall removes the token file from the state
// directory; an adapter started again on that directory is "missing" (install the application)
// rather than refreshing the revoked token, and stays bound to the portal.
func TestUninstallRemovesTokens(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	path := filepath.Join(e.state, tokenFile)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("token file before the uninstall: %v", err)
	}
	st := e.post(pathInstall, url.Values{"event": {"ONAPPUNINSTALL"}, "auth[application_token]": {f.ApplicationToken()},
		"auth[domain]": {f.Domain()}, "auth[member_id]": {f.MemberID()}})
	mustf(t, st == http.StatusOK && e.a.Status().Auth == "missing", "uninstall: http %d, %+v", st, e.a.Status())
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("token file after the uninstall: %v", err)
	}

	again := newEnv(t, f, inState(e.state))
	state, _ := again.a.tokens.State()
	mustf(t, state == api.StateMissing, "restarted: state %s", state)
	err := again.a.Deliver(context.Background(), answeredInbound(again, "1795331000.1", "101"))
	mustf(t, errors.Is(err, api.ErrNotAuthorized) && !errors.Is(err, api.ErrReauthorize), "restarted: deliver %v, want not authorised", err)
	s := again.a.Status()
	mustf(t, s.Auth == "missing" && strings.Contains(s.Detail, "install the local application"), "restarted: status %+v", s)
	mustf(t, f.State().TokenRefreshes == 0, "restarted adapter refreshed a token")
	mustf(t, again.a.boundMember() == f.MemberID(), "restarted: bound to %q", again.a.boundMember())
}
