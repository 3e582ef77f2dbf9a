package licensing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing/internal/owner"
)

// StateFile is the name of the licence state file in the daemon's state directory.
const StateFile = "license-state.json"

// Memory is the persisted licensing memory (§3.10): anti-rollback revisions, revocations, the time
// high-water mark, overage windows and which token each connector ran last.
type Memory struct {
	V           int                  `json:"v"`
	HWM         time.Time            `json:"hwm"`
	Revs        map[string]int       `json:"revs,omitempty"`         // lid -> highest rev seen
	Seq         int64                `json:"seq,omitempty"`          // highest revocation seq applied
	Revoked     map[string]int       `json:"revoked,omitempty"`      // lid -> highest revoked rev
	RevokedKIDs []string             `json:"revoked_kids,omitempty"` // kids listed by revocation tokens
	OverSince   map[string]time.Time `json:"over_since,omitempty"`   // connector -> first time over its seat limit
	Last        map[string]LastToken `json:"last,omitempty"`         // connector -> token selected last
}

// LastToken records which token a connector instance ran.
type LastToken struct {
	LID string `json:"lid"`
	Rev int    `json:"rev"`
}

func newMemory() *Memory {
	return &Memory{V: 1, Revs: map[string]int{}, Revoked: map[string]int{}, OverSince: map[string]time.Time{}, Last: map[string]LastToken{}}
}

func (s *Memory) clone() *Memory {
	c := *s
	c.Revs = maps.Clone(s.Revs)
	c.Revoked = maps.Clone(s.Revoked)
	c.RevokedKIDs = slices.Clone(s.RevokedKIDs)
	c.OverSince = maps.Clone(s.OverSince)
	c.Last = maps.Clone(s.Last)
	return &c
}

func (s *Memory) fill() {
	if s.Revs == nil {
		s.Revs = map[string]int{}
	}
	if s.Revoked == nil {
		s.Revoked = map[string]int{}
	}
	if s.OverSince == nil {
		s.OverSince = map[string]time.Time{}
	}
	if s.Last == nil {
		s.Last = map[string]LastToken{}
	}
}

// MaxRev implements RollbackState.
func (s *Memory) MaxRev(lid string) int { return s.Revs[lid] }

// RevokedRev implements RollbackState.
func (s *Memory) RevokedRev(lid string) int { return s.Revoked[lid] }

// KIDRevoked implements RollbackState.
func (s *Memory) KIDRevoked(kid string) bool { return slices.Contains(s.RevokedKIDs, kid) }

// MaxSeq implements RollbackState.
func (s *Memory) MaxSeq() int64 { return s.Seq }

// stateEnvelope is the file format: the state's exact JSON text (as a string, so that no
// re-encoding can change the authenticated bytes) and its HMAC.
type stateEnvelope struct {
	State string `json:"state"`
	MAC   string `json:"mac"`
}

// StateKey derives the host-keyed HMAC key of the state file from raw (never HMAC'd) host
// factors: tamper-evident, not tamper-proof. A state file copied to another host fails its check.
func StateKey(raw RawFactors) []byte {
	h := sha256.New()
	h.Write([]byte("pbxbridge-license-state:v1\x00"))
	h.Write([]byte(raw[FactorMachineID] + "\x00" + raw[FactorInstallID]))
	return h.Sum(nil)
}

// ErrStateTampered means the state file exists but its HMAC does not verify.
var ErrStateTampered = errors.New("licence state file failed its integrity check")

// LoadMemory reads the state file at path. A missing file gives an empty state and no error; a
// file that fails its HMAC or does not parse gives an empty state and ErrStateTampered (the
// caller logs it and falls back to the signed inputs).
func LoadMemory(path string, key []byte) (*Memory, error) {
	data, err := readStateFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newMemory(), nil
	}
	if err != nil {
		return newMemory(), err
	}
	return decodeMemory(key, data)
}

// readStateFile reads at most maxStateSize+1 bytes of path.
func readStateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("reading licence state: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading licence state: %w", err)
	}
	return data, nil
}

// maxStateSize bounds an encoded state (file or mirror blob).
const maxStateSize = 1 << 20

// decodeMemory checks and parses an encoded state. Any failure gives an empty state and an error
// wrapping ErrStateTampered.
func decodeMemory(key, data []byte) (*Memory, error) {
	if len(data) > maxStateSize {
		return newMemory(), fmt.Errorf("%w: larger than 1 MiB", ErrStateTampered)
	}
	var env stateEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		return newMemory(), fmt.Errorf("%w: %w", ErrStateTampered, err)
	}
	want := mac(key, []byte(env.State))
	got, err := hex.DecodeString(env.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return newMemory(), ErrStateTampered
	}
	st := newMemory()
	if err := json.Unmarshal([]byte(env.State), st); err != nil || st.V != 1 {
		return newMemory(), fmt.Errorf("%w: bad state", ErrStateTampered)
	}
	st.fill()
	return st, nil
}

// encodeMemory renders st with its HMAC under key.
func encodeMemory(key []byte, st *Memory) ([]byte, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(stateEnvelope{State: string(raw), MAC: hex.EncodeToString(mac(key, raw))}, "", " ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// SaveMemory writes the state atomically (temporary file, fsync, rename).
func SaveMemory(path string, key []byte, st *Memory) error {
	data, err := encodeMemory(key, st)
	if err != nil {
		return err
	}
	if err := owner.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("saving licence state: %w", err)
	}
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("saving licence state: %w", err)
	}
	return nil
}

func mac(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// writeFileAtomic writes data to a temporary file in path's directory, syncs it and renames it
// over path, so readers see the old or the new content, never a mix. Run as root in a directory
// owned by another user (the CLI under sudo, in the service user's state directory), the file is
// given to that user before it appears, so the service can always read and replace it.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // fails harmlessly after a successful rename
	if err := owner.File(f, dir); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

var _ RollbackState = (*Memory)(nil)
