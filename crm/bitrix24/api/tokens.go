package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Tokens is what the daemon keeps of a local application's authorisation.
type Tokens struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	Expires      time.Time `json:"expires"` // when the access token expires (informational)
	// ClientEndpoint is the portal's REST URL (https://portal/rest/), ServerEndpoint the OAuth
	// server's.
	ClientEndpoint string `json:"client_endpoint,omitempty"`
	ServerEndpoint string `json:"server_endpoint,omitempty"`
	// Domain is the portal's domain (from the install event, or the client endpoint).
	Domain   string `json:"domain,omitempty"`
	MemberID string `json:"member_id,omitempty"`
	Scope    string `json:"scope,omitempty"`
	Status   string `json:"status,omitempty"`
	UserID   int    `json:"user_id,omitempty"`
	// ApplicationToken authenticates the events Bitrix24 posts to our handlers (A.4.1).
	ApplicationToken string    `json:"application_token,omitempty"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// TokenFile persists Tokens in one JSON file, written atomically (temporary file in the same
// directory, fsync, rename, fsync of the directory) with mode 0600.
type TokenFile struct{ Path string }

// Load reads the file; a missing file yields (nil, nil).
func (f TokenFile) Load() (*Tokens, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading tokens: %w", err)
	}
	var t Tokens
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("reading tokens %s: %w", f.Path, err)
	}
	return &t, nil
}

// Save replaces the file with t.
func (f TokenFile) Save(t *Tokens) error {
	b, err := json.MarshalIndent(t, "", "  ") //nolint:gosec // the token file is where tokens belong (0600)
	if err != nil {
		return fmt.Errorf("encoding tokens: %w", err)
	}
	return WriteFileAtomic(f.Path, b, 0o600)
}

// Remove deletes the file durably (the directory is fsync'd, so the removal survives a crash);
// a missing file is not an error.
func (f TokenFile) Remove() error {
	if f.Path == "" {
		return nil
	}
	if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing tokens: %w", err)
	}
	return syncDir(filepath.Dir(f.Path))
}

// WriteFileAtomic writes data to path so that readers see either the old or the new content,
// even after a crash: temporary file, fsync, chmod, rename, fsync of the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory, making a rename or removal in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
