package ami

import (
	"context"
	"crypto/md5" //nolint:gosec // AMI's challenge login is defined with MD5; not our choice
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of Conn.
var (
	// ErrClosed: the connection was closed by Close.
	ErrClosed = errors.New("connection closed")
	// ErrConnectionLost: the connection ended on its own (closed by the PBX, keepalive timeout,
	// read or write error).
	ErrConnectionLost = errors.New("connection lost")
	// ErrAuthFailed: the PBX refused the login (wrong username, secret or ACL).
	ErrAuthFailed = errors.New("authentication failed")
)

// maxListEvents bounds the events collected for one EventList action.
const maxListEvents = 100_000

// Inbound is one frame read from the PBX that is not the answer to an action in flight (an event,
// or a frame of a streamed action), with the time it was read.
type Inbound struct {
	Frame *Frame
	At    time.Time
}

// Conn is one logged-in AMI session. One reader goroutine reads every frame; responses go to the
// action that is waiting for them (matched by ActionID), events go to Events() in wire order.
// A keepalive goroutine sends Ping every PingInterval, and reads time out after PingInterval +
// PingTimeout without a byte, so a dead peer ends the connection within that bound.
//
// The consumer must drain Events() (or Close the Conn): when it is full the reader waits, which
// is the backpressure towards the PBX. Every frame read before the connection ended is in
// Events() before it is closed; Err then says why it ended. Methods are safe for concurrent use.
type Conn struct {
	opts   Options
	nc     net.Conn
	dr     *deadlineReader
	rd     *Reader
	banner string
	m      *metrics
	log    *slog.Logger
	prefix string
	seq    atomic.Uint64

	wmu  sync.Mutex
	wbuf []byte
	werr error

	mu      sync.Mutex
	pending map[string]*request
	closed  bool
	rerr    error // why reading ended; set once by the reader

	events     chan Inbound
	done       chan struct{} // closed by Close
	readerDone chan struct{} // closed when the reader goroutine has finished
	closeOnce  sync.Once
	wg         sync.WaitGroup

	// sink, when set (a Source's connection), takes the frames that would go to Events(), in
	// the reader goroutine, once armed is closed (arm); Events() then stays empty.
	sink    frameSink
	armed   chan struct{}
	armOnce sync.Once
}

// frameSink takes, in the reader goroutine, the frames a Conn would put into Events(). f is
// valid only during the call: the reader reuses it and its slices (the strings stay valid). h
// holds its routing headers (by value: a pointer would escape through the interface). done is
// closed when the Conn is closed: a sink that waits (for its consumer) must stop waiting then.
type frameSink interface {
	frame(f *Frame, h header, at time.Time, done <-chan struct{})
}

// request is an action in flight.
type request struct {
	id, name, until string
	inline          bool // streamed: every frame with this ActionID goes to Events()
	ch              chan result
	resp            *Frame
	events          []*Frame
	list            bool
	gotUntil        bool
	overflow        bool
}

type result struct {
	resp *Response
	err  error
}

// Dial connects to the PBX, reads the banner and logs in. ctx bounds the whole attempt together
// with Options.ConnectTimeout; it does not bound the life of the connection. A rejected login
// returns an error wrapping ErrAuthFailed.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return dial(ctx, opts, nil, nil, nil, nil)
}

