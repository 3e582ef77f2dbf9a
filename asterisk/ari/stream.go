package ari

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Stream is one connected events websocket. One goroutine reads it with Next; Close may be
// called from any goroutine, any number of times.
//
// Keepalive: a helper goroutine pings Asterisk every PingInterval. While Next waits on the
// socket, a connection on which nothing arrived (no message, no pong) for
// PingInterval+PingTimeout is declared dead: Next returns an error wrapping ErrDeadPeer and the
// connection is closed. Time spent outside Next (the caller blocked on its consumer) does not
// count, so backpressure never kills a healthy connection.
type Stream struct {
	ws          *websocket.Conn
	deadAfter   time.Duration
	pingEvery   time.Duration
	pingTimeout time.Duration

	ctx    context.Context // cancelled by Close: stops the keepalive
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	reading  bool
	activity time.Time // last time something arrived, or Next began waiting
	stopRead context.CancelCauseFunc
	timer    *time.Timer
	closed   bool

	buf       bytes.Buffer
	closeOnce sync.Once
}

func newStream(o Options) *Stream {
	ctx, cancel := context.WithCancel(context.Background())
	st := &Stream{
		deadAfter:   o.deadAfter(),
		pingEvery:   o.PingInterval,
		pingTimeout: o.PingTimeout,
		ctx:         ctx,
		cancel:      cancel,
	}
	if st.deadAfter > 0 {
		st.timer = time.AfterFunc(time.Hour, st.onDeadline)
		st.timer.Stop()
	}
	return st
}

// start begins the keepalive on a connected websocket.
func (st *Stream) start(ws *websocket.Conn) {
	st.ws = ws
	if st.pingEvery > 0 {
		st.wg.Add(1)
		go st.keepalive()
	}
}

// onPong runs inside the reader (websocket control frame).
func (st *Stream) onPong(context.Context, []byte) {
	st.mu.Lock()
	st.activity = time.Now()
	st.mu.Unlock()
}

// onDeadline runs when the dead-peer timer fires. A stale firing (something arrived since it
// was armed) re-arms it for the remainder.
func (st *Stream) onDeadline() {
	st.mu.Lock()
	if !st.reading || st.stopRead == nil {
		st.mu.Unlock()
		return
	}
	if idle := time.Since(st.activity); idle < st.deadAfter {
		st.timer.Reset(st.deadAfter - idle)
		st.mu.Unlock()
		return
	}
	stop := st.stopRead
	st.mu.Unlock()
	stop(ErrDeadPeer)
}

// keepalive pings until Close.
func (st *Stream) keepalive() {
	defer st.wg.Done()
	t := time.NewTicker(st.pingEvery)
	defer t.Stop()
	for {
		select {
		case <-st.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(st.ctx, st.pingTimeout)
		// A missing pong is judged by the reader's dead-peer bound, not here: the reader may be
		// busy elsewhere and not reading the pong.
		_ = st.ws.Ping(ctx)
		cancel()
	}
}

// Next waits for the next text message and returns it. The returned slice is valid until the
// next call to Next. It returns ErrBinaryMessage for a binary message (the stream stays
// usable), ctx.Err() when ctx is cancelled, an error wrapping ErrDeadPeer when the keepalive
// bound expired, ErrClosed after Close, and otherwise the websocket's error (closed by Asterisk,
// message over MaxMessageSize, network failure); after any error but ErrBinaryMessage the
// stream is finished.
func (st *Stream) Next(ctx context.Context) ([]byte, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil, ErrClosed
	}
	st.reading = true
	st.activity = time.Now()
	st.stopRead = cancel
	if st.timer != nil {
		st.timer.Reset(st.deadAfter)
	}
	st.mu.Unlock()

	typ, r, err := st.ws.Reader(rctx)
	if err == nil {
		st.buf.Reset()
		_, err = st.buf.ReadFrom(r)
	}

	st.mu.Lock()
	st.reading = false
	st.stopRead = nil
	if st.timer != nil {
		st.timer.Stop()
	}
	closed := st.closed
	st.mu.Unlock()

	if err != nil {
		switch cause := context.Cause(rctx); {
		case errors.Is(cause, ErrDeadPeer):
			return nil, fmt.Errorf("ari: websocket: %w (%v)", ErrDeadPeer, st.deadAfter)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case closed:
			return nil, ErrClosed
		}
		if cs := websocket.CloseStatus(err); cs != -1 {
			return nil, fmt.Errorf("ari: websocket closed by Asterisk (%v): %w", cs, err)
		}
		return nil, fmt.Errorf("ari: websocket: %w", err)
	}
	if typ != websocket.MessageText {
		return nil, ErrBinaryMessage
	}
	return st.buf.Bytes(), nil
}

// Close closes the connection at once (no close handshake: a dead peer must not delay
// shutdown), stops the keepalive and waits for it. Idempotent.
func (st *Stream) Close() error {
	st.closeOnce.Do(func() {
		st.mu.Lock()
		st.closed = true
		if st.timer != nil {
			st.timer.Stop()
		}
		st.mu.Unlock()
		st.cancel()
		if st.ws != nil {
			_ = st.ws.CloseNow()
		}
		st.wg.Wait()
	})
	return nil
}
