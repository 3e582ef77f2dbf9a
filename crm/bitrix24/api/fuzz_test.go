package api

import (
	"encoding/json"
	"testing"
	"time"
)

// The decoders and the event parser take input from the network: they must return an error,
// never panic. Seed corpora are in testdata/fuzz/<FuzzName>/.

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte(clickToCallBody))
	f.Add([]byte("event=ONAPPINSTALL&auth[access_token]=a&auth[refresh_token]=b&auth[member_id]=m&auth[application_token]=t"))
	f.Fuzz(func(_ *testing.T, b []byte) {
		ev, err := ParseEvent(b)
		if err != nil {
			return
		}
		_, _ = ev.ExternalCallStart()
		_, _ = ev.ExternalCallbackStart()
		_, _ = ev.InstallTokens(time.Unix(0, 0))
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(200, []byte(`{"result":{"CALL_ID":"x"},"time":{"operating_reset_at":1773131378}}`))
	f.Add(429, []byte(`{"error":"OPERATION_TIME_LIMIT","time":{"operating_reset_at":1773131378}}`))
	f.Fuzz(func(_ *testing.T, status int, b []byte) {
		raw, _, err := DecodeEnvelope("m", status, b)
		if err == nil {
			var r RegisterResult
			_ = json.Unmarshal(raw, &r)
			var fr FinishResult
			_ = json.Unmarshal(raw, &fr)
			var us []User
			_ = json.Unmarshal(raw, &us)
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"result":{"u":[{"ID":"1269"}]},"result_error":[],"result_total":{"u":1},"result_next":[]}`))
	f.Fuzz(func(_ *testing.T, b []byte) {
		res, err := DecodeBatch(b)
		if err == nil {
			for _, r := range res.Result {
				_, _ = DecodeUsers(r)
			}
		}
	})
}

func FuzzDecodeFindByComm(f *testing.F) {
	f.Add([]byte(`{"CONTACT":[275,2297],"LEAD":[1001]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(_ *testing.T, b []byte) {
		_, _ = DecodeFindByComm(b)
		_, _ = DecodeCrmMatches(b)
	})
}

func FuzzDecodeTokenResponse(f *testing.F) {
	f.Add(200, []byte(`{"access_token":"a","refresh_token":"r","expires":1780319382,"expires_in":3600,"member_id":"m","user_id":67}`))
	f.Add(400, []byte(`{"error":"invalid_grant","error_description":"expired"}`))
	f.Fuzz(func(_ *testing.T, status int, b []byte) {
		_, _ = DecodeTokenResponse(status, b)
	})
}

func BenchmarkParseEvent(b *testing.B) {
	body := []byte(clickToCallBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	body := []byte(`{"result":{"CALL_ID":"externalCall.716f1cb73def9700a23842adf9c4c568.1773130779","CRM_CREATED_LEAD":null,"CRM_CREATED_ENTITIES":[],"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797},"time":{"start":1773130778.12,"finish":1773130779.12,"duration":1.0,"processing":0.9,"operating_reset_at":1773131378,"operating":0.22}}`)
	b.ReportAllocs()
	for b.Loop() {
		raw, _, err := DecodeEnvelope("telephony.externalCall.register", 200, body)
		if err != nil {
			b.Fatal(err)
		}
		var r RegisterResult
		if err := json.Unmarshal(raw, &r); err != nil {
			b.Fatal(err)
		}
	}
}
