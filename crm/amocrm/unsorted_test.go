package amocrm

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fromNumber is an inbound call from number, answered by 101, the i-th of the test.
func fromNumber(i int, number string) *call.Record {
	r := answered(500 + i)
	r.Customer = number
	return r
}

// notesWithUniq returns the client-added notes that carry uniq.
func notesWithUniq(st fakecrm.AmoAccountState, uniq string) []fakecrm.AmoNote {
	var out []fakecrm.AmoNote
	for _, n := range st.Notes {
		var p struct {
			Uniq string `json:"uniq"`
		}
		if !n.FromCall && json.Unmarshal(n.Params, &p) == nil && p.Uniq == uniq {
			out = append(out, n)
		}
	}
	return out
}

// A repeat caller whose first call became an incoming lead is logged on that lead (a call_in
// note), never refused again and never made a second incoming lead; once the lead is accepted
// (its contact visible) the call goes to POST /api/v4/calls; once declined, the number is new.
func TestRepeatCallerOfAnIncomingLead(t *testing.T) {
	clk := &clock{t: time.Now()}
	e := newEnv(t, TypeAmoCRM, envOpt{now: clk.now})
	const number = "+79990000001"
	first := fromNumber(1, number)
	e.deliver(first)
	st := e.state()
	if len(st.Unsorted) != 1 || len(st.Calls) != 0 {
		t.Fatalf("first call: unsorted %d, calls %d", len(st.Unsorted), len(st.Calls))
	}
	u := st.Unsorted[0]
	refused := st.Requests["POST /api/v4/calls"]
	listed := st.Requests["GET /api/v4/leads/unsorted"] // the first unknown call looked for one
	if listed != 1 {
		t.Fatalf("the first call listed Incoming %d times, want 1", listed)
	}

	// The second and third calls: notes on the incoming lead, no calls request, no new lead.
	for i := 2; i <= 3; i++ {
		r := fromNumber(i, number)
		e.deliver(r)
		st = e.state()
		if len(st.Unsorted) != 1 || st.Requests["POST /api/v4/calls"] != refused {
			t.Fatalf("call %d: unsorted %d, calls requests %d (was %d)", i, len(st.Unsorted), st.Requests["POST /api/v4/calls"], refused)
		}
		notes := notesWithUniq(st, r.Key())
		if len(notes) != 1 || notes[0].EntityType != "leads" || notes[0].EntityID != u.LeadID || notes[0].NoteType != "call_in" {
			t.Fatalf("call %d: notes %+v, want one call_in on lead %d", i, notes, u.LeadID)
		}
		if e.fake.Logged(r.Key()) != 1 {
			t.Fatalf("call %d logged %d times", i, e.fake.Logged(r.Key()))
		}
		if v, _, _ := e.store.Get(context.Background(), r.Key(), fieldCall); v != "unsorted:"+u.UID+":"+strconv.FormatInt(u.LeadID, 10) {
			t.Fatalf("call %d: state %q", i, v)
		}
	}
	// Within unsortedRecheck nothing asked whether the lead still waits.
	if n := st.Requests["GET /api/v4/leads/unsorted"] - listed; n != 0 {
		t.Fatalf("%d look-ups of the incoming lead within %v", n, unsortedRecheck)
	}

	// Accepted: after unsortedRecheck the adapter sees it left Incoming; the contact is
	// visible, so the call is logged with POST /api/v4/calls.
	if err := e.fake.AcceptUnsorted("romashka", u.UID); err != nil {
		t.Fatal(err)
	}
	clk.add(unsortedRecheck + time.Minute)
	r := fromNumber(4, number)
	e.deliver(r)
	st = e.state()
	if len(st.Calls) != 1 || st.Calls[0].Uniq != r.Key() || st.Calls[0].EntityType != "lead" || st.Calls[0].EntityID != u.LeadID {
		t.Fatalf("after acceptance: calls %+v", st.Calls)
	}
	if st.Requests["GET /api/v4/leads/unsorted"] != listed+1 || len(st.Unsorted) != 1 {
		t.Fatalf("after acceptance: %d look-ups, %d incoming leads", st.Requests["GET /api/v4/leads/unsorted"]-listed, len(st.Unsorted))
	}
	if fs := e.fake.State(); fs.Violations != 0 {
		t.Fatalf("violations: %v", fs.ViolationList)
	}
}

