package websocket

import (
	"net"
	"testing"
	"time"
)

// memConn is a net.Conn in memory for the hot-path benchmarks: writes are
// dropped, reads replay frame over and over. Only the tunnel's own code
// then costs time, not the network's.
type memConn struct {
	frame []byte
	off   int
}

func (m *memConn) Read(p []byte) (int, error) {
	n := copy(p, m.frame[m.off:])
	m.off = (m.off + n) % len(m.frame)
	return n, nil
}
func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkHotPath is the CPU cost of the data path alone: a Write of a
// 1 KiB message, and a Read of one, each through a Conn over memory. The
// lifecycle's checks (one state load per call or frame) are a part of it.
func BenchmarkHotPath(b *testing.B) {
	cfg, _ := Tuning{}.config()
	payload := make([]byte, 1<<10)
	b.Run("write-1K", func(b *testing.B) {
		c := newConn(&memConn{frame: []byte{0}}, false, cfg, nil)
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		for b.Loop() {
			c.Write(payload)
		}
	})
	b.Run("read-1K", func(b *testing.B) {
		var hdr [maxHeader]byte
		n := putHeader(hdr[:], opBinary, len(payload), nil)
		frame := append(hdr[:n:n], payload...)
		c := newConn(&memConn{frame: frame}, true, cfg, nil)
		buf := make([]byte, len(payload))
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		for b.Loop() {
			for got := 0; got < len(buf); {
				m, err := c.Read(buf[got:])
				if err != nil {
					b.Fatal(err)
				}
				got += m
			}
		}
	})
}
