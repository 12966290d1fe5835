package benchmarks

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"testing"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/reference"
	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
	"github.com/spriteproxy/spriteproxy/netstack"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// A path is one way for bytes to reach a target: straight, through a relay,
// or through a tunnel.
type path struct {
	name string
	// setup builds the path to a fresh target service that runs handle on
	// each connection (nil: the connections are handed out by Accepted).
	setup func(tb testing.TB, handle func(net.Conn)) *fixture
}

// fixture is a path built: open gives the end a benchmark writes to, and
// the target service is where the streams arrive.
type fixture struct {
	open    func(ctx context.Context) (net.Conn, error)
	target  *rig.Service
	closers []func()
}

// onClose adds f to what Close runs, last added first.
func (fx *fixture) onClose(f func()) { fx.closers = append(fx.closers, f) }

// Close tears the path down.
func (fx *fixture) Close() {
	for i := len(fx.closers) - 1; i >= 0; i-- {
		fx.closers[i]()
	}
}

// check ends the test on err, closing fx first.
func (fx *fixture) check(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		fx.Close()
		tb.Fatal(err)
	}
}

// loopbackTarget starts a fixture whose target listens on 127.0.0.1.
func loopbackTarget(tb testing.TB, handle func(net.Conn)) *fixture {
	tb.Helper()
	tgt, err := rig.ListenLoopback(handle)
	if err != nil {
		tb.Fatal(err)
	}
	fx := &fixture{target: tgt}
	fx.onClose(tgt.Close)
	return fx
}

func dialTCP(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// Every path, by name.
var (
	pathTCP = path{"tcp", func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx := loopbackTarget(tb, handle)
		fx.open = dialTCP(fx.target.Addr().String())
		return fx
	}}
	pathRelay = path{"relay", func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx := loopbackTarget(tb, handle)
		relay, err := rig.ListenLoopback(rig.Relay(fx.target.Addr().String()))
		fx.check(tb, err)
		fx.onClose(relay.Close)
		fx.open = dialTCP(relay.Addr().String())
		return fx
	}}
	pathRelayCopy = path{"relay-copy", relays(1, rig.RelayCopy)}
	// Two relays in a row: the floors of a ProxyPort, whose bytes cross
	// the client's local port, the client and the server.
	pathRelay2     = path{"relay2", relays(2, rig.Relay)}
	pathRelayCopy2 = path{"relay-copy2", relays(2, rig.RelayCopy)}
	pathRefSocket  = path{"ref-socket", func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx, d := refServer(tb, handle)
		addr := fx.target.Addr().String()
		fx.open = func(ctx context.Context) (net.Conn, error) { return d.Dial(ctx, rig.Sprite, addr) }
		return fx
	}}
	pathRefPort = path{"ref-port", func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx, d := refServer(tb, handle)
		addr := fx.target.Addr().String()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		fx.check(tb, err)
		f := reference.Forward(ln, func(ctx context.Context) (net.Conn, error) { return d.Dial(ctx, rig.Sprite, addr) })
		fx.onClose(func() { f.Close() })
		fx.open = dialTCP(f.Addr().String())
		return fx
	}}
	// The tunnels of spriteproxy's own, with the resume extension off (the
	// server does not grant it): the rows as they were before resume, the
	// baselines of the -resume rows.
	pathSocketWS     = path{"socket-ws", oursSocket(false, false)}
	pathSocketWSHTTP = path{"socket-ws-http", func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx, sp := oursServerFront(tb, handle, false, rig.FrontHTTP, false)
		addr := fx.target.Addr().String()
		fx.open = func(ctx context.Context) (net.Conn, error) { return sp.ProxySocket(ctx, "tcp", addr) }
		return fx
	}}
	pathSocketWSS = path{"socket-wss", oursSocket(true, false)}
	// The client with the reuse extension off: every tunnel on a
	// connection of its own (TCP, TLS, upgrade), as with a server that does
	// not take reuse. Setup rows only: it changes nothing once data flows.
	pathSocketWSFresh  = path{"socket-ws-fresh", oursSocketFresh(false)}
	pathSocketWSSFresh = path{"socket-wss-fresh", oursSocketFresh(true)}
	pathPortWS         = path{"port-ws", oursPort(false, false)}
	pathPortWSS        = path{"port-wss", oursPort(true, false)}
	// The same four with the resume extension granted (as a user gets it
	// by default): byte numbering, acks, a send buffer per direction.
	pathSocketWSResume  = path{"socket-ws-resume", oursSocket(false, true)}
	pathSocketWSSResume = path{"socket-wss-resume", oursSocket(true, true)}
	pathPortWSResume    = path{"port-ws-resume", oursPort(false, true)}
	pathPortWSSResume   = path{"port-wss-resume", oursPort(true, true)}
	pathNetstack        = path{"netstack", netstackChain}
	// The raw_stream extension: the same tunnels, unframed after the
	// handshake, so that the server splices between client and target.
	pathSocketRaw = path{"socket-raw", oursSocketFront(false, rig.FrontServeRaw, false)}
	pathPortRaw   = path{"port-raw", oursPortFront(false, rig.FrontServeRaw, false)}
)

