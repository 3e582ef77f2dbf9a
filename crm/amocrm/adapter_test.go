package amocrm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/crmtest"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

func TestConformance(t *testing.T) {
	for _, typ := range []string{TypeAmoCRM, TypeKommo} {
		t.Run(typ, func(t *testing.T) {
			crmtest.Run(t, crmtest.Harness{
				New: func(t *testing.T) (crm.Adapter, crmtest.Controller) {
					t.Helper()
					// retry_after 1 s: the "rate limited" case pauses 1 s, not the 10 s default.
					e := newEnv(t, typ, envOpt{fake: fakecrm.AmoOptions{RetryAfterInBody: true}})
					return e.a, e.fake
				},
				Record: answered,
			})
		})
	}
}

func TestRegistered(t *testing.T) {
	for _, typ := range []string{TypeAmoCRM, TypeKommo} {
		f, ok := crm.Lookup(typ)
		if !ok {
			t.Fatalf("%s is not registered", typ)
		}
		if c, ok := f.NewConfig().(*Config); !ok || c.Flavor() != typ {
			t.Fatalf("%s: NewConfig gives %#v", typ, f.NewConfig())
		}
	}
	if NewConfig(TypeKommo).APIBase() != "https://.kommo.com" || NewConfig(TypeAmoCRM).authorizePage() != "https://www.amocrm.ru/oauth" {
		t.Fatal("hosts per type are wrong")
	}
}

// The transcripts' calls, built by hand from their .meta.json, end up in the fake as specified.
func TestTranscriptCalls(t *testing.T) {
	for _, typ := range []string{TypeAmoCRM, TypeKommo} {
		t.Run(typ, func(t *testing.T) {
			e := newEnv(t, typ, envOpt{})
			in := recordFromMeta(t, "inbound_answered", "101")
			missed := recordFromMeta(t, "inbound_missed", "101")
			out := recordFromMeta(t, "outbound_answered")
			busy := recordFromMeta(t, "outbound_busy")
			queue := recordFromMeta(t, "inbound_ringgroup_or_queue", "101", "102")
			for _, r := range []*call.Record{in, missed, out, busy, queue} {
				e.deliver(r)
			}
			st := e.state()
			calls := map[string]fakecrm.AmoCall{}
			for _, c := range st.Calls {
				calls[c.Uniq] = c
			}
			if len(st.Calls) != 5 {
				t.Fatalf("%d calls logged, want 5: %+v", len(st.Calls), st.Calls)
			}
			c := calls["lab/1795305782.0"]
			if c.Direction != "inbound" || c.Duration != 3 || c.Phone != "+79001234567" || c.CallStatus != 4 ||
				string(c.CallResponsible) != "504141" || c.ResponsibleUserID != 504141 || c.CreatedBy != 504141 ||
				c.CreatedAt != 1795305782 || c.Source != "pbxbridge" || c.EntityType != "lead" || c.EntityID != 1 {
				t.Errorf("inbound answered: %+v", c)
			}
			if !strings.HasPrefix(c.Link, "https://pbx.example.com/rec/in-74951112233-79001234567-20261122-000302-1795305782.1.wav?sig=") {
				t.Errorf("inbound answered link %q", c.Link)
			}
			c = calls["lab/1795305792.7"]
			if c.CallStatus != 6 || c.Duration != 0 || c.Link != "" || string(c.CallResponsible) != "504141" {
				t.Errorf("inbound missed: %+v", c)
			}
			c = calls["lab/1795305834.50"]
			if c.Direction != "outbound" || c.Phone != "+79001234567" || c.CallStatus != 4 || c.Duration != 3 || string(c.CallResponsible) != "504141" || c.Link == "" {
				t.Errorf("outbound answered: %+v", c)
			}
			c = calls["lab/1795305860.65"]
			if c.Direction != "outbound" || c.CallStatus != 7 || c.Duration != 0 || string(c.CallResponsible) != "504141" {
				t.Errorf("outbound busy (agent from the caller id): %+v", c)
			}
			c = calls["lab/1795305809.22"]
			if c.CallStatus != 4 || string(c.CallResponsible) != "504142" || c.Duration != 5 {
				t.Errorf("queue answered by 102: %+v", c)
			}
			// The missed call made one task, for the contact's owner (Maria, 504142), on the lead.
			if len(st.Tasks) != 1 {
				t.Fatalf("tasks: %+v", st.Tasks)
			}
			task := st.Tasks[0]
			if task.TaskTypeID != 1 || task.ResponsibleUserID != 504142 || task.EntityType != "leads" || task.EntityID != 1 ||
				task.CompleteTill < missed.EndedAt.Add(time.Hour).Unix() || !strings.Contains(task.Text, "+79001234567") ||
				!strings.Contains(task.Text, "[pbxbridge lab/1795305792.7]") {
				t.Errorf("task: %+v", task)
			}
			// Redelivering everything changes nothing.
			for _, r := range []*call.Record{in, missed, out, busy, queue} {
				e.deliver(r)
			}
			if st2 := e.state(); len(st2.Calls) != 5 || len(st2.Tasks) != 1 {
				t.Fatalf("after redelivery: %d calls, %d tasks", len(st2.Calls), len(st2.Tasks))
			}
		})
	}
}

