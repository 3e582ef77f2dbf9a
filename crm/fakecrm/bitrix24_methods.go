package fakecrm

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// b24Scopes maps method prefixes to the scope they need.
var b24Scopes = []struct{ prefix, scope string }{
	{"telephony.", "telephony"},
	{"voximplant.", "telephony"},
	{"user.", "user"},
	{"crm.", "crm"},
	{"tasks.", "task"},
}

// b24AppOnly are the methods that need an application context (A.1.6, A.4.4).
func b24AppOnly(method string) bool {
	switch {
	case method == "telephony.externalcall.register", method == "telephony.externalcall.finish",
		strings.HasPrefix(method, "telephony.externalline."):
		return true
	}
	return false
}

// b24DedupeWindow is register's de-duplication window.
const b24DedupeWindow = 30 * time.Minute

// call runs one method for caller; it returns the result and, for lists, total and next.
func (f *Bitrix24) call(c b24Caller, method string, p b24Params) (any, int, int, error) {
	scope := ""
	for _, s := range b24Scopes {
		if strings.HasPrefix(method, s.prefix) {
			scope = s.scope
		}
	}
	if scope == "user" && (c.hasScope("user_basic") || c.hasScope("user_brief")) {
		scope = ""
	}
	if !c.hasScope(scope) {
		return nil, 0, 0, &b24Err{http.StatusForbidden, "insufficient_scope", "The request requires higher privileges than provided by the access token"}
	}
	f.mu.Lock()
	appOnly := f.faults.TelephonyAppOnly
	f.mu.Unlock()
	if c.webhook && ((appOnly && b24AppOnly(method)) || strings.HasPrefix(method, "event.")) {
		return nil, 0, 0, &b24Err{http.StatusForbidden, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method"}
	}
	// The RECORD_URL download happens outside the lock.
	var download []byte
	if method == "telephony.externalcall.attachrecord" {
		if u := p.str("RECORD_URL"); u != "" {
			b, status, ok := b24Download(u)
			if !ok {
				return nil, 0, 0, b24Core(fmt.Sprintf("Server returns HTTP error code %d", status))
			}
			download = b
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch method {
	case "telephony.externalcall.register":
		r, err := f.register(p)
		return r, 0, 0, err
	case "telephony.externalcall.finish":
		r, err := f.finish(p)
		return r, 0, 0, err
	case "telephony.externalcall.attachrecord":
		r, err := f.attach(c, p, download)
		return r, 0, 0, err
	case "telephony.externalcall.show":
		return f.showHide(p, true), 0, 0, nil
	case "telephony.externalcall.hide":
		return f.showHide(p, false), 0, 0, nil
	case "voximplant.statistic.get":
		if f.faults.StatisticDenied {
			return nil, 0, 0, &b24Err{http.StatusForbidden, "ACCESS_DENIED", "Access denied"}
		}
		return f.statistics(p)
	case "telephony.externalcall.searchcrmentities":
		r, err := f.searchCrm(p)
		return r, 0, 0, err
	case "telephony.externalline.add":
		r, err := f.lineAdd(p)
		return r, 0, 0, err
	case "telephony.externalline.get":
		out := make([]map[string]string, 0, len(f.lines))
		for _, l := range f.lines {
			out = append(out, map[string]string{"NUMBER": l.Number, "NAME": l.Name, "CRM_AUTO_CREATE": l.CRMAutoCreate})
		}
		return out, 0, 0, nil
	case "user.get":
		return f.userGet(p)
	case "crm.duplicate.findbycomm":
		r, err := f.findByComm(p)
		return r, 0, 0, err
	case "crm.lead.add":
		r, err := f.leadAdd(p)
		return r, 0, 0, err
	case "crm.activity.todo.add":
		r, err := f.todoAdd(p)
		return r, 0, 0, err
	case "tasks.task.add":
		r, err := f.taskAdd(p)
		return r, 0, 0, err
	case "event.bind":
		r, err := f.eventBind(p)
		return r, 0, 0, err
	case "event.get":
		out := make([]map[string]any, 0, len(f.bindings))
		for _, b := range f.bindings {
			out = append(out, map[string]any{"event": b.Event, "handler": b.Handler, "auth_type": 0, "offline": 0})
		}
		return out, 0, 0, nil
	case "event.unbind":
		ev, h := strings.ToUpper(p.str("event")), p.str("handler")
		kept := f.bindings[:0]
		n := 0
		for _, b := range f.bindings {
			if b.Event == ev && (h == "" || b.Handler == h) {
				n++
				continue
			}
			kept = append(kept, b)
		}
		f.bindings = kept
		return map[string]int{"count": n}, 0, 0, nil
	}
	return nil, 0, 0, &b24Err{http.StatusNotFound, "ERROR_METHOD_NOT_FOUND", "Method not found!"}
}

func (f *Bitrix24) userByID(id int) *B24User {
	for i := range f.users {
		if f.users[i].ID == id {
			return &f.users[i]
		}
	}
	return nil
}

// resolveUser finds the active user of USER_ID or USER_PHONE_INNER.
func (f *Bitrix24) resolveUser(p b24Params) (int, *b24Err) {
	if id, ok := p.integer("USER_ID"); ok && id > 0 {
		u := f.userByID(id)
		if u == nil || !u.Active {
			return 0, b24Core("User is not found or is not active")
		}
		return id, nil
	}
	if ext := p.str("USER_PHONE_INNER"); ext != "" {
		for _, u := range f.users {
			if u.Ext == ext && u.Active {
				return u.ID, nil
			}
		}
		return 0, b24Core("User is not found or is not active")
	}
	return 0, b24Core("USER_ID or USER_PHONE_INNER should be set")
}

func (f *Bitrix24) entityByPhoneLocked(phone string) *B24Entity {
	d := b24Digits(phone)
	if d == "" {
		return nil
	}
	// Contacts first, then companies, then leads (the order Bitrix24 binds calls).
	for _, typ := range []string{"CONTACT", "COMPANY", "LEAD"} {
		for i := range f.entities {
			e := &f.entities[i]
			if e.Type == typ && b24Digits(e.Phone) == d {
				return e
			}
		}
	}
	return nil
}

func (f *Bitrix24) newCallLocked(userID, typ int, phone, line, ext string) *b24Call {
	c := &b24Call{visible: map[int]bool{}}
	c.CallID = fmt.Sprintf("externalCall.%s.%d", b24Rand(16), f.now().Unix())
	c.ExternalCallID, c.UserID, c.Type, c.Phone, c.Line = ext, userID, typ, phone, line
	c.State, c.RegisteredAt, c.RegisterCount = "registered", f.now(), 1
	f.calls = append(f.calls, c)
	f.byID[c.CallID] = c
	return c
}

func (f *Bitrix24) cardLocked(callID, action string, users []int) {
	f.seq++
	f.cards = append(f.cards, B24CardEvent{Seq: f.seq, CallID: callID, Action: action, Users: users, At: f.now()})
}

func (f *Bitrix24) register(p b24Params) (any, error) {
	uid, uerr := f.resolveUser(p)
	if uerr != nil {
		return nil, uerr
	}
	phone := p.str("PHONE_NUMBER")
	if b24Digits(phone) == "" {
		return nil, b24Core("Unsupported phone number format")
	}
	typ, ok := p.integer("TYPE")
	if !ok || typ < 1 || typ > 5 {
		return nil, b24Core("Unknown TYPE")
	}
	if d := p.str("CALL_START_DATE"); d != "" {
		if _, err := time.Parse(time.RFC3339, d); err != nil {
			return nil, b24Core("CALL_START_DATE should be in the ISO-8601 format")
		}
	}
	line, ext := p.str("LINE_NUMBER"), p.str("EXTERNAL_CALL_ID")
	show := true
	if v, ok := p.get("SHOW"); ok {
		show = b24Truthy(v)
	}
	// The 30-minute de-duplication (A.3.1): an open call of this app with the same key.
	for i := len(f.calls) - 1; i >= 0; i-- {
		c := f.calls[i]
		if c.FromClick || c.State != "registered" || f.now().Sub(c.RegisteredAt) > b24DedupeWindow {
			continue
		}
		if b24Digits(c.Phone) != b24Digits(phone) || c.Type != typ || c.UserID != uid || c.Line != line {
			continue
		}
		if !f.faults.ReuseCallID && c.ExternalCallID != ext {
			continue
		}
		c.RegisterCount++
		if show && !c.visible[uid] {
			c.visible[uid] = true
			f.cardLocked(c.CallID, "register", []int{uid})
		}
		return f.registerResult(c), nil
	}
	c := f.newCallLocked(uid, typ, phone, line, ext)
	c.StartDate = p.str("CALL_START_DATE")
	c.Register = map[string]any(p)
	delete(c.Register, "auth")
	if et := strings.ToUpper(p.str("CRM_ENTITY_TYPE")); et != "" {
		id, _ := p.integer("CRM_ENTITY_ID")
		c.EntityType, c.EntityID = et, id
	} else if e := f.entityByPhoneLocked(phone); e != nil {
		c.EntityType, c.EntityID = e.Type, e.ID
	} else if v, _ := p.get("CRM_CREATE"); b24Truthy(v) {
		f.entSeq++
		l := B24Lead{ID: f.entSeq, Title: "Call from " + phone, Phone: phone, AssignedBy: uid, ByRegister: true}
		f.leads = append(f.leads, l)
		f.entities = append(f.entities, B24Entity{Type: "LEAD", ID: l.ID, Name: l.Title, Phone: phone, AssignedBy: uid})
		c.EntityType, c.EntityID, c.CreatedLead = "LEAD", l.ID, l.ID
	}
	if show {
		c.visible[uid] = true
		f.cardLocked(c.CallID, "register", []int{uid})
	}
	return f.registerResult(c), nil
}

func (f *Bitrix24) registerResult(c *b24Call) map[string]any {
	r := map[string]any{"CALL_ID": c.CallID, "CRM_CREATED_LEAD": nil, "CRM_CREATED_ENTITIES": []any{}}
	if c.CreatedLead > 0 {
		r["CRM_CREATED_LEAD"] = c.CreatedLead
		r["CRM_CREATED_ENTITIES"] = []any{map[string]any{"ENTITY_TYPE": "LEAD", "ENTITY_ID": c.CreatedLead}}
	}
	if c.EntityType != "" {
		r["CRM_ENTITY_TYPE"] = c.EntityType
		r["CRM_ENTITY_ID"] = c.EntityID
	}
	return r
}

func (f *Bitrix24) finish(p b24Params) (any, error) {
	v, ok := p.get("CALL_ID")
	id, isStr := v.(string)
	if !ok || !isStr {
		return nil, &b24Err{http.StatusBadRequest, "INVALID_ARGUMENT", "CALL_ID must be a string"}
	}
	c := f.byID[id]
	if c == nil || c.State != "registered" {
		return nil, b24Core("Call is not found (call should be registered prior to finishing)")
	}
	uid, uerr := f.resolveUser(p)
	if uerr != nil {
		return nil, uerr
	}
	dur, _ := p.integer("DURATION")
	code := p.str("STATUS_CODE")
	if code == "" {
		code = "304"
		if dur > 0 {
			code = "200"
		}
	}
	now := f.now()
	f.statSeq++
	f.actSeq++
	c.State, c.FinishedAt, c.FinishUserID, c.Duration, c.StatusCode = "finished", &now, uid, dur, code
	c.StatID, c.ActivityID = f.statSeq, 7000+f.actSeq
	c.AddToChat = p.str("ADD_TO_CHAT")
	c.Finish = map[string]any(p)
	delete(c.Finish, "auth")
	hidden := c.visibleList()
	c.visible = map[int]bool{}
	f.cardLocked(c.CallID, "finish", hidden)
	incoming := strconv.Itoa(c.Type)
	status := 0
	if code == "200" {
		status = 1
	}
	var ext any
	if c.ExternalCallID != "" {
		ext = c.ExternalCallID
	}
	return map[string]any{
		"ID": c.StatID, "CALL_ID": c.CallID, "EXTERNAL_CALL_ID": ext, "PORTAL_USER_ID": uid,
		"PHONE_NUMBER": c.Phone, "PORTAL_NUMBER": c.Line, "INCOMING": incoming, "CALL_DURATION": dur,
		"CALL_START_DATE": map[string]any{}, "CALL_STATUS": status, "CALL_VOTE": nil, "COST": 0,
		"COST_CURRENCY": "", "CALL_FAILED_CODE": code, "CALL_FAILED_REASON": p.str("FAILED_REASON"),
		"REST_APP_ID": "3", "REST_APP_NAME": "pbxbridge", "CRM_ACTIVITY_ID": c.ActivityID,
		"COMMENT": nil, "CRM_ENTITY_TYPE": c.EntityType, "CRM_ENTITY_ID": c.EntityID,
	}, nil
}

// statistics implements voximplant.statistic.get over the finished calls (docs/crm-apis.md
// A.3.6): FILTER on CALL_ID, EXTERNAL_CALL_ID, PORTAL_USER_ID, PHONE_NUMBER (equality, a list
// meaning "in"), pages of 50 by start. RECORD_FILE_ID is the attached recording's file (a
// number, or null), as in the documentation's example.
func (f *Bitrix24) statistics(p b24Params) (any, int, int, error) {
	fv, _ := p.get("FILTER")
	filter := b24Map(fv)
	var rows []map[string]any
	for _, c := range f.calls {
		if c.State != "finished" {
			continue
		}
		row := map[string]any{
			"ID": strconv.Itoa(c.StatID), "CALL_ID": c.CallID, "EXTERNAL_CALL_ID": c.ExternalCallID,
			"PORTAL_USER_ID": strconv.Itoa(c.FinishUserID), "PORTAL_NUMBER": c.Line, "PHONE_NUMBER": c.Phone,
			"CALL_TYPE": strconv.Itoa(c.Type), "CALL_DURATION": strconv.Itoa(c.Duration),
			"CALL_START_DATE": c.StartDate, "CALL_FAILED_CODE": c.StatusCode, "CALL_FAILED_REASON": "",
			"CRM_ACTIVITY_ID": strconv.Itoa(c.ActivityID), "CRM_ENTITY_TYPE": c.EntityType,
			"CRM_ENTITY_ID": strconv.Itoa(c.EntityID), "REST_APP_ID": "3", "REST_APP_NAME": "pbxbridge",
			"COST": "0.0000", "COST_CURRENCY": "", "CALL_VOTE": "0", "COMMENT": nil, "RECORD_FILE_ID": nil,
		}
		if c.Record != nil {
			row["RECORD_FILE_ID"] = c.Record.FileID
		}
		match := true
		for k, want := range filter {
			field := strings.TrimPrefix(strings.ToUpper(k), "=")
			have, _ := b24Str(row[field])
			in := false
			for _, w := range b24List(want) {
				if s, _ := b24Str(w); s == have {
					in = true
				}
			}
			match = match && in
		}
		if match {
			rows = append(rows, row)
		}
	}
	start, _ := p.integer("start")
	start = max(0, min(start, len(rows)))
	end := min(start+50, len(rows))
	next := 0
	if end < len(rows) {
		next = end
	}
	out := rows[start:end]
	if out == nil {
		out = []map[string]any{}
	}
	return out, len(rows), next, nil
}

// b24Download fetches a RECORD_URL as the portal would; on failure it returns the HTTP status
// the portal reports (0 when no answer came).
func b24Download(u string) ([]byte, int, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil) //nolint:gosec // the fake portal downloads RECORD_URL like the real one
	if err != nil {
		return nil, 0, false
	}
	resp, err := http.DefaultClient.Do(req) //nolint:gosec // see above
	if err != nil {
		return nil, 0, false
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, false
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, b24MaxBody))
	return b, resp.StatusCode, err == nil
}

func b24GoodExt(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".wav", ".mp3":
		return true
	}
	return false
}

