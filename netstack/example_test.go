package netstack_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/netstack"
)

// Two hosts on an in-memory network: one serves, the other dials it by
// name. No OS socket is opened.
func Example() {
	n := netstack.NewNetwork(nil)
	defer n.Close()
	db, _ := n.NewHost("db")
	app, _ := n.NewHost("app")
	fmt.Println(db.Name(), db.Addrs())

	l, err := db.Listen("tcp", ":5432")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := io.ReadAll(c) // until the client's CloseWrite
		fmt.Fprintf(c, "%s from %s", req, c.RemoteAddr().(*net.TCPAddr).IP)
	}()

	c, err := app.DialContext(context.Background(), "tcp", "db:5432")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.(interface{ CloseWrite() error }).CloseWrite()
	reply, _ := io.ReadAll(c)
	fmt.Println(string(reply))
	<-served
	// Output:
	// db [10.99.0.2 fd00:99::2]
	// hello from 10.99.0.3
}

// Network.Dialer reaches a sprite's targets directly: the sprite is the host
// of that name, and "localhost" is that host's loopback.
func ExampleNetwork_Dialer() {
	n := netstack.NewNetwork(nil)
	defer n.Close()
	sprite, _ := n.NewHost("my-sprite")
	l, _ := sprite.Listen("tcp", "127.0.0.1:8080")
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("inside the sprite"))
			c.Close()
		}
	}()

	c, err := n.Dialer().DialSprite(context.Background(), "my-sprite", "tcp", "localhost:8080")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	got, _ := io.ReadAll(c)
	fmt.Println(string(got))

	_, err = n.Dialer().DialSprite(context.Background(), "my-sprite", "tcp", "localhost:9090")
	fmt.Println(err)
	// Output:
	// inside the sprite
	// dial tcp my-sprite/localhost:9090: connection refused by target: connect: connection refused
}

// A host's link made bad at run time: latency on every packet, then a
// partition that only a deadline notices, then a cut that resets the
// connection at both ends.
func ExampleHost_SetConditions() {
	n := netstack.NewNetwork(nil)
	defer n.Close()
	db, _ := n.NewHost("db")
	app, _ := n.NewHost("app")
	l, _ := db.Listen("tcp", ":5432")
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()

	app.SetConditions(netstack.Conditions{Latency: 25 * time.Millisecond})
	start := time.Now()
	c, err := app.DialContext(context.Background(), "tcp", "db:5432")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	peer := <-accepted
	defer peer.Close()
	fmt.Println("dial paid a 50 ms round trip:", time.Since(start) >= 50*time.Millisecond)

	app.Partition(time.Hour)
	peer.Write([]byte("lost in the partition"))
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = c.Read(make([]byte, 64))
	fmt.Println("read during the partition:", errors.Is(err, os.ErrDeadlineExceeded))
	app.Partition(0)

	app.Cut()
	_, err = peer.Read(make([]byte, 64))
	fmt.Println("the server's end after the cut:", errors.Is(err, syscall.ECONNRESET))
	// Output:
	// dial paid a 50 ms round trip: true
	// read during the partition: true
	// the server's end after the cut: true
}