// Declined: the next call after unsortedRecheck is a new unknown number: a new incoming lead.
func TestRepeatCallerOfADeclinedLead(t *testing.T) {
	clk := &clock{t: time.Now()}
	e := newEnv(t, TypeAmoCRM, envOpt{now: clk.now})
	const number = "+79990000002"
	e.deliver(fromNumber(1, number))
	u := e.state().Unsorted[0]
	if err := e.fake.DeclineUnsorted("romashka", u.UID); err != nil {
		t.Fatal(err)
	}
	clk.add(unsortedRecheck + time.Minute)
	e.deliver(fromNumber(2, number))
	st := e.state()
	if len(st.Unsorted) != 2 || st.Unsorted[1].UID == u.UID {
		t.Fatalf("after decline: incoming leads %+v", st.Unsorted)
	}
	// And the third call goes on the new one.
	r := fromNumber(3, number)
	e.deliver(r)
	if notes := notesWithUniq(e.state(), r.Key()); len(notes) != 1 || notes[0].EntityID != e.state().Unsorted[1].LeadID {
		t.Fatalf("third call: notes %+v", notes)
	}
}

// Two calls from a new number delivered at once make one incoming lead, and the other call is
// a note on it; an incoming lead the adapter did not make (its call store lost) is found by
// listing Incoming, not duplicated.
func TestRepeatCallerConcurrentAndForgotten(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{})
	const number = "+79990000003"
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i := 1; i <= 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.a.Deliver(context.Background(), fromNumber(i, number))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := e.state()
	if len(st.Unsorted) != 1 {
		t.Fatalf("two concurrent calls made %d incoming leads", len(st.Unsorted))
	}
	for i := 1; i <= 2; i++ {
		if n := e.fake.Logged(fromNumber(i, number).Key()); n != 1 {
			t.Fatalf("call %d logged %d times", i, n)
		}
	}
	// A restart that lost the call store: the incoming lead is found by listing Incoming.
	listed := st.Requests["GET /api/v4/leads/unsorted"]
	e.store = newMemStore()
	e.a = e.open()
	r := fromNumber(3, number)
	e.deliver(r)
	st = e.state()
	if len(st.Unsorted) != 1 || len(notesWithUniq(st, r.Key())) != 1 || st.Requests["GET /api/v4/leads/unsorted"] != listed+1 {
		t.Fatalf("after losing the call store: %d incoming leads, %d notes, %d listings", len(st.Unsorted), len(notesWithUniq(st, r.Key())), st.Requests["GET /api/v4/leads/unsorted"]-listed)
	}
	// An outbound call to the number goes on the same lead (call_out), not a new contact.
	out := fromNumber(4, number)
	out.Direction = call.Outbound
	out.CallerExt = "102"
	e.deliver(out)
	st = e.state()
	notes := notesWithUniq(st, out.Key())
	if len(notes) != 1 || notes[0].NoteType != "call_out" || len(st.Unsorted) != 1 {
		t.Fatalf("outbound to the number: notes %+v, incoming leads %d, contacts %d", notes, len(st.Unsorted), len(st.Contacts))
	}
	if fs := e.fake.State(); fs.Violations != 0 {
		t.Fatalf("violations: %v", fs.ViolationList)
	}
}

// FuzzParseUnsortedRef: what the call store holds for a number parses back, or is refused,
// without a panic.
func FuzzParseUnsortedRef(f *testing.F) {
	f.Add(unsortedRef{UID: "98fb033cefde", Lead: 1000, Contact: 1001, Checked: time.Unix(1795305600, 0)}.String())
	f.Add("")
	f.Add("x:0:0:0")
	f.Add("a:b:c:d:e")
	f.Fuzz(func(t *testing.T, s string) {
		ref, ok := parseUnsortedRef(s)
		if !ok {
			return
		}
		if ref.Lead <= 0 || ref.UID == "" {
			t.Fatalf("accepted %q as %+v", s, ref)
		}
		if again, ok := parseUnsortedRef(ref.String()); !ok || again != ref {
			t.Fatalf("%q → %+v → %q → %+v", s, ref, ref.String(), again)
		}
	})
}
