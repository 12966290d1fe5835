package websocket_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// A tunnel that fails before the server's reply is tried again on a fresh
// connection: here the first connection is refused, as while a replica
// restarts, and the application sees only a tunnel that works.
func ExampleRetry() {
	svc := echoService()
	defer svc.Close()
	srv := &websocket.Server{Auth: websocket.StaticToken("secret")}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	attempts := 0
	d := websocket.NewDialer("http://"+ln.Addr().String(), "secret")
	d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		attempts++
		if attempts == 1 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		var nd net.Dialer
		return nd.DialContext(ctx, network, addr)
	}
	// At most 3 attempts, the first retry after 10-20 ms; MaxAttempts: 1
	// would turn retries off.
	d.Retry = websocket.Retry{MaxAttempts: 3, Backoff: 20 * time.Millisecond}

	port := svc.Addr().(*net.TCPAddr).Port
	conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	conn.Write([]byte("hello"))
	conn.(interface{ CloseWrite() error }).CloseWrite() // a *Conn or a *ResumableConn
	reply, _ := io.ReadAll(conn)
	fmt.Printf("%s, after %d attempts\n", reply, attempts)
	// Output: hello, after 2 attempts
}
