package bitrix24

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/configs"
	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

func traced(ctx context.Context) (context.Context, *[]string) {
	var lines []string
	return crm.WithTrace(ctx, func(kind, summary, _ string) { lines = append(lines, kind+": "+summary) }), &lines
}

// TestMissedCallTask: a missed call creates one task for the contact's responsible, bound to
// the contact, with a deadline; redelivery creates nothing more.
func TestMissedCallTask(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.MissedCalls.FollowUp = FollowUpTask })
	_, rec := missedCall("1795309000.1", 1795309000)
	rec.Rang = []string{"102"} // the owner comes first, not the agent who rang
	e.deliver(rec)
	e.deliver(rec)
	s := f.State()
	mustf(t, len(s.Tasks) == 1, "%d tasks, want 1", len(s.Tasks))
	task := s.Tasks[0]
	mustf(t, task.ResponsibleID == 1269 && len(task.Bindings) == 1 && task.Bindings[0] == "C_797", "task %+v", task)
	mustf(t, strings.Contains(task.Title, "+79001234567") && task.Deadline != "", "task %+v", task)
	mustf(t, strings.HasSuffix(task.Deadline, "+03:00"), "deadline %q without the Moscow offset", task.Deadline)
}

// TestMissedCallLeadAndTodo: a missed call from an unknown number creates a lead for the last
// agent who rang, then a to-do on that lead.
func TestMissedCallLeadAndTodo(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.MissedCalls.FollowUp = FollowUpTodo
		c.MissedCalls.CreateLead = true
	})
	_, rec := missedCall("1795309100.1", 1795309100)
	rec.Customer = "+79990001122"
	rec.Rang = []string{"101", "102"}
	e.deliver(rec)
	e.deliver(rec)
	s := f.State()
	mustf(t, len(s.Leads) == 1 && s.Leads[0].AssignedBy == 1270 && s.Leads[0].Phone == "+79990001122", "leads %+v", s.Leads)
	mustf(t, len(s.Todos) == 1 && s.Todos[0].OwnerTypeID == 1 && s.Todos[0].OwnerID == s.Leads[0].ID && s.Todos[0].ResponsibleID == 1270, "todos %+v", s.Todos)
	mustf(t, len(s.Tasks) == 0, "tasks %+v", s.Tasks)
}

// TestMissedCallLineDefault: with only line defaults in the chain, the line's user gets the task.
func TestMissedCallLineDefault(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.MissedCalls.FollowUp = FollowUpTask
		c.MissedCalls.Responsible = []string{RespLineDefault, RespDefault}
		c.Lines[0].DefaultUserID = 1271
	})
	_, rec := missedCall("1795309200.1", 1795309200)
	e.deliver(rec)
	s := f.State()
	mustf(t, len(s.Tasks) == 1 && s.Tasks[0].ResponsibleID == 1271, "tasks %+v", s.Tasks)
}

// TestMissedCallTaskScopeMissing: without the task scope the call is still logged and the
// follow-up fails permanently (it never holds up other calls as an auth problem would).
func TestMissedCallTaskScopeMissing(t *testing.T) {
	f := crmtest.StartBitrix24(t, fakecrm.B24Scope("crm,telephony,user"))
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.MissedCalls.FollowUp = FollowUpTask })
	_, rec := missedCall("1795309300.1", 1795309300)
	err := e.a.Deliver(context.Background(), rec)
	if c, _ := crm.Classify(err); c != crm.ClassPermanent {
		t.Fatalf("deliver: %v (%v), want permanent", err, c)
	}
	mustf(t, f.Logged(rec.Key()) == 1, "the call itself was not logged")
}

