package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/session"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// DefaultBaseURL is the hosted Sprites API, which a Client built without
// WithBaseURL talks to.
const DefaultBaseURL = "https://api.sprites.dev"

// A Client opens tunnels into sprites. Build it with New; it is safe for
// concurrent use.
type Client struct {
	token   string
	baseURL string
	dialer  dialer.Dialer

	tlsConfig *tls.Config
	netDial   func(ctx context.Context, network, addr string) (net.Conn, error)
	proxy     func(*url.URL) (*url.URL, error)
	logger    *slog.Logger
	listen    session.ListenFunc
}

// An Option configures a Client in New.
type Option func(*Client)

// EnvCAFile is the environment variable New reads for extra certificates
// to trust: the name of a PEM file, such as a self-signed server's
// certificate (the CLI's --tls-ca does the same).
const EnvCAFile = "SPRITEPROXY_CA_FILE"

// CAFileError is the error of every tunnel of a Client whose EnvCAFile
// could not be used: the file cannot be read or holds no PEM certificate.
type CAFileError struct {
	File string // the file named by EnvCAFile
	Err  error  // why it cannot be used
}

// Error names the variable, the file and the cause.
func (e *CAFileError) Error() string {
	return fmt.Sprintf("proxy: %s=%s: %v", EnvCAFile, e.File, e.Err)
}

// Unwrap returns the cause (a *fs.PathError for a missing file).
func (e *CAFileError) Unwrap() error { return e.Err }

// New returns a Client that authenticates with token. Without options it
// reaches the sprites of DefaultBaseURL through the WebSocket transport
// (package transport/websocket) and listens for ProxyPort on the OS network.
//
// Unless WithTLSConfig or WithDialer is given, New reads the environment
// variable SPRITEPROXY_CA_FILE (EnvCAFile): when it names a PEM file, its
// certificates are trusted besides the system's roots, so that a program
// reaches a self-hosted server with a self-signed certificate without a
// code change. A file that cannot be used makes every tunnel fail with a
// *CAFileError, which names it.
func New(token string, opts ...Option) *Client {
	c := &Client{token: token, baseURL: DefaultBaseURL}
	for _, opt := range opts {
		opt(c)
	}
	if c.dialer == nil && c.tlsConfig == nil {
		if file := os.Getenv(EnvCAFile); file != "" {
			cfg, err := loadCAFile(file)
			if err != nil {
				c.dialer = failingDialer{err}
			}
			c.tlsConfig = cfg
		}
	}
	if c.dialer == nil {
		c.dialer = &websocket.Dialer{
			BaseURL:   c.baseURL,
			Token:     c.token,
			TLSConfig: c.tlsConfig,
			NetDial:   c.netDial,
			Proxy:     c.proxy,
			Logger:    c.logger,
		}
	}
	return c
}

// WithBaseURL sets the API the client talks to, e.g. "http://localhost:8080"
// for a self-hosted server (ws:// and wss:// work too).
func WithBaseURL(url string) Option {
	return func(c *Client) { c.baseURL = url }
}

// WithDialer replaces the transport: every tunnel is opened by d, and the
// base URL, token, TLS config and net dial hook are not used. A nil d keeps
// the default WebSocket transport.
func WithDialer(d dialer.Dialer) Option {
	return func(c *Client) { c.dialer = d }
}

// WithTLSConfig sets the TLS configuration of wss:// (https://) tunnels:
// custom roots, client certificates. Nil means the system's roots, plus
// the certificates of SPRITEPROXY_CA_FILE if it is set (see New); a
// config given here is used as it is, and the variable is not read.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) { c.tlsConfig = cfg }
}

// WithNetDial sets how the connection under each WebSocket is dialed
// (TLS is layered on it for https:// bases), e.g. through an in-process
// network or a SOCKS proxy. Nil means a net.Dialer.
func WithNetDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(c *Client) { c.netDial = dial }
}

