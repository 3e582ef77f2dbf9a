package api

import (
	"strings"
	"testing"
	"time"
)

const clickToCallBody = "event=ONEXTERNALCALLSTART&event_handler_id=1055" +
	"&data[PHONE_NUMBER]=%2B494951234567&data[PHONE_NUMBER_INTERNATIONAL]=%2B494951234567&data[EXTENSION]=" +
	"&data[USER_ID]=1269&data[CALL_LIST_ID]=0&data[LINE_NUMBER]=7&data[IS_MOBILE]=0" +
	"&data[CALL_ID]=externalCall.89350264e026dace3f2b14d1f438257c.1773236989" +
	"&data[CRM_ENTITY_TYPE]=CONTACT&data[CRM_ENTITY_ID]=797&ts=1773236988" +
	"&auth[access_token]=abc&auth[expires_in]=3600&auth[scope]=telephony&auth[domain]=portal.bitrix24.com" +
	"&auth[server_endpoint]=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth[status]=L" +
	"&auth[client_endpoint]=https%3A%2F%2Fportal.bitrix24.com%2Frest%2F&auth[member_id]=a223c6b9" +
	"&auth[application_token]=51610fefc120afg4b628cc82d6298cce"

func TestParseEventClickToCall(t *testing.T) {
	ev, err := ParseEvent([]byte(clickToCallBody))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Name != EventExternalCallStart || ev.Auth["application_token"] != "51610fefc120afg4b628cc82d6298cce" || ev.HandlerID != "1055" {
		t.Fatalf("%+v", ev)
	}
	s, err := ev.ExternalCallStart()
	if err != nil {
		t.Fatal(err)
	}
	want := ExternalCallStart{PhoneNumber: "+494951234567", PhoneNumberInternational: "+494951234567", UserID: 1269,
		LineNumber: "7", CallID: "externalCall.89350264e026dace3f2b14d1f438257c.1773236989", CRMEntityType: "CONTACT", CRMEntityID: 797}
	if *s != want {
		t.Fatalf("got %+v\nwant %+v", *s, want)
	}
}

func TestParseEventInstall(t *testing.T) {
	body := "event=ONAPPINSTALL&data[VERSION]=1&auth[access_token]=a&auth[refresh_token]=r&auth[expires_in]=3600" +
		"&auth[domain]=Portal.Bitrix24.com&auth[member_id]=m&auth[application_token]=t&auth[client_endpoint]=https%3A%2F%2Fportal.bitrix24.com%2Frest%2F"
	ev, err := ParseEvent([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	tok, err := ev.InstallTokens(now)
	if err != nil || tok.Domain != "portal.bitrix24.com" || tok.ApplicationToken != "t" || !tok.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("%+v %v", tok, err)
	}
	ev.Auth["application_token"] = ""
	if _, err := ev.InstallTokens(now); err == nil {
		t.Fatal("install without application_token accepted")
	}
}

func TestParseEventErrors(t *testing.T) {
	for _, bad := range []string{
		"",                              // no event
		"data[A]=1",                     // no event
		"event=X&data[A=1",              // missing ]
		"event=X&[A]=1",                 // no base
		"event=X&data]=1",               // stray ]
		"event=X&data[a][b][c][d][e]=1", // too deep
		"event=X&data[A]=%zz",           // bad escape
		"event=X&data[A]=1;b=2",         // semicolons
		"event=" + strings.Repeat("x", MaxEventBody),
	} {
		if _, err := ParseEvent([]byte(bad)); err == nil {
			t.Errorf("ParseEvent(%.40q) accepted", bad)
		}
	}
	ev, err := ParseEvent([]byte("event=ONEXTERNALCALLSTART&data[USER_ID]=abc&data[CALL_ID]=x&data[PHONE_NUMBER]=1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ev.ExternalCallStart(); err == nil {
		t.Fatal("non-numeric USER_ID accepted")
	}
	ev, _ = ParseEvent([]byte("event=ONEXTERNALCALLSTART&data[USER_ID]=1&data[PHONE_NUMBER]=1"))
	if _, err := ev.ExternalCallStart(); err == nil {
		t.Fatal("missing CALL_ID accepted")
	}
	ev, _ = ParseEvent([]byte("event=onexternalcallbackstart&data[FIELDS][ID]=5&data[PHONE_NUMBER]=%2B7900"))
	s, err := ev.ExternalCallbackStart()
	if err != nil || ev.Name != EventExternalCallbackStart || ev.Data["FIELDS.ID"] != "5" || s.PhoneNumber != "+7900" {
		t.Fatalf("%+v %+v %v", ev, s, err)
	}
}
