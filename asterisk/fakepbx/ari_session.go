package fakepbx

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// ariSession is one events websocket client of an ARIServer.
type ariSession struct {
	srv     *ARIServer
	ws      atomic.Pointer[websocket.Conn] // nil until the handshake is done
	nc      *stallConn
	app     string
	all     bool
	out     chan []byte
	closed  chan struct{}
	once    sync.Once
	stalled atomic.Bool
}

// setConn attaches the websocket once the handshake is done (closing it at once when the
// session was closed meanwhile).
func (ss *ariSession) setConn(ws *websocket.Conn) {
	ss.ws.Store(ws)
	select {
	case <-ss.closed:
		_ = ws.CloseNow()
	default:
	}
}

func (ss *ariSession) close() {
	ss.once.Do(func() {
		close(ss.closed)
		if ws := ss.ws.Load(); ws != nil {
			_ = ws.CloseNow()
		}
		if ss.nc != nil {
			ss.nc.release()
		}
	})
}

// enqueue queues a message; a client that does not drain its queue within the write timeout is
// disconnected.
func (ss *ariSession) enqueue(b []byte) bool {
	return enqueue(ss.out, ss.closed, ss.srv.cfg.WriteTimeout, b, func() {
		ss.srv.log.Warn("fakepbx: ARI client too slow, disconnecting")
		ss.close()
	})
}

// stall turns the session half-open (StallClients).
func (ss *ariSession) stall() {
	ss.stalled.Store(true)
	if ss.nc != nil {
		ss.nc.stalled.Store(true)
	}
}

func (ss *ariSession) writeLoop() {
	defer ss.srv.wg.Done()
	defer ss.close()
	for {
		var b []byte
		select {
		case b = <-ss.out:
		case <-ss.closed:
			return
		}
		ctx, cancel := context.WithTimeout(ss.srv.ctx, ss.srv.cfg.WriteTimeout)
		err := ss.ws.Load().Write(ctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			return
		}
	}
}

// readLoop reads (and discards) what the client sends, so pings are answered, until the
// connection ends. It runs in the handler's goroutine.
func (ss *ariSession) readLoop() {
	defer func() {
		ss.close()
		ss.srv.removeSession(ss)
	}()
	ws := ss.ws.Load()
	for {
		if _, _, err := ws.Read(ss.srv.ctx); err != nil {
			return
		}
	}
}

// stallListener wraps accepted connections so they can be stalled, and refuses connections
// during an Outage.
type stallListener struct {
	net.Listener
	srv *ARIServer
}

func (l *stallListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.srv.refusing() {
			_ = c.Close()
			continue
		}
		return &stallConn{Conn: c, gone: make(chan struct{})}, nil
	}
}

// stallConn is a connection that, once stalled, neither delivers what it reads nor writes
// anything until it is closed.
type stallConn struct {
	net.Conn
	stalled atomic.Bool
	gone    chan struct{}
	once    sync.Once
}

func (c *stallConn) Read(p []byte) (int, error) {
	if c.stalled.Load() {
		<-c.gone
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if c.stalled.Load() {
		<-c.gone
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *stallConn) Write(p []byte) (int, error) {
	if c.stalled.Load() {
		<-c.gone
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *stallConn) release() { c.once.Do(func() { close(c.gone) }) }

func (c *stallConn) Close() error {
	c.release()
	return c.Conn.Close()
}
