package loadtest

import (
	"fmt"
	"sort"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// Latencies is a sample of durations.
type Latencies []time.Duration

// Quantile returns the q-quantile (nearest rank), 0 for an empty sample.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// String is "p50 X, p99 Y (n)".
func (l Latencies) String() string {
	return fmt.Sprintf("p50 %s, p99 %s (n=%d)", ms(l.Quantile(0.5)), ms(l.Quantile(0.99)), len(l))
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

// Timings are the latencies of one run, per CRM connector, measured outside the daemon.
type Timings struct {
	// RingToCard: from the PBX sending a call's first DialBegin to an extension to the CRM
	// receiving the call-card request (Bitrix24 register; amoCRM pop-up).
	RingToCard map[string]Latencies
	// HangupToAck: from the PBX sending the call's last Hangup to the CRM answering the request
	// that logs the call (Bitrix24 finish; amoCRM POST /api/v4/calls, the incoming lead, or the
	// note on a repeat caller's incoming lead).
	HangupToAck map[string]Latencies
	// Requests is how many HTTP requests each CRM received in the window, Records how many
	// records were meant for it.
	Requests, Records map[string]int
	// Unmatched counts rings without a card and hangups without an ack, per connector.
	NoCard, NoAck map[string]int
	// Bitrix24 call cards (register with SHOW, show) of the calls measured: how many reached the
	// CRM, how many after the call had ended at the PBX (its last Hangup), and how many for an
	// extension after another extension of the call had answered.
	B24Cards, B24CardsAfterEnd, B24CardsAfterAnswer int
	// B24LiveRegister is when the register of each call key reached the CRM, if before the
	// call's hangup (sent while it rang).
	B24LiveRegister map[string]time.Time
	// B24Late lists the late cards (key, user, how late), for the log; B24NoAck the calls
	// Bitrix24 never got a finish for.
	B24Late, B24NoAck []string
}

// Measure computes the Timings of the calls the PBX finished between from and to, from the
// PBX's traces and the requests the proxy recorded (requests answered in [from, end] count).
func (e *Env) Measure(from, to, end time.Time) Timings {
	tm := Timings{RingToCard: map[string]Latencies{}, HangupToAck: map[string]Latencies{}, Requests: map[string]int{},
		Records: map[string]int{}, NoCard: map[string]int{}, NoAck: map[string]int{}}
	reqs := e.CRMs.Requests()
	// Bitrix24: first register per key (arrival), first successful finish per CALL_ID.
	register := map[string]time.Time{}
	finish := map[string]time.Time{}
	amoLogged := map[string]time.Time{}
	type popKey struct {
		phone string
		user  int64
	}
	popups := map[popKey][]time.Time{}
	type card struct {
		key, callID string
		user        int
		at          time.Time
	}
	var cards []card
	for _, r := range reqs {
		if !r.Answered.Before(from) && !r.Answered.After(end) {
			tm.Requests[connOf(r.CRM)]++
		}
		if r.CRM == CRMBitrix24 && r.Status == 200 {
			for _, c := range r.Cmds {
				if c.Method == "telephony.externalcall.register" {
					if _, ok := register[c.Key]; !ok {
						register[c.Key] = r.Arrived
					}
				}
				if c.Shows {
					for _, u := range c.Users {
						cards = append(cards, card{key: c.Key, callID: c.CallID, user: u, at: r.Arrived})
					}
				}
			}
		}
		switch {
		case r.CRM == CRMAmo && r.Method == "POST /api/v2/events" && r.Status == 200:
			for _, p := range r.Popups {
				for _, u := range p.Users {
					k := popKey{p.Phone, u}
					popups[k] = append(popups[k], r.Arrived)
				}
			}
		}
		if r.Status != 200 {
			continue
		}
		if r.CRM == CRMBitrix24 {
			for _, c := range r.Cmds {
				if _, ok := finish[c.CallID]; !ok && c.Method == "telephony.externalcall.finish" {
					finish[c.CallID] = r.Answered
				}
			}
		}
		if r.CRM == CRMAmo && (r.Method == "POST /api/v4/calls" || r.Method == "POST /api/v4/leads/unsorted/sip" || r.Method == "POST /api/v4/leads/notes") {
			for _, k := range r.Keys {
				if _, ok := amoLogged[k]; !ok {
					amoLogged[k] = r.Answered
				}
			}
		}
	}
	callKey := map[string]string{} // Bitrix24 CALL_ID → record key
	for _, c := range e.CRMs.B24.State().Calls {
		if c.ExternalCallID != "" {
			callKey[c.CallID] = c.ExternalCallID
		}
	}
	b24Ack := map[string]time.Time{}
	for id, at := range finish {
		if k := callKey[id]; k != "" {
			if old, ok := b24Ack[k]; !ok || at.Before(old) {
				b24Ack[k] = at
			}
		}
	}

	tm.B24LiveRegister = map[string]time.Time{}
	byKey := map[string]*CallTrace{}
	traces := e.PBX.Traces()
	for i := range traces {
		for key := range e.Expected.Keys(&traces[i]) {
			byKey[key] = &traces[i]
		}
	}
	for key, at := range register {
		if t := byKey[key]; t != nil && !t.Hangup.IsZero() && at.Before(t.Hangup) {
			tm.B24LiveRegister[key] = at
		}
	}
	userExt := map[int]string{}
	for _, u := range fakecrm.DefaultB24Users() {
		userExt[u.ID] = u.Ext
	}
	for _, c := range cards {
		key := c.key
		if key == "" {
			key = callKey[c.callID]
		}
		t := byKey[key]
		if t == nil || t.Hangup.IsZero() || t.Hangup.Before(from) || t.Hangup.After(to) {
			continue
		}
		tm.B24Cards++
		if c.at.After(t.Hangup) {
			tm.B24CardsAfterEnd++
			tm.B24Late = append(tm.B24Late, fmt.Sprintf("%s (%s) user %d %v after the hangup", key, t.Scenario, c.user, c.at.Sub(t.Hangup).Round(time.Millisecond)))
			continue
		}
		// Late for a ring group: the extension rang together with the one that answered (it
		// started ringing before that answer) and its card came after the answer. A card
		// after a transfer (the extension rang after the answer) is not late.
		var rang time.Time
		for _, r := range t.Rings {
			if r.Ext == userExt[c.user] && (rang.IsZero() || r.At.Before(rang)) {
				rang = r.At
			}
		}
		for _, a := range t.Answers {
			if a.Ext != userExt[c.user] && !rang.IsZero() && rang.Before(a.At) && c.at.After(a.At) {
				tm.B24CardsAfterAnswer++
				tm.B24Late = append(tm.B24Late, fmt.Sprintf("%s (%s) user %d %v after %s answered", key, t.Scenario, c.user, c.at.Sub(a.At).Round(time.Millisecond), a.Ext))
				break
			}
		}
	}

	conns := e.crmConnectors()
	type ring struct {
		at   time.Time
		user int64
		ph   string
	}
	var amoRings []ring
	for _, t := range traces {
		if t.Hangup.IsZero() || t.Hangup.Before(from) || t.Hangup.After(to) {
			continue
		}
		for key, rec := range e.Expected.Keys(&t) {
			if !ToCRM(rec) {
				continue
			}
			for _, c := range conns {
				tm.Records[c]++
			}
			for _, c := range conns {
				var ack time.Time
				var ok bool
				if c == ConnBitrix24 {
					ack, ok = b24Ack[key]
				} else {
					ack, ok = amoLogged[key]
				}
				if ok {
					tm.HangupToAck[c] = append(tm.HangupToAck[c], ack.Sub(t.Hangup))
				} else {
					tm.NoAck[c]++
					if c == ConnBitrix24 {
						tm.B24NoAck = append(tm.B24NoAck, key+" ("+t.Scenario+")")
					}
				}
			}
			if rec.Direction != "inbound" || len(t.Rings) == 0 {
				continue
			}
			if c := ConnBitrix24; has(conns, c) {
				if at, ok := register[key]; ok {
					tm.RingToCard[c] = append(tm.RingToCard[c], at.Sub(t.Rings[0].At))
				} else {
					tm.NoCard[c]++
				}
			}
			for _, r := range t.Rings {
				if u := amoUsers[r.Ext]; u != 0 {
					amoRings = append(amoRings, ring{r.At, u, rec.Customer})
				}
			}
		}
	}
	if has(conns, ConnAmo) {
		// Pop-ups carry no call id: a ring of (customer, user) is shown by the first pop-up for
		// them that reached amoCRM at or after the ring (pop-ups for the same number and user
		// that wait together are sent as one).
		for _, list := range popups {
			sort.Slice(list, func(i, j int) bool { return list[i].Before(list[j]) })
		}
		for _, r := range amoRings {
			list := popups[popKey{r.ph, r.user}]
			i := sort.Search(len(list), func(i int) bool { return !list[i].Before(r.at) })
			if i < len(list) {
				tm.RingToCard[ConnAmo] = append(tm.RingToCard[ConnAmo], list[i].Sub(r.at))
			} else {
				tm.NoCard[ConnAmo]++
			}
		}
	}
	return tm
}

// amoUsers is the extension → amoCRM user mapping of the harness's config.
var amoUsers = map[string]int64{"101": 504141, "102": 504142, "103": 504143}

func connOf(crmName string) string {
	if crmName == CRMBitrix24 {
		return ConnBitrix24
	}
	return ConnAmo
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
