package licensing

import (
	"fmt"
	"path/filepath"

	"github.com/pbxbridge/pbxbridge/licensing/internal/owner"
)

// FileName is the canonical file name of a verified token in the licence directory:
// "<connector>-<lid>-r<rev>-<start>.lic" for licences (so a stacked renewal does not replace the
// running term), "revocation-<seq>.lic" for revocation lists.
func FileName(l *License) string {
	if l.IsRevocation() {
		return fmt.Sprintf("revocation-%06d.lic", l.claims.Seq)
	}
	return fmt.Sprintf("%s-%s-r%d-%s.lic", l.Connector(), l.LID(), l.Rev(), l.Start())
}

// Comments returns the human-readable (untrusted) comment lines written above a token.
func Comments(l *License) []string {
	c := l.claims
	if l.IsRevocation() {
		return []string{fmt.Sprintf("revocation list seq=%d entries=%d revoked_kids=%d", c.Seq, len(c.Revoked), len(c.RevokedKIDs))}
	}
	return []string{
		"Comment lines are for humans and are NOT trusted: the daemon ignores them.",
		fmt.Sprintf("connector=%s licensee=%q lid=%s rev=%d type=%s", c.Connector, c.Licensee, c.LID, c.Rev, c.Typ),
		fmt.Sprintf("term=%s..%s tz=%s grace_until=%s", c.Term.Start, c.Term.End, c.Term.TZ, c.GraceUntil),
	}
}

// Install writes the verified licence l into dir under FileName(l), atomically (temporary file in
// the same directory, fsync, rename), in canonical armour. A running daemon picks it up through
// its directory watch. Verify before calling: Install takes an already verified *License, so a bad
// file can never replace a good one.
func Install(dir string, l *License) (string, error) {
	if err := owner.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("installing licence: %w", err)
	}
	p := filepath.Join(dir, FileName(l))
	if err := writeFileAtomic(p, Armour(l.Token(), Comments(l)...), 0o644); err != nil {
		return "", fmt.Errorf("installing licence: %w", err)
	}
	return p, nil
}
