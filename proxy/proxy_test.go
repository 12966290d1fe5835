package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/proxy"
)

// server starts an in-process server for the test and closes it at
// cleanup; the client is set up for it.
func server(t *testing.T, opts ...proxy.Option) (*testServer, *proxy.Client) {
	t.Helper()
	srv := newTestServer(false)
	t.Cleanup(srv.Close)
	opts = append([]proxy.Option{proxy.WithBaseURL(srv.URL)}, opts...)
	return srv, proxy.New(testToken, opts...)
}

// transports runs f over the real WebSocket transport and over a direct
// dialer (no tunnel), each against its own server and sprite network.
func transports(t *testing.T, f func(t *testing.T, srv *testServer, c *proxy.Client)) {
	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		srv, c := server(t)
		f(t, srv, c)
	})
	t.Run("direct", func(t *testing.T) {
		t.Parallel()
		srv := newTestServer(false)
		t.Cleanup(srv.Close)
		f(t, srv, proxy.New("", proxy.WithDialer(srv.Net.directDialer())))
	})
}

// proxyPort forwards a fresh local port to port in the test sprite and
// closes the session at cleanup.
func proxyPort(t *testing.T, c *proxy.Client, port int) *proxy.ProxySession {
	t.Helper()
	ps, err := c.Sprite(testSprite).ProxyPort(t.Context(), 0, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	return ps
}

// dial connects to the session; the deadline only guards against a hang.
func dial(t *testing.T, network string, ps *proxy.ProxySession) *net.TCPConn {
	t.Helper()
	host := "127.0.0.1"
	if network == "tcp6" {
		host = "::1"
	}
	c, err := net.Dial(network, net.JoinHostPort(host, strconv.Itoa(ps.LocalPort)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

// assertClosed checks that c's peer closed it: a read ends at once.
func assertClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a conn that should be closed", n)
	}
}

// assertReset checks that a connection to ps is reset (testnet.AssertReset).
func assertReset(t *testing.T, ps *proxy.ProxySession) {
	t.Helper()
	testnet.AssertReset(t, "tcp4", ps.LocalAddr().String())
}

func TestProxyPort(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(5432, echo)
		ps := proxyPort(t, c, 5432)
		if ps.LocalPort == 0 {
			t.Fatal("LocalPort = 0 after asking for port 0")
		}
		if a, ok := ps.LocalAddr().(*net.TCPAddr); !ok || a.Port != ps.LocalPort || !a.IP.IsLoopback() {
			t.Fatalf("LocalAddr() = %v, LocalPort = %d", ps.LocalAddr(), ps.LocalPort)
		}
		if ps.RemotePort != 5432 || ps.RemoteHost != "localhost" {
			t.Fatalf("RemoteHost, RemotePort = %q, %d", ps.RemoteHost, ps.RemotePort)
		}
		roundTrip(t, dial(t, "tcp4", ps), "hello through the tunnel")
		// localhost is never resolved (RFC 6761 §6.3): the sprite is
		// asked for its loopback address itself.
		if got := srv.Net.lastDialed(); got != "127.0.0.1:5432" && got != "[::1]:5432" && (got != "localhost:5432" || strings.HasSuffix(t.Name(), "websocket")) {
			t.Fatalf("sprite dialed %q, want its loopback address (localhost only without the server)", got)
		}
	})
}

// TestHalfClose: through ProxyPort, a client writes, shuts its write side,
// and receives the complete reply and then EOF.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(7000, func(c net.Conn) {
			data, err := io.ReadAll(c) // the reply waits for the client's EOF
			if err != nil {
				return
			}
			c.Write(bytes.ToUpper(data))
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
		})
		ps := proxyPort(t, c, 7000)
		conn := dial(t, "tcp4", ps)
		payload := bytes.Repeat([]byte("half-close "), 50_000) // several frames
		if _, err := conn.Write(payload); err != nil {
			t.Fatal(err)
		}
		if err := conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("read after CloseWrite: %v", err)
		}
		if !bytes.Equal(got, bytes.ToUpper(payload)) {
			t.Fatalf("reply is %d bytes, want %d", len(got), len(payload))
		}
	})
}