// TestUnknownExtension: an extension no user has goes to the default user, with a warning in
// the call's timeline and a metric; without a default user the call fails permanently.
func TestUnknownExtension(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	rec := answeredInbound(e, "1795309400.1", "109")
	ctx, lines := traced(context.Background())
	if err := e.a.Deliver(ctx, rec); err != nil {
		t.Fatal(err)
	}
	c := onlyCall(t, f.State(), rec.Key())
	mustf(t, c.UserID == 1 && c.FinishUserID == 1, "call %+v", c)
	found := false
	for _, l := range *lines {
		if strings.Contains(l, "extension 109") && strings.Contains(l, "default user 1") {
			found = true
		}
	}
	mustf(t, found, "no warning in the timeline: %q", *lines)
	mustf(t, testutil.ToFloat64(e.a.m.unknownExt) >= 1, "metric not counted")

	f2 := crmtest.StartBitrix24(t)
	e2 := newEnv(t, f2, func(_ *crm.Params, c *Config) { c.Users.DefaultUserID = 0 })
	err := e2.a.Deliver(context.Background(), answeredInbound(e2, "1795309400.2", "109"))
	if cl, _ := crm.Classify(err); cl != crm.ClassPermanent || !strings.Contains(err.Error(), "109") {
		t.Fatalf("deliver without a default user: %v (%v), want a permanent error naming the extension", err, cl)
	}
}

// TestUserMapOverride: users.map wins over UF_PHONE_INNER.
func TestUserMapOverride(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.Users.Map = map[string]int{"101": 1271} })
	rec := answeredInbound(e, "1795309500.1", "101")
	e.deliver(rec)
	c := onlyCall(t, f.State(), rec.Key())
	mustf(t, c.UserID == 1271 && c.FinishUserID == 1271, "call %+v", c)
	mustf(t, strings.Join(e.a.cfg.MappedExtensions(), ",") == "101", "mapped %v", e.a.cfg.MappedExtensions())
}

// TestUserName: the user directory names extensions from the user cache, users.map overrides included, and
// asks the portal nothing.
func TestUserName(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.Users.Map = map[string]int{"109": 1270} })
	mustf(t, userName(e.a, "101") == "", "named before the cache was loaded: %q", userName(e.a, "101"))
	if err := e.a.users.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := f.State().Requests["user.get"]
	for ext, want := range map[string]string{"101": "Anna Smith", "102": "Maria Sidorova", "109": "Maria Sidorova", "104": "", "555": ""} {
		mustf(t, userName(e.a, ext) == want, "%s named %q, want %q", ext, userName(e.a, ext), want)
	}
	mustf(t, f.State().Requests["user.get"] == before, "UserName asked the portal")
}

// TestUserCacheBatched: 130 users load with one user.get and one batch; afterwards calls need
// no user look-ups.
func TestUserCacheBatched(t *testing.T) {
	users := fakecrm.DefaultB24Users()
	for i := range 125 {
		users = append(users, fakecrm.B24User{ID: 2000 + i, Name: "User", LastName: fmt.Sprint(i), Ext: fmt.Sprint(500 + i), Active: true})
	}
	f := crmtest.StartBitrix24(t, fakecrm.B24Users(users...))
	e := newEnv(t, f)
	if err := e.a.users.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := f.State()
	mustf(t, s.Requests["user.get"] == 1 && s.Requests["batch"] == 1 && s.BatchCommands["user.get"] == 2, "requests %v batch %v", s.Requests, s.BatchCommands)
	u, ok, err := e.a.users.lookup(context.Background(), "624")
	mustf(t, err == nil && ok && u.ID == 2124, "lookup 624: %+v %v %v", u, ok, err)
	_, ok, _ = e.a.users.lookup(context.Background(), "104") // inactive
	mustf(t, !ok, "inactive user mapped")
	mustf(t, testutil.ToFloat64(e.a.m.usersMapped) == 128, "users_mapped %v", testutil.ToFloat64(e.a.m.usersMapped))
	before := f.State().Requests["user.get"]
	e.deliver(answeredInbound(e, "1795309600.1", "624"))
	mustf(t, f.State().Requests["user.get"] == before, "a warm cache still asked user.get")
}

// TestUserCacheCold: before the first full load an extension is looked up alone, once.
func TestUserCacheCold(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e.deliver(answeredInbound(e, "1795309700.1", "102"))
	e.deliver(answeredInbound(e, "1795309700.2", "102"))
	mustf(t, f.State().Requests["user.get"] == 1, "%d user.get, want 1", f.State().Requests["user.get"])
}

