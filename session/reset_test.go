package session

import (
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"syscall"
	"testing"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// TestTunnelCutResetsLocal (defect 2 of the lifecycle issue): a target
// that writes 1 MiB and resets reaches the local application of a
// forwarded port as a reset (ECONNRESET) after all its bytes, as a direct
// connection would, not as a clean end of stream.
func TestTunnelCutResetsLocal(t *testing.T) {
	t.Parallel()
	addr := startService(t, "tcp", func(c net.Conn) {
		io.ReadFull(c, make([]byte, 1))
		c.Write(make([]byte, 1<<20))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	srv := &websocket.Server{Auth: websocket.StaticToken("tok")}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	host, port := splitHostPort(t, addr)
	s := start(t, Config{Dialer: websocket.NewDialer(hs.URL, "tok"), Sprite: "s", RemoteHost: host, RemotePort: port})
	c := dial(t, s.Addr())
	c.Write([]byte("g"))
	n, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after %d bytes: %v, want ECONNRESET", n, err)
	}
}
