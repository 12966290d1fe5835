package websocket

import (
	"errors"
	"io"
	"net"

	"github.com/spriteproxy/spriteproxy/internal/cork"
	"github.com/spriteproxy/spriteproxy/internal/pool"
	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// How a tunnel ends, as its peer and the pump see it. (The states and
// their transitions are in state.go.)
//
// A tunnel's two directions end apart. Ours ends when we send eof (with
// half_close) or the close frame (without); the peer's when its eof, close
// frame or end arrives. The tunnel is over when both have ended and the
// closing handshake is done (close frames, or end messages under reuse),
// or at once when it is cut: the connection fails, a timeout expires, or
// the other side of the pump fails.
//
// What ends it, and what each side then sees:
//
//	event                                    we send               our reads see
//	peer's eof (half_close)                  -                     io.EOF, writes go on
//	peer's close 1000/1001                   close (answer)        io.EOF
//	peer's close 4001 (its far side reset)   close                 *CloseError, errors.Is ECONNRESET
//	peer's close 4002 (its timeout rule)     close                 *CloseError, Timeout() true
//	peer's other close code                  close                 *CloseError
//	peer's invalid close code / reason       close 1002 / 1007     *ProtocolError
//	connection lost (EOF without close, RST) -                     error matching dialer.ErrTunnelClosed
//	our dead-peer or idle rule               close 4002            *net.OpError, Timeout() true
//	the pump's other side failed             close 4001 (or 4002)  (CloseWithError)
//
// A tunnel whose reads reached the peer's end of stream goes on watching
// the connection (AwaitEnd): a peer that closes its socket without
// finishing the closing handshake, or whose connection fails, is then
// known gone at once, and the pump cuts the other side (a target that may
// never speak again) instead of waiting on it for ever. What the Conn learns
// outside any Read or Write (a ping that cannot be written, the dead-peer
// rule) reaches the pump through AfterEnd.

var (
	_ pump.EndAwaiter  = (*Conn)(nil)
	_ pump.Ender       = (*Conn)(nil)
	_ pump.ErrorCloser = (*Conn)(nil)
)

// errPeerLeft: the peer closed its connection after its close frame
// without waiting for ours, so what we still had to send was lost.
var errPeerLeft = errors.New("websocket: the peer closed the connection before the closing handshake ended")

// AwaitEnd is for a copier whose reads reached the peer's end of stream
// (pump.EndAwaiter): it reads on, discarding, until the peer ends the
// tunnel. It returns nil when the peer closed it cleanly (a close frame
// after its eof, its end under reuse, or its connection's end once both
// close frames are exchanged), and an error when the peer or the
// connection was lost first. A raw tunnel has nothing to watch
// (pump.ErrNoWatch).
func (c *Conn) AwaitEnd() error {
	if err := c.await(); err != nil {
		return err
	}
	if c.raw {
		return pump.ErrNoWatch
	}
	c.reading.Add(1)
	defer c.reading.Add(-1)
	c.rmu.Lock()
	err := c.awaitEndLocked()
	c.unlockRead()
	return err
}

func (c *Conn) awaitEndLocked() error {
	r := &c.rd
	for {
		err := c.awaitDataLocked(true) // the eof ended the stream for the copier; we read on
		switch {
		case err == nil:
			// Data after the peer's end of stream: a peer may not send it;
			// read it off so that its end can be seen.
			bp := pool.Get()
			_, err = c.readPayloadLocked((*bp)[:min(r.left, int64(pool.Size))])
			pool.Put(bp)
			if err != nil {
				return err
			}
		case err != io.EOF:
			return err
		case c.endedCleanly(c.state()):
			return nil
		default:
			// A plain peer's close frame was its end of stream: it waits
			// for ours, which we send once our side ends. Meanwhile, only
			// its connection can say more.
			return c.awaitSocketEnd()
		}
	}
}

// awaitSocketEnd reads the connection after the peer's close frame until
// it ends: nil if our close frame went out first, errPeerLeft if not.
func (c *Conn) awaitSocketEnd() error {
	var buf [64]byte
	for {
		_, err := c.nc.Read(buf[:])
		if err == nil {
			continue // nothing may follow a close frame: drop it
		}
		if c.state().has(sentClose) {
			return nil
		}
		if err == io.EOF {
			return c.opError("read", errPeerLeft)
		}
		return c.opError("read", err)
	}
}

// AfterEnd arranges for f to be called, once and in a goroutine of its
// own, when the tunnel is found gone outside any Read or Write: a ping or
// pong that cannot be written, or the dead-peer or idle rule
// (pump.Ender). stop undoes it, reporting whether it did so before f was
// started.
func (c *Conn) AfterEnd(f func(error)) (stop func() bool) {
	c.emu.Lock()
	if err := c.lostErr; err != nil {
		c.emu.Unlock()
		go f(err)
		return func() bool { return false }
	}
	c.endFn = f
	c.emu.Unlock()
	return func() bool {
		c.emu.Lock()
		defer c.emu.Unlock()
		ok := c.endFn != nil
		c.endFn = nil
		return ok
	}
}

// lost records that the tunnel is gone for err, found outside a Read or
// Write, and tells whoever asked (AfterEnd). Our own Close is no loss.
func (c *Conn) lost(err error) {
	if c.state().closing() {
		return
	}
	c.emu.Lock()
	if c.lostErr != nil {
		c.emu.Unlock()
		return
	}
	c.lostErr = err
	f := c.endFn
	c.endFn = nil
	c.emu.Unlock()
	if f != nil {
		go f(err)
	}
}

// CloseWithError ends the tunnel because the stream was cut (the other
// side of the pump failed with err): the peer gets a close frame that says
// so, 4002 if err is a timeout and 4001 (reset) otherwise, so that it
// never reads the cut as a clean end. A raw tunnel, which has no close
// frame, is reset. Like Close, it is idempotent, waits for the peer's
// close frame at most the close timeout, and never hands a connection on
// for reuse.
func (c *Conn) CloseWithError(err error) error {
	c.await()
	if c.raw {
		if tcp := c.rawTCP(); tcp != nil {
			tcp.SetLinger(0)
		}
		return c.rawClose()
	}
	code, reason := closeTargetReset, "reset"
	if isTimeout(err) {
		code, reason = closeTimedOut, "timeout"
	}
	c.closeOnce.Do(func() { c.closeErr = c.close(code, reason) })
	return c.closeErr
}

// peerClose is what a close frame with code and reason makes the reads
// see.
func peerClose(code int, reason string) error {
	switch code {
	case closeNormal, closeGoingAway, closeNoStatus:
		return io.EOF
	}
	return &CloseError{Code: code, Reason: reason}
}

// rawTCP is the TCP socket under the tunnel, under any TLS, if it is one.
func (c *Conn) rawTCP() *net.TCPConn {
	nc := c.nc
	if c.tlsConn != nil {
		nc = c.tlsConn.NetConn()
	}
	if cc, ok := nc.(*cork.Conn); ok {
		nc = cc.NetConn()
	}
	tcp, _ := nc.(*net.TCPConn)
	return tcp
}
