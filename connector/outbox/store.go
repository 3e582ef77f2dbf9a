package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Defaults used when the matching Options field is zero.
const (
	DefaultRetention           = 30 * 24 * time.Hour
	DefaultDeadLetterRetention = 90 * 24 * time.Hour
	DefaultLeaseTTL            = 2 * time.Minute
)

const (
	// maxBatch bounds how many queued write operations one group commit runs.
	maxBatch = 512
	// readConns is the size of the read-only connection pool.
	readConns = 4
	// busyTimeoutMS is SQLite's busy_timeout for every connection.
	busyTimeoutMS = 5000
	// The writer waits for the callers of its previous batch to come back
	// for half as long as that batch took (mostly its fsync), within these
	// bounds: on a slow disk a longer wait still costs less than an fsync.
	minLinger = 100 * time.Microsecond
	maxLinger = 2 * time.Millisecond
	// maxErrorLen bounds the stored last_error text.
	maxErrorLen = 4096
)

// Sentinel errors, matched with errors.Is. Errors returned by this package are
// prefixed "outbox: " and wrap these where they apply.
var (
	// ErrClosed is returned by every method called after (or while) Close runs.
	ErrClosed = errors.New("outbox: store is closed")
	// ErrLeaseLost is returned by Ack, Retry and Bury when the row is no longer
	// leased under the caller's lease id: the lease expired and another worker
	// leased the row, or an operator dropped or re-queued it. The caller must
	// treat its own work on the row as void; the row's new owner decides.
	ErrLeaseLost = errors.New("lease lost")
	// ErrCorrupt is wrapped by errors caused by a damaged or foreign database file.
	ErrCorrupt = errors.New("database file is damaged or not an outbox")
	// ErrLocked is returned by Open when another process holds the outbox open.
	ErrLocked = errors.New("database file is in use by another process")
	// ErrSchemaTooNew is returned by Open for a database written by a newer pbxbridge.
	ErrSchemaTooNew = errors.New("database schema is newer than this program")
	// ErrInvalid is wrapped by errors caused by invalid arguments.
	ErrInvalid = errors.New("invalid argument")
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Retention is how long done rows, call state, timeline entries and stale
	// open calls are kept before Prune deletes them. Zero means DefaultRetention.
	Retention time.Duration
	// DeadLetterRetention is how long a dead row is kept after it died (or was
	// last touched by an operator) before Prune deletes it. Zero means
	// DefaultDeadLetterRetention.
	DeadLetterRetention time.Duration
	// LeaseTTL is the lease duration Lease uses when called with ttl 0.
	// Zero means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Clock returns the current time; nil means time.Now. Every timestamp the
	// store writes or compares (enqueue, lease expiry, due time, retention)
	// comes from it.
	Clock func() time.Time
	// Logger receives the few events the store reports on its own (leases
	// released at open, migrations). Nil discards them.
	Logger *slog.Logger
}

// Store is the outbox. All methods are safe for concurrent use. Writes go
// through one writer goroutine that groups concurrent callers into one
// durable transaction (group commit); reads use a small read-only pool and
// see every write that has returned.
type Store struct {
	path          string
	retention     time.Duration
	deadRetention time.Duration
	leaseTTL      time.Duration
	clock         func() time.Time
	// pruneChunk is how many rows one Prune transaction deletes at most
	// (a field so that tests can make it small).
	pruneChunk int64
	// laterWithin is LaterWithin (a field so that tests can make it long).
	laterWithin time.Duration
	log         *slog.Logger
	// openCalls: the schema has the open_calls table (false only for the
	// migration tests' old schemas).
	openCalls bool

	w     *sql.DB              // exactly one connection, used only by the writer goroutine
	stmts map[string]*sql.Stmt // prepared writerStatements; read-only after Open
	r     *sql.DB              // read-only pool
	lock  *os.File             // holds the process lock on the database file

	ops        chan *writeOp
	writerDone chan struct{}
	// lazySync: the writer connection is at synchronous=NORMAL; syncUnknown: a PRAGMA failed,
	// so the next transaction sets its mode whatever lazySync says (writer goroutine only).
	lazySync, syncUnknown bool
	// Writer counters (WriterStats).
	commitsFull, commitsLazy, opsCommitted, commitNanos atomic.Uint64

	// later holds the CallState.SetLater values not committed yet (reads see them).
	laterMu  sync.Mutex
	later    map[laterKey]map[string]laterValue
	laterSeq uint64

	// closeMu is read-held by every method for its whole duration and
	// write-held by Close, so Close waits for in-flight calls and no call
	// starts on a closed store.
	closeMu sync.RWMutex
	closed  bool
}

