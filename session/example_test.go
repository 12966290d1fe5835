package session_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/session"
)

func Example() {
	// A service standing in for one inside a sprite.
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := svc.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	defer func() { svc.Close(); <-served }()

	// A Dialer with no tunnel: every stream goes to the service.
	d := dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, network, svc.Addr().String())
	})

	s, err := session.Start(context.Background(), session.Config{
		Dialer:     d,
		Sprite:     "db",
		RemotePort: 5432,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	fmt.Println("forwarding to", s.Sprite(), s.Target())

	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(conn, "hello")
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(reply)
	conn.Close()

	s.Close() // waits for the stream to end
	st := s.Stats()
	fmt.Println(st.Accepted, st.Active, st.Sent, st.Received)
	// Output:
	// forwarding to db localhost:5432
	// hello
	// 1 0 6 6
}
