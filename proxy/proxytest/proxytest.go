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
//
// # Bad networks
//
// The client's machine reaches the server over a link that a test can make
// bad at run time, to see how its code copes with a slow, lossy or broken
// network, with no real network and no proxy process:
//
//	srv.SetConditions(netstack.Conditions{Latency: 50 * time.Millisecond}) // 100 ms round trips
//	srv.SetConditions(netstack.Conditions{Bandwidth: 1 << 20, Loss: 0.01, Seed: 1})
//	srv.Cut()                     // every connection to the server reset now
//	srv.Partition(2 * time.Second) // every packet dropped: only timeouts notice
//	srv.Restart()                  // the server stops, every tunnel ends; a new one serves
//
//	srv := proxytest.NewServer(t, proxytest.WithSpriteLinks())
//	srv.Sprite("db").SetConditions(netstack.Conditions{Latency: 10 * time.Millisecond}) // server ↔ sprite
//
// These act on Local(), the machine every Client of the server is on. For
// several clients with links of their own, NewMachine adds a machine and
// ClientOn makes a client there; its host's SetConditions, Partition and
// Cut (package netstack) are that client's faults. The server reaches a
// sprite's targets inside the sprite's own stack, so a sprite's link
// carries nothing of a tunnel, unless WithSpriteLinks puts the server on
// the far side of it: then the sprite host's own SetConditions, Partition
// and Cut are that sprite's faults, between the server and its targets.
// With WithLoopbackTCP the client reaches the server over the OS, and the
// Server's fault methods return an error.
//
// # Resume
//
// The server offers the resume extension (package transport/websocket), so
// a tunnel carries on across a Cut, or a Partition past the dead-peer
// timeout, over a new connection: a test of code that must survive a
// dropped connection makes these faults while it moves data and checks
// that nothing was lost. To see a tunnel end for good, shorten the grace
// the server keeps a dropped tunnel (WithServer, Server.ResumeGrace) and
// the keep-alives of both sides (Server.Tuning, the Dialer's Tuning given
// by proxy.WithDialer): a partition longer than the grace ends it with a
// *dialer.ResumeError; DisableResume on either side turns it off.
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
	"time"

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
	// the options of NewServer (WithServer). Restart replaces it: read it
	// only when no Restart may run.
	Tunnels *websocket.Server
	// Network is the in-memory network the API, the sprites and the
	// client's machine live on.
	Network *netstack.Network

	opts      options
	clientTLS *tls.Config
	serverTLS *tls.Config
	api       *netstack.Host // nil with WithLoopbackTCP
	local     *netstack.Host // the client's machine
	addr      string         // the listener's address

	// ln stays open until Close; serving is the server running behind it
	// now, which Restart swaps. restartMu serialises Restart with itself
	// and with Close.
	restartMu sync.Mutex
	ln        net.Listener
	front     *frontListener // over ln
	served    chan struct{}

	egress *netstack.Host // the host the server dials sprites from (WithSpriteLinks)

	mu       sync.Mutex
	sprites  map[string]*netstack.Host
	gateways map[string]*gateway // by sprite, with WithSpriteLinks
	machines map[string]*netstack.Host
	closed   bool
	once     sync.Once
}

// Option configures NewServer.
type Option func(*options)

type options struct {
	loopback    bool
	plain       bool
	spriteLinks bool
	configure   func(*websocket.Server)
}

// WithSpriteLinks makes the server reach each sprite's targets across the
// sprite's link, as a server in another place than its sprites would,
// instead of inside the sprite's own stack: a sprite host's
// SetConditions, Partition and Cut (package netstack) then act on the
// tunnels to that sprite, between the server and the target. Each sprite
// runs a small relay on its network address for it, which costs one round
// trip of the sprite's link per dial beyond TCP's own. Targets listen as
// before (127.0.0.1 included), and a refused or unreachable target reads
// as it does without the option.
func WithSpriteLinks() Option { return func(o *options) { o.spriteLinks = true } }

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
		Network:  netstack.NewNetwork(nil),
		sprites:  make(map[string]*netstack.Host),
		machines: make(map[string]*netstack.Host),
		gateways: make(map[string]*gateway),
		served:   make(chan struct{}),
	}
	for _, o := range opts {
		o(&s.opts)
	}
	defer func() {
		if err != nil {
			s.Network.Close()
		}
	}()
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
	s.egress = s.api
	if s.opts.spriteLinks && s.egress == nil {
		if s.egress, err = s.Network.NewHost(APIHost); err != nil {
			s.ln.Close()
			return nil, err
		}
	}
	scheme := "http"
	if !s.opts.plain {
		pair, err := testcert.New(APIHost)
		if err != nil {
			s.ln.Close()
			return nil, err
		}
		s.clientTLS = pair.ClientConfig()
		s.serverTLS = pair.ServerConfig()
		scheme = "https"
	}
	s.addr = s.ln.Addr().String()
	_, port, _ := net.SplitHostPort(s.addr)
	s.URL = scheme + "://" + net.JoinHostPort(host, port)
	s.front = newFrontListener(s.ln)
	s.serve()
	return s, nil
}