// writeOp is one caller's share of a group-committed transaction.
type writeOp struct {
	ctx  context.Context
	fn   func(tx wtx, now time.Time) error
	done chan error // buffered: the writer never blocks on a caller that left
	// lazy: the op's change need not be fsync'd before it is answered (see writeLazy).
	lazy bool
	// ride: the op waits until then for another write to share its commit (see writeRiding);
	// zero: it is committed at once.
	ride time.Time
	// after, when set, learns the op's outcome once its commit is done (writeLater).
	after func(error)
}

// answer tells the op's caller (and its after hook) the outcome of its commit.
func (op *writeOp) answer(err error) {
	op.done <- err
	if op.after != nil {
		op.after(err)
	}
}

// Open opens (creating it if missing) the outbox database at path, applies
// pending schema migrations, releases leases left by a previous process and
// starts the writer. The directory must exist. A new file is created with mode
// 0600. The file is locked for the life of the Store: a second Open of the
// same file, from this or another process, fails with ErrLocked.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	return open(ctx, path, opts, migrations)
}

func open(ctx context.Context, path string, opts Options, steps []string) (_ *Store, err error) {
	if path == "" {
		return nil, fmt.Errorf("outbox: open: %w: empty path", ErrInvalid)
	}
	if opts.Retention < 0 || opts.DeadLetterRetention < 0 || opts.LeaseTTL < 0 {
		return nil, fmt.Errorf("outbox: open: %w: negative retention or lease ttl", ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w", path, err)
	}
	s := &Store{
		path:          abs,
		retention:     opts.Retention,
		deadRetention: opts.DeadLetterRetention,
		leaseTTL:      opts.LeaseTTL,
		clock:         opts.Clock,
		log:           opts.Logger,
		pruneChunk:    pruneChunk,
		laterWithin:   LaterWithin,
		openCalls:     len(steps) >= 4,
		ops:           make(chan *writeOp, maxBatch),
		writerDone:    make(chan struct{}),
	}
	if s.retention == 0 {
		s.retention = DefaultRetention
	}
	if s.deadRetention == 0 {
		s.deadRetention = DefaultDeadLetterRetention
	}
	if s.leaseTTL == 0 {
		s.leaseTTL = DefaultLeaseTTL
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}

	if err := s.acquireFile(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.closeHandles()
		}
	}()

	dsn := dsnFor(abs)
	s.w, err = sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, s.wrap("open", err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.prepareFile(ctx, steps); err != nil {
		return nil, err
	}
	if err := s.quickCheck(ctx); err != nil {
		return nil, err
	}
	if err := s.releaseLeftoverLeases(ctx); err != nil {
		return nil, err
	}
	// A store on an older schema exists only in tests that build old files;
	// its statements are prepared per call.
	if len(steps) == len(migrations) {
		if err := s.prepareStatements(ctx); err != nil {
			return nil, err
		}
	}
	s.r, err = sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		return nil, s.wrap("open", err)
	}
	s.r.SetMaxOpenConns(readConns)
	s.r.SetMaxIdleConns(readConns)
	if err := s.r.PingContext(ctx); err != nil {
		return nil, s.wrap("open", err)
	}
	go s.writer()
	return s, nil
}

