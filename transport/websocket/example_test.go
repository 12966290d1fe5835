package websocket_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// A server and a client of the tunnel in one process, on loopback: the
// sprite's "service" echoes, and the client reaches it by its address as
// seen from inside the sprite.
func Example() {
	// The service inside the sprite: an echo on loopback.
	svc, _ := net.Listen("tcp", "127.0.0.1:0")
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	// The sprite side: a tunnel server with one token.
	srv := &websocket.Server{Auth: websocket.StaticToken("secret")}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	// The client side.
	d := websocket.NewDialer("http://"+ln.Addr().String(), "secret")
	port := svc.Addr().(*net.TCPAddr).Port
	conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	conn.Write([]byte("hello through the tunnel"))
	conn.(*websocket.Conn).CloseWrite() // half-close: the echo sees EOF
	reply, _ := io.ReadAll(conn)
	fmt.Println(string(reply))
	// Output: hello through the tunnel
}
