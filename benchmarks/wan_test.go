package benchmarks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/reference"
	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/netstack"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// The WAN rig: the user's machine is far from the server, the server is
// next to the sprite. Three hosts of one netstack.Network with a 1500-byte
// MTU: "client" (where ProxySocket is called, and where a ProxyPort
// listens and the application connects), "server" (the tunnel server) and
// the sprite, whose target listens on every address (the server dials it
// on the sprite's loopback; raw TCP dials it from the client across the
// link). Only the client's link has conditions: half the RTT each way and
// the loss each way, so every packet between the client and anything else
// pays them and nothing else does.

// wanRTTs are the round trips the first-byte rows run at.
var wanRTTs = []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond, 150 * time.Millisecond}

// wanRig is one WAN network with its target.
type wanRig struct {
	rtt                    time.Duration
	n                      *netstack.Network
	client, server, sprite *netstack.Host
	target                 *rig.Service
	accepts                atomic.Int64 // connections the tunnel server accepted
	closers                []func()
	// tunnelClosed, for a ProxyPort of ours, gets a value each time the
	// session's Close of a tunnel has returned (its connection, if
	// reusable, is then back in the idle pool).
	tunnelClosed chan struct{}
}

func (w *wanRig) onClose(f func()) { w.closers = append(w.closers, f) }

// Close tears the rig down, last built first. A second Close does nothing.
func (w *wanRig) Close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
}

func (w *wanRig) check(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		w.Close()
		tb.Fatal(err)
	}
}

// newWAN builds the network, the target (running handle) and the client's
// link conditions.
func newWAN(tb testing.TB, rtt time.Duration, loss float64, handle func(net.Conn)) *wanRig {
	tb.Helper()
	w := &wanRig{rtt: rtt, n: netstack.NewNetwork(&netstack.Options{MTU: 1500})}
	w.onClose(func() { w.n.Close() })
	var err error
	for _, h := range []struct {
		p    **netstack.Host
		name string
	}{{&w.client, "client"}, {&w.server, "server"}, {&w.sprite, rig.Sprite}} {
		*h.p, err = w.n.NewHost(h.name)
		w.check(tb, err)
	}
	ln, err := w.sprite.Listen("tcp", ":0")
	w.check(tb, err)
	w.target = rig.NewService(ln, handle)
	w.onClose(w.target.Close)
	w.client.SetConditions(netstack.Conditions{Latency: rtt / 2, Loss: loss, Seed: 1})
	return w
}

