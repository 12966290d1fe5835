package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/spriteproxy/spriteproxy/dialer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// NIC numbers inside every host's stack.
const (
	loopbackNIC tcpip.NICID = 1
	networkNIC  tcpip.NICID = 2
)

// A Host is one machine of a Network: a gVisor TCP/IP stack with a loopback
// interface and an interface on the network. Listen and DialContext work as
// the net package's do, with no OS socket.
//
// A Host is safe for concurrent use. Its DialContext has the standard dial
// hook shape, so it plugs into http.Transport.DialContext, database drivers
// and gRPC, and it is a dialer.ContextDialer.
type Host struct {
	name  string
	net   *Network
	addrs []netip.Addr
	stack *stack.Stack
	link  *link

	cut sync.Map // tcpip.Endpoint → struct{}: the endpoints Cut reset

	done      chan struct{} // closed when Close starts
	closeOnce sync.Once
}

var _ dialer.ContextDialer = (*Host)(nil)

// newHost builds h's stack: tuned TCP, a loopback NIC, a NIC on the network
// holding addrs, and routes for both.
func newHost(n *Network, name string, addrs []netip.Addr) (*Host, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
		HandleLocal:        true, // a host dialing its own network address stays inside
	})
	h := &Host{
		name:  name,
		net:   n,
		addrs: addrs,
		stack: s,
		link:  newLink(n, uint32(n.opts.MTU)),
		done:  make(chan struct{}),
	}
	if err := h.configure(); err != nil {
		s.Destroy()
		return nil, err
	}
	return h, nil
}

func (h *Host) configure() error {
	s, size := h.stack, h.net.opts.BufferSize
	initial := min(initialBufferSize, size)
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	// RACK's tail loss probe fires after 2×SRTT with no floor; in memory
	// SRTT is microseconds, so any scheduling hiccup re-sent a 64 KiB
	// segment and entered recovery, though the link never loses a packet
	// (measured: tens of spurious retransmits per 64 MiB under load, none
	// without RACK). Loss, should the receiver ever drop, is still
	// recovered by SACK with duplicate ACKs, or by the retransmit timer.
	noRACK := tcpip.TCPRecovery(0)
	// gVisor lets a new connection take a port held in TIME_WAIT only on
	// loopback; without that, ~48k short connections within a minute used up
	// the ephemeral ports and further dials waited for TIME_WAIT to end.
	// TIME_WAIT guards against delayed duplicate segments, which a network
	// that delivers synchronously cannot produce.
	reuse := tcpip.TCPTimeWaitReuseGlobal
	opts := []tcpip.SettableTransportProtocolOption{
		&sack,
		&moderate,
		&noRACK,
		&reuse,
		&tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: initial, Max: size},
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: initial, Max: size},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("setting TCP option %T: %v", o, goError(err))
		}
	}

	if err := s.CreateNICWithOptions(loopbackNIC, loopback.New(), stack.NICOptions{Name: "lo"}); err != nil {
		return fmt.Errorf("creating loopback interface: %v", goError(err))
	}
	if err := s.CreateNICWithOptions(networkNIC, h.link, stack.NICOptions{Name: "net0"}); err != nil {
		return fmt.Errorf("creating network interface: %v", goError(err))
	}
	add := func(nic tcpip.NICID, p netip.Prefix) error {
		proto := ipv4.ProtocolNumber
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpipAddr(p.Addr()), PrefixLen: p.Bits()},
		}
		if err := s.AddProtocolAddress(nic, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("adding address %v: %v", p, goError(err))
		}
		return nil
	}
	if err := add(loopbackNIC, netip.MustParsePrefix("127.0.0.1/8")); err != nil {
		return err
	}
	if err := add(loopbackNIC, netip.MustParsePrefix("::1/128")); err != nil {
		return err
	}
	for _, a := range h.addrs {
		if err := add(networkNIC, netip.PrefixFrom(a, a.BitLen())); err != nil {
			return err
		}
	}
	subnet := func(p string) tcpip.Subnet {
		pp := netip.MustParsePrefix(p)
		return tcpip.AddressWithPrefix{Address: tcpipAddr(pp.Addr()), PrefixLen: pp.Bits()}.Subnet()
	}
	// Loopback first; everything else goes out on the network, where the
	// Network finds the host owning the destination.
	s.SetRouteTable([]tcpip.Route{
		{Destination: subnet("127.0.0.0/8"), NIC: loopbackNIC},
		{Destination: subnet("::1/128"), NIC: loopbackNIC},
		{Destination: subnet("0.0.0.0/0"), NIC: networkNIC},
		{Destination: subnet("::/0"), NIC: networkNIC},
	})
	return nil
}

// Name returns the host's name on its network.
func (h *Host) Name() string { return h.name }

// Addrs returns the host's addresses on the network (not its loopback
// addresses).
func (h *Host) Addrs() []netip.Addr { return slices.Clone(h.addrs) }

// String returns the host's name and addresses, for logs.
func (h *Host) String() string { return fmt.Sprintf("%s%v", h.name, h.addrs) }

// Dial is DialContext with context.Background().
func (h *Host) Dial(network, address string) (net.Conn, error) {
	return h.DialContext(context.Background(), network, address)
}

// Close takes the host off its network and tears its stack down: listeners
// and connections of the host fail from then on (their peers on other hosts
// get a TCP reset), and its name and addresses are free again. Close returns
// once the stack's goroutines have exited. It is safe to call more than once
// and concurrently; it always returns nil.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.net.remove(h)
		close(h.done)
		// No delivery into the stack may run while it is torn down; packets
		// held back by its Conditions are dropped.
		h.link.delay.stop()
		h.link.in.close()
		h.stack.Destroy()
	})
	return nil
}

// closed reports whether Close has started.
func (h *Host) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// canReach reports whether a dial from h to a can be answered: a is a
// loopback address, one of h's, or another host's.
func (h *Host) canReach(a netip.Addr) bool {
	return a.IsLoopback() || slices.Contains(h.addrs, a) || h.net.owns(a)
}