func (f *Bitrix24) attach(c b24Caller, p b24Params, download []byte) (any, error) {
	call := f.byID[p.str("CALL_ID")]
	if call == nil || call.State != "finished" {
		return nil, b24Core("Call is not found in the statistic table. It looks like it is not finished yet.")
	}
	name, recURL := p.str("FILENAME"), p.str("RECORD_URL")
	if name == "" && recURL == "" {
		return nil, b24Core("Required parameters are not set. Request should contain either URL or FILENAME parameter")
	}
	if recURL != "" {
		if name == "" {
			if u, err := url.Parse(recURL); err == nil {
				name = path.Base(u.Path)
			}
		}
		if !b24GoodExt(name) {
			return nil, b24Core("Wrong file extension. Only wav and mp3 are allowed")
		}
		f.fileSeq++
		call.Record = &B24Record{FileID: 9000 + f.fileSeq, Filename: name, Size: len(download), Mode: "url", URL: recURL}
		call.RecordAttaches++
		return map[string]any{"FILE_ID": call.Record.FileID}, nil
	}
	if strings.TrimSpace(name) == "" {
		return nil, b24Core("File name is empty")
	}
	if !b24GoodExt(name) {
		return nil, b24Core("Wrong file extension. Only wav and mp3 are allowed")
	}
	content, has := p.get("FILE_CONTENT")
	if !has {
		tok := b24Rand(12)
		f.uploads[tok] = call.CallID + "\x00" + name
		v := url.Values{"auth": {c.token}, "token": {"telephony|" + tok}}
		return map[string]any{"uploadUrl": f.baseURL + "/rest/upload.json?" + v.Encode(), "fieldName": "file"}, nil
	}
	s, _ := b24Str(content)
	if s == "" {
		return nil, b24Core("File content is empty.")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, b24Core("File content is not properly encoded. Base64 encoding is expected.")
	}
	f.fileSeq++
	call.Record = &B24Record{FileID: 9000 + f.fileSeq, Filename: name, Size: len(b), Mode: "content"}
	call.RecordAttaches++
	return map[string]any{"FILE_ID": call.Record.FileID}, nil
}

