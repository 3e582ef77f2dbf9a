package ami_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

func TestOriginateClickToCall(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: 20})
	o := pbxOptions(srv)
	o.Originate = ami.OriginateOptions{Channel: "Local/{ext}@internal", Context: "pstn-out", Exten: "0{number}"}
	r := runSource(t, o)
	r.next(t, 5*time.Second, ofType(asterisk.TypeConnected))

	res, err := r.src.Originate(context.Background(), asterisk.OriginateRequest{
		Extension: "102", Number: "+79005550001", ID: "crm-42", CallerIDName: "ACME <Ltd>",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Uniqueid == "" {
		t.Error("no Uniqueid in the result")
	}
	// The call plays with the requested extension, number and originate id.
	var sawVar, sawResp, sawExt, sawNum bool
	for !sawVar || !sawResp || !sawExt || !sawNum {
		ev := r.next(t, 5*time.Second, nil)
		switch {
		case ev.Type == asterisk.TypeNewChannel && strings.HasPrefix(ev.Chan.Name, "Local/0+79005550001@"):
			sawNum = true // the customer leg dials the Exten template
		case ev.Type == asterisk.TypeVarSet && ev.Variable == ami.OriginateVariable:
			sawVar = ev.Value == "crm-42"
		case ev.Type == asterisk.TypeOriginateResponse:
			sawResp = ev.Response == "Success" && ev.Chan.Uniqueid == res.Uniqueid
		case ev.Type == asterisk.TypeNewChannel && strings.HasPrefix(ev.Chan.Name, "Local/102@"):
			sawExt = true
		case ev.Chan.CallerIDNum == "101" || strings.Contains(ev.Chan.Name, "/101@"):
			t.Fatalf("the template's extension leaked: %+v", ev.Chan)
		}
	}
}

func TestOriginateErrors(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: 50, Extensions: map[string]fakepbx.Ext{
		"201": {State: ami.ExtIdle, Outcome: fakepbx.Busy},
		"202": {State: ami.ExtIdle, Outcome: fakepbx.NoAnswer},
		"203": {State: ami.ExtIdle, Outcome: fakepbx.Congestion},
		"204": {State: ami.ExtIdle, Outcome: fakepbx.Fail},
		"205": {State: ami.ExtInUse},
		"206": {State: ami.ExtUnavailable},
		"207": {State: ami.ExtBusy},
		"208": {State: ami.ExtRinging},
	}})
	o := pbxOptions(srv)
	r := runSource(t, o)
	r.next(t, 5*time.Second, ofType(asterisk.TypeConnected))
	tests := []struct {
		ext  string
		want error
	}{
		{"999", asterisk.ErrExtensionUnknown}, // no hint
		{"201", asterisk.ErrExtensionBusy},    // OriginateResponse reason 5
		{"202", asterisk.ErrNoAnswer},         // reason 3
		{"203", asterisk.ErrExtensionUnreachable},
		{"204", asterisk.ErrExtensionUnreachable},
		{"205", asterisk.ErrExtensionBusy}, // in use
		{"206", asterisk.ErrExtensionUnreachable},
		{"207", asterisk.ErrExtensionBusy},
		{"208", asterisk.ErrExtensionBusy},
		{"10 1", asterisk.ErrExtensionUnknown}, // not an extension at all
	}
	for _, tt := range tests {
		_, err := r.src.Originate(context.Background(), asterisk.OriginateRequest{
			Extension: tt.ext, Number: "89001234567", ID: "x", Timeout: 2 * time.Second,
		})
		if !errors.Is(err, tt.want) {
			t.Errorf("ext %s: got %v, want %v", tt.ext, err, tt.want)
		}
	}
	// Input that must never reach the PBX.
	for _, req := range []asterisk.OriginateRequest{
		{Extension: "101", Number: "8900\r\nAction: Hangup"},
		{Extension: "101", Number: "89001234567", ID: "a,b"},
		{Extension: "101", Number: "89001234567", Variables: map[string]string{"X": "1\n2"}},
		{Extension: "101", Number: ""},
	} {
		if _, err := r.src.Originate(context.Background(), req); err == nil {
			t.Errorf("%+v accepted", req)
		}
	}
	// In-use agents may be allowed.
	o2 := pbxOptions(srv)
	o2.Name = "lab2"
	o2.Originate.AllowInUse = true
	r2 := runSource(t, o2)
	r2.next(t, 5*time.Second, ofType(asterisk.TypeConnected))
	srv.SetExtension("205", fakepbx.Ext{State: ami.ExtInUse, Outcome: fakepbx.Busy})
	if _, err := r2.src.Originate(context.Background(), asterisk.OriginateRequest{Extension: "205", Number: "1"}); !errors.Is(err, asterisk.ErrExtensionBusy) || !strings.Contains(err.Error(), "answered busy") {
		t.Errorf("in-use agent with AllowInUse: %v (want the phone's own busy)", err)
	}
}

func TestOriginateNotConnected(t *testing.T) {
	t.Parallel()
	src, err := ami.NewSource(ami.Options{Name: "x", Address: "127.0.0.1:1", Username: "u"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Originate(context.Background(), asterisk.OriginateRequest{Extension: "101", Number: "1"})
	if !errors.Is(err, asterisk.ErrNotConnected) {
		t.Fatalf("got %v", err)
	}
}

// TestCapture records a replay and checks that the file reads back like a transcript: banner,
// login response, events, Goodbye; and that it holds nothing we sent (the secret).
func TestCapture(t *testing.T) {
	t.Parallel()
	srv := startPBX(t, fakepbx.Config{Speed: math.Inf(1)})
	o := pbxOptions(srv)
	o.Secret = srv.Secret()
	var buf bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ami.Capture(ctx, o, &buf) }()
	// Wait for the login, then play a call.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Logins == 0 {
		if time.Now().After(deadline) {
			t.Fatal("capture never logged in")
		}
		time.Sleep(5 * time.Millisecond)
	}
	played, err := srv.Play(context.Background(), "inbound_missed")
	if err != nil {
		t.Fatal(err)
	}
	<-played.Done()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if bytes.Contains(data, []byte(o.Secret)) {
		t.Error("the capture contains the secret")
	}
	rd := ami.NewReader(bytes.NewReader(data))
	if b, err := rd.ReadBanner(); err != nil || b != "Asterisk Call Manager/11.0.0" {
		t.Fatalf("banner %q %v", b, err)
	}
	var first, last *ami.Frame
	events := 0
	for {
		f, err := rd.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = f
		}
		last = f
		if f.Event() != "" && f.Event() != "FullyBooted" {
			events++
		}
	}
	if first.Get("Message") != "Authentication accepted" {
		t.Errorf("first frame %v", first.Fields)
	}
	if last.Response() != "Goodbye" {
		t.Errorf("last frame %v, want Goodbye", last.Fields)
	}
	if want := len(expectedNames(t, "inbound_missed")); events < want {
		t.Errorf("captured %d events, want at least %d", events, want)
	}
}
