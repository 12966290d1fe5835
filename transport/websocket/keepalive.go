package websocket

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Keep-alive: pings when we have sent nothing for the keep-alive interval,
// the dead-peer rule (a Read that has heard nothing for the dead-peer
// timeout ends the tunnel), and the idle rule (no data either way for the
// idle timeout). No goroutine runs for it: one timer per tunnel, armed for
// the next moment something is due.
//
// The dead-peer rule applies only to a peer known to answer pings while we
// wait for it: one that negotiated an extension (spriteproxy's own ends).
// A plain v1 peer, such as the Sprites SDK's client, answers pings only
// while its application reads, so an idle tunnel it keeps in a pool would
// look dead; TCP keep-alive probes its connection instead, which its
// kernel answers.
//
// Silence is measured from the last frame received, and never counts time
// in which this process did not run: a timer that fires late (the process
// was stopped, or starved) first gives the reader a chance to catch up with
// what arrived meanwhile.

// lateTick is how late a keep-alive timer may fire before the time it lost
// is taken for time in which this process did not run.
const lateTick = time.Second

// timeoutError is the error of a tunnel closed by the dead-peer or idle
// timeout.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string        { return "websocket: " + e.msg }
func (e *timeoutError) Timeout() bool        { return true }
func (e *timeoutError) Temporary() bool      { return false }
func (e *timeoutError) Is(target error) bool { return target == dialer.ErrTunnelClosed }

var _ net.Error = (*timeoutError)(nil)

// keepTimer is the keep-alive timer's state, guarded by its mutex, which is
// never held across a write.
type keepTimer struct {
	mu    sync.Mutex
	t     *time.Timer
	due   int64 // unix nanoseconds: when t was set to fire
	since int64 // unix nanoseconds: silence before this is not the peer's (we did not run)

	// The linger timer, after CloseWrite to a plain peer (CloseWrite):
	// nil but on such a tunnel, so that an idle Conn does not carry it.
	linger *lingerTimer
}

// lingerTimer is the linger period's timer and what it measures from.
// Once the linger has sent the close frame (sent), the same timer bounds
// the wait for the peer's answer by the close timeout.
type lingerTimer struct {
	t    *time.Timer
	due  time.Time
	from int64 // unix nanoseconds: the peer's silence is counted from here at the earliest
	sent bool  // the close frame went out at from: the close timeout runs
}

// startLinger arms the linger timer: the close frame goes out once the
// peer has sent no data for the linger period (pings do not count) while
// a read waited for it. Time in which no read waits on the connection (the
// application, or the pump's destination, is not reading) is no silence
// of the peer's: its data may be waiting behind TCP's flow control.
func (c *Conn) startLinger() {
	k := &c.ka
	k.mu.Lock()
	defer k.mu.Unlock()
	if c.state().closed() || k.linger != nil {
		return
	}
	now := time.Now()
	k.linger = &lingerTimer{from: now.UnixNano(), due: now.Add(c.cfg.linger)}
	k.linger.t = time.AfterFunc(c.cfg.linger, c.lingerTick)
}

// lingerTick runs when the linger timer fires: the close frame goes out if
// the peer has been silent for the linger period, or the timer is set
// again for when it will have been. Once the frame is out, the peer has
// the close timeout to answer it, counted the same way (see
// lingerUnanswered). Like the keep-alive timer, it decides under the
// timer's lock and sends after letting go of it.
func (c *Conn) lingerTick() {
	k := &c.ka
	k.mu.Lock()
	if c.state().closed() || k.linger == nil {
		k.mu.Unlock()
		return
	}
	now := time.Now()
	lg := k.linger
	if now.Sub(lg.due) > lateTick {
		lg.from = now.UnixNano() // we did not run: what arrived is still unread
	}
	period := c.cfg.linger
	if lg.sent {
		if c.state().has(recvClose) {
			k.linger = nil // answered
			k.mu.Unlock()
			return
		}
		period = c.cfg.closeTimeout
	}
	// Silence is of data: a peer that pings, or answers our pings, while
	// it has nothing more to send is silent all the same. It is counted
	// only while a Read (or CopyTo's read) waits for data, from when it
	// began: a reader that pauses holds the peer up by flow control.
	quiet := time.Duration(0)
	if wait := c.waitFrom.Load(); wait != 0 {
		quiet = time.Duration(now.UnixNano() - max(c.lastData.Load(), lg.from, wait))
	}
	if quiet < period {
		lg.due = now.Add(period - quiet)
		lg.t.Reset(period - quiet)
		k.mu.Unlock()
		return
	}
	if lg.sent {
		k.linger = nil
		k.mu.Unlock()
		c.lingerUnanswered()
		return
	}
	lg.sent, lg.from = true, now.UnixNano()
	lg.due = now.Add(c.cfg.closeTimeout)
	lg.t.Reset(c.cfg.closeTimeout)
	k.mu.Unlock()
	c.queueClose(closeNormal, "")
}