func (f *Bitrix24) serveUpload(w http.ResponseWriter, start time.Time, p b24Params, files map[string][]byte) {
	tok := strings.TrimPrefix(p.str("token"), "telephony|")
	f.mu.Lock()
	target, ok := f.uploads[tok]
	f.mu.Unlock()
	if !ok {
		f.writeErr(w, start, &b24Err{http.StatusUnauthorized, "NO_AUTH_FOUND", "Wrong authorization data"})
		return
	}
	data, has := files["file"]
	if !has || len(data) == 0 {
		f.writeErr(w, start, b24Core("File content is empty."))
		return
	}
	callID, name, _ := strings.Cut(target, "\x00")
	f.mu.Lock()
	delete(f.uploads, tok)
	call := f.byID[callID]
	f.fileSeq++
	id := 9000 + f.fileSeq
	call.Record = &B24Record{FileID: id, Filename: name, Size: len(data), Mode: "upload"}
	call.RecordAttaches++
	f.mu.Unlock()
	b24JSON(w, http.StatusOK, map[string]any{"result": map[string]any{"FILE_ID": id}, "time": f.timing(start)})
}

func (f *Bitrix24) showHide(p b24Params, show bool) bool {
	c := f.byID[p.str("CALL_ID")]
	if c == nil || c.State != "registered" {
		return false
	}
	var users []int
	if v, ok := p.get("USER_ID"); ok {
		for _, x := range b24List(v) {
			if id, ok := b24Int(x); ok && id > 0 {
				users = append(users, id)
			}
		}
	}
	if len(users) == 0 {
		users = []int{c.UserID}
	}
	for _, u := range users {
		c.visible[u] = show
	}
	action := "hide"
	if show {
		action = "show"
	}
	f.cardLocked(c.CallID, action, users)
	return true
}

