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
	// timelineWriters is how many calls' entries are written at once (the outbox commits
	// concurrent writes together).
	timelineWriters = 8
)

// timelineAppender is the part of the outbox the buffer writes to.
type timelineAppender interface {
	AppendTimeline(ctx context.Context, key string, entries ...outbox.TimelineEntry) error
}

// timelineBuffer collects timeline entries of live actions (the CRM requests sent while calls
// ring) and writes them to the calls' timelines in the background, every timelineFlush, so that
// `pbxbridge calls show` lists every CRM request of a call. add never blocks.
type timelineBuffer struct {
	store timelineAppender
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string][]outbox.TimelineEntry
	order   []string // keys in order of their first pending entry
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
	if _, ok := b.pending[key]; !ok {
		b.order = append(b.order, key)
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

// flush writes what is pending, the calls concurrently.
func (b *timelineBuffer) flush(ctx context.Context) {
	b.mu.Lock()
	pending, order, lost := b.pending, b.order, b.lost
	b.pending, b.order, b.n, b.lost = map[string][]outbox.TimelineEntry{}, nil, 0, 0
	b.mu.Unlock()
	if lost > 0 {
		b.log.Warn("call timelines: live-action entries dropped, the writer fell behind", "entries", lost)
	}
	if len(order) == 0 || b.store == nil {
		return
	}
	sem := make(chan struct{}, timelineWriters)
	var wg sync.WaitGroup
	for _, key := range order {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := b.store.AppendTimeline(ctx, key, pending[key]...); err != nil && ctx.Err() == nil {
				b.log.Warn("writing the call timeline", "call", key, "err", err)
			}
		}()
	}
	wg.Wait()
}
