package websocket

import (
	"net"
	"sync/atomic"
	"syscall"

	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// A tunnel's lifecycle, in one place: the state of each direction and of
// the tunnel as a whole, in one atomic word, and the transitions as the
// methods below. Read, write and close code asks the state (one atomic
// load) and moves it only through these methods; each extension is a rule
// on them (the rules, at the end of this file).
//
// Each direction, ours (out) and the peer's (in):
//
//	        our eof sent (half_close),                  our close frame
//	        or the close frame owed (plain peer)        or end sent
//	open ───────────────────────────────────► fin ─────────────────────► closed
//	  │                                                                    ▲
//	  └────────────── close frame or end sent at once ────────────────────┘
//
//	        peer's eof (half_close)                     peer's close frame or end,
//	open ───────────────────────────────────► fin ─────────────────────► closed
//	  │                                                 or the connection's end
//	  └──── peer's close frame or end at once (closed both ways: peerBoth) ─┘
//
// Data goes out only while ours is open, and Reads return it only while
// the peer's is open; at the peer's fin they return io.EOF, and only the
// end of the tunnel (drain, AwaitEnd) reads past it.
//
// The tunnel:
//
//	handshaking ──reply──► streaming ──Close──► ending ──connection closed──► ended
//	     │                                        │
//	     └─ reuse: target refused ──► pooled ◄────┴── reuse: both ends' end
//
// handshaking: the first message and its reply (also between two streams
// of a reused connection, on a new Conn). streaming: the extensions are in
// force. ending: Close (CloseWithError, CloseNow) has begun: writes fail,
// the close handshake (or the end exchange) runs. ended: the connection
// underneath is closed (by Close, CloseNow, a failure, or the dead-peer or
// idle rule). pooled: with reuse, the stream ended cleanly both ways (or
// a refused target opened none) and the connection was handed on for the
// next stream: this Conn never touches it again.
//
// Besides, the word records which frames ended the directions (close frame
// or end, each way), since the close handshake and reuse depend on it.
//
// The hot path (a Read or Write of data) loads the word once per call or
// frame: no lock is taken for it, and none is held across a network write
// that a close must wait for (transitions are CAS loops on the word).

// phase is the tunnel's state.
type phase uint32

const (
	phaseHandshaking phase = iota
	phaseStreaming
	phaseEnding
	phaseEnded
	phasePooled
)

// dir is a direction's state.
type dir uint32

const (
	dirOpen dir = iota
	dirFin
	dirClosed
)

// lifeState is a snapshot of the word.
type lifeState uint32

const (
	phaseBits = 0x7 // bits 0-2: phase
	outShift  = 3   // bits 3-4: our direction
	inShift   = 5   // bits 5-6: the peer's direction
	dirBits   = 0x3

	sentClose lifeState = 1 << 7  // our close frame went out
	recvClose lifeState = 1 << 8  // the peer's close frame was read
	sentEnd   lifeState = 1 << 9  // our end went out (reuse)
	recvEnd   lifeState = 1 << 10 // the peer's end was read (reuse)
	peerBoth  lifeState = 1 << 11 // the peer closed both ways at once (no eof first)
)

func (s lifeState) phase() phase                { return phase(s & phaseBits) }
func (s lifeState) out() dir                    { return dir(s>>outShift) & dirBits }
func (s lifeState) in() dir                     { return dir(s>>inShift) & dirBits }
func (s lifeState) has(f lifeState) bool        { return s&f != 0 }
func (s lifeState) closing() bool               { return s.phase() >= phaseEnding }
func (s lifeState) closed() bool                { return s.phase() >= phaseEnded }
func (s lifeState) withPhase(p phase) lifeState { return s&^phaseBits | lifeState(p) }
func (s lifeState) withOut(d dir) lifeState     { return s&^(dirBits<<outShift) | lifeState(d)<<outShift }
func (s lifeState) withIn(d dir) lifeState      { return s&^(dirBits<<inShift) | lifeState(d)<<inShift }

// lifecycle is the word.
type lifecycle struct{ v atomic.Uint32 }

func (l *lifecycle) load() lifeState { return lifeState(l.v.Load()) }

// move applies f to the word until no other transition intervenes, and
// returns the state before.
func (l *lifecycle) move(f func(lifeState) lifeState) lifeState {
	for {
		old := l.v.Load()
		next := uint32(f(lifeState(old)))
		if next == old || l.v.CompareAndSwap(old, next) {
			return lifeState(old)
		}
	}
}

// state is the tunnel's state now.
func (c *Conn) state() lifeState { return c.st.load() }

// Transitions of the tunnel.

// startStreaming: the handshake is over and the extensions are in force.
func (c *Conn) startStreaming() {
	c.st.move(func(s lifeState) lifeState {
		if s.phase() == phaseHandshaking {
			return s.withPhase(phaseStreaming)
		}
		return s
	})
}

// beginClose: Close (or CloseNow, or a go-away) has begun; it returns the
// state before.
func (c *Conn) beginClose() lifeState {
	return c.st.move(func(s lifeState) lifeState {
		if s.phase() < phaseEnding {
			return s.withPhase(phaseEnding)
		}
		return s
	})
}

// ended: the connection underneath is being closed. It reports false if
// the connection was handed on (pooled): it is then not this Conn's to
// close.
func (c *Conn) ended() bool {
	old := c.st.move(func(s lifeState) lifeState {
		if s.phase() < phaseEnded {
			return s.withPhase(phaseEnded)
		}
		return s
	})
	c.markPeerClosed()
	return old.phase() != phasePooled
}

// pool: the connection is handed on for the next stream (reuse); the
// caller holds dmu. It reports false if the tunnel had ended meanwhile.
func (c *Conn) pool() bool {
	old := c.st.move(func(s lifeState) lifeState {
		if s.phase() < phaseEnded {
			return s.withPhase(phasePooled)
		}
		return s
	})
	c.markPeerClosed()
	return old.phase() < phaseEnded
}

// Transitions of our direction.

// finSent: we send no more data (eof sent, or, to a plain peer, the close
// frame owed). It returns the state before.
func (c *Conn) finSent() lifeState {
	return c.st.move(func(s lifeState) lifeState {
		if s.out() == dirOpen {
			return s.withOut(dirFin)
		}
		return s
	})
}

// closeFrameSent records our close frame; it reports whether it is the
// first (only the first goes out).
func (c *Conn) closeFrameSent() bool {
	old := c.st.move(func(s lifeState) lifeState { return (s | sentClose).withOut(dirClosed) })
	return !old.has(sentClose)
}

// endSent records our end (reuse).
func (c *Conn) endSent() {
	c.st.move(func(s lifeState) lifeState { return (s | sentEnd).withOut(dirClosed) })
}

// Transitions of the peer's direction (by the reader, under rmu).

// finReceived: the peer's eof (half_close).
func (c *Conn) finReceived() {
	c.st.move(func(s lifeState) lifeState {
		if s.in() == dirOpen {
			return s.withIn(dirFin)
		}
		return s
	})
}

// closeFrameReceived records the peer's close frame (clean: 1000 or
// 1001) and reports whether to answer it now (the close-frame rule).
func (c *Conn) closeFrameReceived(clean bool) (answer bool) {
	old := c.st.move(func(s lifeState) lifeState {
		n := (s | recvClose).withIn(dirClosed)
		if s.in() == dirOpen && clean && c.halfClose {
			n |= peerBoth
		}
		return n
	})
	c.markPeerClosed()
	return c.answersClose(old)
}

// endReceived records the peer's end (reuse): it sends nothing more on
// this stream; before an eof, it closed both ways.
func (c *Conn) endReceived() {
	c.st.move(func(s lifeState) lifeState {
		n := (s | recvEnd).withIn(dirClosed)
		if s.in() == dirOpen {
			n |= peerBoth
		}
		return n
	})
	c.markPeerClosed()
}

// inLost: nothing more can be read from the peer (the connection ended or
// failed, or the peer broke the protocol).
func (c *Conn) inLost() {
	c.st.move(func(s lifeState) lifeState { return s.withIn(dirClosed) })
	c.markPeerClosed()
}

// markPeerClosed wakes whoever waits for the peer's last frame
// (drainOrWait): nothing more will be read from the peer.
func (c *Conn) markPeerClosed() {
	c.peerOnce.Do(func() { close(c.peerClosed) })
}

// The rules, each extension's say on the transitions above.

// finAction is what CloseWrite sends.
type finAction int

const (
	finEOF    finAction = iota // half_close: {"type":"eof"}
	finClose                   // a plain peer, from the server: the close frame, its end of stream
	finLinger                  // a plain peer, from the client: the close frame once the peer is silent
)

func (c *Conn) finAction() finAction {
	switch {
	case c.halfClose:
		return finEOF
	case c.cfg.linger > 0:
		return finLinger
	}
	return finClose
}

// answersClose says whether a close frame from the peer, received in state
// s, is answered at once: with half_close it means the peer is gone both
// ways; without, it is the peer's end of stream, answered once ours has
// ended too (CloseWrite, or Close), so that nothing we still send is cut.
func (c *Conn) answersClose(s lifeState) bool {
	return c.halfClose || s.closing() || s.out() != dirOpen
}

// controlMessages says whether text messages after the handshake carry
// control messages on this tunnel: only under an extension that defines
// them (half_close; reuse comes only with it). A plain peer's carry
// nothing.
func (c *Conn) controlMessages() bool { return c.halfClose }

// takesControl says whether a control message of type typ means anything
// on this tunnel: eof under half_close, end under reuse; a plain peer's
// text messages carry nothing, and unknown types are ignored.
func (c *Conn) takesControl(typ string) bool {
	switch typ {
	case wire.ControlEOF:
		return c.controlMessages()
	case wire.ControlEnd:
		return c.controlMessages() && c.reuse
	case wire.ControlAck:
		return c.controlMessages() && c.resume
	}
	return false
}

// endedCleanly says, once the peer's direction has closed cleanly,
// whether the tunnel's end is complete as far as the peer is concerned:
// its end (reuse), its close frame under half_close (it is gone both
// ways), or its close frame after ours. A plain peer's close frame before
// ours leaves it waiting for our answer.
func (c *Conn) endedCleanly(s lifeState) bool {
	return s.has(recvEnd) || c.halfClose || s.has(sentClose)
}

// writable says whether data may go out in state s: not once Close has
// begun (net.ErrClosed), nor after our fin or the peer's end (EPIPE: under
// reuse, a peer that sent end reads nothing more).
func writable(s lifeState) error {
	switch {
	case s.closing():
		return net.ErrClosed
	case s.out() != dirOpen || s.has(recvEnd):
		return syscall.EPIPE
	}
	return nil
}

// reusable says whether, in state s, the connection may be handed on
// (reuse): no close frame either way, and the connection still open. (A
// stream's end exchange, when there was a stream, is closeReuse's to
// check: a refused target opens none.)
func reusable(s lifeState) bool {
	return !s.has(sentClose) && !s.has(recvClose) && !s.closed()
}
