package main

import (
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

func TestParseExtensions(t *testing.T) {
	got, err := parseExtensions("101, 102=busy,103=unavailable,104=inuse")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fakepbx.Ext{
		"101": {State: ami.ExtIdle, Outcome: fakepbx.Answer},
		"102": {State: ami.ExtIdle, Outcome: fakepbx.Busy},
		"103": {State: ami.ExtUnavailable, Outcome: fakepbx.Answer},
		"104": {State: ami.ExtInUse, Outcome: fakepbx.Answer},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %+v, want %+v", k, got[k], v)
		}
	}
	if _, err := parseExtensions("101=sleepy"); err == nil {
		t.Error("unknown mode accepted")
	}
}
