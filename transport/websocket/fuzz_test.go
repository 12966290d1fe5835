package websocket

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// byteConn is a net.Conn that reads from a fixed byte string and drops
// what is written to it: a peer that says exactly that and nothing else.
type byteConn struct {
	r *bytes.Reader
}

func (b *byteConn) Read(p []byte) (int, error)       { return b.r.Read(p) }
func (b *byteConn) Write(p []byte) (int, error)      { return len(p), nil }
func (b *byteConn) Close() error                     { return nil }
func (b *byteConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (b *byteConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (b *byteConn) SetDeadline(time.Time) error      { return nil }
func (b *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (b *byteConn) SetWriteDeadline(time.Time) error { return nil }
func (b *byteConn) CloseWrite() error                { return nil }

// frame builds one frame (masked if mask) for seeds.
func frame(op byte, fin bool, mask bool, payload []byte) []byte {
	b := make([]byte, maxHeader+len(payload))
	var m *[4]byte
	if mask {
		m = &[4]byte{1, 2, 3, 4}
	}
	n := putHeader(b, op, len(payload), m)
	if !fin {
		b[0] &^= 0x80
	}
	copy(b[n:], payload)
	if mask {
		for i := range payload {
			b[n+i] ^= m[i%4]
		}
	}
	return b[:n+len(payload)]
}

// FuzzReadFrames feeds arbitrary peer bytes to both ends' readers (Read,
// CopyTo and the handshake's message reader): nothing panics or hangs, and
// every error is a clean end of stream or matches dialer.ErrTunnelClosed
// or dialer.ErrBadRequest.
func FuzzReadFrames(f *testing.F) {
	for _, mask := range []bool{true, false} {
		f.Add(append(frame(opBinary, true, mask, []byte("hello")), frame(opClose, true, mask, []byte{3, 232})...), mask)
		f.Add(append(frame(opText, true, mask, []byte(`{"type":"eof"}`)), frame(opPing, true, mask, []byte("p"))...), mask)
		f.Add(append(frame(opBinary, false, mask, []byte("ab")), frame(opContinuation, true, mask, []byte("cd"))...), mask)
		f.Add(frame(opText, true, mask, []byte(`{"host":"127.0.0.1","port":80}`)), mask)
		f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, mask)
		f.Add([]byte{0x8f, 0x80}, mask)
		// reuse: a stream's end, then the next stream's first message.
		f.Add(append(append(frame(opBinary, true, mask, []byte("x")), frame(opText, true, mask, []byte(`{"type":"end"}`))...),
			frame(opText, true, mask, []byte(`{"host":"localhost","port":1}`))...), mask)
		f.Add(append(frame(opText, true, mask, []byte(`{"type":"end"}`)), frame(opBinary, true, mask, bytes.Repeat([]byte("y"), 600))...), mask)
	}
	f.Fuzz(func(t *testing.T, data []byte, client bool) {
		cfg, _ := Tuning{MaxMessageSize: 1 << 16, CloseTimeout: time.Millisecond}.config()
		check := func(err error) {
			if err == nil || err == io.EOF || err == pump.ErrClosedByPeer {
				return
			}
			if !errors.Is(err, dialer.ErrTunnelClosed) && !errors.Is(err, dialer.ErrBadRequest) {
				t.Fatalf("unexpected error %v (%T)", err, err)
			}
		}
		// With reuse, a stream that ended cleanly hands its connection on
		// with the bytes read past the end, which must be just that: the
		// input read so far, after the end. The next stream's reader then
		// takes them, and the rest.
		var next *link
		nextStream := func() {
			if next == nil {
				return
			}
			consumed := len(data) - next.nc.(*byteConn).r.Len()
			if !bytes.HasSuffix(data[:consumed], next.pre) {
				t.Fatalf("handed on %q, not the bytes read past the end", next.pre)
			}
			c := newConn(next.nc, client, cfg, next.pre)
			_, err := c.readMessage()
			check(err)
			c.CloseNow()
			next = nil
		}
		for _, mode := range []string{"plain", "half_close", "reuse"} {
			setup := func(c *Conn) *Conn {
				c.halfClose = mode != "plain"
				if c.reuse = mode == "reuse"; c.reuse {
					c.onReuse = func(l *link) { next = l }
				}
				return c
			}
			c := setup(newConn(&byteConn{bytes.NewReader(data)}, client, cfg, nil))
			buf := make([]byte, 7)
			for range len(data) + 2 {
				_, err := c.Read(buf)
				if err != nil {
					check(err)
					break
				}
			}
			c.Close()
			nextStream()

			c = setup(newConn(&byteConn{bytes.NewReader(data)}, client, cfg, nil))
			_, err := c.CopyTo(io.Discard, nil)
			check(err)
			c.Close()
			nextStream()
		}
		c := newConn(&byteConn{bytes.NewReader(data)}, client, cfg, nil)
		_, err := c.readMessage()
		check(err)
		c.Close()
	})
}