// WithProxy sets how the HTTP proxy for the API is chosen: proxy gets the
// API's URL (https:// for wss) and returns the proxy's, or nil for none;
// the connection is then a CONNECT tunnel through it, with Basic
// credentials from the proxy URL's user info. Without this option (or with
// nil) the client honours HTTPS_PROXY, HTTP_PROXY and NO_PROXY as net/http
// does (websocket.ProxyFromEnvironment), which skips loopback hosts; pass
// websocket.NoProxy to use none. A proxy's refusal is a
// *websocket.ProxyError.
func WithProxy(proxy func(*url.URL) (*url.URL, error)) Option {
	return func(c *Client) { c.proxy = proxy }
}

// WithLogger sets where the client logs: a debug line per forwarded stream
// and per tunnel, a warning or error when a local listener fails. Nil means
// slog.Default() for the sessions and no transport logs.
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) { c.logger = l }
}

// WithListen sets where ProxyPort and ProxyPorts listen, with the shape of
// net.ListenConfig.Listen: for local host "localhost" it is called with
// ("tcp4", "127.0.0.1:port") and ("tcp6", "[::1]:port"). Nil means the OS
// network.
func WithListen(listen func(ctx context.Context, network, address string) (net.Listener, error)) Option {
	return func(c *Client) { c.listen = listen }
}

// CloseIdleConnections closes the connections the client keeps open for
// later tunnels: with a server that takes the reuse extension, a tunnel
// closed cleanly leaves its connection idle for the next tunnel to the same
// sprite (see websocket.Dialer). Tunnels in use are not affected. Idle
// connections also close by themselves after a while; call this to release
// them at once, e.g. when done with the Client. It does nothing for a
// transport without idle connections.
func (c *Client) CloseIdleConnections() {
	if ci, ok := c.dialer.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// Sprite returns a handle on the sprite called name. It does no I/O.
func (c *Client) Sprite(name string) *Sprite {
	return &Sprite{client: c, name: name}
}

// A Sprite is a handle on one sprite of a Client, from Client.Sprite.
type Sprite struct {
	client *Client
	name   string
}

// Name returns the sprite's name.
func (s *Sprite) Name() string { return s.name }

// ProxyPort is Client.ProxyPort for this sprite.
func (s *Sprite) ProxyPort(ctx context.Context, localPort, remotePort int) (*ProxySession, error) {
	return s.client.ProxyPort(ctx, s.name, localPort, remotePort)
}

// ProxyPorts is Client.ProxyPorts for this sprite.
func (s *Sprite) ProxyPorts(ctx context.Context, mappings []PortMapping) ([]*ProxySession, error) {
	return s.client.ProxyPorts(ctx, s.name, mappings)
}

// ProxySocket is Client.ProxySocket for this sprite.
func (s *Sprite) ProxySocket(ctx context.Context, network, addr string) (net.Conn, error) {
	return s.client.ProxySocket(ctx, network, s.name, addr)
}

// DialContext is ProxySocket with the standard dial-hook shape, so that a
// sprite drops into http.Transport.DialContext, database drivers and gRPC:
// addr is a "host:port" as seen from inside the sprite. ctx bounds the dial
// only, not the returned conn.
func (s *Sprite) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return s.client.ProxySocket(ctx, network, s.name, addr)
}

var _ dialer.ContextDialer = (*Sprite)(nil)

// loadCAFile returns a TLS config that trusts the system's roots and the
// certificates of the PEM file.
func loadCAFile(file string) (*tls.Config, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, &CAFileError{File: file, Err: err}
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, &CAFileError{File: file, Err: errors.New("no PEM certificate in it")}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// failingDialer fails every dial with err, as a *net.OpError.
type failingDialer struct{ err error }

var _ dialer.Dialer = failingDialer{}

func (d failingDialer) DialSprite(_ context.Context, sprite, network, address string) (net.Conn, error) {
	return nil, dialer.OpError(network, sprite, address, d.err)
}
