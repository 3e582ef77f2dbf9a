package connector

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
)

const (
	// timelineFlush is how often the live actions' timeline entries are written.
	timelineFlush = 500 * time.Millisecond
	// timelineMaxPending bounds the entries waiting to be written; further ones are dropped
	// (the timeline is for people, the live path must never wait for the disk).
	timelineMaxPending = 4096
)

// timelineAppender is the part of the outbox the buffer writes to.
type timelineAppender interface {
	AppendTimelines(ctx context.Context, entries map[string][]outbox.TimelineEntry) error
}

// timelineBuffer collects timeline entries of live actions (the CRM requests sent while calls
// ring) and writes them to the calls' timelines in the background, every timelineFlush, all
// calls in one lazy outbox transaction (not fsync'd of its own), so that `pbxbridge calls show`
// lists every CRM request of a call at almost no cost. add never blocks.
type timelineBuffer struct {
	store timelineAppender
	log   *slog.Logger

	flushMu sync.Mutex // one flush at a time: a flush that returns has written what came before it
	mu      sync.Mutex
	pending map[string][]outbox.TimelineEntry
	n       int
	lost    int
}

func newTimelineBuffer(store timelineAppender, log *slog.Logger) *timelineBuffer {
	return &timelineBuffer{store: store, log: log, pending: map[string][]outbox.TimelineEntry{}}
}

// add queues an entry for the timeline of key; it is dropped when timelineMaxPending entries
// are waiting.
func (b *timelineBuffer) add(key string, e outbox.TimelineEntry) {
	if e.Kind == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n >= timelineMaxPending {
		b.lost++
		return
	}
	b.pending[key] = append(b.pending[key], e)
	b.n++
}

// run writes the pending entries every timelineFlush until ctx ends, then once more.
func (b *timelineBuffer) run(ctx context.Context) {
	t := time.NewTicker(timelineFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			b.flush(fctx)
			cancel()
			return
		case <-t.C:
			b.flush(ctx)
		}
	}
}

// flush writes what is pending, in one transaction. When it returns, every entry added before
// it was called is written (or dropped), including those of a flush that was under way.
func (b *timelineBuffer) flush(ctx context.Context) {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	pending, lost := b.pending, b.lost
	b.pending, b.n, b.lost = map[string][]outbox.TimelineEntry{}, 0, 0
	b.mu.Unlock()
	if lost > 0 {
		b.log.Warn("call timelines: live-action entries dropped, the writer fell behind", "entries", lost)
	}
	if len(pending) == 0 || b.store == nil {
		return
	}
	if err := b.store.AppendTimelines(ctx, pending); err != nil && ctx.Err() == nil {
		b.log.Warn("writing the calls' timelines", "calls", len(pending), "err", err)
	}
}
