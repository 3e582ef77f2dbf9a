// Package outbox is pbxbridge's durable delivery queue: every finished call
// record is written here, one row per (record, connector), before any CRM is
// contacted, and stays until that connector has delivered it.
//
// # Storage
//
// One embedded SQLite file (pure-Go modernc.org/sqlite) in WAL mode with
// synchronous=FULL, owned by one process: Open takes an exclusive lock on the
// file, so a second daemon (or a CLI while the daemon runs) gets ErrLocked and
// must go through the daemon's admin API instead. The schema is versioned
// (PRAGMA user_version, ordered migration steps applied at Open); a file
// written by a newer pbxbridge is refused with ErrSchemaTooNew, a damaged or
// foreign file with ErrCorrupt and a message naming the file and what to do.
// Payloads are opaque bytes (the JSON call record); the package knows nothing
// about CRMs or calls beyond the record key and call start time.
//
// # Delivery guarantee
//
// At-least-once, per (record key, connector):
//
//   - Durable on return. Enqueue, Ack, Retry, Bury, Release, the operator
//     functions, CallState.Set and AppendTimeline return nil only after their
//     transaction has committed and been fsync'd. Concurrent calls share one
//     transaction (group commit by a single writer goroutine); no caller is
//     answered before the commit that holds its change. A call that returns
//     an error may or may not have been stored (its context ended while it
//     waited, or the disk failed during the commit); every write is safe to
//     repeat. One caller's failed write does not fail the others in its
//     transaction: they are committed without it.
//     Some writes are committed without an fsync of their own when no
//     durable write shares their transaction (synchronous=NORMAL): Lease,
//     PutOpenCalls, AppendTimelines and CallState.SetLazy. They survive a
//     crash or kill -9 of the daemon; a power loss or an OS crash may undo
//     them, which is harmless for leases (Open releases every lease of a
//     previous process anyway) and open calls (the PBX's, on the same host),
//     and for call state until the next durable commit. The next durable
//     commit makes them durable too: the WAL is one append-only file.
//     PutOpenCallsWithin and AppendTimelinesWithin may wait a moment to share
//     another write's commit. CallState.SetLater does not wait at all: its
//     value is committed with the store's next commit (within LaterWithin),
//     and a crash before that loses it; a write queued after it that returned
//     nil has committed it too (the writer takes writes in order), unless the
//     SetLater write itself failed (logged). WriterStats counts both kinds of
//     commit.
//   - Idempotent enqueue. The (key, connector) pair is unique: enqueuing a
//     record again (after a crash, or a re-flush) keeps the one existing row
//     in whatever state it has, so a delivered record is not delivered again.
//   - Leases. A worker Leases due rows, delivers them and then Acks (done),
//     Retries (pending again at a later time, attempts+1) or Buries (dead) each
//     row. A lease expires after its TTL, after which another worker may lease
//     the row; the stale worker's Ack/Retry/Bury then fails with ErrLeaseLost.
//     At Open all leases of the previous process are released at once. A
//     delivery can therefore happen more than once (a crash or expiry between
//     the CRM call and the Ack), so adapters pass an idempotency key or look up
//     before creating.
//   - Order. Lease returns due rows oldest first (by due time, then enqueue
//     order); there is no ordering guarantee between connectors, nor once
//     retries reorder rows.
//
// What survives: a crash or SIGKILL of the daemon, a kernel panic or power
// loss after a call returned (SQLite's WAL with fsync on every commit, on a
// disk that honours flushes). The crash test SIGKILLs a real process; power
// loss rests on the fsync, which no test here can cut. What does not: loss or corruption of the disk
// or the file system, a disk that acknowledges writes it has not stored, a
// file restored from an older backup, and done rows after Retention (pruned).
//
// # Retention
//
// Done rows are kept for Options.Retention (default 30 days) so that an
// operator can Redeliver a period; Prune deletes older ones, open calls not
// updated for as long, plus call state and timeline entries older than
// Retention whose call has no row left. Dead rows are kept for
// Options.DeadLetterRetention (default 90 days) after they died, so that an
// operator can Requeue or Drop them; pending rows until they are delivered or
// die. Meta values are never pruned.
//
// # Personal data
//
// Payloads, call state, timelines and open calls hold customers' phone
// numbers. Forget erases every call of one person (selected by the caller,
// since the package does not read payloads) and every other timeline entry
// or call state value that mentions them; Checkpoint then empties the WAL.
// Every connection runs with secure_delete=ON, so deleted content (by Forget,
// Prune or Drop) is overwritten with zeros in the file instead of lingering
// in free pages. Backup writes a compact copy (VACUUM INTO: no free pages)
// while the store runs.
//
// # Concurrency
//
// A Store is safe for concurrent use. Reads (List, Stats, Timeline,
// CallState.Get) use a small read-only pool and see every write that has
// returned (CallState.Get and GetAll also every SetLater value not committed
// yet). Close waits for calls in progress; afterwards every method
// returns ErrClosed.
//
// # Errors
//
// Errors start with "outbox: " and wrap the sentinels ErrLeaseLost, ErrClosed,
// ErrCorrupt, ErrLocked, ErrSchemaTooNew and ErrInvalid where they apply
// (match them with errors.Is), or the context's error.
package outbox
