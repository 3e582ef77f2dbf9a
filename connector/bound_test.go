package connector

import (
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk"
)

// A hostile or broken PBX peer sends 5,000-digit numbers, endless names and huge variables: each
// field is cut to its limit at a character boundary, and each cut is counted by kind.
func TestBoundEvent(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("9", 5000)
	name := strings.Repeat("Я", 100) // 2 bytes each: cut at a rune boundary
	ev := asterisk.Event{
		Chan:     asterisk.Channel{Name: strings.Repeat("x", 3000), CallerIDNum: long, CallerIDName: name, Exten: long},
		Peer:     asterisk.Channel{ConnectedNum: long, ConnectedName: "Ivan"},
		Value:    strings.Repeat("v", 2000),
		Vars:     map[string]string{"FROM_DID": long, "SHORT": "+74951112233"},
		Transfer: &asterisk.Transfer{Exten: long},
	}
	cuts := map[string]int{}
	boundEvent(&ev, func(kind string) { cuts[kind]++ })
	for what, got := range map[string]int{
		"chan number": len(ev.Chan.CallerIDNum), "chan exten": len(ev.Chan.Exten), "peer connected": len(ev.Peer.ConnectedNum),
		"transfer exten": len(ev.Transfer.Exten),
	} {
		if got != maxNumberLen {
			t.Errorf("%s: %d bytes, want %d", what, got, maxNumberLen)
		}
	}
	if n := len(ev.Chan.CallerIDName); n > maxNameLen || !strings.HasPrefix(name, ev.Chan.CallerIDName) || n%2 != 0 {
		t.Errorf("name cut to %d bytes (%q): want at most %d on a character boundary", n, ev.Chan.CallerIDName, maxNameLen)
	}
	if len(ev.Chan.Name) != maxValueLen || len(ev.Value) != maxValueLen || len(ev.Vars["FROM_DID"]) != maxValueLen {
		t.Errorf("values: name %d, value %d, var %d bytes", len(ev.Chan.Name), len(ev.Value), len(ev.Vars["FROM_DID"]))
	}
	if ev.Vars["SHORT"] != "+74951112233" || ev.Peer.ConnectedName != "Ivan" {
		t.Error("short fields were changed")
	}
	if cuts["number"] != 4 || cuts["name"] != 1 || cuts["value"] != 3 {
		t.Errorf("cuts %v, want number 4, name 1, value 3", cuts)
	}
}
