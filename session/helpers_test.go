package session

import (
	"context"
	"github.com/spriteproxy/spriteproxy/internal/testlog"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// startService serves handle on a fresh loopback port of network's family
// ("tcp4" or "tcp6") and returns its address; the test's cleanup closes it
// with every conn it accepted and waits for their handlers.
func startService(t *testing.T, network string, handle func(net.Conn)) string {
	t.Helper()
	host := "127.0.0.1"
	if network == "tcp6" {
		host = "::1"
	}
	ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, handle)
	return ln.Addr().String()
}

// echo copies c back to itself, then passes the end of stream on.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// startEcho starts an echo service on 127.0.0.1 and returns its address.
func startEcho(t *testing.T) string {
	return startService(t, "tcp4", echo)
}

// directDialer dials the address it is given on the machine's network,
// ignoring the sprite: loopback stands in for the sprite's network.
func directDialer() dialer.Dialer {
	return dialer.Func(func(ctx context.Context, _, network, address string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	})
}

// tunnelDialer is directDialer with the conns wrapped so that they are no
// longer *net.TCPConn, as a transport's tunnel is not: the pump then copies
// through its buffers, counting each chunk, rather than splicing TCP to TCP.
func tunnelDialer() dialer.Dialer {
	return dialer.Func(func(ctx context.Context, _, network, address string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return tunnelConn{c.(*net.TCPConn)}, nil
	})
}

// tunnelConn hides a *net.TCPConn's type, keeping CloseWrite.
type tunnelConn struct{ *net.TCPConn }

// redirectDialer dials to whatever address it is given, and sends that
// address on got (which must have room) first.
func redirectDialer(to string, got chan<- string) dialer.Dialer {
	return dialer.Func(func(ctx context.Context, _, network, address string) (net.Conn, error) {
		got <- address
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	})
}

// forward returns a Config that forwards to the service at addr through
// tunnel-like conns.
func forward(t *testing.T, addr string) Config {
	t.Helper()
	host, port := splitHostPort(t, addr)
	return Config{Dialer: tunnelDialer(), Sprite: "test", RemoteHost: host, RemotePort: port}
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.IP.String(), ap.Port
}

// start starts a session on the test's context and closes it at cleanup.
func start(t *testing.T, cfg Config) *Session {
	t.Helper()
	s, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dial connects to addr and closes the conn at cleanup. Its deadline
// guards a test from hanging: no test waits for it to pass.
func dial(t *testing.T, addr net.Addr) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// assertFails checks that a connection to addr is reset
// (testnet.AssertReset).
func assertFails(t *testing.T, addr net.Addr) {
	t.Helper()
	testnet.AssertReset(t, "tcp", addr.String())
}

// roundTrip writes msg to c and reads the same number of bytes back.
func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}

// listenRecorder is a ListenFunc on the OS that keeps the listeners it
// opened and the networks and addresses it was asked for.
type listenRecorder struct {
	mu        sync.Mutex
	calls     []string
	listeners []net.Listener
	fail      func(network string) error // if set and it returns an error, the call fails with it
}

func (r *listenRecorder) listen(ctx context.Context, network, address string) (net.Listener, error) {
	r.mu.Lock()
	r.calls = append(r.calls, network+" "+address)
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(network); err != nil {
			return nil, err
		}
	}
	l, err := ListenOS(ctx, network, address)
	if err == nil {
		r.mu.Lock()
		r.listeners = append(r.listeners, l)
		r.mu.Unlock()
	}
	return l, err
}

func (r *listenRecorder) snapshot() ([]string, []net.Listener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...), append([]net.Listener(nil), r.listeners...)
}

// logRecorder keeps every record the code under test logs.
type logRecorder = testlog.Recorder
