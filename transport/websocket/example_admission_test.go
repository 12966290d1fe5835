package websocket_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// A connection that upgrades and stays silent holds no tunnel, only a
// place among the connections waiting for their first message, which have
// caps of their own: here one per token. A second silent upgrader of the
// same token is refused with 429 before its upgrade, while the tunnel caps
// stay whole for connections that speak.
func ExampleServer_MaxHandshakesPerToken() {
	srv := &websocket.Server{
		Auth:                  websocket.StaticToken("secret"),
		MaxHandshakesPerToken: 1,
		HandshakeTimeout:      time.Minute,
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	upgrade := func() string {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err.Error()
		}
		conns = append(conns, c)
		io.WriteString(c, "GET /v1/sprites/my-sprite/proxy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer secret\r\n\r\n")
		status, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(status) // c stays open, silent
	}
	fmt.Println(upgrade())
	fmt.Println(upgrade())
	// Output:
	// HTTP/1.1 101 Switching Protocols
	// HTTP/1.1 429 Too Many Requests
}
