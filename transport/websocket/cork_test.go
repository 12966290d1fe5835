package websocket

import (
	"errors"
	"net"
	"testing"

	"github.com/spriteproxy/spriteproxy/internal/cork"
)

// failConn fails every write for good.
type failConn struct{ net.Conn }

func (failConn) Write([]byte) (int, error) { return 0, errors.New("broken") }

// tlsLike stands for crypto/tls over a cork.Conn: it writes its records
// into the cork.
type tlsLike struct {
	net.Conn
	cc *cork.Conn
}

func (t tlsLike) Write(p []byte) (int, error) { return t.cc.Write(p) }

// TestCorkHardErrorCountsNothing: when the one write of a gathered frame
// fails for good, the tunnel reports none of it as sent.
func TestCorkHardErrorCountsNothing(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := cork.New(failConn{a})
	c := &Conn{nc: tlsLike{a, cc}, cork: cc}
	n, err := c.ncWrite(make([]byte, 5000))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("ncWrite = %d, %v; want 0 and the write's error", n, err)
	}
	if _, err := cc.Write([]byte("x")); err == nil {
		t.Error("a write after the failure succeeded")
	}
}
