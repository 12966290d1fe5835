// Package proxytest runs a complete Sprites-compatible server in-process,
// as net/http/httptest does for HTTP: a tunnel server, the sprites it
// serves and the client's own machine all live on an in-memory network
// (package netstack), so that a test binds no OS port at all and many
// tests run in parallel without colliding.
//
//	srv := proxytest.NewServer(t)
//	db := srv.Sprite("db")                 // a sprite: a host on the network
//	ln, _ := db.Listen("tcp", "127.0.0.1:5432")
//	go serveFakeDB(ln)                       // the service under test
//
//	client := srv.Client()                   // token and TLS already set
//	conn, err := client.Sprite("db").ProxySocket(ctx, "tcp", "localhost:5432")
//
// Sessions from ProxyPort listen on the client's machine, Local(), not on
// the OS: dial their LocalAddr with Local().DialContext. WithLoopbackTCP
// serves on real loopback TCP instead, to look at the traffic with
// external tools.
package proxytest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testcert"
	"github.com/spriteproxy/spriteproxy/netstack"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// Token is the bearer token the server accepts and Client sends.
const Token = "proxytest-token"

// APIHost is the name of the server's host on the in-memory network; the
// server's certificate is valid for it.
const APIHost = "sprites-api"

// Server is an in-process Sprites-compatible server.
type Server struct {
	// URL is the base URL of the API, for proxy.WithBaseURL or a
	// websocket.Dialer: https://sprites-api on the in-memory network, or
	// https://127.0.0.1:PORT with WithLoopbackTCP.
	URL string
	// Tunnels is the tunnel server. Its fields may be changed only through
	// the options of NewServer (WithServer).
	Tunnels *websocket.Server
	// Network is the in-memory network the API, the sprites and the
	// client's machine live on.
	Network *netstack.Network

	opts      options
	clientTLS *tls.Config
	api       *netstack.Host // nil with WithLoopbackTCP
	local     *netstack.Host // the client's machine
	ln        net.Listener
	served    chan struct{}

	mu      sync.Mutex
	sprites map[string]*netstack.Host
	closed  bool
	once    sync.Once
}

// Option configures NewServer.
type Option func(*options)

type options struct {
	loopback  bool
	plain     bool
	configure func(*websocket.Server)
}

// WithLoopbackTCP serves the API on 127.0.0.1 (an OS port) and makes
// Client's sessions listen on the OS's loopback, so that curl, psql or a
// packet capture can see the traffic. Sprites stay in memory.
func WithLoopbackTCP() Option { return func(o *options) { o.loopback = true } }

// WithoutTLS serves plain ws:// instead of wss://.
func WithoutTLS() Option { return func(o *options) { o.plain = true } }

// WithServer lets a test tune the tunnel server (limits, timeouts, a
// logger) before it starts.
func WithServer(configure func(*websocket.Server)) Option {
	return func(o *options) { o.configure = configure }
}

// NewServer starts a server; t's cleanup closes it. It fails the test if
// the server cannot start.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := Start(opts...)
	if err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start starts a server outside of a test (examples, the demo); the
// caller must Close it.
func Start(opts ...Option) (s *Server, err error) {
	s = &Server{
		Network: netstack.NewNetwork(nil),
		sprites: make(map[string]*netstack.Host),
		served:  make(chan struct{}),
	}
	for _, o := range opts {
		o(&s.opts)
	}
	defer func() {
		if err != nil {
			s.Network.Close()
		}
	}()
	s.Tunnels = &websocket.Server{
		Auth:    websocket.StaticToken(Token),
		Sprites: websocket.ResolverFunc(s.resolve),
	}
	if s.opts.configure != nil {
		s.opts.configure(s.Tunnels)
	}
	if s.local, err = s.Network.NewHost("client"); err != nil {
		return nil, err
	}
	host := APIHost
	if s.opts.loopback {
		host = "127.0.0.1"
		s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		if s.api, err = s.Network.NewHost(APIHost); err != nil {
			return nil, err
		}
		s.ln, err = s.api.Listen("tcp", ":443")
	}
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if !s.opts.plain {
		pair, err := testcert.New(APIHost)
		if err != nil {
			s.ln.Close()
			return nil, err
		}
		s.clientTLS = pair.ClientConfig()
		s.Tunnels.TLSConfig = pair.ServerConfig()
		scheme = "https"
	}
	_, port, _ := net.SplitHostPort(s.ln.Addr().String())
	s.URL = scheme + "://" + net.JoinHostPort(host, port)
	go func() {
		defer close(s.served)
		s.Tunnels.Serve(s.ln)
	}()
	return s, nil
}

