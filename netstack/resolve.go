package netstack

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

var (
	loopback4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	loopback6 = netip.IPv6Loopback()
)

// checkNetwork accepts the networks a Host speaks.
func checkNetwork(network string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return nil
	}
	return net.UnknownNetworkError(network)
}

// splitHostPort splits "host:port" with a numeric port.
func splitHostPort(address string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, &net.AddrError{Err: "invalid port", Addr: address}
	}
	return host, uint16(port), nil
}

// fits reports whether network may use an address of a's family.
func fits(network string, a netip.Addr) bool {
	switch network {
	case "tcp4":
		return a.Is4()
	case "tcp6":
		return a.Is6()
	}
	return true
}

// lookup resolves host, as seen from h, to the addresses a dial on network
// tries in order (IPv4 first): an IP literal; "" or "localhost" for the loopback
// addresses; a name of the network for that host's addresses.
func (h *Host) lookup(network, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	if host == "" || strings.EqualFold(host, "localhost") {
		addrs = []netip.Addr{loopback4, loopback6}
	} else if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return nil, &net.AddrError{Err: "zones are not supported", Addr: host}
		}
		a = a.Unmap()
		if a.IsUnspecified() { // as the net package does: the local system
			if a.Is4() {
				a = loopback4
			} else {
				a = loopback6
			}
		}
		addrs = []netip.Addr{a}
	} else if other := h.net.host(host); other != nil {
		addrs = other.addrs
	} else {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range addrs { // IPv4 first, whatever order NewHost was given
		if a.Is4() && fits(network, a) {
			out = append(out, a)
		}
	}
	for _, a := range addrs {
		if a.Is6() && fits(network, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.AddrError{Err: "no suitable address found", Addr: host}
	}
	return out, nil
}

// protocol returns the network protocol gVisor uses for a.
func protocol(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// tcpAddr is the *net.TCPAddr for a gVisor address and port.
func tcpAddr(a tcpip.FullAddress) *net.TCPAddr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netipAddr(a.Addr), a.Port))
}
