package connector

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
)

const (
	// timelineFlush is how long the live actions' timeline entries wait to be written together.
	timelineFlush = 500 * time.Millisecond
	// timelineMaxPending bounds the entries waiting to be written; further ones are dropped
	// (the timeline is for people, the live path must never wait for the disk).
	timelineMaxPending = 4096
)

// timelineAppender is the part of the outbox the buffer writes to.
type timelineAppender interface {
	AppendTimelinesWithin(ctx context.Context, within time.Duration, entries map[string][]outbox.TimelineEntry) error
}

// timelineBuffer collects timeline entries of live actions (the CRM requests sent while calls
// ring) and writes them to the calls' timelines in the background: the entries that wait go in
// one outbox write that rides along in the next commit of the outbox (not fsync'd of its own),
// or commits alone after timelineFlush, so that `pbxbridge calls show` lists every CRM request
// of a call at almost no cost. add never blocks; nothing runs while no entry waits.
type timelineBuffer struct {
	store timelineAppender
	log   *slog.Logger

	// queued: an entry waits (run flushes timelineFlush later).
	queued chan struct{}

	flushMu sync.Mutex // one flush at a time: a flush that returns has written what came before it

	mu      sync.Mutex
	pending map[string][]outbox.TimelineEntry
	n       int
	lost    int
}

func newTimelineBuffer(store timelineAppender, log *slog.Logger) *timelineBuffer {
	return &timelineBuffer{store: store, log: log, pending: map[string][]outbox.TimelineEntry{}, queued: make(chan struct{}, 1)}
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
	if b.n == 1 {
		select {
		case b.queued <- struct{}{}:
		default:
		}
	}
}

// run writes the entries as they come (see timelineBuffer) until ctx ends, then once more.
func (b *timelineBuffer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			b.flush(fctx, 0)
			cancel()
			return
		case <-b.queued:
			b.flush(ctx, timelineFlush)
		}
	}
}

// flush writes what is pending in one write, which waits up to within for another to share its
// commit. When it returns, every entry added before it was called is written (or dropped),
// including those of a flush that was under way.
func (b *timelineBuffer) flush(ctx context.Context, within time.Duration) {
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
	if err := b.store.AppendTimelinesWithin(ctx, within, pending); err != nil && ctx.Err() == nil {
		b.log.Warn("writing the calls' timelines", "calls", len(pending), "err", err)
	}
}
