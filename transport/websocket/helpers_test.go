package websocket

import (
	"context"
	"crypto/tls"
	"errors"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
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

// startServerMode is startServer, with Serve's fast path if direct. Serve
// speaks TLS itself (Server.TLSConfig), as the CLI does.
func startServerMode(t testing.TB, srv *Server, useTLS, direct bool) *testServer {
	t.Helper()
	return startServerHow(t, srv, useTLS, direct, false)
}

// startServerHow is startServerMode; with tlsListener, Serve takes its TLS
// from a tls.NewListener instead of TLSConfig.
func startServerHow(t testing.TB, srv *Server, useTLS, direct, tlsListener bool) *testServer {
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
		if direct && !tlsListener {
			srv.TLSConfig = pair.ServerConfig()
		} else {
			ln = tls.NewListener(ln, pair.ServerConfig())
		}
		ts.URL = "https://" + ln.Addr().String()
		ts.ClientTLS = pair.ClientConfig()
	}
	serveOn(t, srv, ln, direct)
	return ts
}

// modes are the two ways of serving: ServeHTTP behind net/http, and Serve.
var modes = []struct {
	name   string
	direct bool
}{{"http", false}, {"serve", true}}

// dialer returns a client Dialer for ts with the test token.
// Its retries never wait for the server's Retry-After (1 s): the tests
// that meet a 429 or 503 want it at once; TestRetry* cover the waits.
// It does not offer resume (the tests of other things look at the *Conn
// and count connections); the resume tests turn it back on.
func (ts *testServer) dialer() *Dialer {
	return &Dialer{BaseURL: ts.URL, Token: testToken, TLSConfig: ts.ClientTLS, Retry: Retry{MaxBackoff: 500 * time.Millisecond}, DisableResume: true}
}

// newServer is a Server with the test token and defaults.
func newServer() *Server {
	return &Server{Auth: StaticToken(testToken)}
}

// target is a TCP service on loopback whose connections run handle;
// cleanup closes it and waits for its handlers.
type target struct {
	port int
}

func startTarget(t testing.TB, handle func(net.Conn)) *target {
	t.Helper()
	return &target{port: testnet.Listen(t, handle)}
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

// closedPort returns a loopback port that refuses connections for the
// whole test (holdPort).
func closedPort(t *testing.T) int {
	t.Helper()
	return testnet.HoldPort(t, 0)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connPair returns a client and a server *Conn joined over loopback TCP,
// past the handshake, with half_close as given.
func connPair(t *testing.T, halfClose bool, tune Tuning) (client, server *Conn) {
	t.Helper()
	cfg, err := tune.config()
	if err != nil {
		t.Fatal(err)
	}
	a, b := testnet.TCPPair(t)
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

// serveOn serves srv on ln until the test's cleanup: by Serve's fast path
// if direct, behind an http.Server otherwise.
func serveOn(t testing.TB, srv *Server, ln net.Listener, direct bool) {
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
		return
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

}
