package session

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
)

// ListenFunc opens a listener, with the shape of net.ListenConfig.Listen:
// network is "tcp", "tcp4" or "tcp6" and address is "host:port" (port 0
// asks for any free port). ctx bounds the call only, not the listener's life.
type ListenFunc func(ctx context.Context, network, address string) (net.Listener, error)

// ListenOS listens on the operating system's network with a zero
// net.ListenConfig. It is the default ListenFunc.
func ListenOS(ctx context.Context, network, address string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, network, address)
}

var _ ListenFunc = ListenOS

// loopbackAttempts is how many times an OS-assigned port is tried on
// 127.0.0.1 when the same port turns out to be taken on ::1.
const loopbackAttempts = 8

// listen opens the listeners that serve host:port. For "localhost" that is
// one on 127.0.0.1 and one on ::1 (see listenLoopback); for any other host,
// a single "tcp" listener.
func listen(ctx context.Context, fn ListenFunc, host string, port int) ([]net.Listener, error) {
	if host != "localhost" {
		l, err := fn(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, err
		}
		return []net.Listener{l}, nil
	}
	return listenLoopback(ctx, fn, port)
}

// listenLoopback listens on "tcp4" 127.0.0.1:port and on "tcp6" [::1] at
// the same port, so that a client reaches the session whichever address it
// resolves localhost to. When port is 0, the port is the one the first
// listener got; if ::1 already has it taken, both are given up and another
// port is tried, up to loopbackAttempts times. A machine without one of the
// two loopback addresses is served on the other alone; a fixed port in use on
// either address is an error.
func listenLoopback(ctx context.Context, fn ListenFunc, port int) ([]net.Listener, error) {
	var err error
	for range loopbackAttempts {
		l4, err4 := fn(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err4 != nil {
			if addrInUse(err4) {
				return nil, err4
			}
			// No IPv4 loopback: ::1 alone, if there is that.
			l6, err6 := fn(ctx, "tcp6", net.JoinHostPort("::1", strconv.Itoa(port)))
			if err6 != nil {
				return nil, err4
			}
			return []net.Listener{l6}, nil
		}
		p, ok := portOf(l4.Addr())
		if !ok {
			// A listener whose address names no port cannot be mirrored.
			return []net.Listener{l4}, nil
		}
		l6, err6 := fn(ctx, "tcp6", net.JoinHostPort("::1", strconv.Itoa(p)))
		if err6 == nil {
			return []net.Listener{l4, l6}, nil
		}
		if !addrInUse(err6) {
			// No IPv6 loopback on this machine: 127.0.0.1 alone.
			return []net.Listener{l4}, nil
		}
		l4.Close()
		if port != 0 {
			return nil, err6
		}
		err = err6
	}
	return nil, err
}

// addrInUse reports whether a listen failed because the address is taken.
func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE)
}

// portOf returns the port of a listener's address.
func portOf(a net.Addr) (int, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port, true
	}
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(p)
	return n, err == nil
}