// TestRouter: the responsible manager's extension and the caller's name, cached; only at work.
func TestRouter(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	ctx := context.Background()
	ext, err := e.a.Responsible(ctx, "89001234567")
	mustf(t, err == nil && ext == "101", "responsible: %q %v", ext, err)
	name, err := e.a.Lookup(ctx, "8 900 123-45-67")
	mustf(t, err == nil && name == "John Doe", "lookup: %q %v", name, err)
	mustf(t, f.State().Requests["telephony.externalcall.searchcrmentities"] == 1, "not cached: %d requests", f.State().Requests["telephony.externalcall.searchcrmentities"])
	ext, err = e.a.Responsible(ctx, "+70000000000")
	mustf(t, err == nil && ext == "", "unknown number: %q %v", ext, err)

	// The company's manager (1270, OPENED) vs a manager whose day is closed.
	f2 := crmtest.StartBitrix24(t, fakecrm.B24Entities(fakecrm.B24Entity{Type: "CONTACT", ID: 5, Name: "Late Caller", Phone: "+79005550000", AssignedBy: 1271}))
	e2 := newEnv(t, f2, func(_ *crm.Params, c *Config) { c.Routing.OnlyAtWork = true })
	ext, err = e2.a.Responsible(ctx, "+79005550000")
	mustf(t, err == nil && ext == "", "manager not at work routed: %q %v", ext, err)

	// A deadline the bucket cannot meet answers nothing, at once.
	f3 := crmtest.StartBitrix24(t, fakecrm.B24Latency(2*time.Second))
	e3 := newEnv(t, f3)
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	ext, err = e3.a.Responsible(dctx, "+79001234567")
	mustf(t, err == nil && ext == "" && time.Since(start) < time.Second, "slow portal: %q %v after %v", ext, err, time.Since(start))
}

// TestRecordingModes: small files go Base64 in one request, big ones through the upload URL,
// the url mode hands the portal a link; odd formats and missing files are skipped with a warning.
func TestRecordingModes(t *testing.T) {
	t.Run("two-step upload", func(t *testing.T) {
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.Recordings.ContentMaxBytes = 1000 })
		rec := answeredInbound(e, "1795309800.1", "101")
		e.deliver(rec)
		c := onlyCall(t, f.State(), rec.Key())
		mustf(t, c.Record != nil && c.Record.Mode == "upload" && c.Record.Size == 47404, "record %+v", c.Record)
		mustf(t, f.State().Requests["upload"] == 1, "upload requests %v", f.State().Requests)
	})
	t.Run("url", func(t *testing.T) {
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, func(p *crm.Params, c *Config) {
			c.Recordings.Mode = RecordingURL
			p.Recordings = dirRecordings{dir: p.Recordings.(dirRecordings).dir, baseURL: f.URL() + "/_fake/state#"}
		})
		rec := answeredInbound(e, "1795309800.2", "101")
		rec.Recording = "/x/in.wav"
		e.deliver(rec)
		c := onlyCall(t, f.State(), rec.Key())
		mustf(t, c.Record != nil && c.Record.Mode == "url" && c.Record.Filename == "in.wav", "record %+v", c.Record)
	})
	t.Run("format", func(t *testing.T) {
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f)
		rec := answeredInbound(e, "1795309800.3", "101")
		rec.Recording = "/var/spool/asterisk/monitor/call.gsm"
		e.deliver(rec)
		c := onlyCall(t, f.State(), rec.Key())
		mustf(t, c.State == "finished" && c.Record == nil, "call %+v", c)
	})
	t.Run("missing", func(t *testing.T) {
		f := crmtest.StartBitrix24(t)
		now := time.Date(2026, 11, 22, 0, 10, 0, 0, time.UTC)
		e := newEnv(t, f, func(p *crm.Params, _ *Config) { p.Now = func() time.Time { return now } })
		rec := answeredInbound(e, "1795309800.4", "101")
		rec.Recording = "/var/spool/asterisk/monitor/gone.wav"
		rec.EndedAt = now.Add(-30 * time.Second)
		err := e.a.Deliver(context.Background(), rec)
		if c, _ := crm.Classify(err); c != crm.ClassTransient {
			t.Fatalf("fresh missing file: %v, want a transient error (the file may still come)", err)
		}
		rec.EndedAt = now.Add(-time.Hour)
		e.deliver(rec)
		c := onlyCall(t, f.State(), rec.Key())
		mustf(t, c.State == "finished" && c.Record == nil, "call %+v", c)
	})
}