func (f *Bitrix24) searchCrm(p b24Params) (any, error) {
	phone := p.str("PHONE_NUMBER")
	if phone == "" {
		return nil, b24Core("PHONE_NUMBER is empty")
	}
	d := b24Digits(phone)
	out := []map[string]any{}
	for _, e := range f.entities {
		if d == "" || b24Digits(e.Phone) != d {
			continue
		}
		m := map[string]any{"CRM_ENTITY_TYPE": e.Type, "CRM_ENTITY_ID": e.ID, "ASSIGNED_BY_ID": e.AssignedBy, "NAME": e.Name}
		if u := f.userByID(e.AssignedBy); u != nil {
			ts := u.TimemanStatus
			if ts == "" {
				ts = "NOT_INSTALLED"
			}
			m["ASSIGNED_BY"] = map[string]any{"ID": strconv.Itoa(u.ID), "TIMEMAN_STATUS": ts, "USER_PHONE_INNER": u.Ext,
				"WORK_PHONE": nil, "PERSONAL_PHONE": nil, "PERSONAL_MOBILE": nil}
		}
		out = append(out, m)
	}
	return out, nil
}

func (f *Bitrix24) lineAdd(p b24Params) (any, error) {
	n := p.str("NUMBER")
	if n == "" {
		return nil, b24Core("NUMBER should not be empty")
	}
	for _, l := range f.lines {
		if l.Number == n {
			return nil, b24Core("Line already exists")
		}
	}
	auto := p.str("CRM_AUTO_CREATE")
	if auto == "" {
		auto = "Y"
	}
	l := B24Line{ID: len(f.lines) + 1, Number: n, Name: p.str("NAME"), CRMAutoCreate: auto}
	f.lines = append(f.lines, l)
	return map[string]any{"ID": l.ID}, nil
}

