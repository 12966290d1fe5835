package netstack_test

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
)

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