// allPaths is every path, baselines first; a -resume row runs right after
// its resume-off twin, so that their ratio is taken seconds apart.
var allPaths = []path{
	pathTCP, pathRelay, pathRelayCopy, pathRelay2, pathRelayCopy2, pathRefSocket, pathRefPort,
	pathSocketWS, pathSocketWSResume, pathSocketWSS, pathSocketWSSResume,
	pathPortWS, pathPortWSResume, pathPortWSS, pathPortWSSResume, pathNetstack,
	pathSocketRaw, pathPortRaw,
}

// relays builds n relays of kind in a row in front of a loopback target.
func relays(n int, kind func(target string) func(net.Conn)) func(tb testing.TB, handle func(net.Conn)) *fixture {
	return func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx := loopbackTarget(tb, handle)
		next := fx.target.Addr().String()
		for range n {
			relay, err := rig.ListenLoopback(kind(next))
			fx.check(tb, err)
			fx.onClose(relay.Close)
			next = relay.Addr().String()
		}
		fx.open = dialTCP(next)
		return fx
	}
}

// refServer starts the reference server in front of a loopback target.
func refServer(tb testing.TB, handle func(net.Conn)) (*fixture, *reference.Dialer) {
	fx := loopbackTarget(tb, handle)
	srv, err := rig.StartReference(false)
	fx.check(tb, err)
	fx.onClose(srv.Close)
	return fx, &reference.Dialer{BaseURL: srv.URL, Token: rig.Token}
}

// oursServerFront starts spriteproxy's server (served by front, granting
// resume if resume) in front of a loopback target, and a default client.
func oursServerFront(tb testing.TB, handle func(net.Conn), useTLS bool, front rig.Front, resume bool) (*fixture, *proxy.Sprite) {
	return oursServerClient(tb, handle, useTLS, front, resume, func(url string, tlsConf *tls.Config) *proxy.Client {
		return proxy.New(rig.Token, proxy.WithBaseURL(url), proxy.WithTLSConfig(tlsConf))
	})
}

// oursServerClient is oursServerFront with the client made by newClient.
func oursServerClient(tb testing.TB, handle func(net.Conn), useTLS bool, front rig.Front, resume bool, newClient func(url string, tlsConf *tls.Config) *proxy.Client) (*fixture, *proxy.Sprite) {
	fx := loopbackTarget(tb, handle)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	fx.check(tb, err)
	srv, err := rig.ServeOurs(ln, nil, useTLS, front, resume)
	fx.check(tb, err)
	fx.onClose(srv.Close)
	client := newClient(srv.URL, srv.ClientTLS)
	fx.onClose(client.CloseIdleConnections)
	return fx, client.Sprite(rig.Sprite)
}