func TestContextCancelClosesSession(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(80, echo)
		ctx, cancel := context.WithCancel(t.Context())
		ps, err := c.ProxyPort(ctx, testSprite, 0, 80)
		if err != nil {
			t.Fatal(err)
		}
		conn := dial(t, "tcp4", ps)
		roundTrip(t, conn, "before")
		if ps.Err() != nil {
			t.Fatalf("Err = %v while running", ps.Err())
		}
		cancel()
		<-ps.Done()
		ps.Wait()
		if !errors.Is(ps.Err(), context.Canceled) {
			t.Fatalf("Err = %v after the context ended, want context.Canceled", ps.Err())
		}
		assertClosed(t, conn)
		if st := ps.Stats(); st.Active != 0 {
			t.Fatalf("Active = %d after the context ended", st.Active)
		}
		ps.Close()
	})
}

// TestCloseConcurrent: Close from many goroutines; each returns once the
// forwarded connections are closed, and again later is a no-op.
func TestCloseConcurrent(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(80, echo)
		ps := proxyPort(t, c, 80)
		var conns []net.Conn
		for range 3 {
			conn := dial(t, "tcp4", ps)
			roundTrip(t, conn, "live")
			conns = append(conns, conn)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if err := ps.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Wait()
		if st := ps.Stats(); st.Active != 0 || st.Accepted != 3 {
			t.Fatalf("Stats after Close = %+v", st)
		}
		for _, conn := range conns {
			assertClosed(t, conn)
		}
		ps.Wait() // returns at once
		if err := ps.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestProxyPortsAllOrNothing: when the second mapping's local port is in
// use, the first session is closed and the error names the mapping.
func TestProxyPortsAllOrNothing(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	rec := &listenRecorder{}
	_, c := server(t, proxy.WithListen(rec.listen))
	mappings := []proxy.PortMapping{
		{LocalPort: 0, RemotePort: 3000},
		{LocalPort: busyPort, RemotePort: 5432},
		{LocalPort: 0, RemotePort: 8080},
	}
	sessions, err := c.ProxyPorts(t.Context(), testSprite, mappings)
	if err == nil {
		t.Fatal("ProxyPorts succeeded with a local port in use")
	}
	if sessions != nil {
		t.Fatalf("sessions = %v on error", sessions)
	}
	var me *proxy.MappingError
	if !errors.As(err, &me) || me.Index != 1 || me.Mapping != mappings[1] {
		t.Fatalf("error %v does not name mapping 1", err)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("error %v does not match EADDRINUSE", err)
	}
	if !strings.Contains(err.Error(), "local port "+strconv.Itoa(busyPort)) {
		t.Fatalf("error %q does not name the local port", err)
	}
	ls := rec.snapshot()
	if len(ls) == 0 {
		t.Fatal("mapping 0 never listened")
	}
	for _, l := range ls {
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("listener %v of mapping 0 still open", l.Addr())
		}
	}
}

func TestProxyPorts(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(3000, echo)
		srv.Serve(5432, echo)
		sessions, err := c.ProxyPorts(t.Context(), testSprite, []proxy.PortMapping{
			{LocalPort: 0, RemotePort: 3000},
			{LocalPort: 0, RemotePort: 5432, RemoteHost: "127.0.0.1"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, s := range sessions {
				s.Close()
			}
		}()
		if len(sessions) != 2 || sessions[0].RemotePort != 3000 || sessions[1].RemoteHost != "127.0.0.1" {
			t.Fatalf("sessions = %+v", sessions)
		}
		for _, s := range sessions {
			roundTrip(t, dial(t, "tcp4", s), "port "+strconv.Itoa(s.RemotePort))
		}
	})
}

// countingDialer fails every dial and counts them.
type countingDialer struct{ n atomic.Int32 }

func (d *countingDialer) DialSprite(context.Context, string, string, string) (net.Conn, error) {
	d.n.Add(1)
	return nil, errors.New("dialed")
}

// TestBadInput: bad ports, networks, addresses and sprite names fail
// before any listening or dialing, with the dialer package's sentinels.
func TestBadInput(t *testing.T) {
	t.Parallel()
	d := &countingDialer{}
	rec := &listenRecorder{}
	c := proxy.New("", proxy.WithDialer(d), proxy.WithListen(rec.listen))
	sprite := c.Sprite(testSprite)
	ctx := t.Context()

	portCases := []struct {
		name  string
		local int
		remot int
	}{
		{"local -1", -1, 80},
		{"local 65536", 65536, 80},
		{"remote 0", 0, 0},
		{"remote -1", 0, -1},
		{"remote 65536", 0, 65536},
	}
	for _, tc := range portCases {
		if _, err := sprite.ProxyPort(ctx, tc.local, tc.remot); !errors.Is(err, dialer.ErrBadAddress) {
			t.Errorf("ProxyPort %s: %v, want ErrBadAddress", tc.name, err)
		}
	}
	for _, host := range []string{"a b", "db/1", "x]y", strings.Repeat("h", 300)} {
		_, err := sprite.ProxyPorts(ctx, []proxy.PortMapping{{RemotePort: 1}, {RemotePort: 1, RemoteHost: host}})
		var me *proxy.MappingError
		if !errors.Is(err, dialer.ErrBadAddress) || !errors.As(err, &me) || me.Index != 1 {
			t.Errorf("ProxyPorts host %q: %v, want ErrBadAddress naming mapping 1", host, err)
		}
	}
	if _, err := c.ProxyPort(ctx, "", 0, 80); !errors.Is(err, dialer.ErrBadAddress) {
		t.Errorf("ProxyPort with no sprite name: %v", err)
	}

	for _, tc := range []struct {
		network, addr string
		want          error
	}{
		{"udp", "localhost:5432", dialer.ErrUnsupportedNetwork},
		{"unix", "/tmp/sock", dialer.ErrUnsupportedNetwork},
		{"", "localhost:5432", dialer.ErrUnsupportedNetwork},
		{"tcp", "localhost", dialer.ErrBadAddress},
		{"tcp", "", dialer.ErrBadAddress},
		{"tcp", "localhost:0", dialer.ErrBadAddress},
		{"tcp", "localhost:65536", dialer.ErrBadAddress},
		{"tcp", "localhost:http", dialer.ErrBadAddress},
		{"tcp", "::1:5432", dialer.ErrBadAddress},
		{"tcp", "[::1:5432", dialer.ErrBadAddress},
		{"tcp", "a b:5432", dialer.ErrBadAddress},
		{"tcp", ":5432", dialer.ErrBadAddress},
	} {
		_, err := sprite.ProxySocket(ctx, tc.network, tc.addr)
		if !errors.Is(err, tc.want) {
			t.Errorf("ProxySocket(%q, %q) = %v, want %v", tc.network, tc.addr, err, tc.want)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.Errorf("ProxySocket(%q, %q) = %T, want a *net.OpError", tc.network, tc.addr, err)
		}
	}
	if _, err := c.ProxySocket(ctx, "tcp", "", "localhost:1"); !errors.Is(err, dialer.ErrBadAddress) {
		t.Errorf("ProxySocket with no sprite name: %v", err)
	}

	if n := d.n.Load(); n != 0 {
		t.Errorf("%d dials for bad input", n)
	}
	if ls := rec.snapshot(); len(ls) != 0 {
		t.Errorf("%d listeners opened for bad input", len(ls))
	}
}

// TestIPv6RemoteHosts: IPv6 hosts reach the sprite as bracketed addresses,
// whether given with brackets or without.
func TestIPv6RemoteHosts(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(5432, echo)
		sessions, err := c.ProxyPorts(t.Context(), testSprite, []proxy.PortMapping{
			{RemotePort: 5432, RemoteHost: "fdf::1"},
			{RemotePort: 5432, RemoteHost: "[::1]"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sessions[0].Close()
		defer sessions[1].Close()
		for i, want := range []struct{ host, dialed string }{{"fdf::1", "[fdf::1]:5432"}, {"::1", "[::1]:5432"}} {
			s := sessions[i]
			if s.RemoteHost != want.host {
				t.Errorf("RemoteHost = %q, want %q", s.RemoteHost, want.host)
			}
			roundTrip(t, dial(t, "tcp4", s), want.host)
			if got := srv.Net.lastDialed(); got != want.dialed {
				t.Errorf("sprite dialed %q, want %q", got, want.dialed)
			}
		}

		conn, err := c.Sprite(testSprite).ProxySocket(t.Context(), "tcp", "[fdf::1]:5432")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		roundTrip(t, conn, "socket")
		if got := srv.Net.lastDialed(); got != "[fdf::1]:5432" {
			t.Errorf("sprite dialed %q, want [fdf::1]:5432", got)
		}
	})
}

// TestRefusedTarget: a stream to a port nothing listens on fails alone; the
// next connection through the same session works once something does.
func TestRefusedTarget(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		ps := proxyPort(t, c, 6000)
		assertReset(t, ps)
		if st := ps.Stats(); st.Failed != 1 {
			t.Fatalf("Stats = %+v, want 1 failed", st)
		}

		srv.Serve(6000, echo)
		roundTrip(t, dial(t, "tcp4", ps), "second try")

		_, err := c.Sprite(testSprite).ProxySocket(t.Context(), "tcp", "localhost:6001")
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, dialer.ErrTargetRefused) {
			t.Fatalf("ProxySocket to a closed port: %v, want a refusal", err)
		}
	})
}