// dialStage tells the Source which stage of a connection attempt failed (for metrics).
type dialError struct {
	stage string
	err   error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dial opens a Conn; filter (nil: none) is installed on its Reader before the first frame, tap
// (nil: none) receives a copy of every byte read, m (nil: none) the metrics. With a sink, the
// frames that are not answers go to it instead of Events() once the Conn is armed (arm); until
// then the reader waits at the first such frame.
func dial(ctx context.Context, opts Options, m *metrics, tap io.Writer, filter *Filter, sink frameSink) (*Conn, error) {
	if m == nil {
		m = noMetrics
	}
	cctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	nc, err := opts.Dialer(cctx, "tcp", opts.Address)
	if err != nil {
		return nil, &dialError{"dial", fmt.Errorf("ami: connecting to %s: %w", opts.Address, err)}
	}
	c := &Conn{
		opts:       opts,
		nc:         nc,
		dr:         &deadlineReader{nc: nc, tap: tap},
		m:          m,
		log:        opts.Logger,
		prefix:     actionIDPrefix(),
		pending:    make(map[string]*request),
		events:     make(chan Inbound, opts.EventBuffer),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		sink:       sink,
		armed:      make(chan struct{}),
	}
	if sink != nil {
		c.events = make(chan Inbound) // never written to: Events() only reports the end
	}
	c.rd = NewReader(c.dr)
	if filter != nil {
		c.rd.SetFilter(*filter)
	}
	// Until login succeeded, cancelling ctx (or the connect timeout) closes the socket, which
	// unblocks the banner read, the reader and any write.
	stop := context.AfterFunc(cctx, func() { _ = nc.Close() })
	fail := func(stage string, err error) (*Conn, error) {
		stop()
		_ = c.Close()
		if cerr := cctx.Err(); cerr != nil && !errors.Is(err, ErrAuthFailed) {
			err = fmt.Errorf("ami: connecting to %s: %w (%w)", opts.Address, cerr, err)
		}
		return nil, &dialError{stage, err}
	}
	banner, err := c.rd.ReadBanner()
	if err != nil && cctx.Err() != nil && ctx.Err() == nil {
		// A peer that accepts the connection and says nothing is not Asterisk's manager.
		stop()
		_ = c.Close()
		return nil, &dialError{"other", fmt.Errorf("ami: %s sent no AMI banner within %v: is it Asterisk's manager port (manager.conf [general] port, usually 5038)?",
			opts.Address, opts.ConnectTimeout)}
	}
	if err != nil {
		return fail("other", err)
	}
	c.banner = banner
	c.wg.Add(1)
	go c.readLoop()
	if err := c.login(cctx); err != nil {
		stage := "other"
		if errors.Is(err, ErrAuthFailed) {
			stage = "auth"
		}
		return fail(stage, err)
	}
	if !stop() {
		return fail("other", fmt.Errorf("ami: connecting to %s: %w", opts.Address, cctx.Err()))
	}
	c.dr.delay.Store(int64(max(opts.ReadDelay, 0)))
	if t := opts.readTimeout(); t > 0 {
		c.dr.timeout.Store(int64(t))
		// The reader may already be blocked in a Read that started without a deadline.
		_ = nc.SetReadDeadline(time.Now().Add(t))
		c.wg.Add(1)
		go c.pingLoop(context.WithoutCancel(ctx)) // keepalive lives as long as the connection
	}
	return c, nil
}

// actionIDPrefix returns a random prefix that makes this connection's ActionIDs recognisable.
func actionIDPrefix() string {
	var b [3]byte
	_, _ = crand.Read(b[:]) // never fails on supported platforms
	return fmt.Sprintf("pbxb%x-", b)
}

// login authenticates with the configured method and event mask.
func (c *Conn) login(ctx context.Context) error {
	user := c.opts.Username
	a := Action{Name: "Login"}.Set("Username", user)
	if c.opts.Auth == AuthMD5 {
		res, err := c.action(ctx, Action{Name: "Challenge"}.Set("AuthType", "MD5"))
		if err != nil {
			return fmt.Errorf("ami: login as %q: md5 challenge: %w", user, err)
		}
		challenge := res.Get("Challenge")
		if challenge == "" {
			return fmt.Errorf("ami: login as %q: md5 challenge: the PBX sent no challenge", user)
		}
		sum := md5.Sum([]byte(challenge + c.opts.Secret)) //nolint:gosec // protocol-defined
		a = a.Set("AuthType", "MD5").Set("Key", hex.EncodeToString(sum[:]))
	} else {
		a = a.Set("Secret", c.opts.Secret)
	}
	a = a.Set("Events", c.opts.Events)
	if _, err := c.action(ctx, a); err != nil {
		var re *ResponseError
		if errors.As(err, &re) {
			return fmt.Errorf("ami: login as %q: %w (the PBX said %q)", user, ErrAuthFailed, re.Message)
		}
		return fmt.Errorf("ami: login as %q: %w", user, err)
	}
	return nil
}

// Banner returns the banner the PBX sent ("Asterisk Call Manager/x.y.z").
func (c *Conn) Banner() string { return c.banner }

// Events returns the frames that are not answers to an action in flight, in wire order. It is
// closed when the connection ends; every frame read before that is delivered first.
func (c *Conn) Events() <-chan Inbound { return c.events }

// arm lets the reader hand frames to the sink. Frames read before wait for it (the reader
// does not read on meanwhile), so the owner can send what must come first (TypeConnected).
func (c *Conn) arm() { c.armOnce.Do(func() { close(c.armed) }) }

// Done is closed when the connection has ended (after Events() was closed).
func (c *Conn) Done() <-chan struct{} { return c.readerDone }

// Err returns why the connection ended (wrapping ErrConnectionLost, or ErrClosed after Close),
// or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rerr == nil {
		return nil
	}
	return fmt.Errorf("ami: %w", c.rerr)
}