// dsnFor builds the modernc DSN: an escaped file: URI, synchronous=FULL (in
// WAL mode every commit is fsync'd before it returns), secure_delete=ON
// (deleted content is overwritten with zeros, so that erased calls do not
// linger in free pages or free space of the file; see Forget) and a busy
// timeout. WAL itself is switched on by prepareFile once the file is known to
// be ours (the mode is persistent in the file).
func dsnFor(abs string) string {
	u := url.URL{Path: abs}
	return "file:" + u.EscapedPath() +
		fmt.Sprintf("?_pragma=busy_timeout(%d)&_pragma=synchronous(FULL)&_pragma=secure_delete(ON)", busyTimeoutMS)
}

// acquireFile creates the database file with mode 0600 if it is missing (SQLite
// copies that mode to the -wal and -shm files) and takes an exclusive process
// lock on it. The descriptor stays open until Close, after SQLite's own
// connections are closed: closing another descriptor of the file earlier would
// drop SQLite's POSIX locks.
func (s *Store) acquireFile() error {
	dir := filepath.Dir(s.path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("outbox: open %s: directory %s is not usable (create it, writable by the pbxbridge user): %w", s.path, dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("outbox: open %s: %s is not a directory", s.path, dir)
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("outbox: open %s: permission denied: the file and its directory must be readable and writable by the user pbxbridge runs as: %w", s.path, err)
		}
		return fmt.Errorf("outbox: open %s: %w", s.path, err)
	}
	if err := lockFile(f); err != nil {
		_ = f.Close()
		if errors.Is(err, errWouldBlock) {
			return fmt.Errorf("outbox: open %s: %w (is pbxbridge already running? while it runs, use its admin socket instead of opening the file)", s.path, ErrLocked)
		}
		return fmt.Errorf("outbox: open %s: locking: %w", s.path, err)
	}
	s.lock = f
	return nil
}

// releaseLeftoverLeases returns rows leased by a previous process to pending.
// The file lock guarantees that process is gone, so its leases are void.
func (s *Store) releaseLeftoverLeases(ctx context.Context) error {
	now := s.clock().UTC().UnixNano()
	res, err := s.w.ExecContext(ctx, `UPDATE outbox SET state = 'pending', lease_id = NULL, lease_expires_at = NULL, updated_at = ?
		WHERE state = 'leased'`, now)
	if err != nil {
		return s.wrap("releasing leases of a previous run", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.log.Info("outbox: released leases left by a previous run", "rows", n, "path", s.path)
	}
	return nil
}

// Close waits for in-flight calls, stops the writer and closes the database.
// It is safe to call more than once; later calls return nil.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.ops)
	<-s.writerDone
	if err := s.closeHandles(); err != nil {
		return fmt.Errorf("outbox: close %s: %w", s.path, err)
	}
	return nil
}

// closeHandles closes the pools and then the locked descriptor (in that order:
// see acquireFile).
func (s *Store) closeHandles() error {
	var errs []error
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	return errors.Join(errs...)
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// enter marks the start of a call; the returned func marks its end. It fails
// with ErrClosed after Close.
func (s *Store) enter() (func(), error) {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, ErrClosed
	}
	return s.closeMu.RUnlock, nil
}

// write runs fn inside the next group-committed transaction and returns once
// that transaction has committed durably (nil) or failed. fn's error is
// returned to the caller; see commit for what it does to the transaction. If
// ctx ends while the caller waits, write returns ctx.Err() and fn may still
// commit later; every write in this package is safe to repeat.
func (s *Store) write(ctx context.Context, fn func(tx wtx, now time.Time) error) error {
	return s.submit(ctx, &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// writeLazy is write for changes that a power loss or an OS crash may undo without harm
// (leases, the open-calls ledger): when every op of a group transaction is lazy, it commits
// with synchronous=NORMAL, written to the WAL but not fsync'd. Such a commit survives a crash
// or kill -9 of the daemon (the OS has the data), and the next durable commit fsyncs it too
// (the WAL is one append-only file, and SQLite's recovery stops at the first frame that was
// not written whole, so a lazy commit is kept entirely or not at all, and never one after a
// durable commit without the durable one). A batch with any durable op is fsync'd.
func (s *Store) writeLazy(ctx context.Context, fn func(tx wtx, now time.Time) error) error {
	return s.submit(ctx, &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1), lazy: true})
}