// userGet implements user.get with the filters the daemon uses: ID, ACTIVE, UF_PHONE_INNER,
// USER_TYPE, with the prefixes "" / "=" (equal), "!" / "!=" (not equal) and "@" (in).
func (f *Bitrix24) userGet(p b24Params) (any, int, int, error) {
	fv, _ := p.get("FILTER")
	filter := b24Map(fv)
	var matched []B24User
	for _, u := range f.users {
		if b24UserMatches(u, filter) {
			matched = append(matched, u)
		}
	}
	sort.Slice(matched, func(i, j int) bool { return matched[i].ID < matched[j].ID })
	start, _ := p.integer("start")
	if start < 0 {
		start = 0
	}
	total := len(matched)
	if start > total {
		start = total
	}
	end := min(start+50, total)
	out := make([]map[string]any, 0, end-start)
	for _, u := range matched[start:end] {
		m := map[string]any{"ID": strconv.Itoa(u.ID), "ACTIVE": u.Active, "NAME": u.Name, "LAST_NAME": u.LastName,
			"EMAIL": strings.ToLower(u.Name) + "@example.com", "WORK_PHONE": "", "PERSONAL_MOBILE": "",
			"USER_TYPE": "employee", "UF_DEPARTMENT": []int{1}}
		if u.Ext != "" {
			m["UF_PHONE_INNER"] = u.Ext
		}
		out = append(out, m)
	}
	next := 0
	if end < total {
		next = end
	}
	return out, total, next, nil
}