// TestProbe: the probe reports authorisation, scope, telephony rights and user
// mapping in plain words.
func TestProbe(t *testing.T) {
	find := func(cs []crm.Check, name string) crm.Check {
		for _, c := range cs {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no %q check in %+v", name, cs)
		return crm.Check{}
	}
	ctx := context.Background()
	t.Run("healthy", func(t *testing.T) {
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, func(_ *crm.Params, c *Config) { c.Users.Map = map[string]int{"105": 9999} })
		e.setup()
		cs := e.a.Probe(ctx)
		mustf(t, find(cs, "authorisation").OK && find(cs, "telephony rights").OK && find(cs, "scope").OK, "%+v", cs)
		m := find(cs, "user mapping")
		mustf(t, m.OK && strings.Contains(m.Detail, "101 → Anna Smith"), "%+v", m)
		o := find(cs, "user overrides")
		mustf(t, !o.OK && strings.Contains(o.Detail, "105 → 9999"), "%+v", o)
		mustf(t, find(cs, "default user").OK, "%+v", cs)
		mustf(t, find(cs, "click-to-call").OK, "%+v", cs)
	})
	t.Run("not installed", func(t *testing.T) {
		f := crmtest.StartBitrix24(t)
		e := newEnv(t, f, withoutTokens())
		c := find(e.a.Probe(ctx), "authorisation")
		mustf(t, !c.OK && strings.Contains(c.Detail, "Local application") && strings.Contains(c.Detail, "/crm/b24/install"), "%+v", c)
	})
	t.Run("missing scope", func(t *testing.T) {
		f := crmtest.StartBitrix24(t, fakecrm.B24Scope("crm,user"))
		e := newEnv(t, f)
		cs := e.a.Probe(ctx)
		mustf(t, strings.Contains(find(cs, "scope").Detail, "telephony"), "%+v", cs)
		tr := find(cs, "telephony rights")
		mustf(t, !tr.OK && strings.Contains(tr.Detail, "\"telephony\" scope"), "%+v", tr)
	})
	t.Run("webhook", func(t *testing.T) {
		f := crmtest.StartBitrix24(t, fakecrm.B24Webhook(1, "s3cr3t", "crm,telephony,user"))
		e := newEnv(t, f, func(_ *crm.Params, c *Config) {
			c.Auth = AuthConfig{Mode: AuthWebhook, WebhookURL: configs.NewSecret(f.URL() + "/rest/1/s3cr3t/")}
		})
		cs := e.a.Probe(ctx)
		mustf(t, find(cs, "authorisation").OK, "%+v", cs)
		tr := find(cs, "telephony rights")
		mustf(t, !tr.OK && strings.Contains(tr.Detail, "only for applications"), "%+v", tr)
		acc, err := e.a.Account(ctx)
		mustf(t, err == nil && acc.Domain != "", "account %+v %v", acc, err)
		for _, c := range cs {
			mustf(t, !strings.Contains(c.Detail, "s3cr3t"), "the webhook secret leaks into %+v", c)
		}
	})
	t.Run("wrong webhook", func(t *testing.T) {
		f := crmtest.StartBitrix24(t, fakecrm.B24Webhook(1, "s3cr3t", "crm,telephony,user"))
		e := newEnv(t, f, func(_ *crm.Params, c *Config) {
			c.Auth = AuthConfig{Mode: AuthWebhook, WebhookURL: configs.NewSecret(f.URL() + "/rest/1/wrong/")}
		})
		c := find(e.a.Probe(ctx), "authorisation")
		mustf(t, !c.OK && strings.Contains(c.Detail, "does not accept the webhook URL"), "%+v", c)
		err := e.a.Deliver(ctx, answeredInbound(e, "1795309900.1", "101"))
		if cl, _ := crm.Classify(err); cl != crm.ClassAuth || strings.Contains(err.Error(), "wrong") {
			t.Fatalf("deliver with a wrong webhook: %v (%v)", err, cl)
		}
	})
	t.Run("no users with extensions", func(t *testing.T) {
		f := crmtest.StartBitrix24(t, fakecrm.B24Users(fakecrm.B24User{ID: 1, Name: "Admin", Active: true}))
		e := newEnv(t, f)
		c := find(e.a.Probe(ctx), "user mapping")
		mustf(t, !c.OK && strings.Contains(c.Detail, "Internal phone"), "%+v", c)
	})
}

