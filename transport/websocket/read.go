package websocket

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// readBufSize is the Conn's own read buffer: frame headers, control frames
// and the first bytes of a payload land here; larger payloads are read
// straight into the caller's buffer.
const readBufSize = 256

// maxControlText caps a text (control) message after the handshake; a larger
// one is read and ignored.
const maxControlText = 4 << 10

// Reader modes.
const (
	modeHeader  = iota // at a frame boundary
	modeData           // inside a binary frame: payload goes to the caller
	modeCollect        // inside a control or text frame: payload is collected
)

// reader is the read side's state. Every step of it can be interrupted by a
// read deadline and resumed by the next call.
type reader struct {
	buf      [readBufSize]byte
	win      []byte // the window read into: buf, or a pooled buffer during CopyTo
	pos, end int    // unread bytes are win[pos:end]
	pre      []byte // bytes read past the HTTP upgrade, consumed before win is refilled

	mode   int
	h      header // the frame being read
	left   int64  // its payload bytes still to read
	mpos   int    // position in the mask of the next payload byte
	msgOp  byte   // opcode of a fragmented message in progress, 0 if none
	msgLen int64  // bytes of the current message so far

	ctrl  [maxControlPayload]byte
	ctrlN int
	text  []byte // the text message being collected
	drop  bool   // the text message is over its limit and is being skipped

	handshake bool   // a handshake message is awaited: binary frames are an error
	msg       []byte // the handshake message, once complete
	err       error  // sticky: io.EOF after the close frame, or a failure (the peer's direction closed)

	ackStop bool // readOrAck: return once an ack is in
	ackSeen bool // an ack came in since ackStop was set
}

// errBinaryBeforeHandshake: a binary message came where the handshake's text
// message was due.
var errBinaryBeforeHandshake = fmt.Errorf("%w: binary message before the handshake", dialer.ErrBadRequest)

// Read reads bytes of the stream. See Conn for the details.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.await(); err != nil {
		return 0, err
	}
	if c.raw {
		return c.rawRead(p)
	}
	c.reading.Add(1)
	defer c.reading.Add(-1)
	c.lastRead.Store(time.Now().UnixNano())
	c.rmu.Lock()
	c.waitFrom.Store(time.Now().UnixNano())
	n, err := c.readLocked(p)
	c.waitFrom.Store(0)
	c.unlockRead()
	if err != nil {
		err = c.readError(err)
	}
	return n, err
}

// errAckSeen: readOrAck's read ended because an ack came in.
var errAckSeen = errors.New("websocket: ack received")

// readOrAck is Read for a ResumableConn's writer that waits for acks while
// no Read is under way: it returns (0, nil) once an ack is in, or with data
// as Read does, and reads on past the peer's eof (io.EOF only at its
// close).
func (c *Conn) readOrAck(p []byte) (int, error) {
	c.reading.Add(1)
	defer c.reading.Add(-1)
	c.rmu.Lock()
	r := &c.rd
	r.ackStop, r.ackSeen = true, false
	// Past the peer's eof too: its acks of what we still send follow it.
	var n int
	err := c.awaitDataLocked(true)
	if err == nil && len(p) > 0 {
		n, err = c.readPayloadLocked(p[:min(int64(len(p)), r.left)])
	}
	r.ackStop, r.ackSeen = false, false
	c.unlockRead()
	if err == errAckSeen {
		return n, nil
	}
	if err != nil {
		err = c.readError(err)
	}
	return n, err
}