func TestStats(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(80, echo)
		ps := proxyPort(t, c, 80)
		for range 2 {
			conn := dial(t, "tcp4", ps)
			roundTrip(t, conn, "0123456789")
			conn.CloseWrite()
			io.ReadAll(conn)
		}
		ps.Close()
		if st := ps.Stats(); st != (proxy.Stats{Accepted: 2, Sent: 20, Received: 20}) {
			t.Fatalf("Stats = %+v, want 2 accepted, 20 bytes each way", st)
		}
	})
}

// TestLocalhostBothFamilies: a session answers on ::1 too, on its port.
func TestLocalhostBothFamilies(t *testing.T) {
	t.Parallel()
	if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	srv, c := server(t)
	srv.Serve(80, echo)
	ps := proxyPort(t, c, 80)
	roundTrip(t, dial(t, "tcp6", ps), "over ::1")
	roundTrip(t, dial(t, "tcp4", ps), "over 127.0.0.1")
}

// TestLogging: debug lines for streams, nothing at Info or above for
// normal traffic.
func TestLogging(t *testing.T) {
	t.Parallel()
	h := &logRecorder{}
	srv, c := server(t, proxy.WithLogger(slog.New(h)))
	srv.Serve(80, echo)
	ps := proxyPort(t, c, 80)
	conn := dial(t, "tcp4", ps)
	roundTrip(t, conn, "logged")
	conn.Close()
	ps.Close()
	msgs := map[string]int{}
	for _, r := range h.Records() {
		if r.Level >= slog.LevelInfo {
			t.Errorf("logged at %v: %q", r.Level, r.Message)
		}
		msgs[r.Message]++
	}
	if msgs["stream open"] != 1 || msgs["stream closed"] != 1 || msgs["tunnel open"] != 1 {
		t.Fatalf("log lines %v, want one stream open, stream closed and tunnel open", msgs)
	}
}