// Close ends the connection and waits for its goroutines. It is idempotent and safe to call
// concurrently; it always returns nil. Frames not yet taken from Events() are discarded.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		_ = c.nc.Close()
	})
	c.wg.Wait()
	return nil
}

// Action sends a and waits for its response (and, for an EventList, for the whole list; with
// Until set, for that event). A response "Error" (or an awaited event with Response "Failure")
// is returned as a *ResponseError together with the Response. If ctx has no deadline,
// Options.ActionTimeout applies. Errors are prefixed "ami: <action>: ".
func (c *Conn) Action(ctx context.Context, a Action) (*Response, error) {
	res, err := c.action(ctx, a)
	if err != nil {
		return res, fmt.Errorf("ami: %s: %w", strings.ToLower(a.Name), err)
	}
	return res, nil
}

// Stream sends a and delivers every frame carrying its ActionID — the response and the events of
// its list — into Events(), in wire order with the other events, instead of collecting them. It
// returns once the action is written; the ActionID is forgotten after the list's completion
// event or an error response. The Source uses it for the resync snapshot, which must be ordered
// with the live events.
func (c *Conn) Stream(ctx context.Context, a Action) (actionID string, err error) {
	req, err := c.send(ctx, a, true)
	if err != nil {
		return "", fmt.Errorf("ami: %s: %w", strings.ToLower(a.Name), err)
	}
	return req.id, nil
}

func (c *Conn) action(ctx context.Context, a Action) (*Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.ActionTimeout)
		defer cancel()
	}
	start := time.Now()
	req, err := c.send(ctx, a, false)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-req.ch:
		c.m.action(strings.ToLower(a.Name), time.Since(start))
		return r.resp, r.err
	case <-ctx.Done():
		if c.forget(req) {
			return nil, ctx.Err()
		}
		r := <-req.ch // completed while we were giving up
		return r.resp, r.err
	}
}

// send registers the action and writes it.
func (c *Conn) send(ctx context.Context, a Action, inline bool) (*request, error) {
	if a.ID == "" {
		a.ID = c.prefix + strconv.FormatUint(c.seq.Add(1), 10)
	}
	req := &request{id: a.ID, name: a.Name, until: a.Until, inline: inline, ch: make(chan result, 1)}
	c.mu.Lock()
	if err := c.stateErrLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	if _, dup := c.pending[a.ID]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("duplicate ActionID %q", a.ID)
	}
	c.pending[a.ID] = req
	c.mu.Unlock()
	if err := c.write(ctx, &a); err != nil {
		c.forget(req)
		return nil, err
	}
	return req, nil
}

func (c *Conn) stateErrLocked() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.rerr != nil:
		return c.rerr
	}
	return nil
}

// forget removes req from the pending map; false means it was already completed.
func (c *Conn) forget(req *request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[req.id] == req {
		delete(c.pending, req.id)
		return true
	}
	return false
}

// write encodes and writes one action. A write that started always gets the full WriteTimeout
// (not the action's deadline), because a write cut short would leave half an action on the wire.
// After a failed write the connection accepts no more writes; a write timeout also closes the
// socket, because a PBX that does not read for WriteTimeout is hung. Other write errors leave
// the socket to the reader, which still delivers whatever the PBX sent before it went away.
func (c *Conn) write(ctx context.Context, a *Action) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if err := ctx.Err(); err != nil {
		return err // nothing written: the connection stays usable
	}
	buf, err := a.AppendTo(c.wbuf[:0])
	if err != nil {
		return err
	}
	if cap(buf) <= 64<<10 {
		c.wbuf = buf[:0]
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	if _, err := c.nc.Write(buf); err != nil {
		c.werr = fmt.Errorf("%w: writing to the PBX: %w", ErrConnectionLost, err)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			_ = c.nc.Close()
		}
		return c.werr
	}
	return nil
}

