package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/spriteproxy/spriteproxy/internal/testlog"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// The test server's one sprite and the token it accepts.
const (
	testSprite = "my-sprite"
	testToken  = "test-token"
)

// spriteNet is the network inside the test sprite: services listen on
// loopback at OS-assigned ports and are known inside the sprite by the port
// they claim, on any host. It records what it was asked to dial.
type spriteNet struct {
	mu     sync.Mutex
	ports  map[int]string // port inside the sprite → real address
	dialed []string       // addresses asked for, in order
}

func newSpriteNet() *spriteNet { return &spriteNet{ports: make(map[int]string)} }

// DialContext dials the service that claims address's port, or fails as a
// port nobody listens on does.
func (n *spriteNet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	_, p, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(p)
	n.mu.Lock()
	n.dialed = append(n.dialed, address)
	real, ok := n.ports[port]
	n.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", real)
}

// lastDialed returns the address of the latest dial.
func (n *spriteNet) lastDialed() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.dialed) == 0 {
		return ""
	}
	return n.dialed[len(n.dialed)-1]
}

// claim makes the service at real answer on port inside the sprite.
func (n *spriteNet) claim(port int, real string) {
	n.mu.Lock()
	n.ports[port] = real
	n.mu.Unlock()
}

// directDialer reaches the sprite's network with no tunnel at all.
func (n *spriteNet) directDialer() dialer.Dialer {
	return dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		if sprite != testSprite {
			return nil, dialer.OpError(network, sprite, address, dialer.ErrUnknownSprite)
		}
		c, err := n.DialContext(ctx, network, address)
		return c, dialer.OpError(network, sprite, address, err)
	})
}

// service is a TCP service on loopback, standing in for one inside the
// sprite. Close closes its listener and conns and waits for its handlers.
type service struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startService(handle func(net.Conn)) *service {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := &service{ln: ln}
	s.serve(handle)
	return s
}

// serve accepts on s.ln and runs handle for each conn, until Close.
func (s *service) serve(handle func(net.Conn)) {
	ln := s.ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

func (s *service) Addr() string { return s.ln.Addr().String() }

func (s *service) Close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// echo copies c back to itself, then passes the end of stream on.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(dialer.HalfCloser).CloseWrite()
}

// testServer is an in-process Sprites-compatible server: the WebSocket
// transport's server on an httptest server, with one sprite, testSprite,
// whose network is a spriteNet.
type testServer struct {
	URL  string
	Net  *spriteNet
	ws   *websocket.Server
	hs   *httptest.Server
	svcs []interface{ Close() }
}

func newTestServer(useTLS bool) *testServer {
	n := newSpriteNet()
	// fdf::1 is the sprite-internal address the SDK's docs use; loopback is
	// always allowed.
	allowInternal, err := websocket.ParseRule("fdf::/16")
	if err != nil {
		panic(err)
	}
	ws := &websocket.Server{
		Auth: websocket.StaticToken(testToken),
		Sprites: websocket.ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
			if name != testSprite {
				return nil, fmt.Errorf("%w: %q", dialer.ErrUnknownSprite, name)
			}
			return n, nil
		}),
		Policy: &websocket.Policy{Allow: []websocket.Rule{allowInternal}},
	}
	hs := httptest.NewUnstartedServer(ws)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // tests refuse TLS on purpose
	if useTLS {
		hs.StartTLS()
	} else {
		hs.Start()
	}
	return &testServer{URL: hs.URL, Net: n, ws: ws, hs: hs}
}

// TLSConfig returns a client config that trusts the server's certificate.
func (s *testServer) TLSConfig() *tls.Config {
	return s.hs.Client().Transport.(*http.Transport).TLSClientConfig
}

// Serve runs handle as the sprite's service on port.
func (s *testServer) Serve(port int, handle func(net.Conn)) {
	svc := startService(handle)
	s.svcs = append(s.svcs, svc)
	s.Net.claim(port, svc.Addr())
}

// ServeHTTP runs h as the sprite's HTTP service on port.
func (s *testServer) ServeHTTP(port int, h http.Handler) {
	svc := httptest.NewServer(h)
	s.svcs = append(s.svcs, svc)
	s.Net.claim(port, svc.Listener.Addr().String())
}

// Close closes the tunnels, the server and the services, and waits for
// them all.
func (s *testServer) Close() {
	s.ws.Close() // hijacked tunnels are the handler's, not httptest's
	s.hs.Close()
	for _, svc := range s.svcs {
		svc.Close()
	}
}

// listenRecorder is a WithListen hook on the OS that keeps its listeners.
type listenRecorder struct {
	mu sync.Mutex
	ls []net.Listener
}

func (r *listenRecorder) listen(ctx context.Context, network, address string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, network, address)
	if err == nil {
		r.mu.Lock()
		r.ls = append(r.ls, l)
		r.mu.Unlock()
	}
	return l, err
}

func (r *listenRecorder) snapshot() []net.Listener {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]net.Listener(nil), r.ls...)
}

// logRecorder keeps every record the code under test logs.
type logRecorder = testlog.Recorder
