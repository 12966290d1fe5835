package rig

import (
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/reference"
	"github.com/spriteproxy/spriteproxy/internal/testcert"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// Token is the bearer token every benchmark server accepts.
const Token = "bench-token"

// Sprite is the sprite name the benchmarks dial; the servers under test
// serve every name on this machine's network.
const Sprite = "bench"

// Server is a tunnel server serving an http.Handler on a listener.
type Server struct {
	// URL is the base to give a client: http:// or https://.
	URL string
	// ClientTLS trusts the server's certificate (nil for http://).
	ClientTLS *tls.Config
	// Live reports the tunnels open now.
	Live func() int

	hs      *http.Server
	done    chan struct{}
	closeFn func() // closes the handler's hijacked tunnels
}

// Serve serves h on ln, under TLS with a fresh certificate if useTLS.
// closeTunnels closes what the handler hijacked (http.Server does not).
func Serve(ln net.Listener, h http.Handler, useTLS bool, closeTunnels func()) (*Server, error) {
	s := &Server{URL: "http://" + ln.Addr().String(), done: make(chan struct{}), closeFn: closeTunnels}
	if useTLS {
		pair, err := testcert.New()
		if err != nil {
			ln.Close()
			return nil, err
		}
		cfg := pair.ServerConfig()
		cfg.MinVersion = tls.VersionTLS13
		ln = tls.NewListener(ln, cfg)
		s.URL = "https://" + ln.Addr().String()
		s.ClientTLS = pair.ClientConfig()
		s.ClientTLS.MinVersion = tls.VersionTLS13
	}
	s.hs = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		s.hs.Serve(ln)
	}()
	return s, nil
}

// Close closes the listener and every tunnel, and waits for the server's
// goroutines.
func (s *Server) Close() {
	s.hs.Close()
	s.closeFn()
	<-s.done
}

// StartOurs serves spriteproxy's websocket.Server on 127.0.0.1, over TLS
// 1.3 if useTLS.
func StartOurs(useTLS bool) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return ServeOurs(ln, nil, useTLS)
}

// ServeOurs serves spriteproxy's websocket.Server on ln, placing sprites
// with sprites (nil: this machine's network): the defaults but for the
// bench token and no cap on tunnels (the reference has none, and
// BenchmarkIdleTunnel opens thousands with one token).
func ServeOurs(ln net.Listener, sprites websocket.Resolver, useTLS bool) (*Server, error) {
	ws := &websocket.Server{
		Auth:               websocket.StaticToken(Token),
		Sprites:            sprites,
		MaxTunnels:         -1,
		MaxTunnelsPerToken: -1,
	}
	s, err := Serve(ln, ws, useTLS, func() { ws.Close() })
	if err != nil {
		return nil, err
	}
	s.Live = ws.Live
	return s, nil
}

// StartReference serves the reference tunnel server on 127.0.0.1, over TLS
// 1.3 if useTLS.
func StartReference(useTLS bool) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rs := &reference.Server{Token: Token}
	s, err := Serve(ln, rs, useTLS, func() { rs.Close() })
	if err != nil {
		return nil, err
	}
	s.Live = rs.Live
	return s, nil
}
