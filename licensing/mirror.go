package licensing

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing/internal/owner"
)

// StateMirror is a second store of the licence memory (time high-water mark, anti-rollback revs,
// revocations, overage windows), kept in another file and place than <StateDir>/StateFile, so
// deleting or corrupting one copy neither resets the time floor nor forgets a revocation.
//
// The blob is opaque to the store: the Service encodes it (the memory's JSON under an HMAC keyed
// by the host, in a domain separate from the state file's) and checks it on load. It is small
// (well under MaxMirrorSize). The store keeps the last blob saved, durably: the daemon keeps it in
// a row of its outbox database.
//
// Load returns the blob saved last, or (nil, nil) when none was ever saved; any other failure is
// an error (the Service then retries at each persist and merges once it can read the blob; a
// store that is not open yet may fail in the same way). Save replaces the blob durably.
// Implementations must be safe for use from one goroutine at a time; the Service never calls them
// concurrently.
type StateMirror interface {
	Load(ctx context.Context) ([]byte, error)
	Save(ctx context.Context, blob []byte) error
}

// MaxMirrorSize bounds a mirror blob; a larger blob is treated as invalid.
const MaxMirrorSize = maxStateSize

// FileMirror is a StateMirror in a file of its own (tests, and deployments whose second store is
// simply a file on another file system). Save is atomic (temporary file, fsync, rename).
type FileMirror struct {
	Path string
}

