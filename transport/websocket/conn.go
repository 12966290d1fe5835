package websocket

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/cork"
)

// Conn is one tunnelled stream: a net.Conn over a WebSocket that carries
// the byte stream in binary messages, as the Sprites v1 protocol does.
//
// Behaviour, in detail:
//   - Write sends its bytes as one binary message (several for writes over
//     256 KiB on the client, 1 MiB on the server). Read returns the bytes of
//     binary messages of any size, split or joined across Reads; message
//     boundaries carry no meaning.
//   - CloseWrite ends the write side: with the half_close extension it sends
//     {"type":"eof"} and the peer's reads end with io.EOF while it can
//     still write back. A plain peer knows only the close frame, and a
//     plain server answers it at once, cutting what it still sends back; so
//     on the client the tunnel lingers: it keeps reading, and sends the
//     close frame once the server has sent no data for
//     Dialer.HalfCloseLinger (default 2 s, as socat's -t) while a Read
//     waited for it (a pause in reading is no silence), or when the
//     server's own close frame arrives, or at Close. A request/reply
//     exchange then comes back whole. A server that leaves that close
//     frame unanswered for the close timeout has the tunnel closed: Read
//     fails with a timeout error, not io.EOF. The server sends its close frame to
//     a plain client at once: that is the client's end of stream.
//   - Read returns io.EOF when the peer ends its write side (eof message)
//     or closes with code 1000 or 1001; another close code is a
//     *CloseError, a protocol violation a *ProtocolError (both match
//     dialer.ErrTunnelClosed). A peer whose far side was reset sends 4001,
//     which matches syscall.ECONNRESET; one that ended the tunnel by its
//     dead-peer or idle rule sends 4002, a timeout. A connection lost
//     under the tunnel is an error too: a cut stream never reads as io.EOF.
//   - Close sends a close frame (1000), waits up to the close timeout for the
//     peer's, and closes the connection underneath; it is idempotent. Under
//     the reuse extension (Reuse) it sends {"type":"end"} instead, and once
//     the peer's end is in, leaves the connection open for the next tunnel:
//     after Close, this Conn no longer reaches it (reads end, writes and
//     deadline changes fail).
//   - Deadlines apply to the connection underneath; a timed-out Read or
//     Write can be retried (a frame cut by a write timeout is finished by
//     the next Write). They do not bound keep-alive.
//   - Pings go out when no frame was sent for the keep-alive interval, and,
//     with a peer that negotiated an extension, a Read that has waited past
//     the dead-peer timeout without any frame arriving (pongs included)
//     fails with a timeout error, the tunnel being closed (close 4002). A
//     plain peer's connection is watched by TCP keep-alive instead.
//   - CloseWithError closes with 4001 (or 4002 for a timeout): for a
//     stream cut short at its far side.
//
// Buffers are borrowed from a pool only while data moves: an idle Conn holds
// a few hundred bytes of its own.
type Conn struct {
	nc  net.Conn
	tcp *net.TCPConn // nc when it is a plain TCP socket (writev, splice)
	// tlsConn is nc when it is TLS; readDeadline says the caller has set a
	// read deadline (CopyTo's TLS gathering leaves those alone).
	tlsConn      *tls.Conn
	readDeadline atomic.Bool
	// closeRead is Close's read deadline (unix nanoseconds) once its drain
	// set it, 0 before: whatever sets the read deadline for a moment
	// (CopyTo's TLS gathering) puts it back, not none.
	closeRead atomic.Int64
	// st is the tunnel's lifecycle (state.go): how far each direction and
	// the tunnel have ended. (The small fields sit together: an idle Conn's
	// size class is what an idle tunnel costs.)
	st     lifecycle
	cork   *cork.Conn // under tlsConn, when the tunnel made the TLS conn
	cfg    *config
	local  net.Addr
	remote net.Addr

	client    bool // frames sent are masked; frames received are not
	halfClose bool // the half_close extension was negotiated
	raw       bool // the raw_stream extension was negotiated: no framing after the handshake
	reuse     bool // the reuse extension was negotiated: the stream ends with end messages
	resume    bool // the resume extension was negotiated: acks; a ResumableConn above
	// resumeTok, resumeGrace and replica are what the connected reply
	// said of the resume extension (on the server: what it will say).
	resumeTok   string
	resumeGrace time.Duration
	replica     string
	// peerBuf is the peer's resume buffer as its first message said (0:
	// not said): a ResumableConn acknowledges before it fills.
	peerBuf int64
	// onAck takes the peer's acks (resume), called by the reader.
	onAck func(n int64)
	// ctrlPending says ctrl holds something to send; writers check it after
	// each frame without taking ctrlMu.
	ctrlPending atomic.Bool
	// announced: the server's upgrade response on this connection
	// announced the optimistic extension.
	announced bool
	// hs, on an optimistic tunnel (Dialer.Optimistic), is its reply on
	// its way; set before the tunnel is returned, never changed after.
	hs *pendingReply
	// onReuse takes the connection once the stream has ended cleanly under
	// reuse (the client's pool, or the server's loop).
	onReuse func(*link)
	// readLeft, while a close waits for a Read to let go of the read side
	// (lockReadBy), is where the Read says it did (unlockRead).
	readLeft atomic.Pointer[chan struct{}]
	// dmu guards the connection's deadlines against detach: once the
	// connection carries another stream (phasePooled), this Conn must not
	// touch it.
	dmu sync.RWMutex

	// Read side, guarded by rmu.
	rmu   sync.Mutex
	rd    reader
	rbufs net.Buffers // CopyTo's payloads on their way out, kept here so they do not escape

	// Write side, guarded by wmu.
	wmu    sync.Mutex
	wr     writer
	wvec   [2][]byte // scratch for writev, kept here so it does not escape
	wbufs  net.Buffers
	ctrlMu sync.Mutex // guards ctrl
	ctrl   pendingControl

	// State shared by both sides.
	lastRead   atomic.Int64  // unix nanoseconds of the last frame received, or of the start of a Read
	lastWrite  atomic.Int64  // unix nanoseconds of the last frame sent
	lastData   atomic.Int64  // unix nanoseconds of the last data frame either way
	waitFrom   atomic.Int64  // unix nanoseconds: start of the Read (or CopyTo read) waiting for data, 0 if none (the linger)
	reading    atomic.Int32  // Reads in progress
	peerClosed chan struct{} // closed when the peer's direction or the tunnel has closed (markPeerClosed)
	peerOnce   sync.Once
	closeOnce  sync.Once
	closeErr   error
	deadErr    atomic.Pointer[error] // set when the dead-peer timeout closed the tunnel

	// pooledRead: CopyTo holds a pooled read buffer, as it may only while
	// data moves (an idle tunnel holds none).
	pooledRead atomic.Bool

	ka keepTimer     // keep-alive (keepalive.go)
	wd writeDeadline // the write deadline's three setters

	// What the Conn learnt of its end outside a Read or Write, and who
	// wants to hear of it (AfterEnd), guarded by emu.
	emu     sync.Mutex
	lostErr error
	endFn   func(error)
}

