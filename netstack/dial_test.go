package netstack_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/netstack"
)

// TestRefused checks that a port nobody listens on fails at once, as a
// *net.OpError matching ECONNREFUSED, from another host and over loopback.
func TestRefused(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	l := listen(t, b, "tcp", ":0")
	free := port(l)
	l.Close() // now nobody listens there

	for _, addr := range []string{
		fmt.Sprintf("b:%d", free),
		net.JoinHostPort(b.Addrs()[0].String(), fmt.Sprint(free)),
		net.JoinHostPort(b.Addrs()[1].String(), fmt.Sprint(free)),
		"localhost:1",
		"[::1]:1",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		_, err := a.DialContext(ctx, "tcp", addr)
		cancel()
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s: got %v, want ECONNREFUSED", addr, err)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.Errorf("dial %s: %#v is not a dial *net.OpError", addr, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("dial %s took %v", addr, d)
		}
	}
}

// TestUnreachable checks that addresses and names nobody owns fail at once.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a := newHost(t, n, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range []string{"10.99.200.200:80", "[fd00:99::dead]:80", "192.0.2.1:80"} {
		_, err := a.DialContext(ctx, "tcp", addr)
		if !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial %s: got %v, want EHOSTUNREACH", addr, err)
		}
	}
	_, err := a.DialContext(ctx, "tcp", "nobody:80")
	var dns *net.DNSError
	if !errors.As(err, &dns) || !dns.IsNotFound {
		t.Errorf("dial nobody: got %v, want a not-found *net.DNSError", err)
	}
	for _, tc := range []struct{ network, addr string }{
		{"udp", "a:80"}, {"tcp", "a"}, {"tcp", "a:http"}, {"tcp", "a:70000"}, {"tcp4", "[::1]:80"}, {"tcp6", "127.0.0.1:80"},
	} {
		if _, err := a.DialContext(ctx, tc.network, tc.addr); err == nil {
			t.Errorf("dial %s %s: no error", tc.network, tc.addr)
		}
	}
}

// TestDialContextDone checks dials with a context already done.
func TestDialContextDone(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	l := listen(t, b, "tcp", ":0")
	addr := fmt.Sprintf("b:%d", port(l))

	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err := a.DialContext(ctx, "tcp", addr)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("passed deadline: got %v, want a timeout net.Error", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("passed deadline: %v does not match context.DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := a.DialContext(ctx, "tcp", addr); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
}

// TestIPv4IPv6 dials each family by address and by name and checks what
// both ends see.
func TestIPv4IPv6(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	dual := listen(t, b, "tcp", ":0")
	serve(t, dual, func(c net.Conn) { fmt.Fprint(c, c.RemoteAddr()) })
	only6 := listen(t, b, "tcp6", ":0")
	serve(t, only6, func(c net.Conn) { fmt.Fprint(c, c.RemoteAddr()) })
	only4 := listen(t, b, "tcp4", ":0")
	serve(t, only4, func(c net.Conn) { fmt.Fprint(c, c.RemoteAddr()) })

	a4, a6 := a.Addrs()[0], a.Addrs()[1]
	b4, b6 := b.Addrs()[0], b.Addrs()[1]
	if !a4.Is4() || !a6.Is6() || !netip.MustParsePrefix("10.99.0.0/16").Contains(a4) || !netip.MustParsePrefix("fd00:99::/64").Contains(a6) {
		t.Fatalf("a's addresses: %v", a.Addrs())
	}
	for _, tc := range []struct {
		network, addr string
		l             net.Listener
		from, to      netip.Addr
	}{
		{"tcp", net.JoinHostPort(b4.String(), fmt.Sprint(port(dual))), dual, a4, b4},
		{"tcp", net.JoinHostPort(b6.String(), fmt.Sprint(port(dual))), dual, a6, b6},
		{"tcp4", fmt.Sprintf("b:%d", port(dual)), dual, a4, b4},
		{"tcp6", fmt.Sprintf("b:%d", port(dual)), dual, a6, b6},
		{"tcp", fmt.Sprintf("b:%d", port(only6)), only6, a6, b6}, // falls back to IPv6
		{"tcp", fmt.Sprintf("b:%d", port(only4)), only4, a4, b4},
	} {
		c, err := a.Dial(tc.network, tc.addr)
		if err != nil {
			t.Errorf("dial %s %s: %v", tc.network, tc.addr, err)
			continue
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Error(err)
		}
		wantSeen := netip.AddrPortFrom(tc.from, uint16(c.LocalAddr().(*net.TCPAddr).Port)).String()
		if string(got) != wantSeen {
			t.Errorf("dial %s %s: server saw %s, want %s", tc.network, tc.addr, got, wantSeen)
		}
		if ra := c.RemoteAddr().(*net.TCPAddr).AddrPort(); ra != netip.AddrPortFrom(tc.to, uint16(port(tc.l))) {
			t.Errorf("dial %s %s: RemoteAddr %v", tc.network, tc.addr, ra)
		}
	}
	// A tcp6 listener does not take IPv4.
	if _, err := a.Dial("tcp4", fmt.Sprintf("b:%d", port(only6))); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("IPv4 to a tcp6 listener: %v", err)
	}
}

// TestNames checks name resolution: other hosts by name, "localhost" as
// each host's own loopback.
func TestNames(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	la := listen(t, a, "tcp", "127.0.0.1:0")
	serve(t, la, func(c net.Conn) { c.Write([]byte("a")) })
	lb := listen(t, b, "tcp", ":0")
	serve(t, lb, func(c net.Conn) { c.Write([]byte("b")) })

	read := func(h *netstack.Host, addr string) (string, error) {
		c, err := h.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		return string(got), err
	}
	for _, tc := range []struct {
		from *netstack.Host
		addr string
		want string
	}{
		{a, fmt.Sprintf("localhost:%d", port(la)), "a"},
		{a, fmt.Sprintf("127.0.0.1:%d", port(la)), "a"},
		{a, fmt.Sprintf("b:%d", port(lb)), "b"},
		{b, fmt.Sprintf("b:%d", port(lb)), "b"}, // its own name
		{b, fmt.Sprintf("localhost:%d", port(lb)), "b"},
		{b, fmt.Sprintf(":%d", port(lb)), "b"},
	} {
		if got, err := read(tc.from, tc.addr); err != nil || got != tc.want {
			t.Errorf("%s dials %s: got %q, %v; want %q", tc.from.Name(), tc.addr, got, err, tc.want)
		}
	}
	// a's loopback listener is not reachable from b, nor on a's network
	// address.
	if _, err := read(b, fmt.Sprintf("localhost:%d", port(la))); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("b dials its own localhost at a's port: %v", err)
	}
	if _, err := read(b, fmt.Sprintf("a:%d", port(la))); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("b dials a's loopback-only port: %v", err)
	}
}