func b24UserMatches(u B24User, filter map[string]any) bool {
	for k, v := range filter {
		op, field := "=", strings.ToUpper(k)
		for _, pre := range []string{"!=", "!", "=", "@"} {
			if strings.HasPrefix(field, pre) {
				op, field = pre, strings.TrimPrefix(field, pre)
				break
			}
		}
		var have string
		switch field {
		case "ID":
			have = strconv.Itoa(u.ID)
		case "ACTIVE":
			have = "N"
			if u.Active {
				have = "Y"
			}
		case "UF_PHONE_INNER":
			have = u.Ext
		case "USER_TYPE":
			have = "employee"
		default:
			continue
		}
		var want []string
		for _, x := range b24List(v) {
			s, _ := b24Str(x)
			if field == "ACTIVE" {
				s = "N"
				if b24Truthy(x) {
					s = "Y"
				}
			}
			want = append(want, s)
		}
		in := false
		for _, w := range want {
			if w == have {
				in = true
			}
		}
		if (op == "!" || op == "!=") == in {
			return false
		}
	}
	return true
}

func (f *Bitrix24) findByComm(p b24Params) (any, error) {
	typ := strings.ToUpper(p.str("type"))
	if typ == "" {
		return nil, &b24Err{http.StatusBadRequest, "Communication type is not defined", ""}
	}
	if typ != "PHONE" && typ != "EMAIL" {
		return nil, &b24Err{http.StatusBadRequest, fmt.Sprintf("Communication type '%s' is not supported in current context", typ), ""}
	}
	vv, _ := p.get("values")
	values := b24List(vv)
	if len(values) == 0 {
		return nil, &b24Err{http.StatusBadRequest, "Communication values is not defined", ""}
	}
	only := strings.ToUpper(p.str("entity_type"))
	out := map[string][]int{}
	for _, v := range values {
		s, _ := b24Str(v)
		d := b24Digits(s)
		for _, e := range f.entities {
			if d != "" && b24Digits(e.Phone) == d && (only == "" || only == e.Type) {
				out[e.Type] = append(out[e.Type], e.ID)
			}
		}
	}
	if len(out) == 0 {
		return []any{}, nil
	}
	return out, nil
}