// lingerUnanswered ends a tunnel whose peer left the linger's close frame
// unanswered for the close timeout while a Read waited (a plain peer has
// no dead-peer rule, and its kernel answers TCP keep-alive): the
// connection is closed, and reads fail with a timeout, not io.EOF, since
// what the peer still meant to send may be lost.
func (c *Conn) lingerUnanswered() {
	err := &timeoutError{fmt.Sprintf("no answer to the close frame in %v: tunnel closed", c.cfg.closeTimeout)}
	e := error(&net.OpError{Op: "read", Net: "websocket", Source: c.local, Addr: c.remote, Err: err})
	c.deadErr.Store(&e)
	c.lost(e)
	if c.ended() {
		c.closeNC()
	}
}

// deadPeerRule reports whether the dead-peer rule applies to this tunnel.
func (c *Conn) deadPeerRule() bool {
	return c.cfg.keepAlive > 0 && c.cfg.deadPeer > 0 && c.halfClose
}

// startKeepalive arms the keep-alive timer. A plain peer's connection gets
// TCP keep-alive too (see deadPeerRule), as a raw tunnel's does.
func (c *Conn) startKeepalive() {
	if c.raw || !c.halfClose {
		c.tcpKeepAlive() // no frames to ping with, or pings a peer may not answer: the kernel probes
	}
	if c.raw || c.cfg.tick <= 0 {
		return
	}
	k := &c.ka
	k.mu.Lock()
	defer k.mu.Unlock()
	if c.state().closed() {
		return
	}
	now := time.Now()
	next := c.nextTick(now, 0)
	k.due = now.Add(next).UnixNano()
	k.t = time.AfterFunc(next, c.keepalive)
}

// tcpKeepAlive has the kernel probe the connection: after a keep-alive
// interval of silence, every interval, and the connection fails after three
// unanswered probes, close to the dead-peer timeout of a framed tunnel.
func (c *Conn) tcpKeepAlive() {
	tcp := c.rawTCP()
	if tcp == nil || c.cfg.keepAlive <= 0 {
		return
	}
	tcp.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: c.cfg.keepAlive, Interval: c.cfg.keepAlive, Count: 3})
}

// nextTick is how long from now until something may be due: a ping (the
// next one counted from pinged, when one was just queued, so that a ping
// blocked on a peer that does not read does not make the timer spin), the
// dead-peer deadline while a Read waits (a Read that starts later is at
// least a tick from it), or the idle deadline; at most the configured tick.
func (c *Conn) nextTick(now time.Time, pinged int64) time.Duration {
	next := c.cfg.tick
	at := func(from int64, d time.Duration) {
		if d <= 0 {
			return
		}
		if w := time.Duration(from + int64(d) - now.UnixNano()); w < next {
			next = w
		}
	}
	if c.cfg.keepAlive > 0 {
		at(max(c.lastWrite.Load(), pinged), c.cfg.keepAlive*9/10)
	}
	if c.deadPeerRule() && c.reading.Load() > 0 {
		at(max(c.lastRead.Load(), c.ka.since), c.cfg.deadPeer)
	}
	at(c.lastData.Load(), c.cfg.idle)
	return max(next, time.Millisecond)
}

