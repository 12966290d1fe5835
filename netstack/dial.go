package netstack

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DialContext connects to address, as seen from inside h, over network
// ("tcp", "tcp4" or "tcp6"). address is "host:port" with a numeric port; the
// host is an IP address, "localhost" (h's loopback), or the name of a host of
// the network. A name with several addresses is tried in order, IPv4 first,
// until one answers.
//
// ctx bounds the dial only: once DialContext has returned, cancelling ctx
// does not affect the connection.
//
// Errors are *net.OpError values with Op "dial". A port nobody listens on
// fails at once with an error matching syscall.ECONNREFUSED; an address no
// host of the network owns fails at once with syscall.EHOSTUNREACH; an
// unknown name gives a *net.DNSError; a passed ctx deadline gives a net.Error
// whose Timeout reports true (and that matches context.DeadlineExceeded); a
// cancelled ctx gives an error matching context.Canceled.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := checkNetwork(network); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	host, port, err := splitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	addrs, err := h.lookup(network, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var first error
	for _, a := range addrs {
		c, err := h.dial(ctx, network, netip.AddrPortFrom(a, port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// dial connects to one address.
func (h *Host) dial(ctx context.Context, network string, ap netip.AddrPort) (net.Conn, error) {
	fail := func(err error) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	if err := ctx.Err(); err != nil {
		return fail(ctxError(err))
	}
	if h.closed() {
		return fail(net.ErrClosed)
	}
	if !h.canReach(ap.Addr()) {
		// Nobody would ever answer; a real network would say so after the
		// SYN retries, we say it now.
		return fail(os.NewSyscallError("connect", syscall.EHOSTUNREACH))
	}
	wq := new(waiter.Queue)
	ep, terr := h.stack.NewEndpoint(tcp.ProtocolNumber, protocol(ap.Addr()), wq)
	if terr != nil {
		return fail(sysError("socket", terr))
	}
	// The handshake's end (success or failure) makes the endpoint writable
	// or raises an error event.
	entry, ready := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr = ep.Connect(tcpip.FullAddress{Addr: tcpipAddr(ap.Addr()), Port: ap.Port()})
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		for connecting(ep) {
			select {
			case <-ready:
			case <-ctx.Done():
				ep.Close()
				return fail(ctxError(ctx.Err()))
			case <-h.done:
				ep.Close()
				return fail(net.ErrClosed)
			}
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		if h.closed() { // the abort came from Close
			return fail(net.ErrClosed)
		}
		return fail(sysError("connect", terr))
	}
	return newConn(h, ep, wq), nil
}

// connecting reports whether ep's handshake is still under way.
func connecting(ep tcpip.Endpoint) bool {
	switch tcp.EndpointState(ep.State()) {
	case tcp.StateConnecting, tcp.StateSynSent, tcp.StateSynRecv:
		return true
	}
	return false
}
