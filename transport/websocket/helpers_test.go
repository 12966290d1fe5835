package websocket

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testcert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "test-token"

// testServer is a Server on a loopback listener.
type testServer struct {
	*Server
	URL       string // http:// or https://
	ClientTLS *tls.Config
}

// startServer serves srv on 127.0.0.1:0 behind an http.Server, over TLS if
// useTLS. Cleanup closes every tunnel and waits for the server's
// goroutines.
func startServer(t testing.TB, srv *Server, useTLS bool) *testServer {
	return startServerMode(t, srv, useTLS, false)
}

// startServerMode is startServer, with Serve's fast path if direct.
func startServerMode(t testing.TB, srv *Server, useTLS, direct bool) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: srv, URL: "http://" + ln.Addr().String()}
	if useTLS {
		pair, err := testcert.New()
		if err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, pair.ServerConfig())
		ts.URL = "https://" + ln.Addr().String()
		ts.ClientTLS = pair.ClientConfig()
	}
	done := make(chan struct{})
	if direct {
		go func() {
			defer close(done)
			if err := srv.Serve(ln); err != ErrServerClosed {
				t.Errorf("Serve = %v, want ErrServerClosed", err)
			}
		}()
		t.Cleanup(func() {
			srv.Close()
			<-done
		})
		return ts
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		<-done
	})
	return ts
}

// modes are the two ways of serving: ServeHTTP behind net/http, and Serve.
var modes = []struct {
	name   string
	direct bool
}{{"http", false}, {"serve", true}}

// dialer returns a client Dialer for ts with the test token.
func (ts *testServer) dialer() *Dialer {
	return &Dialer{BaseURL: ts.URL, Token: testToken, TLSConfig: ts.ClientTLS}
}

// newServer is a Server with the test token and defaults.
func newServer() *Server {
	return &Server{Auth: StaticToken(testToken)}
}

// target is a TCP service on loopback whose connections run handle.
// Cleanup closes the listener and every connection and waits for handlers.
type target struct {
	ln    net.Listener
	port  int
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startTarget(t testing.TB, handle func(net.Conn)) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	tg.wg.Add(1)
	go func() {
		defer tg.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.mu.Lock()
			tg.conns = append(tg.conns, c)
			tg.mu.Unlock()
			tg.wg.Add(1)
			go func() {
				defer tg.wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		tg.mu.Lock()
		for _, c := range tg.conns {
			c.Close()
		}
		tg.mu.Unlock()
		tg.wg.Wait()
	})
	return tg
}

// echo copies a connection back to itself, passes the end of stream on,
// and closes.
func echo(c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

// addr is the target's address as the client names it.
func (tg *target) addr() string {
	return net.JoinHostPort("127.0.0.1", itoa(tg.port))
}

func itoa(n int) string {
	return (&net.TCPAddr{Port: n}).String()[1:]
}

// closedPort returns a loopback port that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tcpPair returns two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return a, r.c
}

// connPair returns a client and a server *Conn joined over loopback TCP,
// past the handshake, with half_close as given.
func connPair(t *testing.T, halfClose bool, tune Tuning) (client, server *Conn) {
	t.Helper()
	cfg, err := tune.config()
	if err != nil {
		t.Fatal(err)
	}
	a, b := tcpPair(t)
	client, server = newConn(a, true, cfg, nil), newConn(b, false, cfg, nil)
	client.halfClose, server.halfClose = halfClose, halfClose
	client.startKeepalive()
	server.startKeepalive()
	t.Cleanup(func() {
		closeBoth(client, server)
	})
	return client, server
}

// closeBoth closes two conns concurrently, as two peers would.
func closeBoth(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.Close()
	}()
	b.Close()
	wg.Wait()
}

func mustIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v (%T) does not match %v", err, err, target)
	}
}

var errConnRefused = syscall.ECONNREFUSED

var errDeadline = os.ErrDeadlineExceeded

func startServerB(b *testing.B, srv *Server, direct bool) *testServer {
	return startServerMode(b, srv, false, direct)
}
func startTargetB(b *testing.B) *target { return startTarget(b, echo) }
