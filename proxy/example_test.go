package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

// exampleServer starts an in-process Sprites-compatible server whose sprite
// "my-sprite" runs a web app on port 3000, a database on port 5432 and an
// HTTP API on port 8080. Everything listens on loopback at ports the OS
// picks; the sprite's ports are names only.
func exampleServer() *testServer {
	srv := newTestServer(false)
	srv.Serve(3000, lineService("web"))
	srv.Serve(5432, lineService("db"))
	srv.ServeHTTP(8080, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s from inside the sprite\n", r.Method, r.URL.Path)
	}))
	return srv
}

// lineService answers each line it reads with the line prefixed by name.
func lineService(name string) func(net.Conn) {
	return func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			fmt.Fprintf(c, "%s: %s\n", name, sc.Text())
		}
	}
}

// ask sends a line on the conn at addr and prints the reply.
func ask(conn net.Conn, line string) {
	fmt.Fprintln(conn, line)
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(reply)
}

// askAt dials addr, sends a line and prints the reply.
func askAt(addr net.Addr, line string) {
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ask(conn, line)
}

// Forward a local port to a port inside a sprite. Port 0 lets the OS pick
// the local port; 5432 would listen on localhost:5432.
func Example() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()

	client := sprites.New("test-token", sprites.WithBaseURL(srv.URL))
	sprite := client.Sprite("my-sprite")

	session, err := sprite.ProxyPort(ctx, 0, 5432)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()

	// localhost:session.LocalPort now proxies to the sprite's port 5432.
	askAt(session.LocalAddr(), "SELECT 1")
	// Output: db: SELECT 1
}

// A session lives as long as its context: cancelling it closes the session.
func ExampleClient_ProxyPort() {
	srv := exampleServer()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())

	client := sprites.New("test-token", sprites.WithBaseURL(srv.URL))
	session, err := client.ProxyPort(ctx, "my-sprite", 0, 3000)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()
	askAt(session.LocalAddr(), "GET /")

	cancel()
	session.Wait()
	fmt.Println("session closed")
	// Output:
	// web: GET /
	// session closed
}

// Several ports at once, all or nothing.
func ExampleSprite_ProxyPorts() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	sprite := sprites.New("test-token", sprites.WithBaseURL(srv.URL)).Sprite("my-sprite")

	sessions, err := sprite.ProxyPorts(ctx, []sprites.PortMapping{
		{LocalPort: 0, RemotePort: 3000},
		{LocalPort: 0, RemotePort: 5432},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()

	for _, s := range sessions {
		fmt.Printf("to %s:%d: ", s.RemoteHost, s.RemotePort)
		askAt(s.LocalAddr(), "hello")
	}
	// Output:
	// to localhost:3000: web: hello
	// to localhost:5432: db: hello
}

// A connection straight to a service inside the sprite, with no local port.
func ExampleSprite_ProxySocket() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	sprite := sprites.New("test-token", sprites.WithBaseURL(srv.URL)).Sprite("my-sprite")

	conn, err := sprite.ProxySocket(ctx, "tcp", "localhost:5432")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ask(conn, "SELECT now()")
	// Output: db: SELECT now()
}

// A ProxyManager closes a group of sessions at once.
func ExampleProxyManager() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	client := sprites.New("test-token", sprites.WithBaseURL(srv.URL))

	manager := sprites.NewProxyManager()
	for _, port := range []int{3000, 5432} {
		session, err := client.ProxyPort(ctx, "my-sprite", 0, port)
		if err != nil {
			log.Fatal(err)
		}
		manager.AddSession(session)
	}

	done := make(chan struct{})
	go func() {
		manager.WaitAll() // blocks until every session has closed
		close(done)
	}()
	manager.CloseAll()
	<-done
	fmt.Println("all sessions closed")
	// Output: all sessions closed
}

// Local port 0: the OS picks a free port, which LocalAddr and LocalPort
// report.
func ExampleProxySession_LocalAddr() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	sprite := sprites.New("test-token", sprites.WithBaseURL(srv.URL)).Sprite("my-sprite")

	session, err := sprite.ProxyPort(ctx, 0, 3000)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()

	addr := session.LocalAddr().(*net.TCPAddr)
	fmt.Println(addr.IP, addr.Port == session.LocalPort, session.LocalPort != 0)
	// Output: 127.0.0.1 true true
}

// A sprite plugs into any dial hook: an HTTP client, or a plain TCP client
// such as a database driver's.
func ExampleSprite_DialContext() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	sprite := sprites.New("test-token", sprites.WithBaseURL(srv.URL)).Sprite("my-sprite")

	transport := &http.Transport{DialContext: sprite.DialContext}
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport}
	resp, err := httpClient.Get("http://localhost:8080/status")
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(body))

	conn, err := sprite.DialContext(ctx, "tcp", "localhost:5432")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ask(conn, "SELECT 1")
	// Output:
	// GET /status from inside the sprite
	// db: SELECT 1
}

// One local SOCKS5 proxy reaches every service of a sprite: here an HTTP
// client through it (as curl --socks5-hostname would), and the name in the
// URL is resolved inside the sprite, not here.
func ExampleSOCKS5() {
	srv := exampleServer()
	defer srv.Close()

	client := sprites.New("test-token", sprites.WithBaseURL(srv.URL))
	defer client.CloseIdleConnections()
	socks := client.Sprite("my-sprite").SOCKS5()

	// Loopback only: whoever reaches the listener opens tunnels.
	ln, err := net.Listen("tcp", "127.0.0.1:0") // the CLI's default is 127.0.0.1:1080
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- socks.Serve(ln) }()
	defer func() {
		socks.Close()
		<-served // sprites.ErrSOCKS5Closed
	}()

	proxyURL := &url.URL{Scheme: "socks5h", Host: ln.Addr().String()}
	httpClient := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer httpClient.CloseIdleConnections()
	resp, err := httpClient.Get("http://localhost:8080/status")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: GET /status from inside the sprite
}
