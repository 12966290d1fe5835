package websocket_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// A server and a client of the tunnel in one process, on loopback: the
// sprite's "service" echoes, and the client reaches it by its address as
// seen from inside the sprite.
func Example() {
	// The service inside the sprite: an echo on loopback.
	svc := echoService()
	defer svc.Close()

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
	// half-close: the echo sees EOF (a *Conn, or a *ResumableConn when
	// the server grants resume, as here)
	conn.(interface{ CloseWrite() error }).CloseWrite()
	reply, _ := io.ReadAll(conn)
	fmt.Println(string(reply))
	// Output: hello through the tunnel
}

// Against a server without the half_close extension (the hosted API, or
// here a spriteproxy server that turned it off), CloseWrite cannot reach
// the service as a FIN: the client lingers instead, reading the reply
// until the server has been silent for HalfCloseLinger, and only then
// sends the close frame, so that the reply is not cut off.
func ExampleDialer_HalfCloseLinger() {
	svc := echoService()
	defer svc.Close()
	srv := &websocket.Server{Auth: websocket.StaticToken("secret"), DisableHalfClose: true}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	d := websocket.NewDialer("http://"+ln.Addr().String(), "secret")
	d.HalfCloseLinger = 200 * time.Millisecond // default DefaultHalfCloseLinger
	conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", svc.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	c := conn.(*websocket.Conn)
	c.Write([]byte("request"))
	c.CloseWrite() // no close frame yet: the reply is still to come
	reply, err := io.ReadAll(c)
	fmt.Printf("half_close: %v, reply %q, %v\n", c.HalfClose(), reply, err)
	// Output: half_close: false, reply "request", <nil>
}

// Tunnels one after another to the same sprite share a connection (the
// reuse extension): closing one cleanly leaves its WebSocket open for the
// next, which then costs one message and a reply instead of a TCP, TLS and
// WebSocket handshake.
func ExampleDialer_CloseIdleConnections() {
	svc := echoService()
	defer svc.Close()
	srv := &websocket.Server{Auth: websocket.StaticToken("secret")}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	d := websocket.NewDialer("http://"+ln.Addr().String(), "secret")
	d.DisableResume = true         // plain *Conns, whose connections this example compares
	defer d.CloseIdleConnections() // when done with the Dialer
	addr := svc.Addr().String()
	var first net.Conn
	for i := range 3 {
		conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", addr)
		if err != nil {
			fmt.Println(err)
			return
		}
		c := conn.(*websocket.Conn)
		if i == 0 {
			first = c.NetConn()
		}
		fmt.Printf("tunnel %d: reuse=%v, same connection as the first: %v\n", i, c.Reuse(), c.NetConn() == first)
		c.Close()
	}
	fmt.Println("idle connections kept:", d.IdleConnections())
	// Output:
	// tunnel 0: reuse=true, same connection as the first: true
	// tunnel 1: reuse=true, same connection as the first: true
	// tunnel 2: reuse=true, same connection as the first: true
	// idle connections kept: 1
}