// readLoop is the connection's only reader.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	var err error
	var discarded, trimmed uint64
	var f *Frame // reused until a frame is kept (by an action, or in Events())
	for {
		if f == nil {
			f = new(Frame)
		}
		err = c.rd.ReadFrameTo(f)
		if n := c.rd.Discarded(); n != discarded {
			c.m.discarded(n - discarded)
			discarded = n
		}
		if n := c.rd.Trimmed(); n != trimmed {
			c.m.trimmed(n - trimmed)
			trimmed = n
		}
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) {
				c.m.Drop(DropTooLarge)
				c.log.Warn("ami: dropped a frame over the size limit", "pbx", c.opts.Name, "limit", MaxFrameSize)
				continue
			}
			break
		}
		if c.dispatch(f, c.opts.Clock.Now()) {
			f = nil
		}
	}
	c.endReading(err)
}

// endReading records why reading stopped, fails the actions in flight and closes Events().
func (c *Conn) endReading(err error) {
	c.mu.Lock()
	switch {
	case c.closed:
		err = ErrClosed
	case errors.Is(err, io.EOF):
		err = fmt.Errorf("%w: closed by the PBX: %w", ErrConnectionLost, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("%w: closed by the PBX inside a frame: %w", ErrConnectionLost, err)
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("%w: no data from the PBX for %s (keepalive): %w", ErrConnectionLost, c.opts.readTimeout(), err)
		} else {
			err = fmt.Errorf("%w: reading: %w", ErrConnectionLost, err)
		}
	}
	c.rerr = err
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, req := range pending {
		req.ch <- result{err: err}
	}
	close(c.events)
	close(c.readerDone)
}

// header holds the routing headers of a frame, found in one pass.
type header struct {
	event, response, actionID, eventList string
	hasEvent, hasResponse                bool
}

func scanHeader(f *Frame) (h header) {
	for i := range f.Fields {
		k, v := f.Fields[i].Key, f.Fields[i].Value
		switch len(k) {
		case 5:
			if !h.hasEvent && strings.EqualFold(k, "Event") {
				h.event, h.hasEvent = v, true
			}
		case 8:
			if !h.hasResponse && strings.EqualFold(k, "Response") {
				h.response, h.hasResponse = v, true
			} else if h.actionID == "" && strings.EqualFold(k, "ActionID") {
				h.actionID = v
			}
		case 9:
			if h.eventList == "" && strings.EqualFold(k, "EventList") {
				h.eventList = v
			}
		}
	}
	return h
}

func (h *header) isResponse() bool { return h.hasResponse && !h.hasEvent }

// isListEnd reports whether an event closes an EventList.
func (h *header) isListEnd() bool {
	return strings.EqualFold(h.eventList, "Complete") || strings.HasSuffix(h.event, "Complete")
}

// failed reports whether a Response value means the action failed.
func failed(response string) bool {
	return strings.EqualFold(response, "Error") || strings.EqualFold(response, "Failure")
}

// dispatch routes one frame: to the action waiting for it, or to Events() (or the sink). It
// reports whether the frame is kept (by an action or in Events()), so the reader must not
// reuse it.
func (c *Conn) dispatch(f *Frame, at time.Time) (kept bool) {
	h := scanHeader(f)
	if h.actionID == "" {
		if h.isResponse() {
			c.m.Drop(DropOrphanResp)
			return false
		}
		return c.deliver(f, h, at)
	}
	c.mu.Lock()
	req := c.pending[h.actionID]
	if req == nil {
		c.mu.Unlock()
		switch {
		case h.isResponse():
			c.m.Drop(DropOrphanResp)
		case strings.HasPrefix(h.actionID, c.prefix) && h.event != "OriginateResponse":
			c.m.Drop(DropLateListEvent) // a list event of an action that gave up
		default:
			return c.deliver(f, h, at) // e.g. another client's OriginateResponse
		}
		return false
	}
	if req.inline {
		if (h.isResponse() && (failed(h.response) || !strings.EqualFold(h.eventList, "start"))) ||
			(!h.isResponse() && h.isListEnd()) {
			delete(c.pending, req.id)
		}
		c.mu.Unlock()
		return c.deliver(f, h, at)
	}
	var done *result
	alsoDeliver := false
	if h.isResponse() {
		req.resp = f
		switch {
		case failed(h.response):
			done = &result{resp: &Response{Frame: f}, err: refusal(req.name, f, h.response)}
		case strings.EqualFold(h.eventList, "start"):
			req.list = true
		case req.until != "" && !req.gotUntil:
			// wait for the awaited event
		default:
			done = req.result()
		}
	} else {
		switch {
		case req.until != "" && h.event == req.until:
			req.events = append(req.events, f)
			req.gotUntil = true
			alsoDeliver = h.event == "OriginateResponse" // the model may use it too
			if req.resp != nil {
				done = req.result()
			}
		case req.list:
			if len(req.events) < maxListEvents {
				req.events = append(req.events, f)
			} else {
				req.overflow = true
				c.m.Drop(DropListOverflow)
			}
			if h.isListEnd() {
				done = req.result()
			}
		default:
			c.mu.Unlock()
			return c.deliver(f, h, at)
		}
	}
	if done != nil {
		delete(c.pending, req.id)
	}
	c.mu.Unlock()
	if done != nil {
		req.ch <- *done
	}
	if alsoDeliver {
		c.deliver(f, h, at)
	}
	return true // the request holds it
}