func (f *Bitrix24) leadAdd(p b24Params) (any, error) {
	fv, _ := p.get("fields")
	fields := b24Map(fv)
	if fields == nil {
		return nil, &b24Err{http.StatusBadRequest, "", "Parameter 'fields' must be array."}
	}
	fp := b24Params(fields)
	phone := ""
	if ph, ok := fp.get("PHONE"); ok {
		for _, x := range b24List(ph) {
			if m := b24Map(x); m != nil {
				phone = b24Params(m).str("VALUE")
				break
			}
		}
	}
	title := fp.str("TITLE")
	assigned, _ := fp.integer("ASSIGNED_BY_ID")
	if assigned > 0 && f.userByID(assigned) == nil {
		return nil, &b24Err{http.StatusBadRequest, "", "Responsible user not found."}
	}
	f.entSeq++
	if title == "" {
		title = fmt.Sprintf("Lead #%d", f.entSeq)
	}
	l := B24Lead{ID: f.entSeq, Title: title, Phone: phone, AssignedBy: assigned, Fields: fields}
	f.leads = append(f.leads, l)
	f.entities = append(f.entities, B24Entity{Type: "LEAD", ID: l.ID, Name: title, Phone: phone, AssignedBy: assigned})
	return l.ID, nil
}

func (f *Bitrix24) entityExists(typeID, id int) bool {
	typ := map[int]string{1: "LEAD", 3: "CONTACT", 4: "COMPANY"}[typeID]
	for _, e := range f.entities {
		if e.Type == typ && e.ID == id {
			return true
		}
	}
	return false
}

func (f *Bitrix24) todoAdd(p b24Params) (any, error) {
	ot, ok1 := p.integer("ownerTypeId")
	oid, ok2 := p.integer("ownerId")
	dl := p.str("deadline")
	if !ok1 || !ok2 || dl == "" {
		return nil, &b24Err{http.StatusBadRequest, "100", "Required fields are missing: ownerTypeId, ownerId, deadline"}
	}
	if _, err := time.Parse("2006-01-02T15:04:05", dl); err != nil {
		if _, err := time.Parse(time.RFC3339, dl); err != nil {
			return nil, &b24Err{http.StatusBadRequest, "WRONG_DATETIME_FORMAT", "Wrong datetime format"}
		}
	}
	if !f.entityExists(ot, oid) {
		return nil, &b24Err{http.StatusBadRequest, "OWNER_NOT_FOUND", "Owner not found"}
	}
	resp, _ := p.integer("responsibleId")
	f.actSeq++
	t := B24Todo{ID: 7000 + f.actSeq, OwnerTypeID: ot, OwnerID: oid, ResponsibleID: resp, Deadline: dl, Params: map[string]any(p)}
	delete(t.Params, "auth")
	f.todos = append(f.todos, t)
	return map[string]any{"id": t.ID}, nil
}

func (f *Bitrix24) taskAdd(p b24Params) (any, error) {
	fv, ok := p.get("fields")
	fields := b24Map(fv)
	if !ok || fields == nil {
		return nil, &b24Err{http.StatusBadRequest, "100", "Could not find value for parameter {fields}"}
	}
	fp := b24Params(fields)
	title := strings.TrimSpace(fp.str("TITLE"))
	if title == "" {
		return nil, b24Core("Task title is not specified")
	}
	resp, ok := fp.integer("RESPONSIBLE_ID")
	if !ok || resp <= 0 {
		return nil, b24Core("Responsible person not specified")
	}
	if u := f.userByID(resp); u == nil || !u.Active {
		return nil, b24Core("User specified in the 'Responsible' field not found")
	}
	var bindings []string
	if b, ok := fp.get("UF_CRM_TASK"); ok {
		for _, x := range b24List(b) {
			if s, ok := b24Str(x); ok {
				bindings = append(bindings, s)
			}
		}
	}
	id := 3700 + len(f.tasks) + 1
	f.tasks = append(f.tasks, B24Task{ID: id, Title: title, ResponsibleID: resp, Deadline: fp.str("DEADLINE"), Bindings: bindings, Fields: fields})
	return map[string]any{"task": map[string]any{"id": strconv.Itoa(id), "title": title, "responsibleId": strconv.Itoa(resp), "status": "2"}}, nil
}