func unknownCall(i int, dir call.Direction, disp call.Disposition) *call.Record {
	r := answered(100 + i)
	r.Customer, r.Direction, r.Disposition = "+79990000000", dir, disp
	if disp != call.Answered {
		r.AnsweredAt, r.AnsweredBy, r.Legs, r.TalkSeconds = nil, "", nil, 0
	}
	return r
}

func TestUnknownNumbers(t *testing.T) {
	t.Run("inbound becomes an incoming lead, missed gets a task", func(t *testing.T) {
		e := newEnv(t, TypeAmoCRM, envOpt{})
		r := unknownCall(1, call.Inbound, call.NoAnswer)
		e.deliver(r)
		e.deliver(r)
		st := e.state()
		if len(st.Calls) != 0 || len(st.Unsorted) != 1 {
			t.Fatalf("calls %d, unsorted %+v", len(st.Calls), st.Unsorted)
		}
		u := st.Unsorted[0]
		var md map[string]any
		_ = json.Unmarshal(u.Metadata, &md)
		if u.SourceUID != r.Key() || md["from"] != "+79990000000" || md["phone"] != "+74951112233" || md["is_call_event_needed"] != true {
			t.Fatalf("unsorted %+v %v", u, md)
		}
		// The task goes to the last agent who rang (no contact owner), linked to the lead.
		if len(st.Tasks) != 1 || st.Tasks[0].ResponsibleUserID != 504141 || st.Tasks[0].EntityID != u.LeadID {
			t.Fatalf("tasks %+v (lead %d)", st.Tasks, u.LeadID)
		}
		if n := testutil.ToFloat64(e.a.m.unknown.WithLabelValues("unsorted")); n != 1 {
			t.Fatalf("metric unsorted = %v", n)
		}
	})
	t.Run("outbound creates the contact and logs the call", func(t *testing.T) {
		e := newEnv(t, TypeKommo, envOpt{})
		r := unknownCall(2, call.Outbound, call.Answered)
		e.deliver(r)
		e.deliver(r)
		st := e.state()
		if len(st.Calls) != 1 || st.Calls[0].Uniq != r.Key() || st.Calls[0].EntityType != "contact" {
			t.Fatalf("calls %+v", st.Calls)
		}
		var created *fakecrm.AmoContact
		for i := range st.Contacts {
			if st.Contacts[i].ID == st.Calls[0].EntityID {
				created = &st.Contacts[i]
			}
		}
		if created == nil || created.Name != "+79990000000" || created.ResponsibleUserID != 504141 {
			t.Fatalf("contact %+v", created)
		}
		if n := count(st.Requests, "POST /api/v4/contacts"); n != 1 {
			t.Fatalf("%d contact creations", n)
		}
	})
	t.Run("skip is counted and traced", func(t *testing.T) {
		e := newEnv(t, TypeAmoCRM, envOpt{mutate: func(c *Config) { c.UnknownNumber.Inbound = UnknownSkip; c.MissedCallTask.Enabled = false }})
		var trace []string
		ctx := crm.WithTrace(context.Background(), func(kind, summary, _ string) { trace = append(trace, kind+" "+summary) })
		if err := e.a.Deliver(ctx, unknownCall(3, call.Inbound, call.Answered)); err != nil {
			t.Fatal(err)
		}
		st := e.state()
		if len(st.Calls)+len(st.Unsorted)+len(st.Tasks) != 0 {
			t.Fatalf("something was created: %+v", st)
		}
		if n := testutil.ToFloat64(e.a.m.unknown.WithLabelValues("skipped")); n != 1 {
			t.Fatalf("metric skipped = %v", n)
		}
		if !strings.Contains(strings.Join(trace, "\n"), "decision call not logged") {
			t.Fatalf("no decision in the trace: %v", trace)
		}
	})
	t.Run("the 200 variant of an all-failed batch", func(t *testing.T) {
		e := newEnv(t, TypeAmoCRM, envOpt{fake: fakecrm.AmoOptions{UnknownStatus: 200}})
		e.deliver(unknownCall(4, call.Inbound, call.Answered))
		if st := e.state(); len(st.Unsorted) != 1 {
			t.Fatalf("unsorted %+v", st.Unsorted)
		}
	})
}

