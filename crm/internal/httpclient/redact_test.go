package httpclient

import (
	"regexp"
	"strings"
	"testing"
)

// regexpPatterns are the definition of Redact: the patterns it used to run, kept as the oracle
// that the hand-written passes are checked (and benchmarked) against.
var regexpPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(/rest/\d+/)[^/?#\s]+`),
	regexp.MustCompile(`(?i)((?:access_token|refresh_token|client_secret|auth|code|application_token|token)=)[^&\s"]+`),
	regexp.MustCompile(`(?i)("(?:access_token|refresh_token|client_secret|auth|code|application_token|token|secret|password)"\s*:\s*")[^"]*`),
	regexp.MustCompile(`(?i)(Bearer\s+)[A-Za-z0-9._~+/=-]+`),
}

func redactRegexp(s string) string {
	for _, re := range regexpPatterns {
		s = re.ReplaceAllString(s, "${1}<redacted>")
	}
	return s
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"https://p.bitrix24.ru/rest/1/s3cr3tw3bh00kt0k3n/telephony.externalCall.finish.json": "https://p.bitrix24.ru/rest/1/<redacted>/telephony.externalCall.finish.json",
		"auth=abc123&x=1": "auth=<redacted>&x=1",
		`{"access_token":"eyJ.x.y","expires_in":3}`: `{"access_token":"<redacted>","expires_in":3}`,
		"Authorization: Bearer eyJhbGc.a.b":         "Authorization: Bearer <redacted>",
		"refresh_token=r1&client_secret=s2":         "refresh_token=<redacted>&client_secret=<redacted>",
		`{"TOKEN" : "x", "Password":""}`:            `{"TOKEN" : "<redacted>", "Password":"<redacted>"}`,
		"STATUS_CODE=200&grant_type=refresh_token":  "STATUS_CODE=<redacted>&grant_type=refresh_token",
		"/rest/rest/12/tok?x":                       "/rest/rest/12/<redacted>?x",
		"/rest/12//rest/3/t":                        "/rest/12//rest/3/<redacted>",
		"bearer\t\tabc def":                         "bearer\t\t<redacted> def",
		"Bearer \u212a\u017f.x":                     "Bearer <redacted>",
		"to\u212aen=v&clienT_\u017fecret=w":         "to\u212aen=<redacted>&clienT_\u017fecret=<redacted>",
		"{\"to\u212aen\":\"v\"}":                    "{\"to\u212aen\":\"<redacted>\"}",
		"nothing to see here":                       "nothing to see here",
		"auth=&code= x":                             "auth=&code= x",
	}
	for in, want := range tests {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if ref := redactRegexp(in); ref != want {
			t.Errorf("the regexp oracle gives %q for %q, the test wants %q", ref, in, want)
		}
	}
	if strings.Contains(Redact("https://x/rest/12/tok/"), "tok") {
		t.Error("webhook token leaked")
	}
}

// FuzzRedact checks Redact against the regular expressions that define it.
func FuzzRedact(f *testing.F) {
	for _, s := range redactInputs {
		f.Add(s)
	}
	f.Add("Bearer \u212a\u017f.x to\u212aen=1 \"\u017fecret\" : \"y\"")
	f.Add("/rest/1/\xff\xfe?auth=\xc5\"code\":\"\xe2\x84\"")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := Redact(s), redactRegexp(s); got != want {
			t.Fatalf("Redact(%q)\n got %q\nwant %q", s, got, want)
		}
	})
}

// redactInputs are what Redact sees in the daemon: request and response bodies, URLs, headers.
var redactInputs = map[string]string{
	"url":      "https://romashka.bitrix24.ru/rest/1/s3cr3tw3bh00kt0k3n/telephony.externalCall.register.json",
	"register": `{"USER_ID":1269,"PHONE_NUMBER":"+79001234567","TYPE":2,"CALL_START_DATE":"2026-11-21T23:42:01+03:00","CRM_CREATE":1,"SHOW":1,"LINE_NUMBER":"+74951112233","EXTERNAL_CALL_ID":"1763768521.12"}`,
	"finish":   `{"CALL_ID":"externalCall.716f1cb73def9700a23842adf9c4c568.1773130779","USER_ID":1269,"DURATION":95,"STATUS_CODE":"200","ADD_TO_CHAT":1}`,
	"oauth":    `{"access_token":"s1morf609228iwyjjpvfv6wsvuja4p8u","expires":1780319382,"expires_in":3600,"scope":"crm,telephony","domain":"oauth.bitrix.info","server_endpoint":"https://oauth.bitrix.info/rest/","status":"L","client_endpoint":"https://romashka.bitrix24.ru/rest/","member_id":"a223c6b3710f85df22e9377d6c4f7553","user_id":67,"refresh_token":"4s386p3q0tr8dy89xvmt96234v3dljg8"}`,
	"header":   "Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl",
	"users":    usersAnswer(),
}

// usersAnswer is a 2 KiB user.get answer, the size of a truncated trace excerpt.
func usersAnswer() string {
	var b strings.Builder
	b.WriteString(`{"result":[`)
	for i := 0; b.Len() < 2000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"ID":"1269","ACTIVE":true,"NAME":"Anna","LAST_NAME":"Petrova","EMAIL":"anna@romashka.ru","UF_PHONE_INNER":"101","USER_TYPE":"employee","TIMEMAN_STATUS":"OPENED"}`)
	}
	b.WriteString(`],"total":50,"time":{"operating":0.1}}`)
	return b.String()
}

// BenchmarkRedact runs the hand-written passes (impl=scan) and the regular expressions they
// replace (impl=regexp) on the same inputs, for benchstat -col /impl.
func BenchmarkRedact(b *testing.B) {
	impls := []struct {
		name string
		fn   func(string) string
	}{{"regexp", redactRegexp}, {"scan", Redact}}
	for _, name := range []string{"url", "register", "finish", "oauth", "header", "users"} {
		in := redactInputs[name]
		for _, impl := range impls {
			b.Run("in="+name+"/impl="+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(in)))
				for b.Loop() {
					_ = impl.fn(in)
				}
			})
		}
	}
}

// TestRedactLinear: inputs that make a naive scanner quadratic are masked like the oracle does.
func TestRedactLinear(t *testing.T) {
	t.Parallel()
	for _, unit := range []string{"=", "auth=", `"`, `"token"`, "/rest/1", "/rest/", "bearer ", "Bearer", "\u212a", "a"} {
		in := strings.Repeat(unit, 200_000/len(unit))
		if got, want := Redact(in), redactRegexp(in); got != want {
			t.Errorf("Redact(%q × %d) differs from the oracle", unit, 200_000/len(unit))
		}
	}
}
