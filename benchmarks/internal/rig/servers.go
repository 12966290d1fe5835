package rig

import (
	"crypto/tls"
	"crypto/x509"
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

// Server is a tunnel server listening on loopback or a netstack host.
type Server struct {
	// URL is the base to give a client: http:// or https://.
	URL string
	// ClientTLS trusts the server's certificate (nil for http://).
	ClientTLS *tls.Config
	// RootPEM is the certificate ClientTLS trusts, PEM encoded, for a
	// client in another process (nil for http://).
	RootPEM []byte
	// Live reports the tunnels open now.
	Live func() int

	close func()
}

// Close closes the listener and every tunnel, and waits for the server's
// goroutines.
func (s *Server) Close() { s.close() }

// tlsConfigs makes TLS 1.3 configs with a fresh certificate: the server's
// and the client's, and the certificate in PEM.
func tlsConfigs() (server, client *tls.Config, rootPEM []byte, err error) {
	pair, err := testcert.New()
	if err != nil {
		return nil, nil, nil, err
	}
	server = pair.ServerConfig()
	server.MinVersion = tls.VersionTLS13
	return server, ClientTLS(pair.CertPEM), pair.CertPEM, nil
}

// ClientTLS is a TLS 1.3 client config that trusts the certificate
// rootPEM, or nil if rootPEM holds none.
func ClientTLS(rootPEM []byte) *tls.Config {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		return nil
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
}

// listen wraps ln in TLS 1.3 with a fresh certificate if useTLS, and
// returns the server's URL, the client's TLS config and the certificate.
func listen(ln net.Listener, useTLS bool) (net.Listener, string, *tls.Config, []byte, error) {
	if !useTLS {
		return ln, "http://" + ln.Addr().String(), nil, nil, nil
	}
	server, client, rootPEM, err := tlsConfigs()
	if err != nil {
		ln.Close()
		return nil, "", nil, nil, err
	}
	return tls.NewListener(ln, server), "https://" + ln.Addr().String(), client, rootPEM, nil
}

// ServeHTTP serves h behind a net/http Server on ln (TLS 1.3 if useTLS).
// closeTunnels closes what the handler hijacked, which http.Server does
// not track.
func ServeHTTP(ln net.Listener, h http.Handler, useTLS bool, closeTunnels func()) (*Server, error) {
	ln, url, clientTLS, rootPEM, err := listen(ln, useTLS)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	return &Server{URL: url, ClientTLS: clientTLS, RootPEM: rootPEM, close: func() {
		hs.Close()
		closeTunnels()
		<-done
	}}, nil
}

// Front says how spriteproxy's server takes connections.
type Front int

const (
	// FrontServe is websocket.Server.Serve on the listener: the server's
	// fast path, which upgrades on the raw connection.
	FrontServe Front = iota
	// FrontHTTP is the websocket.Server as an http.Handler behind a
	// net/http Server.
	FrontHTTP
	// FrontServeRaw is FrontServe with the raw_stream extension on: after
	// the handshake the tunnel carries the stream unframed.
	FrontServeRaw
)

// StartOurs serves spriteproxy's websocket.Server on 127.0.0.1 with Serve,
// over TLS 1.3 if useTLS, granting the resume extension if resume.
func StartOurs(useTLS, resume bool) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return ServeOurs(ln, nil, useTLS, FrontServe, resume)
}

// ServeOurs serves spriteproxy's websocket.Server on ln, placing sprites
// with sprites (nil: this machine's network): the defaults but for the
// bench token and no cap on tunnels (the reference has none, and
// BenchmarkIdleTunnel opens thousands with one token). The resume
// extension, on by default in websocket.Server, is granted only if resume:
// the rows without it (socket-ws, port-ws, ...) keep measuring the tunnel
// they measured before resume existed, and the -resume rows beside them
// measure its cost against them.
func ServeOurs(ln net.Listener, sprites websocket.Resolver, useTLS bool, front Front, resume bool) (*Server, error) {
	ws := &websocket.Server{
		Auth:               websocket.StaticToken(Token),
		Sprites:            sprites,
		MaxTunnels:         -1,
		MaxTunnelsPerToken: -1,
		RawStreams:         front == FrontServeRaw,
		DisableResume:      !resume,
	}
	if front == FrontHTTP {
		s, err := ServeHTTP(ln, ws, useTLS, func() { ws.Close() })
		if err != nil {
			return nil, err
		}
		s.Live = ws.Live
		return s, nil
	}
	// websocket.Server speaks TLS itself (TLSConfig), as the CLI's serve
	// does: it then sends a frame's TLS records with one write.
	url, clientTLS, rootPEM := "http://"+ln.Addr().String(), (*tls.Config)(nil), []byte(nil)
	if useTLS {
		var err error
		if ws.TLSConfig, clientTLS, rootPEM, err = tlsConfigs(); err != nil {
			ln.Close()
			return nil, err
		}
		url = "https://" + ln.Addr().String()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ws.Serve(ln)
	}()
	return &Server{URL: url, ClientTLS: clientTLS, RootPEM: rootPEM, Live: ws.Live, close: func() {
		ws.Close()
		ln.Close()
		<-done
	}}, nil
}

// StartReference serves the reference tunnel server (an http.Handler) on
// 127.0.0.1 behind a net/http Server, over TLS 1.3 if useTLS.
func StartReference(useTLS bool) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rs := &reference.Server{Token: Token}
	s, err := ServeHTTP(ln, rs, useTLS, func() { rs.Close() })
	if err != nil {
		return nil, err
	}
	s.Live = rs.Live
	return s, nil
}
