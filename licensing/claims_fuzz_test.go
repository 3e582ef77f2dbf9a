package licensing

import (
	"encoding/json"
	"testing"
)

var fuzzConnectors = MustConnectors(ConnectorType{Name: "bitrix24", Binding: BindingDomain},
	ConnectorType{Name: "amocrm", Binding: BindingAccount}, ConnectorType{Name: "kommo", Binding: BindingAccount})

// FuzzDecodeClaims fuzzes the claims decoder and semantic checks directly (behind the signature
// in production, so a leaked key is the only way to reach them with hostile input): no panic, and
// an accepted payload re-encodes to claims that are accepted again.
func FuzzDecodeClaims(f *testing.F) {
	f.Add([]byte(`{"v":1,"iss":"pbxbridge","lid":"L-1","rev":4,"iat":"2025-01-10T09:12:00Z","typ":"paid","sub":"c",` +
		`"connector":"bitrix24","crm":{"bitrix24_domain":"x.bitrix24.ru"},"seats":{"crm_users":null,"extensions":40},` +
		`"overage":{"ratio":0.1,"hours":72},"term":{"start":"2025-01-15","end":"2025-02-14","tz":"Europe/Moscow"},` +
		`"grace_until":"2025-02-20","hosts":[{"fpv":1,"f":{"mid":"a","mac":"b"}}],"min_match":2,"crit":["hosts"]}`))
	f.Add([]byte(`{"v":1,"iss":"pbxbridge","iat":"2025-01-10T09:12:00Z","typ":"revocation","seq":2,"revoked":[{"lid":"L-1","rev_le":3}]}`))
	f.Add([]byte(`{"v":1,"v":1}`))
	f.Add([]byte(`{"V":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := decodeClaims(payload)
		if err != nil {
			return
		}
		if _, _, err := validateClaims(c, "1.0.0", fuzzConnectors); err != nil {
			return
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeClaims(again)
		if err != nil {
			t.Fatalf("re-encoded claims rejected: %v\n%s", err, again)
		}
		if _, _, err := validateClaims(c2, "1.0.0", fuzzConnectors); err != nil {
			t.Fatalf("re-encoded claims invalid: %v\n%s", err, again)
		}
	})
}
