package amocrm

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/amocrm/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// TestCallStatus: call_status by disposition, and of a failed call by every cause the mapping
// names (docs/crm-apis.md Part D and D.1).
func TestCallStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		disp  call.Disposition
		cause int
		flags []string
		want  int
	}{
		{"answered", call.Answered, 16, nil, api.StatusTalked},
		{"no answer", call.NoAnswer, 19, nil, api.StatusNoAnswer},
		{"cancelled while ringing", call.NoAnswer, 16, nil, api.StatusNoAnswer},
		{"no answer whatever the cause", call.NoAnswer, 3, nil, api.StatusNoAnswer},
		{"busy", call.Busy, 17, nil, api.StatusBusy},
		{"voicemail", call.NoAnswer, 16, []string{call.FlagVoicemail}, api.StatusVoicemail},
		{"failed, unallocated number", call.Failed, 1, nil, api.StatusWrongNumber},
		{"failed, no route to destination (CHANUNAVAIL)", call.Failed, 3, nil, api.StatusNotAvailable},
		{"failed, normal clearing (no dial)", call.Failed, 16, nil, api.StatusNoAnswer},
		{"failed, busy", call.Failed, 17, nil, api.StatusBusy},
		{"failed, no user responding", call.Failed, 18, nil, api.StatusNotAvailable},
		{"failed, no answer", call.Failed, 19, nil, api.StatusNoAnswer},
		{"failed, subscriber absent", call.Failed, 20, nil, api.StatusNotAvailable},
		{"failed, call rejected", call.Failed, 21, nil, api.StatusNotAvailable},
		{"failed, destination out of order", call.Failed, 27, nil, api.StatusNotAvailable},
		{"failed, invalid number format", call.Failed, 28, nil, api.StatusWrongNumber},
		{"failed, congestion", call.Failed, 34, nil, api.StatusNoAnswer},
		{"failed, network out of order", call.Failed, 38, nil, api.StatusNotAvailable},
		{"failed, no cause", call.Failed, 0, nil, api.StatusNoAnswer},
		{"failed, a cause nobody lists", call.Failed, 99, nil, api.StatusNotAvailable},
	} {
		rec := &call.Record{Disposition: tc.disp, HangupCause: tc.cause, Flags: tc.flags}
		if got := callStatus(rec); got != tc.want {
			t.Errorf("%s (cause %d): call_status %d, want %d", tc.name, tc.cause, got, tc.want)
		}
	}
}

// TestCallStatusByCauseFollowsTheDoc reads the table of docs/crm-apis.md Part D.1 and checks
// every cause it names, so that the document and the code cannot drift apart.
func TestCallStatusByCauseFollowsTheDoc(t *testing.T) {
	t.Parallel()
	f, err := os.Open(filepath.Join("..", "..", "docs", "crm-apis.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	in, rows := false, 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## D.1 "):
			in = true
			continue
		case !in:
			continue
		case strings.HasPrefix(line, "#"):
			in = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), "|")
		if len(cells) != 4 {
			continue
		}
		cause, err := strconv.Atoi(strings.TrimSpace(cells[0]))
		if err != nil {
			continue // the header and its rule
		}
		want, err := strconv.Atoi(strings.Trim(strings.TrimSpace(cells[3]), "`"))
		if err != nil {
			t.Fatalf("D.1 row %q: call_status %q", line, cells[3])
		}
		rows++
		rec := &call.Record{Direction: call.Outbound, Disposition: call.Failed, HangupCause: cause}
		if got := callStatus(rec); got != want {
			t.Errorf("cause %d (%s): call_status %d, the document says %d", cause, strings.TrimSpace(cells[1]), got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if rows < 15 {
		t.Fatalf("only %d rows read from docs/crm-apis.md Part D.1", rows)
	}
}

// An outbound call to an unavailable channel (cause 3: no route to destination) is logged as
// "not available" (3), not "no answer"; an IVR abandon (no extension rang) is logged under
// default_user.
func TestCallItemUnavailableAndDefaultUser(t *testing.T) {
	e := newEnv(t, TypeAmoCRM, envOpt{longLived: true})
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	unavailable := &call.Record{CallID: "1795305800.1", PBX: "lab", Direction: call.Outbound, Customer: "+79001234567",
		StartedAt: start, EndedAt: start.Add(time.Second), Disposition: call.Failed, HangupCause: 3, CallerExt: "102"}
	ivr := &call.Record{CallID: "1795305800.2", PBX: "lab", Direction: call.Inbound, Customer: "+79001234567", Line: "+74951112233",
		StartedAt: start, EndedAt: start.Add(9 * time.Second), Disposition: call.NoAnswer, HangupCause: 16,
		Flags: []string{call.FlagIVRAbandoned}}
	e.deliver(unavailable)
	e.deliver(ivr)
	calls := e.state().Calls
	if len(calls) != 2 {
		t.Fatalf("calls %+v", calls)
	}
	byUniq := map[string]int{}
	for i, c := range calls {
		byUniq[c.Uniq] = i
	}
	u := calls[byUniq[unavailable.Key()]]
	if u.CallStatus != api.StatusNotAvailable || string(u.CallResponsible) != "504142" {
		t.Errorf("unavailable outbound call: status %d, responsible %s", u.CallStatus, u.CallResponsible)
	}
	c := calls[byUniq[ivr.Key()]]
	if c.CallStatus != api.StatusNoAnswer || string(c.CallResponsible) != "504143" || c.ResponsibleUserID != 504143 || c.CreatedBy != 504143 {
		t.Errorf("IVR abandon: status %d, call_responsible %s, responsible_user_id %d, created_by %d; want default_user 504143",
			c.CallStatus, c.CallResponsible, c.ResponsibleUserID, c.CreatedBy)
	}
}
