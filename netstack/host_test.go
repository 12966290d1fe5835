package netstack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/netstack"
)

// TestHalfClose checks both directions of a TCP half-close: the side that
// calls CloseWrite can still read the whole reply, and the other side reads
// io.EOF after the data.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")

	t.Run("ClientFirst", func(t *testing.T) {
		t.Parallel()
		// The server reads the request to EOF, then answers and closes.
		l := listen(t, b, "tcp", ":0")
		serve(t, l, func(c net.Conn) {
			req, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("server read: %v", err)
				return
			}
			c.Write(append([]byte("reply to "), req...))
		})
		c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("request")); err != nil {
			t.Fatal(err)
		}
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("Write after CloseWrite: got %v, want EPIPE", err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "reply to request" {
			t.Errorf("got %q", got)
		}
	})

	t.Run("CloseRead", func(t *testing.T) {
		t.Parallel()
		l := listen(t, b, "tcp", ":0")
		got := make(chan string, 1)
		serve(t, l, func(c net.Conn) {
			req, _ := io.ReadAll(c)
			got <- string(req)
		})
		c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.(interface{ CloseRead() error }).CloseRead(); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("Read after CloseRead: %d, %v; want io.EOF", n, err)
		}
		// Writing still works.
		c.Write([]byte("still writing"))
		c.(interface{ CloseWrite() error }).CloseWrite()
		if s := <-got; s != "still writing" {
			t.Errorf("server got %q", s)
		}
	})

	t.Run("ServerFirst", func(t *testing.T) {
		t.Parallel()
		// The server greets and half-closes, then reads the client's
		// answer to EOF and echoes its length.
		l := listen(t, b, "tcp", ":0")
		handled := make(chan struct{})
		serve(t, l, func(c net.Conn) {
			defer close(handled)
			c.Write([]byte("hello"))
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Errorf("server CloseWrite: %v", err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("server read: %v", err)
			}
			if string(got) != "hi there" {
				t.Errorf("server got %q", got)
			}
		})
		c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello" {
			t.Fatalf("got %q, %v", got, err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("second read at EOF: %v", err)
		}
		// The write side is still open.
		if _, err := c.Write([]byte("hi there")); err != nil {
			t.Fatal(err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		<-handled
	})
}

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

// TestListen checks listening addresses and ports.
func TestListen(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a := newHost(t, n, "a")

	l1, l2 := listen(t, a, "tcp", ":0"), listen(t, a, "tcp", ":0")
	defer l1.Close()
	defer l2.Close()
	if port(l1) == 0 || port(l1) == port(l2) {
		t.Errorf("ports %d and %d", port(l1), port(l2))
	}
	if _, err := a.Listen("tcp", fmt.Sprintf(":%d", port(l1))); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("listen on a used port: %v", err)
	}
	for _, tc := range []struct{ network, addr, want string }{
		{"tcp", "127.0.0.1:0", "127.0.0.1"},
		{"tcp", "[::1]:0", "::1"},
		{"tcp", "localhost:0", "127.0.0.1"},
		{"tcp6", "localhost:0", "::1"},
		{"tcp4", ":0", "0.0.0.0"},
		{"tcp", ":0", "::"},
		{"tcp", "a:0", a.Addrs()[0].String()},
		{"tcp6", "a:0", a.Addrs()[1].String()},
		{"tcp", net.JoinHostPort(a.Addrs()[1].String(), "0"), a.Addrs()[1].String()},
	} {
		l, err := a.Listen(tc.network, tc.addr)
		if err != nil {
			t.Errorf("listen %s %s: %v", tc.network, tc.addr, err)
			continue
		}
		if got := l.Addr().(*net.TCPAddr); got.IP.String() != tc.want || got.Port == 0 {
			t.Errorf("listen %s %s: Addr %v, want %s:<port>", tc.network, tc.addr, got, tc.want)
		}
		l.Close()
	}
	for _, tc := range []struct{ network, addr string }{
		{"udp", ":0"}, {"tcp", "10.99.200.200:0"}, {"tcp4", "[::]:0"}, {"tcp", "nobody:0"}, {"tcp", "x"},
	} {
		if l, err := a.Listen(tc.network, tc.addr); err == nil {
			l.Close()
			t.Errorf("listen %s %s: no error", tc.network, tc.addr)
		}
	}
}

