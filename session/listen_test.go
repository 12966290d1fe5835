package session

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
)

// requireIPv6 skips the test on a machine without an IPv6 loopback.
func requireIPv6(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	l.Close()
}

func inUseError(network string) error {
	return &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
}

// TestLocalhostBothFamilies: a session on localhost answers on 127.0.0.1
// and on ::1, on one port.
func TestLocalhostBothFamilies(t *testing.T) {
	t.Parallel()
	requireIPv6(t)
	s := start(t, forward(t, startEcho(t)))
	addrs := s.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs() = %v, want 127.0.0.1 and ::1", addrs)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		addr := net.JoinHostPort(host, strconv.Itoa(s.Port()))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		if got := roundTrip(t, c, host); got != host {
			t.Errorf("echo via %s = %q", addr, got)
		}
		c.Close()
	}
}

// TestLoopbackRetry: with port 0, a port the OS gave on 127.0.0.1 that is
// taken on ::1 is given up and another tried.
func TestLoopbackRetry(t *testing.T) {
	t.Parallel()
	var tcp6 int
	lr := listenRecorder{fail: func(network string) error {
		if network == "tcp6" {
			tcp6++ // calls are sequential within Start
			if tcp6 <= 2 {
				return inUseError(network)
			}
		}
		return nil
	}}
	cfg := forward(t, startEcho(t))
	cfg.Listen = lr.listen
	s := start(t, cfg)

	calls, ls := lr.snapshot()
	var tcp4 int
	for _, c := range calls {
		if c[:4] == "tcp4" {
			tcp4++
		}
	}
	if tcp4 != 3 {
		t.Fatalf("calls %v: want 3 tries on tcp4", calls)
	}
	// The two listeners given up are closed; the kept ones share a port.
	for _, l := range ls[:2] {
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("given-up listener %v still open", l.Addr())
		}
	}
	for _, a := range s.Addrs() {
		if a.(*net.TCPAddr).Port != s.Port() {
			t.Errorf("listener %v not on port %d", a, s.Port())
		}
	}
	roundTrip(t, dial(t, s.Addr()), "retried")
}

// TestLoopbackRetryGivesUp: after loopbackAttempts ports taken on ::1,
// Start fails and leaves no listener open.
func TestLoopbackRetryGivesUp(t *testing.T) {
	t.Parallel()
	lr := listenRecorder{fail: func(network string) error {
		if network == "tcp6" {
			return inUseError(network)
		}
		return nil
	}}
	cfg := forward(t, startEcho(t))
	cfg.Listen = lr.listen
	s, err := Start(t.Context(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("Start succeeded with ::1 always in use")
	}
	if !addrInUse(err) {
		t.Errorf("error %v is not EADDRINUSE", err)
	}
	_, ls := lr.snapshot()
	if len(ls) != loopbackAttempts {
		t.Errorf("%d tries, want %d", len(ls), loopbackAttempts)
	}
	for _, l := range ls {
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener %v left open", l.Addr())
		}
	}
}

// TestLoopbackNoIPv6: a machine without ::1 is served on 127.0.0.1 alone.
func TestLoopbackNoIPv6(t *testing.T) {
	t.Parallel()
	lr := listenRecorder{fail: func(network string) error {
		if network == "tcp6" {
			return &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}
		}
		return nil
	}}
	cfg := forward(t, startEcho(t))
	cfg.Listen = lr.listen
	s := start(t, cfg)
	if addrs := s.Addrs(); len(addrs) != 1 || !addrs[0].(*net.TCPAddr).IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("Addrs() = %v, want 127.0.0.1 only", addrs)
	}
	roundTrip(t, dial(t, s.Addr()), "v4 only")
}

// TestLoopbackNoIPv4: a machine without 127.0.0.1 is served on ::1 alone.
func TestLoopbackNoIPv4(t *testing.T) {
	t.Parallel()
	requireIPv6(t)
	lr := listenRecorder{fail: func(network string) error {
		if network == "tcp4" {
			return &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}
		}
		return nil
	}}
	cfg := forward(t, startEcho(t))
	cfg.Listen = lr.listen
	s := start(t, cfg)
	if addrs := s.Addrs(); len(addrs) != 1 || !addrs[0].(*net.TCPAddr).IP.Equal(net.IPv6loopback) {
		t.Fatalf("Addrs() = %v, want ::1 only", addrs)
	}
	roundTrip(t, dial(t, s.Addr()), "v6 only")
}

// TestFixedPortInUseOnIPv6: a fixed local port free on 127.0.0.1 but taken
// on ::1 is an error (a client resolving localhost to ::1 would reach the
// other process), and the 127.0.0.1 listener is not left open.
func TestFixedPortInUseOnIPv6(t *testing.T) {
	t.Parallel()
	requireIPv6(t)
	busy, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port

	var lr listenRecorder
	cfg := forward(t, startEcho(t))
	cfg.Listen = lr.listen
	cfg.LocalPort = port
	s, err := Start(t.Context(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("Start succeeded with the port taken on ::1")
	}
	if !addrInUse(err) {
		// 127.0.0.1 at that port may belong to someone else too.
		t.Logf("error %v", err)
	}
	_, ls := lr.snapshot()
	for _, l := range ls {
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener %v left open", l.Addr())
		}
	}
}

// TestOtherLocalHost: a host other than localhost gets one "tcp" listener.
func TestOtherLocalHost(t *testing.T) {
	t.Parallel()
	var lr listenRecorder
	cfg := forward(t, startEcho(t))
	cfg.Listen = lr.listen
	cfg.LocalHost = "127.0.0.1"
	s := start(t, cfg)
	calls, _ := lr.snapshot()
	if len(calls) != 1 || calls[0] != "tcp 127.0.0.1:0" {
		t.Fatalf("calls %v, want [tcp 127.0.0.1:0]", calls)
	}
	roundTrip(t, dial(t, s.Addr()), "one")
}