// writeRiding is writeLazy for a change that may wait, up to within, for another write to share
// its commit (a group transaction it rides along in, durable or not): changes many of which are
// worth less than a commit each (the open-calls ledger, timeline entries of live actions, adapter
// state that a delivery's acknowledgement soon makes durable anyway). Under load it costs no
// commit of its own; otherwise its own lazy commit after within. The caller waits until it is
// committed.
func (s *Store) writeRiding(ctx context.Context, within time.Duration, fn func(tx wtx, now time.Time) error) error {
	return s.submit(ctx, &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1), lazy: true, ride: time.Now().Add(within)})
}

// writeLater is writeRiding without waiting: it queues fn and returns at once; after learns the
// outcome once the commit is done (it runs on the writer goroutine and must be quick). It
// returns ErrClosed after Close (then after is not called).
func (s *Store) writeLater(within time.Duration, fn func(tx wtx, now time.Time) error, after func(error)) error {
	leave, err := s.enter()
	if err != nil {
		return err
	}
	defer leave()
	s.ops <- &writeOp{ctx: context.Background(), fn: fn, done: make(chan error, 1), lazy: true, ride: time.Now().Add(within), after: after}
	return nil
}

// submit queues op for the writer and waits for its answer.
func (s *Store) submit(ctx context.Context, op *writeOp) error {
	leave, err := s.enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer is the single writer goroutine: it takes the queued ops (up to
// maxBatch), runs them in one transaction and answers each caller only after
// the commit returned.
//
// Ops that may ride along (writeRiding, writeLater) do not start a
// transaction of their own while their time allows: the writer waits for
// another op (or the earliest ride deadline) and commits them together.
//
// Callers answered by one commit need a moment to come back with their next
// write; taking only what is queued at that instant would split them into two
// half-size batches that take turns, each waiting for the other's fsync. So
// the writer estimates how many callers are writing (the previous batch plus
// the ops that queued up while it committed) and waits for that many ops, up
// to half the time the previous batch took (see minLinger). A lone sequential
// caller (a batch of one, nothing queued behind it) never waits.
func (s *Store) writer() {
	defer close(s.writerDone)
	batch := make([]*writeOp, 0, maxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	target, linger := 0, minLinger
	for {
		op, ok := <-s.ops
		if !ok {
			return
		}
		batch = append(batch[:0], op)
		more := s.drain(&batch)
		if more && riding(batch) {
			more = s.waitForRide(&batch, timer)
		}
		if more && len(batch) < target {
			timer.Reset(linger)
		wait:
			for len(batch) < target {
				select {
				case op, ok := <-s.ops:
					if !ok {
						break wait
					}
					batch = append(batch, op)
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		start := time.Now()
		queuedBehind := s.runBatch(batch)
		took := time.Since(start)
		target = min(len(batch)+queuedBehind, maxBatch)
		linger = min(max(took/2, minLinger), maxLinger)
		clear(batch)
	}
}

// riding reports whether every op of batch may still wait for another to share its commit.
func riding(batch []*writeOp) bool {
	for _, op := range batch {
		if op.ride.IsZero() {
			return false
		}
	}
	return true
}

// waitForRide waits, for a batch of ops that may ride along, until an op that may not comes, the
// batch is full, or the earliest ride deadline passes; it appends what it receives (and what is
// queued then) to batch. It returns false if the queue was closed.
func (s *Store) waitForRide(batch *[]*writeOp, timer *time.Timer) bool {
	deadline := (*batch)[0].ride
	for _, op := range *batch {
		if op.ride.Before(deadline) {
			deadline = op.ride
		}
	}
	timer.Reset(time.Until(deadline))
	defer timer.Stop()
	for len(*batch) < maxBatch {
		select {
		case op, ok := <-s.ops:
			if !ok {
				return false
			}
			*batch = append(*batch, op)
			if op.ride.IsZero() {
				return s.drain(batch)
			}
			if op.ride.Before(deadline) {
				deadline = op.ride
				timer.Reset(time.Until(deadline))
			}
		case <-timer.C:
			return s.drain(batch)
		}
	}
	return true
}

// drain appends every op queued right now to batch, up to maxBatch. It
// returns false if the queue is closed.
func (s *Store) drain(batch *[]*writeOp) bool {
	for len(*batch) < maxBatch {
		select {
		case op, ok := <-s.ops:
			if !ok {
				return false
			}
			*batch = append(*batch, op)
		default:
			return true
		}
	}
	return true
}

// runBatch runs one group commit and answers every op in batch. If one op
// fails (other than with ErrLeaseLost), the transaction is rolled back, that
// op gets its error and the others run once more in a new transaction; if
// that fails too, they all get an error.
//
// It returns how many ops were queued when the transaction ended.
func (s *Store) runBatch(batch []*writeOp) (queuedBehind int) {
	rest, err := s.commit(batch)
	if len(rest) > 0 {
		var err2 error
		rest, err2 = s.commit(rest)
		for _, op := range rest {
			op.answer(fmt.Errorf("outbox: not committed: other writes in the same transaction failed twice: %w", errors.Join(err, err2)))
		}
	}
	return len(s.ops)
}

// commit runs the ops of batch in one transaction. It answers every op
// unless an op failed: then it rolls back, answers the failed op and the
// cancelled ones, and returns the others unanswered, with the failure.
//
// Op functions must return ErrLeaseLost only when they changed nothing; every
// other error may leave partial changes (or SQLite may have rolled the whole
// transaction back), so it aborts the transaction. Statements use a
// background context: a caller's cancellation must not interrupt a
// transaction shared with others.
func (s *Store) commit(batch []*writeOp) ([]*writeOp, error) {
	lazy := true
	for _, op := range batch {
		lazy = lazy && op.lazy
	}
	if err := s.setSync(lazy); err != nil {
		for _, op := range batch {
			op.answer(err)
		}
		return nil, nil
	}
	start := time.Now()
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		err = s.wrap("begin", err)
		for _, op := range batch {
			op.answer(err)
		}
		return nil, nil
	}
	now := s.clock().UTC()
	w := wtx{tx: tx, stmts: s.stmts}
	results := make([]error, len(batch))
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		err := op.fn(w, now)
		if err == nil || errors.Is(err, ErrLeaseLost) {
			results[i] = err
			continue
		}
		_ = tx.Rollback() // fails harmlessly if SQLite already rolled back
		op.answer(err)
		rest := make([]*writeOp, 0, len(batch)-1)
		for j, other := range batch {
			switch {
			case j == i:
			case results[j] != nil && !errors.Is(results[j], ErrLeaseLost): // cancelled
				other.answer(results[j])
			default:
				rest = append(rest, other)
			}
		}
		return rest, err
	}
	err = tx.Commit()
	if err != nil {
		err = s.wrap("commit", err)
		for i := range results {
			if results[i] == nil || errors.Is(results[i], ErrLeaseLost) {
				results[i] = err
			}
		}
	} else {
		if lazy {
			s.commitsLazy.Add(1)
		} else {
			s.commitsFull.Add(1)
		}
		s.opsCommitted.Add(uint64(len(batch)))
		s.commitNanos.Add(uint64(time.Since(start)))
	}
	for i, op := range batch {
		op.answer(results[i])
	}
	return nil, nil
}

// setSync switches the writer connection between synchronous=FULL (durable commits) and
// NORMAL (lazy ones) when the next transaction needs the other mode. A failure leaves the mode
// unknown, so the next transaction of either kind sets its mode before it runs: a durable
// commit never runs on a connection that may be at NORMAL.
func (s *Store) setSync(lazy bool) error {
	if lazy == s.lazySync && !s.syncUnknown {
		return nil
	}
	mode := "FULL"
	if lazy {
		mode = "NORMAL"
	}
	if _, err := s.w.ExecContext(context.Background(), "PRAGMA synchronous="+mode); err != nil {
		s.syncUnknown = true
		return s.wrap("set synchronous="+mode, err)
	}
	s.lazySync, s.syncUnknown = lazy, false
	return nil
}

// WriterStats counts the writer's work since Open.
type WriterStats struct {
	// DurableCommits were fsync'd (synchronous=FULL); LazyCommits held only leases or
	// open-call changes and were not (synchronous=NORMAL, see Lease and PutOpenCalls).
	DurableCommits, LazyCommits uint64
	// Writes is how many callers' writes those commits held (group commit: several per commit).
	Writes uint64
	// CommitTime is the time spent in committed transactions, from BEGIN to the end of COMMIT.
	CommitTime time.Duration
}

// WriterStats returns the writer's counters.
func (s *Store) WriterStats() WriterStats {
	return WriterStats{DurableCommits: s.commitsFull.Load(), LazyCommits: s.commitsLazy.Load(),
		Writes: s.opsCommitted.Load(), CommitTime: time.Duration(s.commitNanos.Load())}
}

// wtx is the writer's view of the group transaction. Statements listed in
// writerStatements run from statements prepared once at Open; any other text
// is prepared on each call (operator statements with built conditions).
type wtx struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

// exec runs a statement that returns no rows.
func (w wtx) exec(query string, args ...any) (sql.Result, error) {
	ctx := context.Background()
	if prepared := w.stmts[query]; prepared != nil {
		st := w.tx.StmtContext(ctx, prepared)
		defer func() { _ = st.Close() }() // releases only the transaction's handle
		return st.ExecContext(ctx, args...)
	}
	return w.tx.ExecContext(ctx, query, args...)
}

// query runs a statement and calls each for its rows in order until each
// returns false or an error. The rows are closed before query returns, so
// the caller may run other statements afterwards.
func (w wtx) query(query string, args []any, each func(*sql.Rows) (bool, error)) error {
	ctx := context.Background()
	var (
		rows *sql.Rows
		err  error
	)
	if prepared := w.stmts[query]; prepared != nil {
		st := w.tx.StmtContext(ctx, prepared)
		// Closing the transaction's handle leaves the open rows and the
		// prepared statement intact.
		defer func() { _ = st.Close() }()
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = w.tx.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		more, err := each(rows)
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return rows.Close()
}

// prepareStatements prepares writerStatements on the writer connection. It
// runs before the writer starts: while a transaction holds the only
// connection, nothing can be prepared outside it.
func (s *Store) prepareStatements(ctx context.Context) error {
	s.stmts = make(map[string]*sql.Stmt, len(writerStatements))
	for _, q := range writerStatements {
		st, err := s.w.PrepareContext(ctx, q) //nolint:sqlclosecheck // kept for the Store's life, closed by closeHandles
		if err != nil {
			return s.wrap("open: preparing statements", err)
		}
		s.stmts[q] = st
	}
	return nil
}

// corruptAdvice tells the operator what to do with a damaged database file.
const corruptAdvice = "stop pbxbridge and run `pbxbridge outbox salvage`: it copies every row that can still be read into a new outbox and keeps the damaged file aside (or restore a backup)"

// wrap prefixes err with "outbox: <op>" and, for SQLite errors that call for
// operator action, says what to do.
func (s *Store) wrap(op string, err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return fmt.Errorf("outbox: %s: %w", op, err)
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("outbox: %s: %w: %s: %w; %s", op, ErrCorrupt, s.path, err, corruptAdvice)
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("outbox: %s: %s: the disk is full, free space on its file system: %w", op, s.path, err)
	case sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM:
		return fmt.Errorf("outbox: %s: %s: cannot write the database: the file, its -wal and -shm files and the directory must be writable by the user pbxbridge runs as: %w", op, s.path, err)
	case sqlite3.SQLITE_IOERR:
		return fmt.Errorf("outbox: %s: %s: disk i/o error (check the disk and the kernel log): %w", op, s.path, err)
	}
	return fmt.Errorf("outbox: %s: %w", op, err)
}

// damaged reports a row that does not match the schema (a NULL in a NOT NULL
// column, a wrong type in a STRICT table): only a damaged file holds one.
func (s *Store) damaged(op string, err error) error {
	return fmt.Errorf("outbox: %s: %w: %s: unreadable row (%w); %s", op, ErrCorrupt, s.path, err, corruptAdvice)
}

// now returns the store clock in UTC.
func (s *Store) now() time.Time { return s.clock().UTC() }