var _ net.Conn = (*Conn)(nil)

// newConn wraps nc, after the HTTP upgrade, as a tunnel stream. pre holds
// bytes already read from nc past the upgrade response.
func newConn(nc net.Conn, client bool, cfg *config, pre []byte) *Conn {
	c := &Conn{
		nc:         nc,
		client:     client,
		cfg:        cfg,
		local:      nc.LocalAddr(),
		remote:     nc.RemoteAddr(),
		peerClosed: make(chan struct{}),
	}
	if c.local == nil {
		c.local = &net.TCPAddr{}
	}
	c.tcp, _ = nc.(*net.TCPConn)
	c.tlsConn, _ = nc.(*tls.Conn)
	if c.tlsConn != nil {
		c.cork, _ = c.tlsConn.NetConn().(*cork.Conn)
	}
	c.rd.win = c.rd.buf[:]
	if len(pre) > 0 {
		c.rd.pre = append([]byte(nil), pre...)
	}
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	c.lastWrite.Store(now)
	c.lastData.Store(now)
	return c
}

// LocalAddr returns the local address of the connection under the tunnel.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns, on the client, the target's address as the server
// reported it (a *net.TCPAddr when it is an IP address); on the server, the
// client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines of the connection under the
// tunnel.
func (c *Conn) SetDeadline(t time.Time) error {
	c.await() // (the reply's own deadline is in force until it is in)
	return c.setDeadline(t, true, func(t time.Time) error {
		if err := c.setAppRead(t); err != nil {
			return err
		}
		return c.wd.setApp(c.nc, t)
	})
}

// SetReadDeadline sets the read deadline of the connection under the
// tunnel.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.await()
	return c.setDeadline(t, true, c.setAppRead)
}

// setAppRead applies the application's read deadline, unless Close's
// drain has set its own (closeRead), which wins from then on.
func (c *Conn) setAppRead(t time.Time) error {
	if c.closeRead.Load() != 0 {
		return nil
	}
	err := c.nc.SetReadDeadline(t)
	if f := c.closeRead.Load(); f != 0 { // set meanwhile
		c.nc.SetReadDeadline(time.Unix(0, f))
	}
	return err
}

// SetWriteDeadline sets the write deadline of the connection under the
// tunnel. It bounds Write, CopyFrom and CloseWrite, not keep-alive: pings
// and pongs are written with a bound of their own.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, false, func(t time.Time) error { return c.wd.setApp(c.nc, t) })
}

// setDeadline applies set(t) unless the connection was handed on to
// another tunnel (reuse); read says it sets the read deadline.
func (c *Conn) setDeadline(t time.Time, read bool, set func(time.Time) error) error {
	c.dmu.RLock()
	defer c.dmu.RUnlock()
	if c.state().phase() == phasePooled {
		return c.opError("set deadline", net.ErrClosed)
	}
	if read {
		c.readDeadline.Store(!t.IsZero())
	}
	return set(t)
}

// HalfClose reports whether the peer negotiated the half_close extension
// (or raw_stream, which half-closes as TCP does).
func (c *Conn) HalfClose() bool {
	c.await()
	return c.halfClose || c.raw
}

// Raw reports whether the tunnel carries the stream unframed (the
// raw_stream extension).
func (c *Conn) Raw() bool {
	c.await()
	return c.raw
}

// NetConn returns the connection under the tunnel, for inspection (its TLS
// state, say); reading or writing it breaks the tunnel. Once a tunnel with
// the reuse extension is closed, the connection may carry another tunnel.
func (c *Conn) NetConn() net.Conn { return c.nc }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "websocket", Source: c.local, Addr: c.remote, Err: err}
}