// keepalive runs when the timer fires: it decides under the timer's lock,
// and sends or closes after letting go of it, so that a ping blocked on a
// peer that does not read never holds up a Close.
func (c *Conn) keepalive() {
	k := &c.ka
	k.mu.Lock()
	if c.state().closed() || k.t == nil {
		k.mu.Unlock()
		return
	}
	now := time.Now()
	nowNs := now.UnixNano()
	if now.UnixNano()-k.due > int64(lateTick) {
		// We did not run for a while: frames may be waiting unread. Judge
		// the peer's silence only from now on.
		k.since = nowNs
	}
	var expire *timeoutError
	switch dead, idle := c.cfg.deadPeer, c.cfg.idle; {
	case c.deadPeerRule() && c.reading.Load() > 0 && nowNs-max(c.lastRead.Load(), k.since) >= int64(dead):
		expire = &timeoutError{fmt.Sprintf("no frame from the peer in %v: tunnel closed as dead", dead)}
	case idle > 0 && nowNs-c.lastData.Load() >= int64(idle):
		expire = &timeoutError{fmt.Sprintf("no data either way in %v: idle tunnel closed", idle)}
	}
	ping := expire == nil && c.cfg.keepAlive > 0 && nowNs-c.lastWrite.Load() >= int64(c.cfg.keepAlive)*9/10
	if expire == nil {
		pinged := int64(0)
		if ping {
			pinged = nowNs
		}
		next := c.nextTick(now, pinged)
		k.due = now.Add(next).UnixNano()
		k.t.Reset(next)
	} else {
		k.t = nil
	}
	k.mu.Unlock()

	switch {
	case expire != nil:
		c.expire(expire)
	case ping:
		c.queuePing()
	}
}

// expire closes the tunnel from the timer: reads and writes fail with err
// (a timeout), the peer gets a close frame (4002) if one can be sent now,
// and the pump learns of it (lost).
func (c *Conn) expire(err *timeoutError) {
	e := error(&net.OpError{Op: "read", Net: "websocket", Source: c.local, Addr: c.remote, Err: err})
	c.deadErr.Store(&e)
	c.queueClose(closeTimedOut, "timeout")
	c.lost(e)
	if c.ended() {
		c.closeNC()
	}
}

// stopKeepalive stops the timer; a tick already running finishes on its
// own (it holds no lock across a write, and finds the tunnel closed).
func (c *Conn) stopKeepalive() {
	k := &c.ka
	k.mu.Lock()
	if k.t != nil {
		k.t.Stop()
		k.t = nil
	}
	if k.linger != nil {
		k.linger.t.Stop()
		k.linger = nil
	}
	k.mu.Unlock()
}

// writeDeadline is the write deadline of the connection under the tunnel,
// which three parties set: the application (SetDeadline and
// SetWriteDeadline), control frames (a ping or pong is written with a
// bound of its own, so that an application's expired deadline does not
// stop keep-alive) and Close (its close timeout, which wins from then on).
type writeDeadline struct {
	mu    sync.Mutex
	app   int64 // the application's deadline, unix nanoseconds (0: none)
	own   bool  // a control frame's bound is in force
	final bool  // Close's deadline is in force
}

// setApp records and, unless a bound of ours is in force, applies the
// application's write deadline.
func (d *writeDeadline) setApp(nc net.Conn, t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.app = 0
	if !t.IsZero() {
		d.app = t.UnixNano()
	}
	if d.own || d.final {
		return nil
	}
	return nc.SetWriteDeadline(t)
}

// control puts a bound of ours in force for a control frame's write, and
// returns the function that restores the application's deadline after it.
func (d *writeDeadline) control(nc net.Conn, bound time.Duration) (restore func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.final || d.own {
		return func() {}
	}
	d.own = true
	nc.SetWriteDeadline(time.Now().Add(bound))
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.own = false
		if !d.final {
			app := time.Time{}
			if d.app != 0 {
				app = time.Unix(0, d.app)
			}
			nc.SetWriteDeadline(app)
		}
	}
}

// closing puts Close's deadline t in force for good.
func (d *writeDeadline) closing(nc net.Conn, t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.final = true
	nc.SetWriteDeadline(t)
}
