package licensing

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzStateKey is the HMAC key of the committed FuzzDecodeMemory corpus.
var fuzzStateKey = StateKey(RawFactors{FactorMachineID: "fuzz", FactorInstallID: "fuzz"})

func memorySeeds(tb testing.TB) map[string][]byte {
	tb.Helper()
	st := newMemory()
	st.HWM = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	st.Revs["L-1"] = 4
	st.Seq = 2
	st.Revoked["L-0"] = 7
	st.RevokedKIDs = []string{"k4.pid.x"}
	st.OverSince["b24"] = time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC)
	st.Last["b24"] = LastToken{LID: "L-1", Rev: 4}
	full, err := encodeMemory(fuzzStateKey, st)
	if err != nil {
		tb.Fatal(err)
	}
	mirror, err := encodeMemory(mirrorKey(fuzzStateKey), st)
	if err != nil {
		tb.Fatal(err)
	}
	empty, err := encodeMemory(fuzzStateKey, newMemory())
	if err != nil {
		tb.Fatal(err)
	}
	return map[string][]byte{
		"valid-full":  full,
		"valid-empty": empty,
		"mirror-key":  mirror, // a mirror blob is not a state file
		"bad-mac":     []byte(`{"state":"{\"v\":1}","mac":"00"}`),
		"not-json":    []byte("garbage"),
		"empty":       nil,
	}
}

// FuzzDecodeMemory fuzzes the decoder of the state file and of mirror blobs (the mirror comes
// from another store, the daemon's database): no panic, a failure is always ErrStateTampered with
// an empty memory, and an accepted memory re-encodes to an equal one that merges with itself
// unchanged.
func FuzzDecodeMemory(f *testing.F) {
	for _, seed := range memorySeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMemory(fuzzStateKey, data)
		if m == nil {
			t.Fatal("nil memory")
		}
		if err != nil {
			if !stateEqual(m, newMemory()) {
				t.Fatalf("non-empty memory with an error: %v", err)
			}
			return
		}
		again, err := encodeMemory(fuzzStateKey, m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := decodeMemory(fuzzStateKey, again)
		if err != nil || !stateEqual(m, m2) {
			t.Fatalf("re-encoded memory differs: %v", err)
		}
		if !stateEqual(mergeMemory(m, m2), m) {
			t.Fatal("merging a memory with itself changed it")
		}
	})
}

// TestMemorySeedCorpus checks the seeds and, with PBXBRIDGE_UPDATE_CORPUS=1, rewrites the committed
// corpus in testdata/fuzz/FuzzDecodeMemory.
func TestMemorySeedCorpus(t *testing.T) {
	for name, data := range memorySeeds(t) {
		_, err := decodeMemory(fuzzStateKey, data)
		if (err == nil) != (name == "valid-full" || name == "valid-empty") {
			t.Errorf("%s: %v", name, err)
		}
		if os.Getenv("PBXBRIDGE_UPDATE_CORPUS") == "" {
			continue
		}
		dir := filepath.Join("testdata", "fuzz", "FuzzDecodeMemory")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