// Acceptance 2: 500 queued calls leave in at most 15 requests to /api/v4/calls without a single
// 429 from the fake's 7 req/s limiter.
func TestBacklogIsBatched(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	const n, workers = 500, 64
	recs := make(chan *call.Record, n)
	for i := range n {
		recs <- answered(1000 + i)
	}
	close(recs)
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range recs {
				if err := e.a.Deliver(context.Background(), r); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		t.Fatalf("%d deliveries failed, first: %v", len(errs), errs[0])
	}
	fs := e.fake.State()
	reqs := fs.Requests["POST /api/v4/calls"]
	t.Logf("500 calls: %d requests to /api/v4/calls, %d answers 429, %d blocked, %v", reqs, fs.RateLimited, fs.Blocked, elapsed.Round(time.Millisecond))
	if reqs > 15 {
		t.Errorf("%d requests to /api/v4/calls, want ≤ 15", reqs)
	}
	if fs.RateLimited != 0 || fs.Blocked != 0 {
		t.Errorf("the fake refused %d requests with 429 and %d with 403", fs.RateLimited, fs.Blocked)
	}
	if got := len(fs.Accounts[0].Calls); got != n {
		t.Errorf("%d calls logged, want %d", got, n)
	}
	seen := map[string]bool{}
	for _, c := range fs.Accounts[0].Calls {
		if seen[c.Uniq] {
			t.Fatalf("call %s logged twice", c.Uniq)
		}
		seen[c.Uniq] = true
	}
}

// A lone call is sent alone, without waiting for a batch to fill.
func TestLoneCallSentAlone(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	e.deliver(answered(1))
	e.deliver(answered(2))
	if n := e.fake.State().Requests["POST /api/v4/calls"]; n != 2 {
		t.Fatalf("%d requests for two sequential calls", n)
	}
}

// countingTransport counts every request into its context's counter, as the daemon's
// instrumented transport does.
type countingTransport struct{ next http.RoundTripper }

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	crm.CountRequest(r.Context())
	return c.next.RoundTrip(r)
}

