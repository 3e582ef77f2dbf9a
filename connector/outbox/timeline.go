package outbox

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// TimelineEntry is one step in the history of a call: what the daemon saw or
// did and why (for "why was this call logged like that").
type TimelineEntry struct {
	Seq       int64     // 1, 2, ... per call; set by AppendTimeline
	At        time.Time // when it happened; zero means now
	Connector string    // the connector concerned, or empty for the call itself
	Kind      string    // short machine-friendly class, e.g. "enqueued", "delivered", "retry"; required
	Summary   string    // one human line
	Detail    string    // optional longer text (error text, request ids)
}

// AppendTimeline appends entries, in order, to the timeline of the call key, in one
// transaction. It is durable when it returns nil. Entries are pruned with the outbox retention
// once no outbox row of the call remains.
func (s *Store) AppendTimeline(ctx context.Context, key string, entries ...TimelineEntry) error {
	if key == "" {
		return fmt.Errorf("outbox: append timeline: %w: empty key", ErrInvalid)
	}
	if err := validTimeline(entries); err != nil {
		return fmt.Errorf("outbox: append timeline: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx wtx, now time.Time) error {
		return s.appendTimeline(tx, now, key, entries)
	})
	return s.opErr("append timeline", err)
}

// AppendTimelines appends the entries of several calls (key → entries, in order) in one
// transaction that a power loss may undo (written to the WAL, not fsync'd unless it shares the
// commit with a durable write, like leases): for entries worth less than a commit each, such as
// the CRM requests of live call cards. Keys are written in sorted order.
func (s *Store) AppendTimelines(ctx context.Context, entries map[string][]TimelineEntry) error {
	return s.AppendTimelinesWithin(ctx, 0, entries)
}

// AppendTimelinesWithin is AppendTimelines that waits, up to within, for another write to share
// its commit (under load it costs no commit of its own); within 0 commits at once.
func (s *Store) AppendTimelinesWithin(ctx context.Context, within time.Duration, entries map[string][]TimelineEntry) error {
	keys := make([]string, 0, len(entries))
	for k, es := range entries {
		if k == "" {
			return fmt.Errorf("outbox: append timelines: %w: empty key", ErrInvalid)
		}
		if err := validTimeline(es); err != nil {
			return fmt.Errorf("outbox: append timelines: %w", err)
		}
		if len(es) > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	write := s.writeLazy
	if within > 0 {
		write = func(ctx context.Context, fn func(wtx, time.Time) error) error { return s.writeRiding(ctx, within, fn) }
	}
	err := write(ctx, func(tx wtx, now time.Time) error {
		for _, k := range keys {
			if err := s.appendTimeline(tx, now, k, entries[k]); err != nil {
				return err
			}
		}
		return nil
	})
	return s.opErr("append timelines", err)
}

// validTimeline checks that every entry has a kind.
func validTimeline(entries []TimelineEntry) error {
	for _, e := range entries {
		if e.Kind == "" {
			return fmt.Errorf("%w: timeline entry without a kind", ErrInvalid)
		}
	}
	return nil
}

// appendTimeline appends entries to the timeline of key inside the writer's transaction; an
// entry without a time gets now.
func (s *Store) appendTimeline(tx wtx, now time.Time, key string, entries []TimelineEntry) error {
	for _, e := range entries {
		at := e.At
		if at.IsZero() {
			at = now
		}
		if _, err := tx.exec(sqlTimelineAppend, key, at.UnixNano(), e.Connector, e.Kind, e.Summary, truncateError(e.Detail)); err != nil {
			return s.wrap(fmt.Sprintf("append timeline %q", key), err)
		}
	}
	return nil
}

// Timeline returns the entries of the call key in append order (empty if none).
func (s *Store) Timeline(ctx context.Context, key string) ([]TimelineEntry, error) {
	leave, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	q, err := s.r.QueryContext(ctx, `SELECT seq, at, connector, kind, summary, detail FROM timeline
		WHERE key = ? ORDER BY seq`, key)
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("timeline %q", key), err)
	}
	defer func() { _ = q.Close() }()
	out := []TimelineEntry{}
	for q.Next() {
		var e TimelineEntry
		var at int64
		if err := q.Scan(&e.Seq, &at, &e.Connector, &e.Kind, &e.Summary, &e.Detail); err != nil {
			return nil, s.damaged(fmt.Sprintf("timeline %q", key), err)
		}
		e.At = fromNanos(at)
		out = append(out, e)
	}
	if err := q.Err(); err != nil {
		return nil, s.wrap(fmt.Sprintf("timeline %q", key), err)
	}
	return out, nil
}
