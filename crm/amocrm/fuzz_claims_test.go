package amocrm

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The claims decoder reads any payload without panicking; what it accepts re-encodes to claims
// a strict decoder reads the same way (strings unchanged, numbers whole).
func FuzzDecodeClaims(f *testing.F) {
	for _, s := range []string{
		`{"iss":"https://romashka.amocrm.ru","aud":"https://pbx.example.com","jti":"8c5a5e1b-2f2e-4b6a-9d43-1a2b3c4d5e6f","iat":1795305800,` +
			`"nbf":1795305800,"exp":1795307600,"account_id":28805383,"subdomain":"romashka","client_uuid":"5f2b8a9e","user_id":504141,"is_admin":true}`,
		`{"iat":1795305800.421,"exp":1.7953076e9,"account_id":"28805383","user_id":"504141"}`,
		`{"exp":1e400}`, `{"exp":-1e19}`, `{"exp":"9223372036854775808"}`, `{"user_id":null,"jti":null}`,
		`{"user_id":"0x10"}`, `{"user_id":" 1"}`, `{"user_id":true}`, `{"jti":"\u0073ame"}`, `[]`, `null`, `"x"`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeClaims(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(map[string]any{"iss": c.Iss, "aud": c.Aud, "jti": c.JTI, "iat": c.Iat, "nbf": c.Nbf, "exp": c.Exp,
			"account_id": c.AccountID, "subdomain": c.Subdomain, "client_uuid": c.ClientUUID, "user_id": c.UserID})
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeClaims(out)
		if err != nil || again != c {
			t.Fatalf("%+v re-decodes as %+v (%v)", c, again, err)
		}
	})
}

// What one click's token check costs (valid token; a forged one stops at the signature), and
// one replay-cache insert into a cache holding 100 000 live entries.
func BenchmarkVerifyOneTimeToken(b *testing.B) {
	now := time.Unix(1795305800, 0)
	tok, err := fakecrm.SignOneTimeToken(fakecrm.DemoClientSecret, tokenClaims(now, "bench", 504141))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyOneTimeToken(tok, fakecrm.DemoClientSecret, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReplayCacheFull(b *testing.B) {
	now := time.Unix(1795305800, 0)
	c := newReplayCache(func() time.Time { return now }, defaultReplayCapacity)
	for i := range defaultReplayCapacity {
		c.first("jti:"+strconv.Itoa(i), now.Add(time.Hour))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if c.first("jti:new"+strconv.Itoa(i), now.Add(time.Hour)) != replayFull {
			b.Fatal("not full")
		}
	}
}