// listenServer is the server's listener, counting the connections it
// accepts.
func (w *wanRig) listenServer(tb testing.TB) net.Listener {
	ln, err := w.server.Listen("tcp", ":443")
	w.check(tb, err)
	return &countingListener{Listener: ln, n: &w.accepts}
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// serverURL and clientTLS: the server's certificate is for localhost.
func serverURL(useTLS bool) string {
	if useTLS {
		return "https://server:443"
	}
	return "http://server:443"
}

func wanTLS(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	c = c.Clone()
	c.ServerName = "localhost"
	return c
}

// A wanPath opens one stream to the rig's target: what the application
// does, from connect() on.
type wanPath struct {
	name  string
	build func(tb testing.TB, w *wanRig, reuse bool) func(ctx context.Context) (net.Conn, error)
	// reuse is whether the path has a "reused" row.
	reuse bool
}

var (
	wanTCP = wanPath{"tcp", func(tb testing.TB, w *wanRig, _ bool) func(context.Context) (net.Conn, error) {
		addr := net.JoinHostPort(rig.Sprite, strconv.Itoa(w.target.Port()))
		return func(ctx context.Context) (net.Conn, error) { return w.client.DialContext(ctx, "tcp", addr) }
	}, true}
	wanSocketWS     = wanPath{"socket-ws", wanOurs(false, false), true}
	wanSocketWSS    = wanPath{"socket-wss", wanOurs(true, false), true}
	wanPortWS       = wanPath{"port-ws", wanOurs(false, true), true}
	wanPortWSS      = wanPath{"port-wss", wanOurs(true, true), true}
	wanRefSocket    = wanPath{"ref-socket", wanRef(false, false), false}
	wanRefSocketTLS = wanPath{"ref-socket-wss", wanRef(true, false), false}
	wanRefPort      = wanPath{"ref-port", wanRef(false, true), false}
	wanRefPortTLS   = wanPath{"ref-port-wss", wanRef(true, true), false}
)

var wanFirstBytePaths = []wanPath{wanTCP, wanSocketWS, wanSocketWSS, wanPortWS, wanPortWSS, wanRefSocket, wanRefSocketTLS, wanRefPort, wanRefPortTLS}

// wanOurs is spriteproxy's ProxySocket (or ProxyPort) with the client's
// reuse extension on or off, with the optimistic extension on for both
// (the rig passes its own Dialer; proxy.New's default turns it on for
// ProxyPort only).
func wanOurs(useTLS, port bool) func(testing.TB, *wanRig, bool) func(context.Context) (net.Conn, error) {
	return func(tb testing.TB, w *wanRig, reuse bool) func(context.Context) (net.Conn, error) {
		srv, err := rig.ServeOurs(w.listenServer(tb), w.n, useTLS, rig.FrontServe)
		w.check(tb, err)
		w.onClose(srv.Close)
		d := &websocket.Dialer{BaseURL: serverURL(useTLS), Token: rig.Token, TLSConfig: wanTLS(srv.ClientTLS),
			DisableReuse: !reuse, NetDial: w.client.DialContext, Optimistic: true,
			DisableResume: true} // closeWatcher wraps a *websocket.Conn; resume is measured on its own
		var dd dialer.Dialer = d
		if port {
			w.tunnelClosed = make(chan struct{}, 16)
			dd = closeWatcher{d, w.tunnelClosed}
		}
		w.onClose(d.CloseIdleConnections)
		client := proxy.New(rig.Token, proxy.WithDialer(dd), proxy.WithListen(func(_ context.Context, network, addr string) (net.Listener, error) {
			return w.client.Listen(network, addr)
		}))
		w.onClose(client.CloseIdleConnections)
		sp := client.Sprite(rig.Sprite)
		if !port {
			addr := net.JoinHostPort("localhost", strconv.Itoa(w.target.Port()))
			return func(ctx context.Context) (net.Conn, error) { return sp.ProxySocket(ctx, "tcp", addr) }
		}
		ps, err := sp.ProxyPort(context.Background(), 0, w.target.Port())
		w.check(tb, err)
		w.onClose(func() { ps.Close() })
		local := net.JoinHostPort("127.0.0.1", strconv.Itoa(ps.LocalPort))
		return func(ctx context.Context) (net.Conn, error) { return w.client.DialContext(ctx, "tcp", local) }
	}
}

// wanRef is the reference SDK way: its /control probe (404 here, as from
// spriteproxy's server), then a fresh /proxy tunnel; ProxyPort is its
// forwarder on the client's machine.
func wanRef(useTLS, port bool) func(testing.TB, *wanRig, bool) func(context.Context) (net.Conn, error) {
	return func(tb testing.TB, w *wanRig, _ bool) func(context.Context) (net.Conn, error) {
		rs := &reference.Server{Token: rig.Token, Dial: w.sprite.DialContext}
		mux := http.NewServeMux()
		mux.Handle("/v1/sprites/{name}/proxy", rs) // anything else, /control included, is 404
		srv, err := rig.ServeHTTP(w.listenServer(tb), mux, useTLS, func() { rs.Close() })
		w.check(tb, err)
		w.onClose(srv.Close)
		d := &reference.Dialer{BaseURL: serverURL(useTLS), Token: rig.Token, TLSConfig: wanTLS(srv.ClientTLS),
			NetDial: w.client.DialContext, ProbeControl: true}
		addr := net.JoinHostPort("localhost", strconv.Itoa(w.target.Port()))
		dial := func(ctx context.Context) (net.Conn, error) { return d.Dial(ctx, rig.Sprite, addr) }
		if !port {
			return dial
		}
		ln, err := w.client.Listen("tcp", "127.0.0.1:0")
		w.check(tb, err)
		f := reference.Forward(ln, dial)
		w.onClose(func() { f.Close() })
		local := f.Addr().String()
		return func(ctx context.Context) (net.Conn, error) { return w.client.DialContext(ctx, "tcp", local) }
	}
}

// BenchmarkWAN runs the WAN rows: the time from a local connect() to the
// first echoed byte at each RTT, on a fresh connection and on a reused
// one, and bulk throughput at 50 ms RTT with 0 and 1 % loss. Use it with
// -benchtime Nx: one op is one tunnel (or one transfer).
func BenchmarkWAN(b *testing.B) {
	for _, rtt := range wanRTTs {
		for _, p := range wanFirstBytePaths {
			modes := []string{"fresh"}
			if p.reuse {
				modes = append(modes, "reused")
			}
			for _, mode := range modes {
				b.Run(fmt.Sprintf("first-byte/%dms/%s/%s", rtt.Milliseconds(), p.name, mode), func(b *testing.B) {
					wanFirstByte(b, rtt, p, mode == "reused")
				})
			}
		}
	}
	for _, loss := range []float64{0, 0.01} {
		for _, p := range []wanPath{wanTCP, wanSocketWS, wanSocketWSS, wanPortWS} {
			b.Run(fmt.Sprintf("bulk/50ms/loss-%gpct/%s", loss*100, p.name), func(b *testing.B) {
				wanBulk(b, 50*time.Millisecond, loss, p)
			})
		}
	}
}

// echoByte writes one byte on c and reads its echo.
func echoByte(c net.Conn, v byte) error {
	if _, err := c.Write([]byte{v}); err != nil {
		return err
	}
	got := make([]byte, 1)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if got[0] != v {
		return fmt.Errorf("echo: got %q, want %q", got, v)
	}
	return nil
}

// closeWatcher is a websocket.Dialer whose tunnels tell when their Close
// has returned. The tunnel is the *websocket.Conn itself, embedded, so
// every method the session looks for is there.
type closeWatcher struct {
	d      *websocket.Dialer
	closed chan<- struct{}
}

func (cw closeWatcher) DialSprite(ctx context.Context, sprite, network, address string) (net.Conn, error) {
	c, err := cw.d.DialSprite(ctx, sprite, network, address)
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: c.(*websocket.Conn), closed: cw.closed}, nil
}

