package keyring

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing/internal/paseto"
)

// releaseDigest pins the compiled release keyring. If this test fails, a key was added, removed or
// changed: that must be a deliberate, reviewed release decision (update the constant in the same
// commit and say why), never a dev key slipping in.
const releaseDigest = "6d175bf34ddfe7aae6189f1c3294c8b975f442f96e943e615c92d11914646738"

func TestReleaseKeyringPinned(t *testing.T) {
	kr := Release()
	if got := kr.Digest(); got != releaseDigest {
		t.Fatalf("release keyring digest = %s, pinned %s", got, releaseDigest)
	}
	var scopes []Type
	for _, k := range kr.Keys() {
		if k.Dev {
			t.Fatalf("dev key %s in the release keyring", k.KID)
		}
		if k.Status != StatusActive {
			t.Errorf("release key %s has status %s", k.KID, k.Status)
		}
		scopes = append(scopes, k.Types...)
	}
	for _, want := range []Type{TypePaid, TypeNFR, TypeTrial, TypeRevocation, TypeDemo} {
		if !slices.Contains(scopes, want) {
			t.Errorf("no release key may sign %s tokens", want)
		}
	}
	// The demo key signs nothing but demo tokens, and no other key signs demo tokens.
	for _, k := range kr.Keys() {
		if k.Allows(TypeDemo) && len(k.Types) != 1 {
			t.Errorf("demo key %s also signs %v", k.KID, k.Types)
		}
	}
}

// writeDevKey writes a .pub file for a fresh key into dir.
func writeDevKey(t *testing.T, dir string) Key {
	t.Helper()
	pk, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := paseto.PID(pk)
	if err != nil {
		t.Fatal(err)
	}
	k := Key{KID: kid, Public: pk, Types: []Type{TypePaid, TypeNFR}, NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Status: StatusActive}
	data, err := MarshalPub(k, ScopePaid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, kid+".pub"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDefaultDevKeyring covers both builds: without the devkeys tag PBXBRIDGE_DEV_KEYRING is
// ignored and Default is exactly the release keyring; with the tag its keys are added, marked Dev.
func TestDefaultDevKeyring(t *testing.T) {
	dir := t.TempDir()
	dev := writeDevKey(t, dir)
	t.Setenv(DevKeyringEnv, dir)
	kr, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	got, found := kr.Lookup(dev.KID)
	if !DevBuild {
		if found {
			t.Fatal("a build without the devkeys tag trusted a key from PBXBRIDGE_DEV_KEYRING")
		}
		if kr.Digest() != releaseDigest {
			t.Fatalf("Default() differs from the pinned release keyring without the devkeys tag")
		}
		return
	}
	if !found || !got.Dev || !got.Public.Equal(dev.Public) {
		t.Fatalf("devkeys build: dev key not loaded (found=%v dev=%v)", found, got.Dev)
	}
	if len(kr.Keys()) != len(Release().Keys())+1 {
		t.Fatalf("devkeys build: %d keys", len(kr.Keys()))
	}
}

func TestDefaultDevKeyringBadDir(t *testing.T) {
	t.Setenv(DevKeyringEnv, filepath.Join(t.TempDir(), "missing"))
	_, err := Default()
	if DevBuild && err == nil {
		t.Fatal("devkeys build: a missing dev keyring directory must be an error")
	}
	if !DevBuild && err != nil {
		t.Fatalf("release build must ignore the variable, got %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	pk, _, _ := ed25519.GenerateKey(rand.Reader)
	kid, _ := paseto.PID(pk)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	good := Key{KID: kid, Public: pk, Types: []Type{TypeTrial}, Status: StatusActive}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
	cases := map[string]Key{
		"kid of another key": {KID: kid, Public: other, Types: []Type{TypeTrial}, Status: StatusActive},
		"no scopes":          {KID: kid, Public: pk, Status: StatusActive},
		"unknown type":       {KID: kid, Public: pk, Types: []Type{"enterprise"}, Status: StatusActive},
		"unknown status":     {KID: kid, Public: pk, Types: []Type{TypeTrial}, Status: "frozen"},
		"short key":          {KID: kid, Public: pk[:31], Types: []Type{TypeTrial}, Status: StatusActive},
		"inverted window": {KID: kid, Public: pk, Types: []Type{TypeTrial}, Status: StatusActive,
			NotBefore: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for name, k := range cases {
		if _, err := New(k); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(good, good); err == nil {
		t.Error("duplicate kid accepted")
	}
}

func TestWindowAndPubRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k := writeDevKey(t, dir)
	keys, err := LoadPubDir(dir)
	if err != nil || len(keys) != 1 || keys[0].KID != k.KID || !keys[0].NotBefore.Equal(k.NotBefore) {
		t.Fatalf("LoadPubDir = %+v, %v", keys, err)
	}
	if k.InWindow(k.NotBefore.Add(-time.Second)) || !k.InWindow(k.NotBefore) {
		t.Fatal("window start wrong")
	}
	k.NotAfter = k.NotBefore.Add(time.Hour)
	if k.InWindow(k.NotAfter.Add(time.Second)) || !k.InWindow(k.NotAfter) {
		t.Fatal("window end wrong")
	}
	if _, err := ParsePub([]byte(`{"kid":"x","public":"k4.public.AAAA","extra":1}`)); err == nil {
		t.Fatal("unknown field accepted")
	}
}