// serve starts a new tunnel server behind s.front.
func (s *Server) serve() {
	ts := &websocket.Server{
		Auth:    websocket.StaticToken(Token),
		Sprites: websocket.ResolverFunc(s.resolve),
	}
	if s.opts.configure != nil {
		s.opts.configure(ts)
	}
	if s.serverTLS != nil {
		ts.TLSConfig = s.serverTLS
	}
	s.Tunnels = ts
	ln, served := s.front.generation(), make(chan struct{})
	s.served = served
	go func() {
		defer close(served)
		ts.Serve(ln)
	}()
}

// ErrNoLink is what the fault methods return with WithLoopbackTCP, where
// the client reaches the server over the OS.
var ErrNoLink = errors.New("proxytest: the client reaches the server over OS loopback (WithLoopbackTCP): no link to make faults on")

// SetConditions gives the link between the client's machine (Local) and
// the network latency, jitter, a bandwidth cap or loss from now on (see
// netstack.Conditions); the zero Conditions makes it perfect again.
func (s *Server) SetConditions(c netstack.Conditions) error {
	if s.opts.loopback {
		return ErrNoLink
	}
	s.local.SetConditions(c)
	return nil
}

// Cut resets every connection between the client's machine and the rest
// of the network now, as a load balancer or a NAT that forgets its
// mappings does: the client and the server both see a reset
// (syscall.ECONNRESET underneath), and every tunnel on those connections
// ends with an error. New connections work at once. It returns how many
// connections it reset.
func (s *Server) Cut() (int, error) {
	if s.opts.loopback {
		return 0, ErrNoLink
	}
	return s.local.Cut(), nil
}

// Partition drops every packet between the client's machine and the rest
// of the network for d: neither end hears anything, so only timeouts (read
// deadlines, keep-alives) notice, and connections that outlive it carry on.
// Partition(0) ends a partition now.
func (s *Server) Partition(d time.Duration) error {
	if s.opts.loopback {
		return ErrNoLink
	}
	s.local.Partition(d)
	return nil
}

// Restart stops the tunnel server, as a server process that exits would:
// every tunnel and connection ends (the clients see an error matching
// dialer.ErrTunnelClosed, or a reset), and then a new server, configured
// as the first (WithServer runs again), serves at the same URL. Tunnels is
// the new server once Restart returns. The listener stays open throughout
// (the port is never given up): a client that dials during a Restart is
// served by the new server. It returns an error, and serves nothing, once
// the server is closed or its listener has failed.
func (s *Server) Restart() error {
	s.restartMu.Lock()
	defer s.restartMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("proxytest: server closed")
	}
	s.Tunnels.Close()
	<-s.served
	if err := s.front.broken(); err != nil {
		return fmt.Errorf("proxytest: restart: %w", err)
	}
	s.serve()
	return nil
}

// NewMachine adds a client machine called name to the network, with a
// link of its own: faults made on it (SetConditions, Partition, Cut of
// package netstack) touch only the clients made there with ClientOn.
func (s *Server) NewMachine(name string) (*netstack.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("proxytest: server closed")
	}
	if _, ok := s.machines[name]; ok {
		return nil, fmt.Errorf("proxytest: machine %q exists", name)
	}
	h, err := s.Network.NewHost("machine-" + name)
	if err != nil {
		return nil, fmt.Errorf("proxytest: machine %q: %w", name, err)
	}
	s.machines[name] = h
	return h, nil
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
	if s.opts.spriteLinks {
		g, err := startGateway(h)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("proxytest: sprite %q: %w", name, err)
		}
		s.gateways[name] = g
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
	if g := s.gateways[name]; g != nil {
		return gatewayDialer{from: s.egress, gw: g}, nil
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
	if s.opts.loopback {
		return s.client(nil, opts)
	}
	return s.client(s.local, opts)
}

// ClientOn is Client on machine m (from NewMachine): its sessions listen
// there and it dials from there. Not with WithLoopbackTCP, whose server is
// not on the in-memory network.
func (s *Server) ClientOn(m *netstack.Host, opts ...proxy.Option) *proxy.Client {
	return s.client(m, opts)
}

func (s *Server) client(m *netstack.Host, opts []proxy.Option) *proxy.Client {
	base := []proxy.Option{proxy.WithBaseURL(s.URL)}
	if s.clientTLS != nil {
		base = append(base, proxy.WithTLSConfig(s.ClientTLS()))
	}
	if m != nil {
		base = append(base,
			proxy.WithNetDial(m.DialContext),
			proxy.WithListen(func(_ context.Context, network, address string) (net.Listener, error) {
				return m.Listen(network, address)
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
		s.restartMu.Lock()
		defer s.restartMu.Unlock()
		s.Tunnels.Close()
		<-s.served
		s.front.close()
		s.mu.Lock()
		gateways := s.gateways
		s.gateways = nil
		s.mu.Unlock()
		for _, g := range gateways {
			g.close()
		}
		s.Network.Close()
	})
}