// TestWebhookModeTelephony: through a webhook on a portal that allows telephony only for
// applications, a delivery is an auth problem (queued), with the reason in the status.
func TestWebhookModeTelephony(t *testing.T) {
	f := crmtest.StartBitrix24(t, fakecrm.B24Webhook(1, "s3cr3t", "crm,telephony,user"))
	e := newEnv(t, f, func(_ *crm.Params, c *Config) {
		c.Auth = AuthConfig{Mode: AuthWebhook, WebhookURL: configs.NewSecret(f.URL() + "/rest/1/s3cr3t/")}
	})
	err := e.a.Deliver(context.Background(), answeredInbound(e, "1795310000.1", "101"))
	if cl, _ := crm.Classify(err); cl != crm.ClassAuth {
		t.Fatalf("deliver: %v (%v), want auth", err, cl)
	}
	mustf(t, strings.Contains(e.a.Status().Detail, "WRONG_AUTH_TYPE"), "status %+v", e.a.Status())
	mustf(t, !strings.Contains(err.Error(), "s3cr3t"), "secret in error %v", err)

	// The legacy portal (telephony allowed through webhooks) takes the call.
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: false})
	rec := answeredInbound(e, "1795310000.2", "101")
	e.deliver(rec)
	mustf(t, f.Logged(rec.Key()) == 1, "not logged through the webhook")
	mustf(t, e.a.Status().Auth == "ok", "status %+v", e.a.Status())
}

// TestOperationTimeLimit: a method blocked by the resource limit is a rate-limit error.
func TestOperationTimeLimit(t *testing.T) {
	f := crmtest.StartBitrix24(t, fakecrm.B24WithFaults(fakecrm.B24Faults{TelephonyAppOnly: true, OperationLimited: []string{"telephony.externalCall.finish"}}))
	e := newEnv(t, f)
	err := e.a.Deliver(context.Background(), answeredInbound(e, "1795310100.1", "101"))
	cl, d := crm.Classify(err)
	mustf(t, cl == crm.ClassRateLimited && d > 0, "deliver: %v (%v, %v), want rate limited", err, cl, d)
}

// TestLiveAfterRestart: a new adapter (restart mid-call) continues the card from the call store:
// no second register, the right users hidden.
func TestLiveAfterRestart(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	sc := scenarios()[1] // inbound_ringgroup
	e.live(sc.live[0])
	e.live(sc.live[1])
	// Restart: same store and state directory, fresh memory.
	e2 := newEnv(t, f, func(p *crm.Params, _ *Config) { p.Calls = e.store; p.StateDir = e.state }, keepTokens())
	for _, ev := range sc.live[2:] {
		e2.live(ev)
	}
	rec := sc.rec
	e2.deliver(&rec)
	s := f.State()
	c := onlyCall(t, s, rec.Key())
	mustf(t, c.RegisterCount == 1 && c.State == "finished" && c.FinishUserID == 1270, "call %+v", c)
	var hidden []int
	for _, ce := range s.Cards {
		if ce.Action == "hide" {
			hidden = append(hidden, ce.Users...)
		}
	}
	mustf(t, len(hidden) == 1 && hidden[0] == 1269, "hidden %v", hidden)
}

// TestDeliverAfterLostFinish: a finish that reached the portal but whose answer was lost is
// not repeated as a second call.
func TestDeliverAfterLostFinish(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	rec := answeredInbound(e, "1795310200.1", "101")
	// finish answers 500 after it ran: the call is finished but the adapter sees a failure.
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true, FailRate: 1, FailAfterProcessing: true,
		FailMethods: []string{"telephony.externalCall.finish"}})
	err := e.a.Deliver(context.Background(), rec)
	if c, _ := crm.Classify(err); c != crm.ClassTransient {
		t.Fatalf("deliver with a lost finish answer: %v, want transient", err)
	}
	mustf(t, f.Logged(rec.Key()) == 1, "the fake did not finish the call")
	f.SetFaults(fakecrm.B24Faults{TelephonyAppOnly: true})
	e.deliver(rec)
	c := onlyCall(t, f.State(), rec.Key())
	mustf(t, c.Record != nil, "recording not attached after the check")
	mustf(t, f.Logged(rec.Key()) == 1, "call logged %d times", f.Logged(rec.Key()))
	mustf(t, len(f.State().Calls) == 1, "%d calls", len(f.State().Calls))
}

