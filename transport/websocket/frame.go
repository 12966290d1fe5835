package websocket

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"unicode/utf8"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Opcodes of RFC 6455.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// Close codes of RFC 6455 that the tunnel uses.
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeProtocolError = 1002
	closeNoStatus      = 1005
	closeInvalidData   = 1007
	closeTooBig        = 1009

	// Codes of spriteproxy's own, in RFC 6455's private range (PROTOCOL.md
	// §3): a stream cut short says why, so that it never reads as a clean
	// end at the other side.
	closeTargetReset = 4001 // the target reset its connection mid-stream
	closeTimedOut    = 4002 // the sender's dead-peer or idle rule ended the tunnel
)

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 §7.4): 1000–1003, 1007–1011 and 3000–4999. 1005, 1006 and
// 1015 are only for reporting, never for the wire.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// maxHeader is the longest frame header: 2 bytes, 8 of length, 4 of mask.
const maxHeader = 14

// maxControlPayload is the RFC's limit on a control frame's payload.
const maxControlPayload = 125

// header is a parsed frame header.
type header struct {
	fin    bool
	rsv    byte
	op     byte
	masked bool
	mask   [4]byte
	length int64
}

// headerLen returns the size of the header that frames a payload of n bytes.
func headerLen(n int, masked bool) int {
	h := 2
	switch {
	case n > 0xffff:
		h += 8
	case n > 125:
		h += 2
	}
	if masked {
		h += 4
	}
	return h
}

// putHeader writes a FIN frame header for op and a payload of n bytes into
// b, which must hold headerLen(n, mask != nil) bytes, and returns its size.
func putHeader(b []byte, op byte, n int, mask *[4]byte) int {
	b[0] = 0x80 | op
	var i int
	switch {
	case n > 0xffff:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:10], uint64(n))
		i = 10
	case n > 125:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:4], uint16(n))
		i = 4
	default:
		b[1] = byte(n)
		i = 2
	}
	if mask != nil {
		b[1] |= 0x80
		copy(b[i:i+4], mask[:])
		i += 4
	}
	return i
}

// parseHeader parses a frame header from b. It returns the header's size,
// or 0 when b does not hold all of it yet.
func parseHeader(b []byte) (h header, size int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] >> 4) & 0x7
	h.op = b[0] & 0x0f
	h.masked = b[1]&0x80 != 0
	size = 2
	l := int64(b[1] & 0x7f)
	switch l {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if h.masked {
		size += 4
	}
	if len(b) < size {
		return h, 0, nil
	}
	i := 2
	switch l {
	case 126:
		l = int64(binary.BigEndian.Uint16(b[2:4]))
		i = 4
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, protocolErrorf(closeProtocolError, "frame length has its top bit set")
		}
		l = int64(u)
		i = 10
	}
	h.length = l
	if h.masked {
		copy(h.mask[:], b[i:i+4])
	}
	return h, size, nil
}

// ProtocolError is a violation of RFC 6455 or of the tunnel protocol by the
// peer, or a message over the size limit. The tunnel is closed with Code.
// It matches dialer.ErrTunnelClosed with errors.Is.
type ProtocolError struct {
	Code   int    // the close code sent to the peer (1002, 1009, ...)
	Reason string // what was wrong
}

// Error names the close code and what was wrong.
func (e *ProtocolError) Error() string {
	return fmt.Sprintf("websocket: protocol error (close %d): %s", e.Code, e.Reason)
}

// Is matches dialer.ErrTunnelClosed.
func (e *ProtocolError) Is(target error) bool { return target == dialer.ErrTunnelClosed }

func protocolErrorf(code int, format string, args ...any) error {
	return &ProtocolError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// CloseError is the peer's close frame with a code other than 1000 (normal)
// or 1001 (going away), which end the stream as io.EOF. It matches
// dialer.ErrTunnelClosed with errors.Is.
type CloseError struct {
	Code   int
	Reason string
}

// Error names the peer's close code and reason.
func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("websocket: peer closed the tunnel with code %d", e.Code)
	}
	return fmt.Sprintf("websocket: peer closed the tunnel with code %d: %s", e.Code, e.Reason)
}

// Is matches dialer.ErrTunnelClosed; a target reset (code 4001) matches
// syscall.ECONNRESET too, as a reset of a direct connection would.
func (e *CloseError) Is(target error) bool {
	if target == dialer.ErrTunnelClosed {
		return true
	}
	return e.Code == closeTargetReset && target == syscall.ECONNRESET
}

// Timeout reports whether the peer closed the tunnel by its dead-peer or
// idle rule (code 4002).
func (e *CloseError) Timeout() bool { return e.Code == closeTimedOut }

// Temporary is false: a closed tunnel stays closed.
func (e *CloseError) Temporary() bool { return false }

var _ net.Error = (*CloseError)(nil)

// errUnexpectedEOF: the TCP connection ended without a close frame.
var errUnexpectedEOF = fmt.Errorf("%w: connection ended without a close frame", dialer.ErrTunnelClosed)

// closeBody encodes a close frame's payload.
func closeBody(b []byte, code int, reason string) []byte {
	b = binary.BigEndian.AppendUint16(b[:0], uint16(code))
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
	}
	return append(b, reason...)
}

// parseClose decodes and checks a close frame's payload: an invalid code is
// a *ProtocolError with 1002, a reason that is not UTF-8 one with 1007.
func parseClose(p []byte) (code int, reason string, err error) {
	switch {
	case len(p) == 0:
		return closeNoStatus, "", nil
	case len(p) == 1:
		return 0, "", protocolErrorf(closeProtocolError, "close frame payload of 1 byte")
	}
	code = int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return 0, "", protocolErrorf(closeProtocolError, "invalid close code %d", code)
	}
	if !utf8.Valid(p[2:]) {
		return 0, "", protocolErrorf(closeInvalidData, "close reason is not UTF-8")
	}
	return code, string(p[2:]), nil
}
