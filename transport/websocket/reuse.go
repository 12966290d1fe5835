package websocket

import (
	"net"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// The reuse extension (PROTOCOL.md §7): a stream ends with an exchange of
// {"type":"end"} messages instead of close frames, after which the
// connection, its TCP, TLS and WebSocket handshakes already paid for,
// carries the client's next handshake. A *Conn is still one stream: when
// its stream ends cleanly it hands its connection on as a link and is
// closed, so that nothing a caller does with it later reaches the next
// stream.

// Reuse defaults.
const (
	// DefaultMaxIdlePerSprite is the fixed cap on idle connections per
	// sprite that a Dialer had before its pool followed the demand (see
	// Dialer.MaxIdlePerSprite): set MaxIdlePerSprite to it to keep that
	// cap. With MaxIdlePerSprite 0 a Dialer keeps every connection its
	// tunnels hand back, up to AdaptiveMaxIdlePerSprite.
	DefaultMaxIdlePerSprite = 8
	// AdaptiveMaxIdlePerSprite caps the idle connections per sprite of a
	// Dialer whose MaxIdlePerSprite is 0. Below it the pool follows the
	// demand: a Dialer dials a new connection only when no idle one is
	// there, so the connections it keeps never outnumber the tunnels that
	// were open to the sprite at once within the last IdleConnTimeout (16
	// concurrent tunnels leave 16 idle connections, a tunnel at a time
	// leaves one), and each closes after IdleConnTimeout unused.
	AdaptiveMaxIdlePerSprite = 64
	// DefaultIdleConnTimeout is how long a Dialer keeps an idle connection.
	DefaultIdleConnTimeout = 30 * time.Second
	// DefaultServerIdleTimeout is how long the server waits on an idle
	// connection for the client's next handshake. It is longer than the
	// client's own timeout, so that clients close idle connections first.
	DefaultServerIdleTimeout = 2 * time.Minute
	// DefaultMaxIdleConns caps the idle connections a server keeps open.
	DefaultMaxIdleConns = 1024
)

// link is a connection whose stream ended cleanly, ready for the next one.
type link struct {
	nc  net.Conn
	pre []byte // bytes read past the end of the last stream
	// optimistic: the server announced the optimistic extension in this
	// connection's upgrade response.
	optimistic bool
}

// closeReuse is Close under the reuse extension: it sends end, waits (up
// to the close timeout) for the peer's, and hands the connection on to
// onReuse. Anything out of the ordinary (a Read blocked, a write that
// fails or times out, a close frame either way) falls back to closing the
// connection.
func (c *Conn) closeReuse() error {
	c.beginClose()
	c.stopKeepalive() // no ping may follow end
	deadline := time.Now().Add(c.cfg.closeTimeout)
	// A Write in progress finishes first (a copy towards a peer that is
	// draining for our end), or gives up at the deadline if the peer does
	// not read.
	c.wd.closing(c.nc, deadline)
	c.wmu.Lock()
	// A Write that held the lock until the deadline leaves none for end:
	// that is no sign that the peer stopped reading.
	late := !time.Now().Before(deadline)
	sent, stalled := false, false
	if c.wr.err == nil && !c.state().closed() {
		c.writeControlLocked()
		err := c.flushPendLocked()
		if err == nil && !c.state().has(sentClose) {
			_, err = c.writeFrameLocked(opText, wire.EndMessage)
			sent = err == nil
			c.endSent()
		}
		stalled = isTimeout(err) && !late
	}
	c.wmu.Unlock()
	if stalled {
		// The peer read nothing until the deadline: a close frame would
		// not get through either.
		return c.finish()
	}
	if !sent {
		// Within the same deadline: past it (a Write held the write side
		// until then), the close frame gets no more time of its own.
		return c.closeBy(deadline, closeNormal, "")
	}

	if !c.state().has(recvEnd | recvClose) {
		c.drainOrWait(deadline)
	}
	if !c.state().has(recvEnd) || !c.detachBy(deadline) {
		return c.finish()
	}
	return nil
}

// detach hands the connection on, if it is at a clean message boundary
// both ways; it reports whether it did. The Read or copy that took the
// peer's end may still hold the read lock for a while: up to the close
// timeout.
func (c *Conn) detach() bool { return c.detachBy(time.Now().Add(c.cfg.closeTimeout)) }

// detachBy is detach within a deadline already running: Close's, the one
// its drain had (not a fresh close timeout).
func (c *Conn) detachBy(deadline time.Time) bool {
	c.stopKeepalive()
	if !c.lockReadBy(deadline, nil) {
		return false
	}
	defer c.unlockRead()
	c.wmu.Lock() // writers fail at once now (end is sent), or by the write deadline
	defer c.wmu.Unlock()
	r := &c.rd
	if !reusable(c.state()) || c.wr.err != nil || len(c.wr.pend) > 0 ||
		r.mode != modeHeader || r.msgOp != 0 || c.onReuse == nil {
		return false
	}
	l := &link{nc: c.nc, optimistic: c.announced}
	if rest := r.win[r.pos:r.end]; len(rest) > 0 || len(r.pre) > 0 {
		l.pre = append(append([]byte(nil), rest...), r.pre...)
	}
	c.dmu.Lock()
	pooled := c.pool()
	c.dmu.Unlock()
	if !pooled {
		return false
	}
	c.nc.SetDeadline(time.Time{})
	c.onReuse(l)
	return true
}

// finish closes the connection underneath and stops the keep-alive timer:
// the last step of Close, and of an end that could not be completed.
func (c *Conn) finish() error {
	mine := c.ended()
	c.stopKeepalive()
	if !mine {
		return nil // the connection carries another stream now
	}
	return c.closeNC()
}

// goAway closes a connection that waits for a handshake (an idle link, or
// a new one at shutdown) with a close frame (1001) and no wait for the
// peer's: an idle client reads nothing until it uses the link again.
func (c *Conn) goAway() {
	c.closeOnce.Do(func() {
		c.beginClose()
		if c.wmu.TryLock() {
			c.nc.SetWriteDeadline(time.Now().Add(c.cfg.closeTimeout))
			c.sendCloseLocked(closeGoingAway, "")
			c.wmu.Unlock()
		}
		c.closeErr = c.finish()
	})
}

// Reuse reports whether the tunnel negotiated the reuse extension: closing
// it cleanly leaves its connection open for the next tunnel.
func (c *Conn) Reuse() bool {
	c.await()
	return c.reuse
}

// idleLink is a link in a Dialer's pool.
type idleLink struct {
	*link
	sprite string
	timer  *time.Timer
}

// maxIdle is the cap on idle connections per sprite: MaxIdlePerSprite if
// set (negative: none), else AdaptiveMaxIdlePerSprite.
func (d *Dialer) maxIdle() int {
	if d.MaxIdlePerSprite != 0 {
		return d.MaxIdlePerSprite
	}
	return AdaptiveMaxIdlePerSprite
}

// putIdle keeps l for a later tunnel to sprite, or closes it if the pool
// for sprite is full or reuse is off. Under the adaptive cap (a
// MaxIdlePerSprite of 0) the pool needs no count of its own of the
// tunnels open: it holds only connections that tunnels handed back, and
// takeIdle's callers dial a new one only when it is empty, so it grows to
// the concurrency of the tunnels to sprite and no further.
func (d *Dialer) putIdle(sprite string, l *link) {
	max := d.maxIdle()
	d.pmu.Lock()
	if max < 0 || len(d.idle[sprite]) >= max {
		d.pmu.Unlock()
		l.nc.Close()
		return
	}
	il := &idleLink{link: l, sprite: sprite}
	if d.idle == nil {
		d.idle = make(map[string][]*idleLink)
	}
	d.idle[sprite] = append(d.idle[sprite], il)
	il.timer = time.AfterFunc(cmpOr(d.IdleConnTimeout, DefaultIdleConnTimeout), func() { d.expireIdle(il) })
	d.pmu.Unlock()
}

// takeIdle returns the most recently idled link to sprite, or nil.
func (d *Dialer) takeIdle(sprite string) *link {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	list := d.idle[sprite]
	for len(list) > 0 {
		il := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if il.timer.Stop() {
			d.setIdle(sprite, list)
			return il.link
		}
		// Its timer fired and is closing it.
	}
	d.setIdle(sprite, list)
	return nil
}

func (d *Dialer) setIdle(sprite string, list []*idleLink) {
	if len(list) == 0 {
		delete(d.idle, sprite)
	} else {
		d.idle[sprite] = list
	}
}

// expireIdle closes a link that stayed idle for the idle timeout.
func (d *Dialer) expireIdle(il *idleLink) {
	d.pmu.Lock()
	list := d.idle[il.sprite]
	for i, x := range list {
		if x == il {
			list = append(list[:i], list[i+1:]...)
			d.setIdle(il.sprite, list)
			break
		}
	}
	d.pmu.Unlock()
	il.nc.Close()
}

// dropIdle closes every idle link to sprite (all of them, or those of
// every sprite if sprite is ""), as after one of them was found dead: they
// are likely as old, or from the same server.
func (d *Dialer) dropIdle(sprite string) {
	d.pmu.Lock()
	var drop []*idleLink
	for name, list := range d.idle {
		if sprite == "" || name == sprite {
			drop = append(drop, list...)
			delete(d.idle, name)
		}
	}
	d.pmu.Unlock()
	for _, il := range drop {
		il.timer.Stop()
		il.nc.Close()
	}
}

// CloseIdleConnections closes the connections kept for later tunnels (the
// reuse extension). Tunnels in use are not affected, and may still leave
// their connections idle when they close.
func (d *Dialer) CloseIdleConnections() { d.dropIdle("") }

// IdleConnections returns how many connections the Dialer keeps idle for
// later tunnels.
func (d *Dialer) IdleConnections() int {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	n := 0
	for _, list := range d.idle {
		n += len(list)
	}
	return n
}
