package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// PBXName is the name of the simulated PBX in the daemon's config: record keys are
// "lab/<call id>".
const PBXName = "lab"

// extChannel recognises an extension's device channel in the lab transcripts (connector.LabCalls).
var extChannel = regexp.MustCompile(`^Local/(\d+)@phones-[0-9a-f]+;1$`)

// Expected holds what each scenario must produce (connector/callmodel/testdata/<scenario>/
// expected.jsonl, derived from what really happened on the recording PBX): its records by the
// transcript's call id.
type Expected map[string]map[string]call.Record

// LoadExpected reads the expected records of every scenario under dir.
func LoadExpected(dir string) (Expected, error) {
	out := Expected{}
	files, err := filepath.Glob(filepath.Join(dir, "*", "expected.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("loadtest: expected records: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("loadtest: no */expected.jsonl under %s (run from the repository root or give the callmodel testdata directory)", dir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("loadtest: expected records: %w", err)
		}
		recs := map[string]call.Record{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r call.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return nil, fmt.Errorf("loadtest: %s: %w", f, err)
			}
			recs[r.CallID] = r
		}
		out[filepath.Base(filepath.Dir(f))] = recs
	}
	return out, nil
}

// CallTrace is what the simulated PBX did in one replayed call.
type CallTrace struct {
	Call     *fakepbx.Call
	Scenario string
	// First and Last are when its first and last events were sent.
	First, Last time.Time
	// Rings are the extensions that started ringing, each with the time of its first
	// DialBegin, in order.
	Rings []Ring
	// Answers are the extensions whose device entered a bridge (talked), each with the time of
	// its first BridgeEnter, in order.
	Answers []Ring
	// Hangup is when its last Hangup event was sent; HangupSeen whether a client received it.
	Hangup     time.Time
	HangupSeen bool
	// Events counts its events; Unseen those that reached no client (the daemon was
	// disconnected or dead).
	Events, Unseen int
	// FirstSeen and LastSeen are the first and last events a client received (zero if none).
	FirstSeen, LastSeen time.Time
}

// Ring is one extension starting to ring.
type Ring struct {
	Ext      string
	At       time.Time
	Linkedid string
}

// PBX is a simulated PBX whose call events are traced.
type PBX struct {
	*fakepbx.Server

	mu     sync.Mutex
	traces map[*fakepbx.Call]*CallTrace
}

// StartPBX starts a simulated PBX replaying at speed (1 = real time).
func StartPBX(cfg fakepbx.Config) (*PBX, error) {
	p := &PBX{traces: map[*fakepbx.Call]*CallTrace{}}
	cfg.OnEvent = p.onEvent
	srv, err := fakepbx.Start(cfg)
	if err != nil {
		return nil, err
	}
	p.Server = srv
	return p, nil
}

func (p *PBX) onEvent(ev fakepbx.EmittedEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.traces[ev.Call]
	if t == nil {
		t = &CallTrace{Call: ev.Call, Scenario: ev.Call.Scenario, First: ev.At}
		p.traces[ev.Call] = t
	}
	t.Last = ev.At
	t.Events++
	if ev.Clients == 0 {
		t.Unseen++
	} else {
		if t.FirstSeen.IsZero() {
			t.FirstSeen = ev.At
		}
		t.LastSeen = ev.At
	}
	switch ev.Event {
	case "Hangup":
		t.Hangup, t.HangupSeen = ev.At, ev.Clients > 0
	case "BridgeEnter":
		m := extChannel.FindStringSubmatch(ev.Channel)
		if m == nil {
			return
		}
		for _, r := range t.Answers {
			if r.Ext == m[1] {
				return
			}
		}
		t.Answers = append(t.Answers, Ring{Ext: m[1], At: ev.At, Linkedid: ev.Linkedid})
	case "DialBegin":
		m := extChannel.FindStringSubmatch(ev.DestChannel)
		if m == nil {
			return
		}
		for _, r := range t.Rings {
			if r.Ext == m[1] && r.Linkedid == ev.Linkedid {
				return
			}
		}
		t.Rings = append(t.Rings, Ring{Ext: m[1], At: ev.At, Linkedid: ev.Linkedid})
	}
}

// Traces returns the traces of every call replayed so far, in order of their first event.
func (p *PBX) Traces() []CallTrace {
	p.mu.Lock()
	out := make([]CallTrace, 0, len(p.traces))
	for _, t := range p.traces {
		c := *t
		c.Rings = append([]Ring(nil), t.Rings...)
		c.Answers = append([]Ring(nil), t.Answers...)
		out = append(out, c)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].First.Before(out[j].First) })
	return out
}

// Forget drops the traces of finished calls (long runs).
func (p *PBX) Forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.traces {
		select {
		case <-c.Done():
			delete(p.traces, c)
		default:
		}
	}
}

// Keys returns the record keys a replay must produce with their expected records (the
// scenario's expected records, under the replay's fresh call ids).
func (e Expected) Keys(t *CallTrace) map[string]call.Record {
	out := map[string]call.Record{}
	for orig, r := range e[t.Scenario] {
		id := t.Call.MapID(orig)
		if id == "" {
			continue
		}
		r.CallID = id
		out[PBXName+"/"+id] = r
	}
	return out
}

// ToCRM reports whether a record is sent to the CRMs (inbound and outbound calls; internal calls
// are not, by default).
func ToCRM(r call.Record) bool {
	return r.Direction == call.Inbound || r.Direction == call.Outbound
}