// Serving wss: give Serve the TLS config (rather than wrapping the listener
// with tls.NewListener), so that the tunnel owns the connection under TLS
// and sends each frame's records with one write.
func ExampleServer_TLSConfig() {
	svc := echoService()
	defer svc.Close()
	// Your certificate, as from tls.LoadX509KeyPair(certFile, keyFile);
	// here a self-signed one, and a pool that trusts it.
	cert, roots := selfSigned()

	srv := &websocket.Server{
		Auth:      websocket.StaticToken("secret"),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	d := websocket.NewDialer("https://"+ln.Addr().String(), "secret")
	d.TLSConfig = &tls.Config{RootCAs: roots} // only for a self-signed certificate
	d.DisableResume = true                    // a plain *Conn, whose TLS state this example shows
	conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", svc.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	conn.Write([]byte("hello over wss"))
	conn.(*websocket.Conn).CloseWrite()
	reply, _ := io.ReadAll(conn)
	state := conn.(*websocket.Conn).NetConn().(*tls.Conn).ConnectionState()
	fmt.Println(string(reply), "- TLS 1.3:", state.Version == tls.VersionTLS13)
	// Output: hello over wss - TLS 1.3: true
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned() (tls.Certificate, *x509.CertPool) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// echoService is a service to reach through the tunnel: an echo on
// loopback.
func echoService() net.Listener {
	svc, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return svc
}

// A server's metrics go into the embedder's own Prometheus registry
// (nothing is registered globally); serve it with promhttp.HandlerFor.
func ExampleNewMetrics() {
	svc := echoService()
	defer svc.Close()
	reg := prometheus.NewRegistry()
	m := websocket.NewMetrics()
	reg.MustRegister(m)
	srv := &websocket.Server{Auth: websocket.StaticToken("secret"), Metrics: m}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	d := websocket.NewDialer("http://"+ln.Addr().String(), "secret")
	defer d.CloseIdleConnections()
	if conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", svc.Addr().String()); err == nil {
		conn.Close()
	}
	bad := websocket.NewDialer("http://"+ln.Addr().String(), "wrong")
	_, err := bad.DialSprite(context.Background(), "my-sprite", "tcp", svc.Addr().String())
	fmt.Println("wrong token:", err != nil)

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "spriteproxy_tunnels_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if v := s.GetCounter().GetValue(); v > 0 {
				fmt.Printf("%s{result=%q} %v\n", mf.GetName(), s.GetLabel()[0].GetValue(), v)
			}
		}
	}
	// Output:
	// wrong token: true
	// spriteproxy_tunnels_total{result="ok"} 1
	// spriteproxy_tunnels_total{result="unauthorized"} 1
}

// A drain a load balancer can follow: /healthz turns 503 at Drain, while
// the listener still serves; after a delay the balancer needs to notice,
// Shutdown closes the listener and waits for the open tunnels.
func ExampleServer_Drain() {
	srv := &websocket.Server{Auth: websocket.StaticToken("secret")}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	health := func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s", resp.StatusCode, body)
	}
	health()
	srv.Drain() // on SIGTERM, say
	health()
	// ... the balancer's check interval times its fall count later:
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(ctx))
	// Output:
	// 200 {"status":"ok"}
	// 503 {"error":"draining","message":"the server is draining"}
	// shutdown: <nil>
}

// With Optimistic, a tunnel after the first sends its bytes without
// waiting for the server's reply; a target that cannot be reached is then
// the error of the next Read (or Write), as DialSprite would have
// returned it.
func ExampleDialer_Optimistic() {
	svc := echoService()
	defer svc.Close()
	srv := &websocket.Server{Auth: websocket.StaticToken("secret")}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	d := websocket.NewDialer("http://"+ln.Addr().String(), "secret")
	d.Optimistic = true
	defer d.CloseIdleConnections()
	for _, addr := range []string{svc.Addr().String(), svc.Addr().String(), "127.0.0.1:1"} {
		conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", addr)
		if err != nil {
			fmt.Println("dial:", err)
			continue
		}
		conn.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil {
			fmt.Println("refused:", errors.Is(err, dialer.ErrTargetRefused))
		} else {
			fmt.Println(string(buf))
		}
		conn.Close()
	}
	// Output:
	// ping
	// ping
	// refused: true
}

// A tunnel to a spriteproxy server is resumable (the resume extension):
// when its connection drops, the client carries the stream on over a new
// one, and the application sees nothing but a pause. Resumes counts the
// times that happened; Server.ResumeGrace bounds how long the server waits.
func ExampleResumableConn() {
	svc := echoService()
	defer svc.Close()
	srv := &websocket.Server{Auth: websocket.StaticToken("secret"), ResumeGrace: 30 * time.Second}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	d := websocket.NewDialer("http://"+ln.Addr().String(), "secret")
	conn, err := d.DialSprite(context.Background(), "my-sprite", "tcp", svc.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	rc, ok := conn.(*websocket.ResumableConn)
	fmt.Println("resumable:", ok)
	rc.Write([]byte("hello"))
	rc.CloseWrite()
	reply, err := io.ReadAll(rc)
	fmt.Printf("%q %v, resumes: %d\n", reply, err, rc.Resumes())
	// Output:
	// resumable: true
	// "hello" <nil>, resumes: 0
}