var b24KnownEvents = map[string]bool{
	"ONEXTERNALCALLSTART": true, "ONEXTERNALCALLBACKSTART": true, "ONAPPINSTALL": true,
	"ONAPPUNINSTALL": true, "ONCRMLEADADD": true, "ONCRMCONTACTADD": true,
}

func (f *Bitrix24) eventBind(p b24Params) (any, error) {
	ev := strings.ToUpper(p.str("event"))
	h := p.str("handler")
	if ev == "" || h == "" {
		return nil, &b24Err{http.StatusBadRequest, "INVALID_ARGUMENT", "Parameters event and handler are required"}
	}
	if !b24KnownEvents[ev] {
		return nil, &b24Err{http.StatusBadRequest, "ERROR_EVENT_NOT_FOUND", "Event not found"}
	}
	for _, b := range f.bindings {
		if b.Event == ev && b.Handler == h {
			return true, nil
		}
	}
	f.bindings = append(f.bindings, B24Binding{Event: ev, Handler: h})
	return true, nil
}

// batch runs the commands of a batch request (A.7).
func (f *Bitrix24) batch(c b24Caller, p b24Params) (any, error) {
	cv, _ := p.get("cmd")
	var keys []string
	cmds := map[string]string{}
	switch x := cv.(type) {
	case map[string]any:
		for k, v := range x {
			s, _ := b24Str(v)
			cmds[k] = s
			keys = append(keys, k)
		}
		sort.Strings(keys)
	case []any:
		for i, v := range x {
			s, _ := b24Str(v)
			k := strconv.Itoa(i)
			cmds[k] = s
			keys = append(keys, k)
		}
	}
	if len(keys) > 50 {
		return nil, &b24Err{http.StatusBadRequest, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded"}
	}
	halt := false
	if v, ok := p.get("halt"); ok {
		halt = b24Truthy(v)
	}
	res, errs, totals, nexts, times := map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}
	for _, k := range keys {
		method, query, _ := strings.Cut(cmds[k], "?")
		method = strings.ToLower(strings.TrimSuffix(method, ".json"))
		f.mu.Lock()
		f.batchCmds[method]++
		f.mu.Unlock()
		if method == "batch" || method == "telephony.externalcall.attachrecord" {
			errs[k] = map[string]string{"error": "ERROR_BATCH_METHOD_NOT_ALLOWED", "error_description": "Method is not allowed for batch usage"}
			if halt {
				break
			}
			continue
		}
		vals, err := url.ParseQuery(query)
		cp := b24Params{}
		if err == nil {
			err = b24MergeForm(cp, vals)
		}
		if err != nil {
			errs[k] = map[string]string{"error": "INVALID_REQUEST", "error_description": err.Error()}
			if halt {
				break
			}
			continue
		}
		start := f.now()
		r, total, next, cerr := f.call(c, method, cp)
		if cerr != nil {
			var be *b24Err
			if !errors.As(cerr, &be) {
				be = &b24Err{500, "INTERNAL_SERVER_ERROR", cerr.Error()}
			}
			errs[k] = map[string]string{"error": be.code, "error_description": be.desc}
			if halt {
				break
			}
			continue
		}
		res[k] = r
		if total > 0 || next > 0 {
			totals[k] = total
		}
		if next > 0 {
			nexts[k] = next
		}
		times[k] = f.timing(start)
	}
	section := func(m map[string]any) any {
		if len(m) == 0 {
			return []any{}
		}
		return m
	}
	return map[string]any{
		"result": section(res), "result_error": section(errs), "result_total": section(totals),
		"result_next": section(nexts), "result_time": section(times),
	}, nil
}
