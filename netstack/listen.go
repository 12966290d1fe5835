package netstack

import (
	"net"
	"net/netip"
	"strings"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// listenBacklog is the accept queue length, Linux's default somaxconn.
const listenBacklog = 4096

// Listen listens for TCP connections to h on address, as net.Listen does.
// network is "tcp", "tcp4" or "tcp6". address is "host:port": an empty or
// unspecified host listens on every address of h (both families for "tcp"),
// "localhost" on the loopback address, an IP address or h's own name on that
// address. Port 0 picks a free port, which the listener's Addr reports.
//
// Closing the listener makes a blocked Accept return an error matching
// net.ErrClosed; so does closing h.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	fail := func(addr net.Addr, err error) (net.Listener, error) {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: addr, Err: err}
	}
	if err := checkNetwork(network); err != nil {
		return fail(nil, err)
	}
	host, port, err := splitHostPort(address)
	if err != nil {
		return fail(nil, err)
	}
	if h.closed() {
		return fail(nil, net.ErrClosed)
	}

	// Which endpoint, bound to which address.
	var (
		proto  tcpip.NetworkProtocolNumber
		bind   netip.Addr // invalid for a wildcard
		v6only bool
	)
	wildcard := host == ""
	if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		if !fits(network, a) {
			return fail(nil, &net.AddrError{Err: "no suitable address found", Addr: host})
		}
		wildcard = true
	}
	switch {
	case wildcard && network == "tcp4":
		proto = ipv4.ProtocolNumber
	case wildcard:
		proto, v6only = ipv6.ProtocolNumber, network == "tcp6"
	case strings.EqualFold(host, "localhost"):
		bind = loopback4
		if network == "tcp6" {
			bind = loopback6
		}
		proto = protocol(bind)
	default:
		addrs, err := h.lookup(network, host)
		if err != nil {
			return fail(nil, err)
		}
		bind, proto = addrs[0], protocol(addrs[0])
	}
	local := tcpip.FullAddress{Port: port}
	shown := &net.TCPAddr{IP: net.IPv6unspecified, Port: int(port)}
	if proto == ipv4.ProtocolNumber {
		shown.IP = net.IPv4zero
	}
	if bind.IsValid() {
		local.Addr = tcpipAddr(bind)
		shown = net.TCPAddrFromAddrPort(netip.AddrPortFrom(bind, port))
	}

	wq := new(waiter.Queue)
	ep, terr := h.stack.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return fail(shown, sysError("socket", terr))
	}
	ep.SocketOptions().SetReuseAddress(true) // as the net package does
	if proto == ipv6.ProtocolNumber {
		ep.SocketOptions().SetV6Only(v6only)
	}
	if terr := ep.Bind(local); terr != nil {
		ep.Close()
		return fail(shown, sysError("bind", terr))
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return fail(shown, sysError("listen", terr))
	}
	if got, terr := ep.GetLocalAddress(); terr == nil {
		shown.Port = int(got.Port)
	}
	return &listener{host: h, ep: ep, wq: wq, addr: shown, network: network, done: make(chan struct{})}, nil
}

// listener is a listening TCP endpoint as a net.Listener.
type listener struct {
	host    *Host
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	addr    *net.TCPAddr
	network string

	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

var _ net.Listener = (*listener)(nil)

// Accept waits for and returns the next connection. It returns an error
// matching net.ErrClosed once the listener or its host is closed.
func (l *listener) Accept() (net.Conn, error) {
	var (
		entry      waiter.Entry
		ready      <-chan struct{}
		registered bool
	)
	for {
		if l.isClosed() {
			return nil, l.opError(net.ErrClosed)
		}
		ep, wq, terr := l.ep.Accept(nil)
		if terr == nil {
			return newConn(l.host, ep, wq), nil
		}
		if _, again := terr.(*tcpip.ErrWouldBlock); !again {
			if l.isClosed() {
				return nil, l.opError(net.ErrClosed)
			}
			return nil, l.opError(sysError("accept", terr))
		}
		if !registered {
			// Register, then try again: a connection may have arrived in
			// between.
			entry, ready = waiter.NewChannelEntry(waiter.ReadableEvents)
			l.wq.EventRegister(&entry)
			defer l.wq.EventUnregister(&entry)
			registered = true
			continue
		}
		select {
		case <-ready:
		case <-l.done:
		case <-l.host.done:
		}
	}
}

func (l *listener) isClosed() bool {
	select {
	case <-l.done:
		return true
	case <-l.host.done:
		return true
	default:
		return false
	}
}

// Close stops listening: a blocked Accept returns, and connections not yet
// accepted are reset. A second Close returns an error matching net.ErrClosed.
func (l *listener) Close() error {
	first := false
	l.closeOnce.Do(func() {
		first = true
		close(l.done)
		l.ep.Close()
	})
	if !first {
		return l.opError(net.ErrClosed)
	}
	return nil
}

// Addr returns the listening address, with the port that was picked for
// port 0.
func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: l.network, Addr: l.addr, Err: err}
}
