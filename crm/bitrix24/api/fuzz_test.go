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

func FuzzDecodeCrmMatches(f *testing.F) {
	f.Add([]byte(`[{"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":651,"ASSIGNED_BY_ID":99,"NAME":"John Doe","ASSIGNED_BY":{"ID":"99","TIMEMAN_STATUS":"CLOSED","USER_PHONE_INNER":"101","WORK_PHONE":null}}]`))
	f.Add([]byte(`{"0":{"CRM_ENTITY_TYPE":"LEAD","CRM_ENTITY_ID":"7","ASSIGNED_BY":[]}}`))
	f.Add([]byte(`false`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := DecodeCrmMatches(b)
		if err != nil && ms != nil {
			t.Fatalf("matches %v with error %v", ms, err)
		}
	})
}

func FuzzDecodeUsers(f *testing.F) {
	f.Add([]byte(`[{"ID":"1269","ACTIVE":true,"NAME":"Anna","LAST_NAME":"Smith","EMAIL":"anna@example.com","UF_PHONE_INNER":"101","WORK_PHONE":"","PERSONAL_MOBILE":"","USER_TYPE":"employee","UF_DEPARTMENT":[1]}]`))
	f.Add([]byte(`[{"ID":7,"ACTIVE":"N","UF_PHONE_INNER":101,"TIMEMAN_STATUS":{}}]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		us, err := DecodeUsers(b)
		if err != nil {
			if us != nil {
				t.Fatalf("users %v with error %v", us, err)
			}
			return
		}
		for _, u := range us {
			_ = u.FullName()
		}
	})
}

func FuzzDecodeExternalLines(f *testing.F) {
	f.Add([]byte(`[{"NUMBER":"14151234567","NAME":"Support Line","CRM_AUTO_CREATE":"N"}]`))
	f.Add([]byte(`[{"NUMBER":74951112233,"NAME":null,"CRM_AUTO_CREATE":true}]`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := DecodeExternalLines(b)
		if err != nil && ls != nil {
			t.Fatalf("lines %v with error %v", ls, err)
		}
	})
}

// FuzzDecodeResult decodes a "result" into every type Call decodes one into: the results of
// register, finish, attachRecord (three modes and the upload answer), show/hide (Bool),
// crm.lead.add (Int), crm.activity.todo.add, tasks.task.add and user.get.
func FuzzDecodeResult(f *testing.F) {
	f.Add([]byte(`{"CALL_ID":"externalCall.716f1cb73def9700a23842adf9c4c568.1773130779","CRM_CREATED_LEAD":null,"CRM_CREATED_ENTITIES":[{"ENTITY_TYPE":"LEAD","ENTITY_ID":1001}],"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797}`))
	f.Add([]byte(`{"ID":"5","CALL_ID":"externalCall.x","EXTERNAL_CALL_ID":"1763768521.12","PORTAL_USER_ID":1269,"CALL_DURATION":95,"CALL_FAILED_CODE":"200","CRM_ACTIVITY_ID":"3011","CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797}`))
	f.Add([]byte(`{"uploadUrl":"https://portal.bitrix24.com/rest/upload.json?auth=a&token=telephony%7Cx","fieldName":"file"}`))
	f.Add([]byte(`{"FILE_ID":9079}`))
	f.Add([]byte(`{"task":{"id":"3711","title":"Call back","responsibleId":"1269","status":"2"}}`))
	f.Add([]byte(`{"id":999}`))
	f.Add([]byte(`"Y"`))
	f.Add([]byte(`1001`))
	f.Add([]byte(`"1e3"`))
	f.Fuzz(func(_ *testing.T, b []byte) {
		var reg RegisterResult
		_ = json.Unmarshal(b, &reg)
		var fin FinishResult
		_ = json.Unmarshal(b, &fin)
		var att attachResult
		_ = json.Unmarshal(b, &att)
		var ok Bool
		_ = json.Unmarshal(b, &ok)
		var id Int
		_ = json.Unmarshal(b, &id)
		var s String
		_ = json.Unmarshal(b, &s)
		var todo todoResult
		_ = json.Unmarshal(b, &todo)
		var task taskResult
		_ = json.Unmarshal(b, &task)
		var users []User
		_ = json.Unmarshal(b, &users)
	})
}

func FuzzDecodeStatistics(f *testing.F) {
	f.Add([]byte(`[{"ID":"7","CALL_ID":"externalCall.716f.1773130779","CALL_FAILED_CODE":"200","CRM_ACTIVITY_ID":"7943"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"0":{"ID":7}}`))
	f.Fuzz(func(_ *testing.T, b []byte) {
		_, _ = DecodeStatistics(b)
		_, _ = DecodeFinish(b)
		_, _ = DecodeBool("m", b)
	})
}
