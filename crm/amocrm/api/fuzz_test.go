package api

import (
	"testing"
)

// Seeds: the answers of crm-apis.md Part B, one per endpoint, plus odd shapes; more in
// testdata/fuzz/<FuzzName>/.
var answerSeeds = []string{
	`{"token_type":"Bearer","expires_in":86400,"server_time":1739794993,"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIs","refresh_token":"def50200a1b2"}`,
	`{"id":28805383,"name":"Romashka","subdomain":"romashka","country":"RU","currency":"RUB"}`,
	`{"_total_items":2,"_page":1,"_page_count":1,"_links":{"self":{"href":"https://example.amocrm.ru/api/v4/users?page=1&limit=250"},"next":{"href":"x"}},"_embedded":{"users":[{"id":504141,"name":"Анна","email":"anna@example.com","phone_number":"+79001112233","rights":{"is_admin":true,"is_free":false,"is_active":true}}]}}`,
	`{"_page":1,"_embedded":{"contacts":[{"id":3,"name":"Иван Иванов","responsible_user_id":504141,"custom_fields_values":[{"field_id":3,"field_name":"Телефон","field_code":"PHONE","field_type":"multitext","values":[{"value":"+79001234567","enum_id":1,"enum":"WORK"}]}],"_embedded":{"tags":[],"companies":[],"leads":[{"id":1}]}}]}}`,
	`{"_links":{"self":{"href":"https://example.amocrm.ru/api/v4/contacts"}},"_embedded":{"contacts":[{"id":40401635,"request_id":"0"}]}}`,
	`{"_total_items":1,"_embedded":{"unsorted":[{"uid":"aa401affb0094076","account_id":28805383,"request_id":"u1","_embedded":{"contacts":[{"id":11075541}],"leads":[{"id":7706509}],"companies":[]}}]}}`,
	`{"_embedded":{"tasks":[{"id":56981,"task_type_id":1,"text":"Call back","complete_till":1710150000,"entity_id":3,"entity_type":"contacts","responsible_user_id":504141,"request_id":"t1"}]}}`,
	`{"_embedded":{"notes":[{"id":42,"entity_id":3,"note_type":"call_in","updated_at":1710140200,"params":{"uniq":"1710140185.18441","duration":148}},{"id":43,"note_type":"call_out","params":[]},{"id":44,"params":{"uniq":1710140185.5}}]}}`,
	`{"_embedded":{"leads":[{"id":123,"contact_id":1,"request_id":["0"],"merged":false}]}}`,
	`{"_embedded":{"users":[{"rights":{"is_active":"yes"}}]},"_links":{"next":[]}}`,
	`{"_page":1,"_embedded":{"unsorted":[{"uid":"98fb033cefde","source_uid":"lab/1.2","source_name":"pbxbridge","category":"sip","pipeline_id":0,"created_at":1795305600,"metadata":{"uniq":"lab/1.2","from":"+79990000001","phone":"+74951112233","called_at":1795305600,"duration":3},"account_id":28805383,"_embedded":{"contacts":[{"id":1001}],"leads":[{"id":1000}],"companies":[]}}]}}`,
}

// FuzzDecodeAnswer decodes an answer into every type the client decodes a 2xx answer into, with
// the accessors the adapter calls on them.
func FuzzDecodeAnswer(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(_ *testing.T, b []byte) {
		var tok Token
		_ = decodeAnswer(b, &tok)
		var acc Account
		_ = decodeAnswer(b, &acc)
		var users usersPage
		if decodeAnswer(b, &users) == nil {
			for i := range users.Embedded.Users {
				_ = users.Embedded.Users[i].Active()
			}
		}
		var contacts contactsPage
		if decodeAnswer(b, &contacts) == nil {
			for i := range contacts.Embedded.Contacts {
				_ = contacts.Embedded.Contacts[i].Phones()
			}
		}
		var ids CreatedIDs
		_ = decodeAnswer(b, &ids)
		var unsorted UnsortedResult
		_ = decodeAnswer(b, &unsorted)
		var tasks tasksPage
		_ = decodeAnswer(b, &tasks)
		var calls CallsResult
		if decodeAnswer(b, &calls) == nil {
			for i := range calls.Errors {
				_ = calls.Errors[i].Code()
			}
			for _, c := range calls.Embedded.Calls {
				_ = EntityPlural(c.EntityType.String())
			}
		}
		var notes notesPage
		if decodeAnswer(b, &notes) == nil {
			_ = notes.callNotes()
		}
	})
}

// FuzzDecodeCallNotes: the notes page and the uniq of each note's params (a string, a number,
// or [] for an empty object).
func FuzzDecodeCallNotes(f *testing.F) {
	f.Add([]byte(answerSeeds[7]))
	f.Add([]byte(`{"_embedded":{"notes":[{"params":{"uniq":null}},{"params":"x"},{"params":{"uniq":{"a":1}}},{"params":{"uniq":1e308}}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p notesPage
		if decodeAnswer(b, &p) != nil {
			return
		}
		if got, want := len(p.callNotes()), len(p.Embedded.Notes); got != want {
			t.Fatalf("%d notes from a page of %d", got, want)
		}
	})
}

// FuzzDecodeUnsortedPage: the incoming-lead listing and the numbers and ids read from each item
// (metadata of any category: an object, [] or something else).
func FuzzDecodeUnsortedPage(f *testing.F) {
	f.Add([]byte(answerSeeds[len(answerSeeds)-1]))
	f.Add([]byte(`{"_embedded":{"unsorted":[{"uid":"x","category":"forms","metadata":{"form_id":1}},{"metadata":[]},{"metadata":{"from":79990000001,"phone":null}},{"_embedded":{"leads":[]}}]}}`))
	f.Fuzz(func(_ *testing.T, b []byte) {
		var p unsortedPage
		if decodeAnswer(b, &p) != nil {
			return
		}
		for i := range p.Embedded.Unsorted {
			u := &p.Embedded.Unsorted[i]
			_, _ = u.Numbers()
			_, _ = u.LeadID(), u.ContactID()
		}
	})
}
