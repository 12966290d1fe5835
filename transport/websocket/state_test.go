package websocket

import (
	"net"
	"syscall"
	"testing"
)

// lifeConn is a Conn with no connection, for the state machine alone.
func lifeConn(t *testing.T, halfClose, reuse bool, linger bool) *Conn {
	t.Helper()
	cfg, err := Tuning{}.config()
	if err != nil {
		t.Fatal(err)
	}
	if linger {
		cfg.linger = DefaultHalfCloseLinger
	}
	c := &Conn{cfg: cfg, peerClosed: make(chan struct{})}
	c.setExtensions(extensions{halfClose: halfClose, reuse: reuse})
	return c
}

// TestLifecycleDirections walks each direction through its states, and
// checks what the rules then allow.
func TestLifecycleDirections(t *testing.T) {
	t.Parallel()
	c := lifeConn(t, true, false, false)
	if s := c.state(); s.phase() != phaseStreaming || s.out() != dirOpen || s.in() != dirOpen {
		t.Fatalf("new tunnel: phase %d out %d in %d", s.phase(), s.out(), s.in())
	}
	if err := writable(c.state()); err != nil {
		t.Fatalf("open tunnel not writable: %v", err)
	}
	c.finSent()
	if c.state().out() != dirFin || writable(c.state()) != syscall.EPIPE {
		t.Fatalf("after our eof: out %d, writable %v; want fin, EPIPE", c.state().out(), writable(c.state()))
	}
	if !c.closeFrameSent() || c.closeFrameSent() {
		t.Fatal("closeFrameSent must report the first close frame only")
	}
	if c.state().out() != dirClosed {
		t.Fatal("our direction not closed after our close frame")
	}

	c.finReceived()
	if c.state().in() != dirFin {
		t.Fatal("peer's direction not at fin after its eof")
	}
	select {
	case <-c.peerClosed:
		t.Fatal("peerClosed closed at the peer's eof: the close handshake is still to come")
	default:
	}
	if !c.closeFrameReceived(true) {
		t.Fatal("a close frame under half_close must be answered at once")
	}
	if s := c.state(); s.in() != dirClosed || s.has(peerBoth) {
		t.Fatalf("close after eof: in %d, peerBoth %v; want closed, not both ways", s.in(), s.has(peerBoth))
	}
	<-c.peerClosed // closed by the peer's close frame
	if !c.endedCleanly(c.state()) {
		t.Fatal("a close frame under half_close is a clean end")
	}
}

// TestLifecycleCloseRule: a plain peer's close frame is its end of stream,
// answered at once only once our side has ended (or Close began); under
// half_close it is the peer closing both ways.
func TestLifecycleCloseRule(t *testing.T) {
	t.Parallel()
	plain := lifeConn(t, false, false, false)
	if plain.closeFrameReceived(true) {
		t.Fatal("a plain peer's close frame answered while our side is still open")
	}
	if plain.state().has(peerBoth) {
		t.Fatal("a plain peer's close frame taken for closing both ways")
	}
	if plain.endedCleanly(plain.state()) {
		t.Fatal("a plain peer's close frame before ours is not a complete end")
	}
	plain.closeFrameSent()
	if !plain.endedCleanly(plain.state()) {
		t.Fatal("close frames exchanged, yet not a clean end")
	}

	closing := lifeConn(t, false, false, false)
	closing.beginClose()
	if !closing.closeFrameReceived(true) {
		t.Fatal("a close frame during Close must be answered")
	}

	hc := lifeConn(t, true, false, false)
	if !hc.closeFrameReceived(true) || !hc.state().has(peerBoth) {
		t.Fatal("under half_close, a close frame before eof is the peer closing both ways, answered at once")
	}
	cut := lifeConn(t, true, false, false)
	cut.closeFrameReceived(false)
	if cut.state().has(peerBoth) {
		t.Fatal("an error close taken for a clean close both ways")
	}
}

// TestLifecycleLingerRace: CloseWrite to a plain server (linger) and the
// server's close frame, in either order, lead to exactly one side
// answering: the reader (closeFrameReceived) or CloseWrite (finSent sees
// the peer's close).
func TestLifecycleLingerRace(t *testing.T) {
	t.Parallel()
	a := lifeConn(t, false, false, true)
	if a.finAction() != finLinger {
		t.Fatalf("finAction %d with a plain peer and a linger, want finLinger", a.finAction())
	}
	if a.finSent().has(recvClose) {
		t.Fatal("no close frame was received yet")
	}
	if !a.closeFrameReceived(true) {
		t.Fatal("the reader must answer a close frame that comes while we linger")
	}

	b := lifeConn(t, false, false, true)
	if b.closeFrameReceived(true) {
		t.Fatal("close frame answered before our side ended")
	}
	if !b.finSent().has(recvClose) {
		t.Fatal("CloseWrite must see the close frame that came first, and answer it")
	}

	if lifeConn(t, false, false, false).finAction() != finClose {
		t.Fatal("no linger (the server): CloseWrite must send the close frame")
	}
	if lifeConn(t, true, false, true).finAction() != finEOF {
		t.Fatal("half_close: CloseWrite must send eof")
	}
}

// TestLifecycleTunnel: the tunnel's phases, the reuse rules, and who may
// close the connection once it was handed on.
func TestLifecycleTunnel(t *testing.T) {
	t.Parallel()
	c := lifeConn(t, true, true, false)
	if !c.takesControl("eof") || !c.takesControl("end") || c.takesControl("other") {
		t.Fatal("reuse: eof and end are control messages, nothing else")
	}
	c.endReceived()
	if s := c.state(); s.in() != dirClosed || !s.has(peerBoth) || !s.has(recvEnd) {
		t.Fatal("end before eof: the peer closed both ways")
	}
	if writable(c.state()) != syscall.EPIPE {
		t.Fatal("writes after the peer's end must fail with EPIPE")
	}
	c.beginClose()
	if writable(c.state()) != net.ErrClosed {
		t.Fatal("writes after Close began must fail with net.ErrClosed")
	}
	c.endSent()
	if !reusable(c.state()) {
		t.Fatal("ends exchanged, no close frame: the connection is reusable")
	}
	if !c.pool() || c.state().phase() != phasePooled {
		t.Fatal("pool failed on a reusable tunnel")
	}
	if c.ended() {
		t.Fatal("a pooled connection must not be closed by the Conn that handed it on")
	}
	if reusable(c.state()) || !c.state().closed() {
		t.Fatal("a pooled tunnel is closed for its Conn")
	}

	d := lifeConn(t, true, true, false)
	if !d.ended() {
		t.Fatal("ended: the connection is the Conn's to close")
	}
	if d.pool() {
		t.Fatal("an ended tunnel cannot be pooled")
	}

	plain := lifeConn(t, false, true, false) // (reuse without half_close is never negotiated)
	if plain.takesControl("eof") || plain.takesControl("end") {
		t.Fatal("a plain peer's text messages carry no control")
	}
	e := lifeConn(t, true, true, false)
	e.closeFrameSent()
	if reusable(e.state()) {
		t.Fatal("a close frame sent: no reuse")
	}
}