// oursSocketFresh is ProxySocket with a client that does not offer the
// reuse extension.
func oursSocketFresh(useTLS bool) func(testing.TB, func(net.Conn)) *fixture {
	return func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx, sp := oursServerClient(tb, handle, useTLS, rig.FrontServe, false, func(url string, tlsConf *tls.Config) *proxy.Client {
			d := &websocket.Dialer{BaseURL: url, Token: rig.Token, TLSConfig: tlsConf, DisableReuse: true}
			return proxy.New(rig.Token, proxy.WithDialer(d))
		})
		addr := fx.target.Addr().String()
		fx.open = func(ctx context.Context) (net.Conn, error) { return sp.ProxySocket(ctx, "tcp", addr) }
		return fx
	}
}

// oursSocket is ProxySocket: the benchmark writes to the tunnel itself.
func oursSocket(useTLS, resume bool) func(testing.TB, func(net.Conn)) *fixture {
	return oursSocketFront(useTLS, rig.FrontServe, resume)
}

// oursSocketFront is oursSocket with the server served by front.
func oursSocketFront(useTLS bool, front rig.Front, resume bool) func(testing.TB, func(net.Conn)) *fixture {
	return func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx, sp := oursServerFront(tb, handle, useTLS, front, resume)
		addr := fx.target.Addr().String()
		fx.open = func(ctx context.Context) (net.Conn, error) { return sp.ProxySocket(ctx, "tcp", addr) }
		return fx
	}
}

// oursPort is ProxyPort: the benchmark writes to the session's local port.
func oursPort(useTLS, resume bool) func(testing.TB, func(net.Conn)) *fixture {
	return oursPortFront(useTLS, rig.FrontServe, resume)
}

// oursPortFront is oursPort with the server served by front.
func oursPortFront(useTLS bool, front rig.Front, resume bool) func(testing.TB, func(net.Conn)) *fixture {
	return func(tb testing.TB, handle func(net.Conn)) *fixture {
		fx, sp := oursServerFront(tb, handle, useTLS, front, resume)
		ps, err := sp.ProxyPort(context.Background(), 0, fx.target.Port())
		fx.check(tb, err)
		fx.onClose(func() { ps.Close() })
		fx.open = dialTCP(net.JoinHostPort("127.0.0.1", strconv.Itoa(ps.LocalPort)))
		return fx
	}
}

// netstackChain is ProxySocket with no OS socket at all: the client, the
// server and the sprite are three hosts of one in-process netstack.Network;
// the server's http.Handler is served by net/http on a netstack listener
// (the way an httptest-style helper would), the client's
// Dialer dials it with NetDial, and the server places the sprite's targets
// in the sprite's host (websocket.Server.Sprites is the Network).
func netstackChain(tb testing.TB, handle func(net.Conn)) *fixture {
	n := netstack.NewNetwork(nil)
	fx := &fixture{}
	fx.onClose(func() { n.Close() })
	hosts := map[string]*netstack.Host{}
	for _, name := range []string{"client", "server", rig.Sprite} {
		h, err := n.NewHost(name)
		fx.check(tb, err)
		hosts[name] = h
	}
	tln, err := hosts[rig.Sprite].Listen("tcp", "127.0.0.1:0")
	fx.check(tb, err)
	fx.target = rig.NewService(tln, handle)
	fx.onClose(fx.target.Close)
	sln, err := hosts["server"].Listen("tcp", ":80")
	fx.check(tb, err)
	srv, err := rig.ServeOurs(sln, n, false, rig.FrontHTTP, false)
	fx.check(tb, err)
	fx.onClose(srv.Close)
	sp := proxy.New(rig.Token, proxy.WithBaseURL("http://server:80"), proxy.WithNetDial(hosts["client"].DialContext)).Sprite(rig.Sprite)
	addr := net.JoinHostPort("localhost", strconv.Itoa(fx.target.Port()))
	fx.open = func(ctx context.Context) (net.Conn, error) { return sp.ProxySocket(ctx, "tcp", addr) }
	return fx
}
