package netstack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// link is a host's network interface: a stack.LinkEndpoint whose outbound
// packets are handed, in the sender's goroutine, straight to the stack of the
// host that owns the destination address.
//
// Delivery is synchronous, as gVisor's own loopback and pipe endpoints do it:
// there is no queue between two hosts, so nothing is ever dropped because a
// queue filled up. Backpressure is the sender doing the receiver's inbound
// IP work before its write returns; what the receiving TCP endpoint may hold
// is bounded by its receive window, which the sender respects. An inbound
// packet only ever lands in the receiving endpoint's segment queue (gVisor's
// TCP processors, or the endpoint's owner, handle it later), so a delivery
// never waits on a lock the sender could hold, and it starts no goroutine.
type link struct {
	net *Network
	mtu uint32

	disp atomic.Pointer[dispatcher] // nil until Attach, and after Attach(nil)
	in   gate                       // inbound deliveries in flight

	// Faults (faults.go). faulty is false while the link is perfect, so
	// that the packet path then reads one atomic and nothing else.
	faultMu         sync.Mutex // serialises changes to the faults
	faulty          atomic.Bool
	egress, ingress stage
	partitionEnd    atomic.Int64 // Unix ns; 0: no partition
	cutting         atomic.Int32 // Cuts under way
	delay           delayLine    // packets held back on their way in
	stats           faultStats
}

// dispatcher boxes the interface so that an atomic.Pointer can hold it.
type dispatcher struct{ stack.NetworkDispatcher }

var _ stack.LinkEndpoint = (*link)(nil)

func newLink(n *Network, mtu uint32) *link {
	l := &link{net: n, mtu: mtu, in: gate{done: make(chan struct{})}}
	l.delay.init(l)
	return l
}

// WritePackets sends each packet to the host owning its destination address.
// A packet for an address no host owns is dropped, as a wire would; dials
// check reachability beforehand so that they fail at once instead.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		dst, ok := destination(pkt)
		if !ok {
			continue
		}
		peer := l.net.linkOf(dst)
		switch {
		case peer == nil:
			l.net.dropped.Add(1)
		case l.faulty.Load() || peer.faulty.Load() || peer.delay.pending.Load() > 0:
			// Faults, or packets still held from faults since lifted:
			// those must not be overtaken.
			l.sendFaulty(pkt, peer)
		case !peer.deliver(pkt):
			l.net.dropped.Add(1)
		}
	}
	return pkts.Len(), nil
}

// deliver hands a copy of pkt's bytes (shared, reference-counted views; no
// byte is copied) to l's stack as an inbound packet. It reports false if the
// host is closing and the packet was dropped.
func (l *link) deliver(pkt *stack.PacketBuffer) bool {
	in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: pkt.ToBuffer()})
	defer in.DecRef()
	return l.deliverInbound(pkt.NetworkProtocolNumber, in)
}

// deliverInbound hands the inbound packet in to l's stack; the caller keeps
// its reference. It reports false if the host is closing and the packet was
// dropped.
func (l *link) deliverInbound(proto tcpip.NetworkProtocolNumber, in *stack.PacketBuffer) bool {
	if !l.in.enter() {
		return false
	}
	defer l.in.leave()
	d := l.disp.Load()
	if d == nil {
		return false
	}
	d.DeliverNetworkPacket(proto, in)
	return true
}

// destination reads the destination address from pkt's network header.
func destination(pkt *stack.PacketBuffer) (tcpip.Address, bool) {
	hdr := pkt.NetworkHeader().Slice()
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		if len(hdr) >= header.IPv4MinimumSize {
			return header.IPv4(hdr).DestinationAddress(), true
		}
	case header.IPv6ProtocolNumber:
		if len(hdr) >= header.IPv6MinimumSize {
			return header.IPv6(hdr).DestinationAddress(), true
		}
	}
	return tcpip.Address{}, false
}

// Attach implements stack.LinkEndpoint.
func (l *link) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.disp.Store(nil)
		return
	}
	l.disp.Store(&dispatcher{d})
}

// IsAttached implements stack.LinkEndpoint.
func (l *link) IsAttached() bool { return l.disp.Load() != nil }

// MTU implements stack.LinkEndpoint.
func (l *link) MTU() uint32 { return l.mtu }

// SetMTU implements stack.LinkEndpoint; the MTU is fixed by the Network.
func (l *link) SetMTU(uint32) {}

// Capabilities implements stack.LinkEndpoint. Packets never leave the
// process, so no checksum is computed or checked, and no link address needs
// resolving.
func (l *link) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload | stack.CapabilityTXChecksumOffload
}

// MaxHeaderLength implements stack.LinkEndpoint: there is no link header.
func (l *link) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: there is no link address.
func (l *link) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (l *link) SetLinkAddress(tcpip.LinkAddress) {}

// Wait implements stack.LinkEndpoint: the link starts no goroutine.
func (l *link) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (l *link) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (l *link) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint.
func (l *link) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (l *link) SetOnCloseAction(func()) {}

// gate counts the deliveries in flight into one host, so that the host can
// refuse new ones and wait for the rest before it tears its stack down. It
// never blocks a delivery: a closed gate drops the packet. That keeps two
// hosts closing at once from waiting on each other through a reply that one
// delivers into the other.
type gate struct {
	mu     sync.Mutex
	n      int  // deliveries in flight
	closed bool // no new delivery may enter
	done   chan struct{}
}

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.closed && g.n == 0 {
		close(g.done)
	}
}

// close refuses new deliveries and waits for those in flight. It must be
// called once.
func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	if g.n == 0 {
		close(g.done)
	}
	g.mu.Unlock()
	<-g.done
}