// Each call of a batch counts the batch's request: its delivered line and crm_requests_per_call
// never say a logged call cost nothing.
func TestBatchedCallCountsItsRequest(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	a, err := New(crm.Params{Name: "amo", Type: e.typ, Config: e.cfg, StateDir: e.dir, Metrics: prometheus.NewRegistry(), Calls: e.store,
		Recordings: e.rec, Originator: e.orig, Now: e.now, RouteURL: "https://pbx.example.com/crm/amo",
		HTTPClient: &http.Client{Transport: countingTransport{http.DefaultTransport}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	var wg sync.WaitGroup
	counts := make([]atomic.Int64, 3)
	for i := range counts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Deliver(crm.WithRequestCounter(context.Background(), &counts[i]), answered(7000+i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range counts {
		if n := counts[i].Load(); n < 1 {
			t.Errorf("call %d: %d CRM requests counted, want at least its batch's", i, n)
		}
	}
}

// Partial failures map back to the right calls: in one batch, known numbers are placed and the
// unknown one goes to the unknown-number path.
func TestPartialBatch(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{mutate: func(c *Config) { c.Batch.Window = 200 * time.Millisecond; c.MissedCallTask.Enabled = false }})
	recs := []*call.Record{answered(1), unknownCall(2, call.Inbound, call.Answered), answered(3)}
	var wg sync.WaitGroup
	errs := make([]error, len(recs))
	for i, r := range recs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = e.a.Deliver(context.Background(), r) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	st := e.state()
	if n := count(st.Requests, "POST /api/v4/calls"); n != 1 {
		t.Fatalf("%d calls requests, want 1 batch", n)
	}
	if len(st.Calls) != 2 || len(st.Unsorted) != 1 || st.Unsorted[0].Uniq != recs[1].Key() {
		t.Fatalf("calls %+v unsorted %+v", st.Calls, st.Unsorted)
	}
	for _, r := range []*call.Record{recs[0], recs[2]} {
		if v, _, _ := e.store.Get(context.Background(), r.Key(), fieldCall); v != "logged:leads:1" {
			t.Fatalf("%s state %q", r.Key(), v)
		}
	}
}

func TestDedupOnTheFakeIsNotRelied(t *testing.T) {
	// With the fake's uniq de-duplication on, redelivery after a lost call store still logs once;
	// with it off (default), the call store alone keeps it once (TestTranscriptCalls).
	e := newEnv(t, TypeAmoCRM, envOpt{fake: fakecrm.AmoOptions{DedupUniq: true}})
	r := answered(1)
	e.deliver(r)
	e.store = newMemStore()
	e.a = e.open()
	e.deliver(r)
	if n := e.fake.Logged(r.Key()); n != 1 {
		t.Fatalf("logged %d times", n)
	}
}

// Inbound pop-ups go to the ringing extension's user; outbound ones (CONTRACT A: the customer's
// phone rings, Ext is the dialling extension) to the dialler's, except for click-to-call and
// with popups_outbound off.
func TestPopups(t *testing.T) {
	e := newEnv(t, TypeKommo, envOpt{})
	ctx := context.Background()
	for _, ev := range []*call.Live{
		{Kind: call.LiveRinging, CallID: "1", Direction: call.Inbound, Customer: "+79001234567", Ext: "101"},
		{Kind: call.LiveRinging, CallID: "1", Direction: call.Inbound, Customer: "+79001234567", Ext: "199"},
		{Kind: call.LiveAnswered, CallID: "1", Direction: call.Inbound, Customer: "+79001234567", Ext: "101"},
		{Kind: call.LiveRinging, CallID: "2", Direction: call.Outbound, Customer: "+79161234567", Ext: "102"},
		{Kind: call.LiveRinging, CallID: "3", Direction: call.Outbound, Customer: "+79031234567", Ext: "103", OriginateID: "c2c-1"},
		{Kind: call.LiveRinging, CallID: "4", Direction: call.Internal, Customer: "", Ext: "103"},
	} {
		if err := e.a.Live(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	evs := e.state().Events
	if len(evs) != 2 || evs[0].PhoneNumber != "+79001234567" || fmt.Sprint(evs[0].Users) != "[504141]" || evs[0].ElementID != 3 ||
		evs[1].PhoneNumber != "+79161234567" || fmt.Sprint(evs[1].Users) != "[504142]" {
		t.Fatalf("events %+v", evs)
	}
	if n := testutil.ToFloat64(e.a.m.popups.WithLabelValues("unmapped")); n != 1 {
		t.Fatalf("unmapped pop-ups %v", n)
	}
	e.cfg.PopupsOutbound = false
	if err := e.a.Live(ctx, &call.Live{Kind: call.LiveRinging, CallID: "5", Direction: call.Outbound, Customer: "+79161234567", Ext: "102"}); err != nil {
		t.Fatal(err)
	}
	if evs := e.state().Events; len(evs) != 2 {
		t.Fatalf("popups_outbound off: events %+v", evs)
	}
}

func TestRouter(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	ctx := context.Background()
	if ext, err := e.a.Responsible(ctx, "89001234567"); err != nil || ext != "102" {
		t.Fatalf("responsible %q %v", ext, err)
	}
	if name, err := e.a.Lookup(ctx, "+7 900 123-45-67"); err != nil || name != "Ivan Ivanov" {
		t.Fatalf("lookup %q %v", name, err)
	}
	if ext, err := e.a.Responsible(ctx, "+79990000000"); err != nil || ext != "" {
		t.Fatalf("unknown number: %q %v", ext, err)
	}
	// Olga's owner 504141 is extension 101.
	if ext, err := e.a.Responsible(ctx, "+79165550102"); err != nil || ext != "101" {
		t.Fatalf("responsible of Olga = %q %v", ext, err)
	}
	// The look-up answers within the daemon's deadline or gives up.
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	time.Sleep(2 * time.Millisecond)
	if ext, err := e.a.Responsible(short, "+79001234567"); err == nil || ext != "" {
		t.Fatalf("expired deadline: %q %v", ext, err)
	}
}

func TestAutoMapUsers(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{mutate: func(c *Config) {
		c.Users = map[string]int64{"102": 504142}
		c.AutoMapUsers = true
		c.MissedCallTask.Responsible = []string{ChainLastRang}
		c.DefaultUser = 0
	}})
	e.a.maintain(context.Background()) // Ivan Petrov's profile phone is 101
	if u := e.a.users.user("101"); u != 504141 {
		t.Fatalf("101 → %d", u)
	}
	if u := e.a.users.user("102"); u != 504142 {
		t.Fatalf("102 → %d", u)
	}
}

// UserName names an extension's user once names are wanted: the first call asks for the user
// list in the background; an adapter never asked sends no request for it.
func TestUserName(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{longLived: true})
	if n := userName(e.a, "101"); n != "" {
		t.Fatalf("101 named %q before the user list was read", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for userName(e.a, "101") != "Ivan Petrov" {
		if time.Now().After(deadline) {
			t.Fatalf("101 is still named %q", userName(e.a, "101"))
		}
		time.Sleep(10 * time.Millisecond) // re-check the condition
	}
	if n := userName(e.a, "102"); n != "Maria Sidorova" {
		t.Errorf("102 named %q", n)
	}
	if n := userName(e.a, "999"); n != "" {
		t.Errorf("an unmapped extension named %q", n)
	}
}

// A 429 pauses the whole account for the advised wait: the refused request goes first when it
// ends, nothing is sent meanwhile, and a Deliver whose deadline comes first is refused at once
// with the pause left (ClassRateLimited). A refusal of the probe that ends in a 403 is read as a
// block: nothing is sent until it is over, and the status says so.
func TestRateLimitedAndBlocked(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{
		fake:      fakecrm.AmoOptions{BlockAfter: 2, BlockFor: time.Hour},
		longLived: true,
	})
	ctx := context.Background()
	e.fake.ThrottleFor(time.Second)
	start := time.Now()
	e.deliver(answered(1)) // refused, paused ~1 s, sent again first
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("delivered %v after a 429 advising 1 s", d)
	}
	fs := e.fake.State()
	if fs.Throttled != 1 || e.fake.Logged(answered(1).Key()) != 1 {
		t.Fatalf("throttled answers %d, logged %d", fs.Throttled, e.fake.Logged(answered(1).Key()))
	}
	if n := testutil.ToFloat64(e.a.m.throttled.WithLabelValues("429")); n != 1 {
		t.Fatalf("429s counted %v", n)
	}
	// A long advice: a Deliver that cannot wait that long is refused at once, unsent.
	e.fake.ThrottleFor(30 * time.Second)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := e.a.Deliver(short, answered(2))
	c, d := crm.Classify(err)
	if c != crm.ClassRateLimited || d < 20*time.Second || d > 30*time.Second {
		t.Fatalf("deliver during a 30 s pause: %v (%v, retry after %v)", err, c, d)
	}
	before := e.fake.State().Statuses["429"]
	short2, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if err := e.a.Deliver(short2, answered(3)); err == nil {
		t.Fatal("delivered during the pause")
	}
	if after := e.fake.State().Statuses["429"]; after != before {
		t.Fatalf("requests were sent during the pause: %d → %d answers 429", before, after)
	}
	if e.a.limiter.PausedUntil().IsZero() {
		t.Fatal("the account is not paused")
	}
}

// Repeated 429s end in a 403 block: nothing is sent until it is over, and the status says so.
func TestBlockedAfterRepeated429(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{
		fake:      fakecrm.AmoOptions{BlockAfter: 2, BlockFor: time.Hour, RetryAfterInBody: true, RetryAfter: 1},
		longLived: true,
	})
	ctx := context.Background()
	e.fake.Inject(fakecrm.FaultRateLimited)
	// 429 → pause 1 s → the probe gets the fake's block (403 after 2 consecutive 429s).
	err := e.a.Deliver(ctx, answered(1))
	if c, d := crm.Classify(err); c != crm.ClassRateLimited || d < time.Minute {
		t.Fatalf("deliver: %v classified %v after %v", err, c, d)
	}
	if n := testutil.ToFloat64(e.a.m.throttled.WithLabelValues("blocked")); n != 1 {
		t.Fatalf("blocks counted %v", n)
	}
	if s := e.a.Status(); !strings.Contains(s.Detail, "blocked") {
		t.Fatalf("status %+v", s)
	}
	// While blocked nothing is sent.
	before := e.fake.State().Statuses["403"]
	err = e.a.Deliver(ctx, answered(2))
	if c, _ := crm.Classify(err); c != crm.ClassRateLimited {
		t.Fatalf("deliver while blocked: %v", err)
	}
	if after := e.fake.State().Statuses["403"]; after != before {
		t.Fatalf("requests were sent while blocked: %d → %d", before, after)
	}
}

// A block that starts during the probe (the account check takes the only request the fake
// allows, the user listing gets a plain-text 403) is reported with the time left on the
// adapter's clock, the one the block was set with. With the fixed clock below the wall clock
// made it "sending resumes in -319h4m50s" on 2026-12-05, growing more negative every day.
func TestProbeReportsBlock(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, TypeAmoCRM, envOpt{
		now:       func() time.Time { return now },
		fake:      fakecrm.AmoOptions{RateLimit: 1, RateBurst: 1, BlockAfter: 1, BlockFor: time.Hour, PlainForbidden: true},
		mutate:    func(c *Config) { c.RateLimit = 50 },
		longLived: true,
	})
	checks := e.a.Probe(context.Background())
	for _, c := range checks {
		if c.Name == "rate limit" {
			if c.OK || !strings.Contains(c.Detail, "sending resumes in 10m0s") {
				t.Fatalf("rate limit check %+v, want sending resumes in 10m0s", c)
			}
			return
		}
	}
	t.Fatalf("no rate limit check: %+v", checks)
}

func TestUnpaidAccountKeepsCallsQueued(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	e.fake.SetUnpaid("romashka", true)
	err := e.a.Deliver(context.Background(), answered(1))
	if c, d := crm.Classify(err); c != crm.ClassRateLimited || d < time.Minute || !strings.Contains(err.Error(), "subscription") {
		t.Fatalf("unpaid: %v (%v %v)", err, c, d)
	}
}

// A task whose creation answer was lost (state still pending) is found by its marker, not
// created twice.
func TestMissedCallTaskFoundAfterLostAnswer(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	r := recordFromMeta(t, "inbound_missed", "101")
	e.deliver(r)
	if err := e.store.Set(context.Background(), r.Key(), fieldTask, "pending"); err != nil {
		t.Fatal(err)
	}
	e.deliver(r)
	st := e.state()
	if len(st.Tasks) != 1 || count(st.Requests, "GET /api/v4/tasks") != 1 {
		t.Fatalf("tasks %+v, requests %v", st.Tasks, st.Requests)
	}
	if v, _, _ := e.store.Get(context.Background(), r.Key(), fieldTask); v != "done:"+strconv.FormatInt(st.Tasks[0].ID, 10) {
		t.Fatalf("task state %q", v)
	}
	if n := testutil.ToFloat64(e.a.m.tasks.WithLabelValues("found")); n != 1 {
		t.Fatalf("found = %v", n)
	}
}

func TestProbe(t *testing.T) {
	e := newEnv(t, TypeKommo, envOpt{mutate: func(c *Config) { c.Users["104"] = 999 }})
	checks := e.a.Probe(context.Background())
	got := map[string]crm.Check{}
	for _, c := range checks {
		got[c.Name] = c
		if c.Detail == "" {
			t.Errorf("check %s has no detail", c.Name)
		}
	}
	if c := got["authorisation"]; !c.OK || !strings.Contains(c.Detail, "account id 28805383") {
		t.Fatalf("authorisation %+v", c)
	}
	if c := got["user mapping"]; c.OK || !strings.Contains(c.Detail, "extension 104 → user 999 does not exist") {
		t.Fatalf("user mapping %+v", c)
	}
	if c := got["recordings"]; !c.OK {
		t.Fatalf("recordings %+v", c)
	}
	if c := got["click-to-call"]; !c.OK {
		t.Fatalf("click-to-call %+v", c)
	}
	// Not authorised: the probe says how to fix it.
	n := newEnv(t, TypeAmoCRM, envOpt{noAuth: true})
	checks = n.a.Probe(context.Background())
	if len(checks) != 2 || checks[1].OK || !strings.Contains(checks[1].Detail, "pbxbridge crm auth amo --code") {
		t.Fatalf("unauthorised probe %+v", checks)
	}
}

// userName is the name the adapter's directory gives ext's user.
func userName(a crm.UserDirectory, ext string) string {
	users, _ := a.Users(context.Background())
	return crm.NameOf(users, ext)
}
