package proxytest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/netstack"
	"github.com/spriteproxy/spriteproxy/proxy/proxytest"
)

// A test of code that reaches an HTTP service inside a sprite, with no OS
// port anywhere: the service listens in the sprite, and the client reaches
// it through a real tunnel on the in-memory network.
func Example() {
	// In a test: srv := proxytest.NewServer(t), closed by t's cleanup.
	srv, err := proxytest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ln, _ := srv.Sprite("web").Listen("tcp", "127.0.0.1:8080")
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from inside the sprite")
	})}
	go hs.Serve(ln)
	defer hs.Close()

	sprite := srv.Client().Sprite("web")
	tr := &http.Transport{DialContext: sprite.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	resp, err := client.Get("http://localhost:8080/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output: hello from inside the sprite
}

// A tunnel over a bad network: 40 ms of round trip between the client and
// the server, then a reset of every connection, as a load balancer that
// drops its connections would do. The tunnel carries on over a new
// connection (the resume extension), with nothing lost; a server restart
// ends it for good, with an error, never a clean end of stream, and the
// next tunnel works.
func ExampleServer_Cut() {
	srv, err := proxytest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	ln, _ := srv.Sprite("echo").Listen("tcp", "127.0.0.1:7")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	srv.SetConditions(netstack.Conditions{Latency: 20 * time.Millisecond})
	sprite := srv.Client().Sprite("echo")
	ctx := context.Background()
	start := time.Now()
	conn, err := sprite.ProxySocket(ctx, "tcp", "localhost:7")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	echo := func(msg string) (string, error) {
		if _, err := conn.Write([]byte(msg)); err != nil {
			return "", err
		}
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(conn, buf)
		return string(buf), err
	}
	echo("x")
	fmt.Println("first echo after at least 3 round trips:", time.Since(start) >= 120*time.Millisecond)

	srv.Cut()
	got, err := echo("after the cut")
	fmt.Printf("%q %v\n", got, err)

	srv.Restart()
	_, err = io.ReadAll(conn)
	fmt.Println("after a restart the tunnel failed:", err != nil, errors.Is(err, dialer.ErrTunnelClosed))

	again, err := sprite.ProxySocket(ctx, "tcp", "localhost:7")
	fmt.Println("a new tunnel:", err)
	if err == nil {
		again.Close()
	}
	// Output:
	// first echo after at least 3 round trips: true
	// "after the cut" <nil>
	// after a restart the tunnel failed: true true
	// a new tunnel: <nil>
}