// Sprite returns the sprite called name, creating it on first use: a host
// on the in-memory network where a test listens its fake services (on
// 127.0.0.1, ::1 or the host's own addresses). The server knows only the
// sprites created here; any other name gets 404.
func (s *Server) Sprite(name string) *netstack.Host {
	h, err := s.AddSprite(name)
	if err != nil {
		panic(err)
	}
	return h
}

// AddSprite is Sprite with an error instead of a panic for a name the
// network refuses.
func (s *Server) AddSprite(name string) (*netstack.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.sprites[name]; ok {
		return h, nil
	}
	if s.closed {
		return nil, errors.New("proxytest: server closed")
	}
	if err := dialer.CheckSprite(name); err != nil {
		return nil, err
	}
	h, err := s.Network.NewHost("sprite-" + name)
	if err != nil {
		return nil, fmt.Errorf("proxytest: sprite %q: %w", name, err)
	}
	s.sprites[name] = h
	return h, nil
}

func (s *Server) resolve(_ context.Context, name string) (dialer.ContextDialer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.sprites[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", dialer.ErrUnknownSprite, name)
	}
	return h, nil
}

// Local is the client's machine: Client's sessions listen here, and a test
// dials their LocalAddr from here.
func (s *Server) Local() *netstack.Host { return s.local }

// ClientTLS returns a TLS config that trusts the server's certificate (nil
// with WithoutTLS).
func (s *Server) ClientTLS() *tls.Config {
	if s.clientTLS == nil {
		return nil
	}
	return s.clientTLS.Clone()
}

// Client returns a client of the server with the token and TLS set, that
// reaches the API over the in-memory network and listens there too (over
// the OS's loopback with WithLoopbackTCP). opts come after, so they may
// change any of it.
func (s *Server) Client(opts ...proxy.Option) *proxy.Client {
	base := []proxy.Option{proxy.WithBaseURL(s.URL)}
	if s.clientTLS != nil {
		base = append(base, proxy.WithTLSConfig(s.ClientTLS()))
	}
	if !s.opts.loopback {
		base = append(base,
			proxy.WithNetDial(s.local.DialContext),
			proxy.WithListen(func(_ context.Context, network, address string) (net.Listener, error) {
				return s.local.Listen(network, address)
			}))
	}
	return proxy.New(Token, append(base, opts...)...)
}

// Dialer returns a websocket.Dialer for the server, as Client uses, for
// tests of the transport itself.
func (s *Server) Dialer() *websocket.Dialer {
	d := &websocket.Dialer{BaseURL: s.URL, Token: Token, TLSConfig: s.ClientTLS()}
	if !s.opts.loopback {
		d.NetDial = s.local.DialContext
	}
	return d
}

// DialLocal dials a session's local port from the client's machine (or the
// OS with WithLoopbackTCP).
func (s *Server) DialLocal(ctx context.Context, port int) (net.Conn, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if s.opts.loopback {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	return s.local.DialContext(ctx, "tcp", addr)
}

// Close closes every tunnel, then the network with every sprite, and waits
// for all of their goroutines. It is idempotent.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.Tunnels.Close()
		<-s.served
		s.Network.Close()
	})
}