// TestMetricsReRegistered: a second adapter on the same registerer (a reload) keeps updating
// the exported series.
func TestMetricsReRegistered(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	e2 := newEnv(t, f, func(p *crm.Params, _ *Config) { p.Metrics = e.reg })
	e2.deliver(answeredInbound(e2, "1795310300.1", "101"))
	n, err := testutil.GatherAndCount(e.reg, "pbxbridge_bitrix24_requests_per_call")
	mustf(t, err == nil && n == 1, "series %d %v", n, err)
	mustf(t, testutil.ToFloat64(e.a.m.callIDReuse) == 0 && e2.a.m.requestsPerCall == e.a.m.requestsPerCall, "the reloaded adapter does not share the registered collectors")
}

// TestRegisterAnswerLost: a register that reached the portal but was never recorded (kill -9
// right after it) is not duplicated: the repeat carries the same EXTERNAL_CALL_ID, number, type,
// user and line, and the portal's de-duplication answers the same CALL_ID.
func TestRegisterAnswerLost(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	sc := scenarios()[0] // inbound_answered
	e.live(sc.live[0])
	// The process dies: the call store lost what Live wrote.
	e2 := newEnv(t, f, func(p *crm.Params, _ *Config) { p.StateDir = e.state }, keepTokens())
	rec := sc.rec
	writeWAV(t, e2.recs, baseName(rec.Recording), 1000)
	e2.deliver(&rec)
	s := f.State()
	c := onlyCall(t, s, rec.Key())
	mustf(t, c.RegisterCount == 2 && c.State == "finished", "call %+v", c)
	mustf(t, f.Logged(rec.Key()) == 1, "logged %d times", f.Logged(rec.Key()))
}

// TestAnonymousCaller: a call without a number cannot be logged: a permanent error that says
// so, no request.
func TestAnonymousCaller(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	_, rec := missedCall("1795310400.1", 1795310400)
	rec.Customer = "anonymous"
	ev, _ := missedCall("1795310400.1", 1795310400)
	ev.Customer = ""
	e.live(ev)
	err := e.a.Deliver(context.Background(), rec)
	if c, _ := crm.Classify(err); c != crm.ClassPermanent || !strings.Contains(err.Error(), "number") {
		t.Fatalf("deliver: %v (%v)", err, c)
	}
	mustf(t, totalRequests(f.State()) == 0, "requests %v", f.State().Requests)
}

// TestForgetDropsCachedLookups: after Forget (crm.Forgetter) the number's cached look-up is gone,
// whatever form it was cached under, and other numbers stay cached.
func TestForgetDropsCachedLookups(t *testing.T) {
	f := crmtest.StartBitrix24(t)
	e := newEnv(t, f)
	ctx := context.Background()
	searches := func() int { return f.State().Requests["telephony.externalcall.searchcrmentities"] }
	_, _ = e.a.Responsible(ctx, "89001234567")
	_, _ = e.a.Responsible(ctx, "+70000000000")
	mustf(t, searches() == 2, "%d searches, want 2", searches())
	var fg crm.Forgetter = e.a
	fg.Forget(ctx, "+79001234567") // the E.164 form of the cached 89001234567
	_, _ = e.a.Responsible(ctx, "89001234567")
	mustf(t, searches() == 3, "forgotten number still cached: %d searches, want 3", searches())
	_, _ = e.a.Responsible(ctx, "+70000000000")
	mustf(t, searches() == 3, "another number was dropped: %d searches", searches())
}

// userName is the name the adapter's directory gives ext's user.
func userName(a crm.UserDirectory, ext string) string {
	users, _ := a.Users(context.Background())
	return crm.NameOf(users, ext)
}