// readLocked is Read with rmu held.
func (c *Conn) readLocked(p []byte) (int, error) {
	r := &c.rd
	if err := c.awaitDataLocked(false); err != nil {
		return 0, err
	}
	if r.handshake && r.msg != nil {
		return 0, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	return c.readPayloadLocked(p)
}

// awaitDataLocked reads headers and control frames until the reader is
// inside a binary frame with payload left, a handshake message is complete,
// or the stream has ended (io.EOF: the peer's eof, unless pastFin, or its
// close frame or end) or failed.
func (c *Conn) awaitDataLocked(pastFin bool) error {
	r := &c.rd
	for {
		if r.err != nil {
			return r.err
		}
		if !pastFin && c.state().in() == dirFin {
			return io.EOF
		}
		if r.ackStop && r.ackSeen {
			return errAckSeen
		}
		switch r.mode {
		case modeData:
			return nil
		case modeHeader:
			if r.handshake && r.msg != nil {
				return nil
			}
			if err := c.readHeaderLocked(); err != nil {
				return err
			}
		case modeCollect:
			if err := c.collectLocked(); err != nil {
				return err
			}
		}
	}
}

// fill reads more bytes into the window.
func (c *Conn) fill() error {
	r := &c.rd
	if r.pos == r.end {
		r.pos, r.end = 0, 0
	} else if r.pos > 0 && len(r.win)-r.end < maxHeader {
		r.end = copy(r.win, r.win[r.pos:r.end])
		r.pos = 0
	}
	if len(r.pre) > 0 {
		n := copy(r.win[r.end:], r.pre)
		r.end += n
		r.pre = r.pre[n:]
		if len(r.pre) == 0 {
			r.pre = nil
		}
		return nil
	}
	n, err := c.nc.Read(r.win[r.end:])
	r.end += n
	if n > 0 {
		return nil
	}
	return c.ioError(err)
}

// ioError classifies an error of the connection underneath: a timeout can
// be retried; anything else ends the read side for good.
func (c *Conn) ioError(err error) error {
	if err == nil {
		return nil
	}
	if isTimeout(err) && !c.state().closed() {
		return err
	}
	if err == io.EOF {
		err = errUnexpectedEOF
	}
	c.rd.err = err
	c.inLost()
	return err
}

func isTimeout(err error) bool {
	if err == nil {
		return false // without allocating ne (errors.As makes it escape)
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fail ends the read side with a protocol error and tells the peer why.
func (c *Conn) fail(err error) error {
	c.rd.err = err
	var pe *ProtocolError
	if errors.As(err, &pe) {
		c.queueClose(pe.Code, pe.Reason)
	}
	c.inLost()
	return err
}

// readHeaderLocked reads and checks the next frame header.
func (c *Conn) readHeaderLocked() error {
	for {
		ok, err := c.headerLocked()
		if ok || err != nil {
			return err
		}
		if err := c.fill(); err != nil {
			return err
		}
	}
}

// headerLocked parses and checks the frame header in the window; ok is
// false when the window does not hold all of it yet.
func (c *Conn) headerLocked() (ok bool, err error) {
	r := &c.rd
	h, size, err := parseHeader(r.win[r.pos:r.end])
	if err != nil {
		return false, c.fail(err)
	}
	if size == 0 {
		return false, nil
	}
	r.pos += size
	if err := c.checkHeader(h); err != nil {
		return false, c.fail(err)
	}
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	if h.op < opClose {
		c.lastData.Store(now)
	}
	r.h, r.left, r.mpos = h, h.length, 0

	switch op := h.op; {
	case op >= opClose:
		r.mode, r.ctrlN = modeCollect, 0
	case op == opText || op == opContinuation && r.msgOp == opText:
		if op == opText {
			r.text, r.drop, r.msgLen = r.text[:0], false, 0
			if !h.fin {
				r.msgOp = opText
			}
		}
		r.mode = modeCollect
	default: // binary, or a continuation of one
		if r.handshake {
			return false, c.fail(errBinaryBeforeHandshake)
		}
		if op == opBinary {
			r.msgLen = 0
			if !h.fin {
				r.msgOp = opBinary
			}
		}
		r.mode = modeData
	}
	if h.op < opClose {
		r.msgLen += h.length
		if r.msgLen > c.cfg.maxMessage {
			return false, c.fail(protocolErrorf(closeTooBig, "message of over %d bytes, the limit", c.cfg.maxMessage))
		}
		if h.fin {
			r.msgOp = 0
		}
	}
	if r.left == 0 {
		if r.mode == modeCollect {
			_, err := c.collectAvailLocked()
			return true, err
		}
		r.mode = modeHeader
	}
	return true, nil
}

// checkHeader applies RFC 6455's rules to a header.
func (c *Conn) checkHeader(h header) error {
	r := &c.rd
	switch {
	case h.rsv != 0:
		return protocolErrorf(closeProtocolError, "reserved bits set with no extension negotiated")
	case h.masked == c.client:
		if c.client {
			return protocolErrorf(closeProtocolError, "the server masked a frame")
		}
		return protocolErrorf(closeProtocolError, "the client sent an unmasked frame")
	}
	switch h.op {
	case opClose, opPing, opPong:
		if !h.fin || h.length > maxControlPayload {
			return protocolErrorf(closeProtocolError, "control frame fragmented or over 125 bytes")
		}
	case opText, opBinary:
		if r.msgOp != 0 {
			return protocolErrorf(closeProtocolError, "new message before the fragmented one ended")
		}
	case opContinuation:
		if r.msgOp == 0 {
			return protocolErrorf(closeProtocolError, "continuation frame with no message to continue")
		}
	default:
		return protocolErrorf(closeProtocolError, "unknown opcode %#x", h.op)
	}
	return nil
}

// readPayloadLocked reads payload bytes of the current binary frame into p,
// which is no longer than what is left of it.
func (c *Conn) readPayloadLocked(p []byte) (int, error) {
	r := &c.rd
	var n int
	var err error
	switch {
	case r.pos < r.end:
		n = copy(p, r.win[r.pos:r.end])
		r.pos += n
	case len(r.pre) > 0:
		n = copy(p, r.pre)
		r.pre = r.pre[n:]
	default:
		n, err = c.nc.Read(p)
	}
	if n > 0 {
		c.payloadRead(p[:n])
		return n, nil
	}
	return 0, c.ioError(err)
}

// payloadRead unmasks p, just read from the current frame, and advances.
func (c *Conn) payloadRead(p []byte) {
	r := &c.rd
	if r.h.masked {
		ws.Cipher(p, r.h.mask, r.mpos)
		r.mpos += len(p)
	}
	r.left -= int64(len(p))
	if r.left == 0 {
		r.mode = modeHeader
	}
}

// collectLocked reads the rest of a control or text frame and acts on it.
func (c *Conn) collectLocked() error {
	for {
		done, err := c.collectAvailLocked()
		if done || err != nil {
			return err
		}
		if err := c.fill(); err != nil {
			return err
		}
	}
}

// collectAvailLocked takes what the window holds of a control or text
// frame, and acts on the frame once it is whole (done).
func (c *Conn) collectAvailLocked() (done bool, err error) {
	r := &c.rd
	for r.left > 0 {
		if r.pos == r.end {
			return false, nil
		}
		chunk := r.win[r.pos:min(r.end, r.pos+int(min(r.left, int64(r.end-r.pos))))]
		if r.h.masked {
			ws.Cipher(chunk, r.h.mask, r.mpos)
			r.mpos += len(chunk)
		}
		r.pos += len(chunk)
		r.left -= int64(len(chunk))
		if r.h.op >= opClose {
			r.ctrlN += copy(r.ctrl[r.ctrlN:], chunk)
			continue
		}
		limit := maxControlText
		if r.handshake {
			limit = wire.MaxHandshakeMessage
		}
		if !r.drop && len(r.text)+len(chunk) > limit {
			if r.handshake {
				return false, c.fail(protocolErrorf(closeTooBig, "handshake message over %d bytes", limit))
			}
			r.drop, r.text = true, r.text[:0]
		}
		if !r.drop {
			r.text = append(r.text, chunk...)
		}
	}
	r.mode = modeHeader
	switch r.h.op {
	case opPing:
		c.queuePong(r.ctrl[:r.ctrlN])
	case opPong:
	case opClose:
		return true, c.closeReceived(r.ctrl[:r.ctrlN])
	default: // text
		if r.h.fin || r.msgOp == 0 {
			c.textReceived()
		}
	}
	return true, nil
}

// textReceived acts on a complete text message.
func (c *Conn) textReceived() {
	r := &c.rd
	if r.drop {
		return
	}
	if r.handshake {
		r.msg = append([]byte(nil), r.text...)
		return
	}
	if !c.controlMessages() {
		return // a plain peer's text messages carry nothing for us
	}
	// Acks come once per quarter buffer of data: read our own form of them
	// without the JSON decoder's allocations.
	if c.onAck != nil && c.takesControl(wire.ControlAck) {
		if n, ok := wire.ParseAck(r.text); ok {
			c.onAck(n)
			r.ackSeen = true
			return
		}
	}
	ctl, err := wire.ParseControl(r.text)
	if err != nil || !c.takesControl(ctl.Type) {
		return // unknown control types are ignored, as the protocol says
	}
	switch ctl.Type {
	case wire.ControlEOF:
		c.finReceived()
	case wire.ControlEnd:
		r.err = io.EOF
		c.endReceived()
	case wire.ControlAck:
		if n, ok := wire.ParseAck(r.text); ok && c.onAck != nil {
			c.onAck(n)
			r.ackSeen = true
		}
	}
}

// closeReceived acts on the peer's close frame.
func (c *Conn) closeReceived(payload []byte) error {
	r := &c.rd
	code, reason, err := parseClose(payload)
	if err != nil {
		return c.fail(err)
	}
	r.err = peerClose(code, reason)
	if c.closeFrameReceived(r.err == io.EOF) { // (answersClose)
		c.queueClose(closeNormal, "")
	}
	return r.err
}

// readMessage reads a whole text message during the handshake.
func (c *Conn) readMessage() ([]byte, error) {
	c.rmu.Lock()
	defer c.unlockRead()
	r := &c.rd
	r.handshake, r.msg = true, nil
	defer func() { r.handshake, r.msg = false, nil }()
	for r.msg == nil {
		if _, err := c.readLocked(nil); err != nil {
			return nil, err
		}
	}
	return r.msg, nil
}

// readError turns a read-side error into what Read returns.
func (c *Conn) readError(err error) error {
	// Once our dead-peer or idle rule has ended the tunnel, that is its
	// end, whatever the peer sent meanwhile: its answer to our close 4002
	// can be read before the connection is closed, and a clean io.EOF then
	// would have the pump close the target gracefully, a cut stream ending
	// as a complete one.
	if d := c.deadErr.Load(); d != nil {
		return *d
	}
	if err == io.EOF {
		return io.EOF
	}
	if s := c.state(); s.closed() || s.closing() && isTimeout(err) {
		return c.opError("read", net.ErrClosed)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return err
	}
	return c.opError("read", err)
}