type watchedConn struct {
	*websocket.Conn
	closed chan<- struct{}
	once   sync.Once
}

// tell signals the close, without waiting: bulk rows do not wait for it.
func (c *watchedConn) tell() {
	select {
	case c.closed <- struct{}{}:
	default:
	}
}

func (c *watchedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.tell)
	return err
}

func (c *watchedConn) CloseNow() error {
	err := c.Conn.CloseNow()
	c.once.Do(c.tell)
	return err
}

// settle waits, untimed, until the last op's tunnel is closed: a
// ProxyPort closes its tunnel some round trips after the application's
// Close, and the next op must find its connection back in the idle pool.
// ProxySocket's Close has done that before it returns.
func (w *wanRig) settle(tb testing.TB) {
	if w.tunnelClosed == nil {
		return
	}
	select {
	case <-w.tunnelClosed:
	case <-time.After(time.Minute):
		w.check(tb, errors.New("the ProxyPort's tunnel was not closed within a minute of its local conn"))
	}
}

// wanFirstByte times, per op, a connect through the path, a 1-byte write
// and the read of its echo; the close and a settling pause come after,
// untimed. With reused, one tunnel is opened and closed first, so that
// every timed one finds an idle connection (for raw TCP: every op echoes
// on one connection opened before). It reports the median in ms and in
// round trips, and how many connections the server accepted per op.
func wanFirstByte(b *testing.B, rtt time.Duration, p wanPath, reused bool) {
	w := newWAN(b, rtt, 0, rig.Echo)
	defer w.Close()
	open := p.build(b, w, reused)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var kept net.Conn // raw TCP, reused
	if reused {
		c, err := open(ctx)
		w.check(b, err)
		if err := echoByte(c, 0); err != nil {
			c.Close()
			w.check(b, err)
		}
		if p.name == "tcp" {
			kept = c
			defer c.Close()
		} else {
			c.Close()
		}
		w.settle(b)
	} else {
		// One untimed op first: the client's very first dial has no TLS
		// session to resume and does not know yet that the server takes
		// early_data and optimistic, which every later fresh connection
		// of a running program does. The rows measure that steady cost.
		c, err := open(ctx)
		w.check(b, err)
		err = echoByte(c, 0)
		c.Close()
		w.check(b, err)
		w.settle(b)
	}
	times := make([]time.Duration, 0, b.N)
	accepts := w.accepts.Load()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		c := kept
		if c == nil {
			var err error
			c, err = open(ctx)
			w.check(b, err)
		}
		err := echoByte(c, byte(i))
		times = append(times, time.Since(start))
		if c != kept {
			c.Close()
		}
		w.check(b, err)
		w.settle(b)
	}
	b.StopTimer()
	slices.Sort(times)
	med := times[len(times)/2]
	b.ReportMetric(float64(med)/float64(time.Millisecond), "ms")
	if rtt > 0 {
		b.ReportMetric(float64(med)/float64(rtt), "rtt")
	}
	b.ReportMetric(float64(w.accepts.Load()-accepts)/float64(b.N), "conns/op")
}

// wanBulkSize is what one bulk op moves: a transfer a user waits for.
func wanBulkSize(loss float64) int {
	if loss > 0 {
		return 2 << 20
	}
	return 16 << 20
}

// wanBulk times, per op, a stream of wanBulkSize bytes from the client to
// the target, from the first Write until the target has read the end of
// stream (its count checked); the connect is not timed.
func wanBulk(b *testing.B, rtt time.Duration, loss float64, p wanPath) {
	type result struct {
		n   int64
		err error
	}
	got := make(chan result, 1)
	w := newWAN(b, rtt, loss, func(c net.Conn) {
		n, err := io.Copy(io.Discard, c)
		got <- result{n, err}
	})
	defer w.Close()
	open := p.build(b, w, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	size := wanBulkSize(loss)
	chunk := make([]byte, 64<<10)
	var moving time.Duration
	b.ResetTimer()
	for range b.N {
		c, err := open(ctx)
		w.check(b, err)
		start := time.Now()
		for sent := 0; sent < size && err == nil; sent += len(chunk) {
			_, err = c.Write(chunk)
		}
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		if err != nil {
			c.Close()
			w.check(b, err)
		}
		r := <-got
		moving += time.Since(start)
		c.Close()
		if r.err != nil || r.n != int64(size) {
			w.check(b, fmt.Errorf("target read %d bytes (%v), want %d", r.n, r.err, size))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(size)*float64(b.N)/moving.Seconds()/1e6, "MB/s")
	lost := w.client.FaultStats().Lost
	b.ReportMetric(float64(lost)/float64(b.N), "lost-pkts/op")
}
