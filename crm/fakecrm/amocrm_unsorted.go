package fakecrm

// Incoming leads ("unsorted", docs/crm-apis.md B.8): listing, accepting, declining, and the
// request checks shared by the add endpoints.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"
)

// amoUnsortedFields are the fields of a POST /api/v4/leads/unsorted/sip item.
var amoUnsortedFields = map[string]bool{"source_uid": true, "source_name": true, "pipeline_id": true, "created_at": true,
	"request_id": true, "metadata": true, "_embedded": true}

// amoSIPMetadataFields are the fields of a sip item's metadata.
var amoSIPMetadataFields = map[string]bool{"uniq": true, "duration": true, "service_code": true, "link": true, "phone": true,
	"called_at": true, "from": true, "call_responsible": true, "is_call_event_needed": true}

// amoCallNoteParams are the params of a call_in / call_out note (B.9).
var amoCallNoteParams = map[string]bool{"uniq": true, "duration": true, "source": true, "link": true, "phone": true,
	"call_result": true, "call_status": true, "call_responsible": true}

// unexpectedFields returns a FieldNotExpected error for every key of the JSON object raw that is
// not in known (nothing when raw is not an object).
func unexpectedFields(raw json.RawMessage, prefix string, known map[string]bool) []map[string]any {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !known[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var errs []map[string]any
	for _, k := range keys {
		errs = append(errs, map[string]any{"code": "FieldNotExpected", "path": prefix + k, "detail": "This field was not expected."})
	}
	return errs
}

// checkUser records a violation when raw (a user reference: call_responsible,
// responsible_user_id, created_by) is not absent and not the id of one of the account's users.
// amoCRM reads a string call_responsible as a user's name: a number in a string matches nobody.
func (f *AmoCRM) checkUser(a *amoAccount, what string, raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	var id int64
	if err := json.Unmarshal(raw, &id); err != nil {
		f.violation(what + " is not a user id: " + string(raw))
		return
	}
	if id == 0 {
		return
	}
	for _, u := range a.Users {
		if u.ID == id {
			return
		}
	}
	f.violation(what + ": no user " + strconv.FormatInt(id, 10))
}

// checkTime records a violation for a Unix time more than a minute in the future.
func (f *AmoCRM) checkTime(unix int64, what string) {
	if unix != 0 && time.Unix(unix, 0).After(f.o.Now().Add(time.Minute)) {
		f.violation(what + " is in the future: " + strconv.FormatInt(unix, 10))
	}
}

// unsortedJSON is an incoming lead as GET /api/v4/leads/unsorted lists it.
func (f *AmoCRM) unsortedJSON(a *amoAccount, u *AmoUnsorted) map[string]any {
	contacts := []map[string]any{}
	if u.ContactID != 0 {
		contacts = append(contacts, map[string]any{"id": u.ContactID,
			"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/contacts/"+strconv.FormatInt(u.ContactID, 10))}}})
	}
	return map[string]any{"uid": u.UID, "source_uid": u.SourceUID, "source_name": u.SourceName, "category": u.Category,
		"pipeline_id": u.PipelineID, "created_at": u.CreatedAt, "metadata": u.Metadata, "account_id": a.ID,
		"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/leads/unsorted/"+u.UID)}},
		"_embedded": map[string]any{"contacts": contacts, "companies": []any{},
			"leads": []map[string]any{{"id": u.LeadID,
				"_links": map[string]any{"self": map[string]string{"href": f.href(a, "/api/v4/leads/"+strconv.FormatInt(u.LeadID, 10))}}}}}}
}

// serveListUnsorted: GET /api/v4/leads/unsorted with filter[uid] (one, or filter[uid][]),
// filter[category][], filter[pipeline_id], order[created_at] or order[updated_at] (asc|desc),
// page and limit (≤ 250); only items still waiting in Incoming; 204 when none.
func (f *AmoCRM) serveListUnsorted(w http.ResponseWriter, r *http.Request, a *amoAccount) {
	q := r.URL.Query()
	uids := append(q["filter[uid]"], q["filter[uid][]"]...)
	cats := append(q["filter[category]"], q["filter[category][]"]...)
	for _, c := range cats {
		if !slices.Contains([]string{"sip", "mail", "forms", "chats"}, c) {
			f.violation("filter[category] " + c + " is not a category")
		}
	}
	var pipeline int64
	if v := q.Get("filter[pipeline_id]"); v != "" {
		pipeline, _ = strconv.ParseInt(v, 10, 64)
	}
	var list []*AmoUnsorted
	for i := range a.Unsorted {
		u := &a.Unsorted[i]
		if u.Status != "" || (len(uids) > 0 && !slices.Contains(uids, u.UID)) || (len(cats) > 0 && !slices.Contains(cats, u.Category)) ||
			(pipeline != 0 && u.PipelineID != pipeline) {
			continue
		}
		list = append(list, u)
	}
	desc := q.Get("order[created_at]") == "desc" || q.Get("order[updated_at]") == "desc"
	sort.SliceStable(list, func(i, j int) bool {
		if desc {
			return list[i].CreatedAt > list[j].CreatedAt
		}
		return list[i].CreatedAt < list[j].CreatedAt
	})
	items := make([]map[string]any, 0, len(list))
	for _, u := range list {
		items = append(items, f.unsortedJSON(a, u))
	}
	f.page(w, r, a, "unsorted", items, true)
}