// result builds the successful (or overflowed / failed-event) result of a completed request.
func (req *request) result() *result {
	res := &Response{Frame: req.resp, Events: req.events}
	if req.overflow {
		return &result{resp: res, err: fmt.Errorf("event list longer than %d events", maxListEvents)}
	}
	if req.until != "" && len(req.events) > 0 {
		last := req.events[len(req.events)-1]
		if r := last.Get("Response"); failed(r) {
			return &result{resp: res, err: refusal(req.name, last, r)}
		}
	}
	return &result{resp: res}
}

func refusal(action string, f *Frame, response string) *ResponseError {
	return &ResponseError{Action: action, Response: response, Message: f.Get("Message"), Frame: f}
}

// deliver puts a frame into Events(), waiting while it is full unless the Conn is closed, and
// reports whether it did (the frame is then the consumer's). With a sink, it hands the frame
// to the sink instead, once the Conn is armed, and reports false.
func (c *Conn) deliver(f *Frame, h header, at time.Time) bool {
	if c.sink != nil {
		select {
		case <-c.armed:
		case <-c.done:
			return false
		}
		c.sink.frame(f, h, at, c.done)
		return false
	}
	select {
	case c.events <- Inbound{Frame: f, At: at}:
		return true
	default:
	}
	select {
	case c.events <- Inbound{Frame: f, At: at}:
		return true
	case <-c.done:
		return false
	}
}

// pingLoop sends a Ping every PingInterval. Liveness is judged by the read deadline, not by the
// Pong, so a consumer that is slow to drain Events() never makes a healthy PBX look dead.
func (c *Conn) pingLoop(base context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.readerDone:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(base, c.opts.PingTimeout)
		_, err := c.action(ctx, Action{Name: "Ping"})
		cancel()
		if err != nil && !errors.Is(err, ErrClosed) {
			c.log.Debug("ami: ping", "pbx", c.opts.Name, "err", err)
		}
	}
}

// deadlineReader sets a read deadline before every read from the socket once keepalive is on, so
// only time spent waiting for the PBX counts (not time the reader waits for the consumer),
// waits Options.ReadDelay before a read that follows a small one, and copies what it reads to
// tap when capturing. Only the reader goroutine calls Read.
type deadlineReader struct {
	nc      net.Conn
	timeout atomic.Int64 // nanoseconds; 0 = no deadline
	delay   atomic.Int64 // nanoseconds; 0 = none (set once logged in)
	tap     io.Writer
	last    int         // bytes returned by the previous read
	timer   *time.Timer // for the delay, reused
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if delay := time.Duration(d.delay.Load()); delay > 0 && d.last < readDelayBelow {
		if d.timer == nil {
			d.timer = time.NewTimer(delay)
		} else {
			d.timer.Reset(delay)
		}
		<-d.timer.C // a closed socket is noticed by the read that follows, at most delay later
	}
	if t := d.timeout.Load(); t > 0 {
		_ = d.nc.SetReadDeadline(time.Now().Add(time.Duration(t)))
	}
	n, err := d.nc.Read(p)
	d.last = n
	if n > 0 && d.tap != nil {
		if _, werr := d.tap.Write(p[:n]); werr != nil {
			return n, fmt.Errorf("capture: writing: %w", werr)
		}
	}
	return n, err
}