// Load implements StateMirror.
func (m FileMirror) Load(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := readStateFile(m.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// Save implements StateMirror.
func (m FileMirror) Save(ctx context.Context, blob []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := owner.MkdirAll(filepath.Dir(m.Path), 0o750); err != nil {
		return fmt.Errorf("saving licence state mirror: %w", err)
	}
	if err := writeFileAtomic(m.Path, blob, 0o600); err != nil {
		return fmt.Errorf("saving licence state mirror: %w", err)
	}
	return nil
}

var _ StateMirror = FileMirror{}

// mirrorKey derives the mirror's HMAC key from the state key, so a blob of one copy is never
// accepted as the other.
func mirrorKey(stateKey []byte) []byte {
	m := hmac.New(sha256.New, stateKey)
	m.Write([]byte("pbxbridge-license-state-mirror:v1"))
	return m.Sum(nil)
}

// Reasons of pbxbridge_license_state_resets_total: one copy of the licence memory was missing or
// invalid at start while the other copy existed (or, for *_invalid, in any case).
const (
	ResetFileMissing   = "file_missing"
	ResetFileInvalid   = "file_invalid"
	ResetMirrorMissing = "mirror_missing"
	ResetMirrorInvalid = "mirror_invalid"
)

// copyState is the outcome of loading one copy of the memory.
type copyState int

const (
	copyOK copyState = iota
	copyMissing
	copyInvalid    // present but fails its HMAC or does not parse, or the file is unreadable
	copyUnreadable // the mirror store failed (not known to be missing or invalid)
)

// mergeMemory combines two copies into the strictest memory: the later high-water mark, the higher
// revs, seq and revocations, every revoked key, the earlier start of each overage window, and the
// token each connector ran last from a (b where a has none).
func mergeMemory(a, b *Memory) *Memory {
	out := a.clone()
	if b.HWM.After(out.HWM) {
		out.HWM = b.HWM
	}
	for lid, r := range b.Revs {
		out.Revs[lid] = max(out.Revs[lid], r)
	}
	out.Seq = max(out.Seq, b.Seq)
	for lid, r := range b.Revoked {
		out.Revoked[lid] = max(out.Revoked[lid], r)
	}
	for _, k := range b.RevokedKIDs {
		if !slices.Contains(out.RevokedKIDs, k) {
			out.RevokedKIDs = append(out.RevokedKIDs, k)
		}
	}
	for name, t := range b.OverSince {
		if cur, ok := out.OverSince[name]; !ok || t.Before(cur) {
			out.OverSince[name] = t
		}
	}
	for name, lt := range b.Last {
		if _, ok := out.Last[name]; !ok {
			out.Last[name] = lt
		}
	}
	return out
}

// loadStateLocked loads the state file and the mirror, merges them, and reports and counts a copy
// that is invalid, or missing while the other exists. Copies that differ from the merged memory are
// rewritten by the next persist (New persists at its end).
func (s *Service) loadStateLocked(ctx context.Context) {
	s.state = newMemory()
	var fileMem, mirMem *Memory
	var fileErr, mirErr error
	fileSt, mirSt := copyMissing, copyMissing
	if s.opts.StateDir != "" {
		fileMem, fileSt, fileErr = s.loadFileCopy()
	}
	if s.opts.Mirror != nil {
		mirMem, mirSt, mirErr = s.loadMirrorCopy(ctx)
		s.mirrorLoaded = mirSt != copyUnreadable
		if mirSt == copyUnreadable {
			s.log.Warn("licence state mirror unreadable; retrying at the next save", "error", mirErr)
		}
	}
	s.fileExisted = fileSt == copyOK || fileSt == copyInvalid
	if fileMem != nil {
		s.state = fileMem
	}
	if mirMem != nil {
		s.state = mergeMemory(s.state, mirMem)
	}
	filePath := filepath.Join(s.opts.StateDir, StateFile)
	if s.opts.Mirror == nil {
		if fileSt == copyInvalid {
			s.metrics.stateResets.WithLabelValues(ResetFileInvalid).Inc()
			s.log.Error("licence state ignored; the time floor falls back to the signed inputs", "file", filePath, "error", fileErr)
		}
		return
	}
	// With two copies: an invalid copy always counts as a reset, a missing one when the other
	// copy exists (both missing is a first start).
	exists := func(c copyState) bool { return c == copyOK || c == copyInvalid }
	count := func(reason, what string, err error, otherOK bool) {
		s.metrics.stateResets.WithLabelValues(reason).Inc()
		if otherOK {
			s.log.Warn(what+"; the licence memory was restored from the other copy, and both are rewritten",
				"reason", reason, "file", filePath, "error", err)
			return
		}
		s.log.Error(what+"; no valid copy of the licence memory: the time floor falls back to the signed inputs",
			"reason", reason, "file", filePath, "error", err)
	}
	switch {
	case fileSt == copyInvalid:
		count(ResetFileInvalid, "licence state ignored (state file invalid)", fileErr, mirSt == copyOK)
	case fileSt == copyMissing && s.opts.StateDir != "" && exists(mirSt):
		count(ResetFileMissing, "licence state file missing while its mirror exists (deleted?)", nil, mirSt == copyOK)
	}
	switch {
	case mirSt == copyInvalid:
		count(ResetMirrorInvalid, "licence state mirror ignored (invalid)", mirErr, fileSt == copyOK)
	case mirSt == copyMissing && exists(fileSt):
		count(ResetMirrorMissing, "licence state mirror missing while the state file exists (expected once, at the first start with a mirror)", nil, fileSt == copyOK)
	}
}

func (s *Service) loadFileCopy() (*Memory, copyState, error) {
	data, err := readStateFile(filepath.Join(s.opts.StateDir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, copyMissing, nil
	}
	if err != nil {
		return nil, copyInvalid, err
	}
	m, err := decodeMemory(s.stateKey, data)
	if err != nil {
		return nil, copyInvalid, err
	}
	return m, copyOK, nil
}

func (s *Service) loadMirrorCopy(ctx context.Context) (*Memory, copyState, error) {
	blob, err := s.opts.Mirror.Load(ctx)
	switch {
	case err != nil:
		return nil, copyUnreadable, err
	case blob == nil:
		return nil, copyMissing, nil
	}
	m, err := decodeMemory(mirrorKey(s.stateKey), blob)
	if err != nil {
		return nil, copyInvalid, err
	}
	return m, copyOK, nil
}

// persistLocked writes each copy of the memory that differs from what it holds. A mirror that
// could not be read at start is read first and merged in (and the gate re-evaluated), so a store
// that opens late never loses the memory it holds.
func (s *Service) persistLocked(ctx context.Context) {
	if s.opts.Mirror != nil && !s.mirrorLoaded {
		s.loadMirrorLateLocked(ctx)
	}
	if s.opts.StateDir != "" && !stateEqual(s.state, s.savedFile) {
		if err := SaveMemory(filepath.Join(s.opts.StateDir, StateFile), s.stateKey, s.state); err != nil {
			s.log.Warn("saving licence state", "error", err)
		} else {
			s.savedFile = s.state.clone()
		}
	}
	if s.opts.Mirror == nil || !s.mirrorLoaded || stateEqual(s.state, s.savedMirror) {
		return
	}
	blob, err := encodeMemory(mirrorKey(s.stateKey), s.state)
	if err == nil {
		err = s.opts.Mirror.Save(ctx, blob)
	}
	if err != nil {
		s.log.Warn("saving licence state mirror", "error", err)
		return
	}
	s.savedMirror = s.state.clone()
}

// loadMirrorLateLocked retries reading a mirror that was unreadable at start and merges it.
func (s *Service) loadMirrorLateLocked(ctx context.Context) {
	m, st, err := s.loadMirrorCopy(ctx)
	if st == copyUnreadable {
		return
	}
	s.mirrorLoaded = true
	switch {
	case st == copyInvalid:
		s.metrics.stateResets.WithLabelValues(ResetMirrorInvalid).Inc()
		s.log.Warn("licence state mirror ignored (invalid); rewriting it", "error", err)
	case st == copyMissing && s.fileExisted:
		s.metrics.stateResets.WithLabelValues(ResetMirrorMissing).Inc()
		s.log.Warn("licence state mirror missing while the state file exists (expected once, at the first start with a mirror); rewriting it")
	case st == copyOK && !s.fileExisted && s.opts.StateDir != "":
		s.metrics.stateResets.WithLabelValues(ResetFileMissing).Inc()
		s.log.Warn("licence state file was missing at start while its mirror exists (deleted?); the licence memory was restored from the mirror")
	}
	if m == nil {
		return
	}
	merged := mergeMemory(s.state, m)
	if stateEqual(merged, s.state) {
		return
	}
	rollback := merged.Seq != s.state.Seq || !maps.Equal(merged.Revs, s.state.Revs) ||
		!maps.Equal(merged.Revoked, s.state.Revoked) || !slices.Equal(merged.RevokedKIDs, s.state.RevokedKIDs)
	s.state = merged
	if rollback { // the anti-rollback memory grew: re-check the tokens
		_ = s.reloadLocked(ctx) // a directory error was reported by the reload before
		return
	}
	s.evaluateLocked()
}

// persistTimeout bounds one persist (the mirror may be a database).
const persistTimeout = 10 * time.Second

func stateEqual(a, b *Memory) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.HWM.Equal(b.HWM) && a.Seq == b.Seq && maps.Equal(a.Revs, b.Revs) && maps.Equal(a.Revoked, b.Revoked) &&
		slices.Equal(a.RevokedKIDs, b.RevokedKIDs) && maps.EqualFunc(a.OverSince, b.OverSince, time.Time.Equal) &&
		maps.Equal(a.Last, b.Last)
}