// TestListenerClose checks that Close unblocks Accept with net.ErrClosed,
// from the listener and from the host.
func TestListenerClose(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	for _, closeHost := range []bool{false, true} {
		h := newHost(t, n, fmt.Sprintf("h%v", closeHost))
		l := listen(t, h, "tcp", ":0")
		errc := make(chan error, 1)
		go func() {
			_, err := l.Accept()
			errc <- err
		}()
		if closeHost {
			h.Close()
		} else {
			l.Close()
		}
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Errorf("closeHost=%v: Accept returned %v", closeHost, err)
		}
		if err := l.Close(); !errors.Is(err, net.ErrClosed) && !closeHost {
			t.Errorf("second Close: %v", err)
		}
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

// TestNewHost checks explicit addresses and the errors of NewHost.
func TestNewHost(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	db4, db6 := netip.MustParseAddr("192.168.7.7"), netip.MustParseAddr("2001:db8::7")
	db, err := n.NewHost("db", db4, db6)
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Addrs(); len(got) != 2 || got[0] != db4 || got[1] != db6 || db.Name() != "db" {
		t.Errorf("db is %v %v", db.Name(), got)
	}
	app := newHost(t, n, "app")
	l := listen(t, db, "tcp", ":5432")
	serve(t, l, func(c net.Conn) { c.Write([]byte("ok")) })
	for _, addr := range []string{"192.168.7.7:5432", "[2001:db8::7]:5432", "db:5432"} {
		c, err := app.Dial("tcp", addr)
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			continue
		}
		c.Close()
	}

	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
	}{
		{"db", nil},                  // name taken
		{"other", []netip.Addr{db4}}, // address taken
		{"", nil},                    // no name
		{"localhost", nil},           // reserved
		{"10.0.0.1", nil},            // an IP
		{"a b", nil},                 // not a name
		{"lo", []netip.Addr{netip.IPv6Loopback()}},
		{"zero", []netip.Addr{netip.IPv4Unspecified()}},
		{"bad", []netip.Addr{{}}},
	} {
		if h, err := n.NewHost(tc.name, tc.addrs...); err == nil {
			t.Errorf("NewHost(%q, %v) = %v, want an error", tc.name, tc.addrs, h)
		}
	}

	// A closed host frees its name and addresses.
	db.Close()
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := app.Dial("tcp", "db:5432"); err == nil {
		t.Error("dial a closed host: no error")
	}
	if _, err := n.NewHost("db", db4); err != nil {
		t.Errorf("reusing a closed host's name and address: %v", err)
	}
	n.Close()
	if _, err := n.NewHost("late"); err == nil {
		t.Error("NewHost on a closed network: no error")
	}
}

// TestHostClose checks what a closed host's peers and users see.
func TestHostClose(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	l := listen(t, b, "tcp", ":0")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()

	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	b.Close()
	if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer's Read after its host closed: %v, want ECONNRESET", err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("Write on a closed host's conn: no error")
	}
	if _, err := b.Listen("tcp", ":0"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen on a closed host: %v", err)
	}
	if _, err := b.Dial("tcp", "a:1"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial from a closed host: %v", err)
	}
}

// TestHTTP runs an HTTP server in one host and a client in another, the
// Host's DialContext plugged into http.Transport.
func TestHTTP(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	web, client := newHost(t, n, "web"), newHost(t, n, "client")
	l := listen(t, web, "tcp", ":80")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	defer func() {
		srv.Close()
		<-done
	}()
	tr := &http.Transport{DialContext: client.DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for i := range 3 {
		resp, err := hc.Get(fmt.Sprintf("http://web/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("hello /%d", i); !bytes.Equal(body, []byte(want)) {
			t.Errorf("got %q, want %q", body, want)
		}
	}
}