func (a *amoAccount) unsorted(uid string) *AmoUnsorted {
	for i := range a.Unsorted {
		if a.Unsorted[i].UID == uid {
			return &a.Unsorted[i]
		}
	}
	return nil
}

func (a *amoAccount) lead(id int64) *AmoLead {
	for _, l := range a.Leads {
		if l.ID == id {
			return l
		}
	}
	return nil
}

func (a *amoAccount) contact(id int64) *AmoContact {
	for _, c := range a.Contacts {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// amoFirstStage is the status an accepted incoming lead moves to (the pipeline's first stage).
const amoFirstStage = 142000

// accept moves an incoming lead out of Incoming: its lead to the first stage, its contact
// visible (searchable, matched by calls).
func (a *amoAccount) accept(u *AmoUnsorted, user int64) {
	u.Status = "accepted"
	if l := a.lead(u.LeadID); l != nil {
		l.Unsorted, l.StatusID = false, amoFirstStage
		if l.ResponsibleUserID == 0 {
			l.ResponsibleUserID = user
		}
	}
	if c := a.contact(u.ContactID); c != nil {
		c.Hidden = false
		if c.ResponsibleUserID == 0 {
			c.ResponsibleUserID = user
		}
	}
}

// decline drops an incoming lead: its lead is lost (143), its contact stays hidden (deleted).
func (a *amoAccount) decline(u *AmoUnsorted) {
	u.Status = "declined"
	if l := a.lead(u.LeadID); l != nil {
		l.Unsorted, l.StatusID = false, 143
	}
}

// serveAcceptUnsorted: POST /api/v4/leads/unsorted/{uid}/accept.
func (f *AmoCRM) serveAcceptUnsorted(w http.ResponseWriter, a *amoAccount, user int64, uid string) {
	u := a.unsorted(uid)
	if u == nil || u.Status != "" {
		f.problem(w, http.StatusNotFound, "Not Found", "Unsorted not found", nil)
		return
	}
	a.accept(u, user)
	writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{"uid": u.UID,
		"_embedded": map[string]any{"leads": []map[string]any{{"id": u.LeadID}}, "contacts": []map[string]any{{"id": u.ContactID}}}})
}

// serveDeclineUnsorted: DELETE /api/v4/leads/unsorted/{uid}/decline.
func (f *AmoCRM) serveDeclineUnsorted(w http.ResponseWriter, a *amoAccount, uid string) {
	u := a.unsorted(uid)
	if u == nil || u.Status != "" {
		f.problem(w, http.StatusNotFound, "Not Found", "Unsorted not found", nil)
		return
	}
	a.decline(u)
	writeJSON(w, http.StatusOK, "application/hal+json", map[string]any{"uid": u.UID})
}

// AcceptUnsorted accepts the incoming lead uid of account sub, as a manager does in the UI.
func (f *AmoCRM) AcceptUnsorted(sub, uid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.account(sub)
	if a == nil {
		return errNoAccount
	}
	u := a.unsorted(uid)
	if u == nil || u.Status != "" {
		return fmt.Errorf("fakecrm: no incoming lead %s waiting", uid)
	}
	a.accept(u, a.tokenUser)
	return nil
}

// DeclineUnsorted declines the incoming lead uid of account sub.
func (f *AmoCRM) DeclineUnsorted(sub, uid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.account(sub)
	if a == nil {
		return errNoAccount
	}
	u := a.unsorted(uid)
	if u == nil || u.Status != "" {
		return fmt.Errorf("fakecrm: no incoming lead %s waiting", uid)
	}
	a.decline(u)
	return nil
}
