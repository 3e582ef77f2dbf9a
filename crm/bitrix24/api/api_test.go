package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

func TestDecodeEnvelope(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		code   string // "" success
		result string
	}{
		{"success", 200, `{"result":{"CALL_ID":"x"},"time":{"operating":0.1}}`, "", `{"CALL_ID":"x"}`},
		{"list", 200, `{"result":[],"total":0,"time":{}}`, "", `[]`},
		{"error", 401, `{"error":"expired_token","error_description":"The access token provided has expired."}`, "expired_token", ""},
		{"empty code", 400, `{"error":"","error_description":"Access denied."}`, "", ""},
		{"text code", 400, `{"error":"Communication type is not defined","error_description":""}`, "Communication type is not defined", ""},
		{"html 502", 502, `<html>bad gateway</html>`, "", ""},
		{"error with 200", 200, `{"error":"ERROR_CORE","error_description":"x"}`, "ERROR_CORE", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _, err := DecodeEnvelope("m", tc.status, []byte(tc.body))
			if tc.result != "" {
				if err != nil || string(raw) != tc.result {
					t.Fatalf("got %s, %v", raw, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tc.code {
				t.Fatalf("got %v, want an *Error with code %q", err, tc.code)
			}
		})
	}
	if !IsCode(&Error{Code: "EXPIRED_TOKEN"}, CodeExpiredToken) {
		t.Fatal("IsCode must ignore case")
	}
}

func TestDecoders(t *testing.T) {
	m, err := DecodeFindByComm([]byte(`[]`))
	if err != nil || len(m) != 0 {
		t.Fatalf("empty array: %v %v", m, err)
	}
	m, err = DecodeFindByComm([]byte(`{"CONTACT":[275,"2297"],"LEAD":[1001]}`))
	if err != nil || len(m["CONTACT"]) != 2 || m["CONTACT"][1] != 2297 || m["LEAD"][0] != 1001 {
		t.Fatalf("object: %v %v", m, err)
	}
	b, err := DecodeBatch([]byte(`{"result":[],"result_error":{"d":{"error":"x","error_description":"y"}},"result_total":[],"result_next":[]}`))
	if err != nil || len(b.Result) != 0 || b.Errors["d"].Code != "x" {
		t.Fatalf("batch: %+v %v", b, err)
	}
	b, err = DecodeBatch([]byte(`{"result":{"u":[{"ID":"1269"}]},"result_error":[],"result_total":{"u":"1"},"result_next":{"u":50}}`))
	if err != nil || string(b.Result["u"]) != `[{"ID":"1269"}]` || b.Total["u"] != 1 || b.Next["u"] != 50 {
		t.Fatalf("batch: %+v %v", b, err)
	}
	ms, err := DecodeCrmMatches([]byte(`[{"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":651,"ASSIGNED_BY_ID":99,"NAME":"John","ASSIGNED_BY":{"ID":"99","TIMEMAN_STATUS":"CLOSED","USER_PHONE_INNER":"101","WORK_PHONE":null}}]`))
	if err != nil || len(ms) != 1 || ms[0].AssignedBy.UserPhoneInner != "101" || ms[0].AssignedBy.ID != 99 {
		t.Fatalf("matches: %+v %v", ms, err)
	}
	us, err := DecodeUsers([]byte(`[{"ID":"1269","ACTIVE":true,"NAME":"Anna","UF_PHONE_INNER":101},{"ID":"7","ACTIVE":"N"}]`))
	if err != nil || len(us) != 2 || us[0].UFPhoneInner != "101" || !bool(us[0].Active) || bool(us[1].Active) {
		t.Fatalf("users: %+v %v", us, err)
	}
	// The documentation's rows (voximplant.statistic.get): RECORD_FILE_ID a number or null.
	ss, err := DecodeStatistics([]byte(`[{"ID":"7","CALL_ID":"externalCall.716f","EXTERNAL_CALL_ID":"pbx1/1795330000.1","CALL_RECORD_URL":null,"RECORD_FILE_ID":9079},` +
		`{"ID":"1","CALL_ID":"11018129443EB80D.1754478570.11438214","EXTERNAL_CALL_ID":null,"CALL_RECORD_URL":"","RECORD_FILE_ID":null}]`))
	if err != nil || len(ss) != 2 || ss[0].RecordFileID != 9079 || ss[0].ExternalCallID != "pbx1/1795330000.1" || ss[1].RecordFileID != 0 || ss[1].ExternalCallID != "" {
		t.Fatalf("statistics: %+v %v", ss, err)
	}
}

func TestWithAuth(t *testing.T) {
	for in, want := range map[string]string{
		`{}`:          `{"auth":"t"}`,
		`{"a":1}`:     `{"auth":"t","a":1}`,
		`{ "a" : 1 }`: `{"auth":"t","a" : 1 }`,
	} {
		if got := string(withAuth([]byte(in), "t")); got != want {
			t.Errorf("withAuth(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestWebhookSecretNotInErrors: a transport error never shows the webhook URL.
func TestWebhookSecretNotInErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close() // connection refused from now on
	w, err := NewWebhook(u + "/rest/7/t0ps3cr3t/")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := New(Options{HTTP: httpclient.New(httpclient.Options{RetryMax: -1}), Auth: w})
	_, err = c.Call(context.Background(), "user.get", nil, nil)
	if err == nil || strings.Contains(err.Error(), "t0ps3cr3t") {
		t.Fatalf("error %v (must exist and hide the secret)", err)
	}
}

func TestNewWebhook(t *testing.T) {
	for _, bad := range []string{"", "https://x.bitrix24.ru/", "https://x.bitrix24.ru/rest/abc/def/", "ftp://x/rest/1/c/", "https://x/rest/1/"} {
		if _, err := NewWebhook(bad); err == nil {
			t.Errorf("NewWebhook(%q) accepted", bad)
		}
	}
	w, err := NewWebhook("https://x.bitrix24.ru/rest/1/code")
	if err != nil || w.base != "https://x.bitrix24.ru/rest/1/code/" || w.Domain() != "x.bitrix24.ru" {
		t.Fatalf("%+v %v", w, err)
	}
}

func newTokenSource(t *testing.T, f *fakecrm.Bitrix24, dir string, onChange func(AuthState, error)) *TokenSource {
	t.Helper()
	tok := f.IssueTokens()
	file := TokenFile{Path: filepath.Join(dir, "tokens.json")}
	if err := file.Save(&Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, MemberID: tok.MemberID}); err != nil {
		t.Fatal(err)
	}
	ts, err := NewTokenSource(OAuthConfig{
		PortalURL: f.URL(), ServerURL: f.URL(), ClientID: f.ClientID(), ClientSecret: f.ClientSecret(),
		HTTP: httpclient.New(httpclient.Options{}), File: file, OnChange: onChange,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestRefreshOnceUnderConcurrency: 64 concurrent calls with an expired token cause one
// refresh; all succeed; the rotated refresh token is on disk.
func TestRefreshOnceUnderConcurrency(t *testing.T) {
	f := crmtest.StartBitrix24(t, fakecrm.B24Latency(5*time.Millisecond))
	dir := t.TempDir()
	ts := newTokenSource(t, f, dir, nil)
	c, _ := New(Options{HTTP: httpclient.New(httpclient.Options{}), Auth: ts})
	f.ExpireTokens()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, _, err := c.GetUsers(context.Background(), map[string]any{"ACTIVE": true}, 0); err != nil {
				t.Error(err)
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := f.State().TokenRefreshes; n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	saved, err := TokenFile{Path: filepath.Join(dir, "tokens.json")}.Load()
	if err != nil || saved.RefreshToken != ts.Tokens().RefreshToken || saved.MemberID == "" {
		t.Fatalf("rotated refresh token not persisted: %+v %v", saved, err)
	}
}

// TestRefreshSurvivesCallerCancel: the caller giving up does not lose the rotated token.
func TestRefreshSurvivesCallerCancel(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	dir := t.TempDir()
	ts := newTokenSource(t, f, dir, nil)
	old := ts.Tokens()
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, Latency: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := ts.Refresh(ctx, old.AccessToken); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("refresh with an expiring context: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for ts.Tokens().RefreshToken == old.RefreshToken {
		if time.Now().After(deadline) {
			t.Fatal("the refresh never completed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	saved, _ := TokenFile{Path: filepath.Join(dir, "tokens.json")}.Load()
	if saved.RefreshToken == old.RefreshToken {
		t.Fatal("rotated token not saved")
	}
}

// TestInvalidGrant: a rejected refresh token moves to StateReauthorize once; later calls fail
// fast without asking the OAuth server again; Install recovers.
func TestInvalidGrant(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	var changes []AuthState
	var mu sync.Mutex
	ts := newTokenSource(t, f, t.TempDir(), func(s AuthState, _ error) {
		mu.Lock()
		changes = append(changes, s)
		mu.Unlock()
	})
	c, _ := New(Options{HTTP: httpclient.New(httpclient.Options{}), Auth: ts})
	f.Inject(fakecrm.FaultRevoked)
	for range 3 {
		if _, err := c.Call(context.Background(), "user.get", nil, nil); !errors.Is(err, ErrReauthorize) {
			t.Fatalf("call: %v, want ErrReauthorize", err)
		}
	}
	if n := f.State().Requests["oauth/token"]; n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	tok := f.IssueTokens()
	if err := ts.Install(Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(context.Background(), "user.get", nil, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || changes[0] != StateReauthorize || changes[1] != StateOK {
		t.Fatalf("state changes %v", changes)
	}
}

// TestCorruptTokenFile: an unreadable file leaves the source "missing" with the cause.
func TestCorruptTokenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "t.json")
	if err := WriteFileAtomic(p, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts, err := NewTokenSource(OAuthConfig{PortalURL: "https://x", ServerURL: "https://y", HTTP: httpclient.New(httpclient.Options{}), File: TokenFile{Path: p}})
	if err != nil {
		t.Fatal(err)
	}
	st, cause := ts.State()
	if st != StateMissing || cause == nil {
		t.Fatalf("state %s %v", st, cause)
	}
	if _, _, err := ts.Endpoint(context.Background()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("endpoint: %v", err)
	}
}

func TestBucket(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	b := NewBucket(2, 10, 3, clock)
	// Normal requests may take 7 slots (10 - reserve 3), priority ones the rest.
	for i := range 7 {
		if d := b.take(false); d != 0 {
			t.Fatalf("normal request %d waits %v", i, d)
		}
	}
	if d := b.take(false); d != 500*time.Millisecond {
		t.Fatalf("8th normal request waits %v, want 500ms", d)
	}
	for i := range 3 {
		if d := b.take(true); d != 0 {
			t.Fatalf("priority request %d waits %v", i, d)
		}
	}
	if d := b.take(true); d != 500*time.Millisecond {
		t.Fatalf("priority request on an empty bucket waits %v", d)
	}
	now = now.Add(time.Second) // 2 slots back
	if d := b.take(true); d != 0 {
		t.Fatalf("after refill: %v", d)
	}
	if d := b.take(false); d == 0 {
		t.Fatal("a normal request used the live reserve")
	}
	now = now.Add(time.Hour)
	if a := b.Available(); a != 10 {
		t.Fatalf("bucket refilled to %v, want the burst 10", a)
	}
	// A deadline before the next slot fails at once.
	b2 := NewBucket(0.1, 1, 0, nil)
	b2.take(false)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var le *LimitError
	if _, err := b2.Wait(ctx, false); !errors.As(err, &le) || !errors.Is(err, ErrLocalRateLimit) {
		t.Fatalf("wait: %v", err)
	}
}

// TestForgetRemovesTokenFile: Forget (an uninstall) removes the token file, so a source built
// on it afterwards (a restart) is missing, not authorised, instead of refreshing a revoked
// token. A second Forget, with the file gone, is fine.
func TestForgetRemovesTokenFile(t *testing.T) {
	t.Parallel()
	f := crmtest.StartBitrix24(t)
	dir := t.TempDir()
	ts := newTokenSource(t, f, dir, nil)
	cause := errors.New("uninstalled")
	if err := ts.Forget(cause); err != nil {
		t.Fatal(err)
	}
	if st, c := ts.State(); st != StateMissing || !errors.Is(c, cause) {
		t.Fatalf("state %s %v", st, c)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokens.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("token file after Forget: %v", err)
	}
	if err := ts.Forget(cause); err != nil {
		t.Fatalf("second Forget: %v", err)
	}
	again, err := NewTokenSource(OAuthConfig{PortalURL: f.URL(), ServerURL: f.URL(), HTTP: httpclient.New(httpclient.Options{}),
		File: TokenFile{Path: filepath.Join(dir, "tokens.json")}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := again.State(); st != StateMissing {
		t.Fatalf("restarted: state %s", st)
	}
	if _, _, err := again.Endpoint(context.Background()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("restarted: %v, want ErrNotAuthorized", err)
	}
}

// TestForgetDuringRefresh: a refresh that was running when the application was uninstalled
// neither brings the tokens back (in memory or on disk) nor, when refused, turns "missing"
// into "reauthorize".
func TestForgetDuringRefresh(t *testing.T) {
	t.Parallel()
	for _, refused := range []bool{false, true} {
		f := crmtest.StartBitrix24(t)
		dir := t.TempDir()
		ts := newTokenSource(t, f, dir, nil)
		old := ts.Tokens()
		if refused {
			f.Inject(fakecrm.FaultRevoked)
		}
		f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, Latency: 200 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := ts.Refresh(ctx, old.AccessToken) // starts the refresh, gives up waiting for it
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("refused=%v: refresh: %v", refused, err)
		}
		if err := ts.Forget(errors.New("uninstalled")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			ts.mu.Lock()
			running := ts.inflight != nil
			ts.mu.Unlock()
			if !running {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the refresh never completed")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := f.State().Requests["oauth/token"]; n != 1 {
			t.Fatalf("refused=%v: %d token requests, want the one that ran", refused, n)
		}
		if st, _ := ts.State(); st != StateMissing || ts.Tokens() != nil {
			t.Fatalf("refused=%v: after the refresh: state %s, tokens %+v", refused, st, ts.Tokens())
		}
		if _, err := os.Stat(filepath.Join(dir, "tokens.json")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("refused=%v: token file after the refresh: %v", refused, err)
		}
	}
}
