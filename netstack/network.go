package netstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spriteproxy/spriteproxy/dialer"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Options configures a Network. The zero value (and a nil *Options) gives the
// defaults.
type Options struct {
	// IPv4Prefix is where NewHost draws an IPv4 address for a host given no
	// address, from the second address on (10.99.0.2, 10.99.0.3, ...).
	// Zero means 10.99.0.0/16.
	IPv4Prefix netip.Prefix

	// IPv6Prefix is the same for IPv6. Zero means fd00:99::/64.
	IPv6Prefix netip.Prefix

	// MTU is the largest IP packet between two hosts. Zero means 65536, the
	// most an IP packet can carry, so that a TCP segment holds up to ~64 KiB.
	MTU int

	// BufferSize is the most a TCP connection's send or receive buffer grows
	// to (they start at 1 MiB, or BufferSize if smaller, and are tuned as data
	// moves). Zero means 4 MiB.
	BufferSize int
}

const (
	defaultMTU        = 65536
	defaultBufferSize = 4 << 20
	initialBufferSize = 1 << 20
	minMTU            = 1280 // IPv6's minimum
)

var (
	defaultIPv4Prefix = netip.MustParsePrefix("10.99.0.0/16")
	defaultIPv6Prefix = netip.MustParsePrefix("fd00:99::/64")
)

// withDefaults returns a copy of o with zero fields set to their defaults.
// It panics on values that cannot work: they are programming errors, found
// once at construction.
func (o *Options) withDefaults() Options {
	var v Options
	if o != nil {
		v = *o
	}
	if !v.IPv4Prefix.IsValid() {
		v.IPv4Prefix = defaultIPv4Prefix
	}
	if !v.IPv6Prefix.IsValid() {
		v.IPv6Prefix = defaultIPv6Prefix
	}
	v.IPv4Prefix, v.IPv6Prefix = v.IPv4Prefix.Masked(), v.IPv6Prefix.Masked()
	if !v.IPv4Prefix.Addr().Is4() || v.IPv4Prefix.Bits() > 30 {
		panic(fmt.Sprintf("netstack: Options.IPv4Prefix %v is not an IPv4 prefix of /30 or wider", v.IPv4Prefix))
	}
	if !v.IPv6Prefix.Addr().Is6() || v.IPv6Prefix.Addr().Is4In6() || v.IPv6Prefix.Bits() > 126 {
		panic(fmt.Sprintf("netstack: Options.IPv6Prefix %v is not an IPv6 prefix of /126 or wider", v.IPv6Prefix))
	}
	if v.MTU == 0 {
		v.MTU = defaultMTU
	}
	if v.MTU < minMTU || v.MTU > defaultMTU {
		panic(fmt.Sprintf("netstack: Options.MTU %d is outside %d-%d", v.MTU, minMTU, defaultMTU))
	}
	if v.BufferSize == 0 {
		v.BufferSize = defaultBufferSize
	}
	if v.BufferSize < 4096 {
		panic(fmt.Sprintf("netstack: Options.BufferSize %d is below 4096", v.BufferSize))
	}
	return v
}

// A Network is an in-memory IP network of Hosts. Each Host is a gVisor
// TCP/IP stack with its own addresses; packets between hosts are handed from
// one stack to the other inside the process, and host names registered on
// the network resolve from every host.
//
// A Network is safe for concurrent use. Its zero value is not usable; call
// NewNetwork.
type Network struct {
	opts Options

	// routes maps each host address to that host's link. It is replaced, not
	// changed, under mu, so that the packet path reads it without a lock.
	routes atomic.Pointer[map[tcpip.Address]*link]

	// dropped counts packets the links could not deliver: to an address no
	// host owns, or to a host closing. Tests read it.
	dropped atomic.Uint64

	mu     sync.Mutex
	hosts  map[string]*Host // by name; guarded by mu
	next4  netip.Addr       // next IPv4 address to try; guarded by mu
	next6  netip.Addr       // next IPv6 address to try; guarded by mu
	closed bool             // guarded by mu

	closeOnce sync.Once
}

// NewNetwork returns an empty network. A nil opts means the defaults. It
// panics if opts holds a value that cannot work (a prefix of the wrong
// family or too narrow, an MTU outside 1280-65536, a buffer under 4 KiB).
func NewNetwork(opts *Options) *Network {
	o := opts.withDefaults()
	n := &Network{
		opts:  o,
		hosts: make(map[string]*Host),
		next4: o.IPv4Prefix.Addr().Next().Next(),
		next6: o.IPv6Prefix.Addr().Next().Next(),
	}
	empty := make(map[tcpip.Address]*link)
	n.routes.Store(&empty)
	return n
}

// NewHost adds a host called name, with the given addresses, to the network.
// Given no address, the host gets one IPv4 address from Options.IPv4Prefix
// and one IPv6 address from Options.IPv6Prefix. Either way it also has a
// loopback interface, so that 127.0.0.1, ::1 and "localhost" work inside it.
//
// name is how the other hosts (and Network.Dialer) find this one: letters,
// digits, '-', '_' and '.', matched exactly. It may not be "localhost" or
// an IP address. Each name and address can be used by one host at a time.
func (n *Network) NewHost(name string, addrs ...netip.Addr) (*Host, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("netstack: new host %q: network closed", name)
	}
	if _, ok := n.hosts[name]; ok {
		return nil, fmt.Errorf("netstack: new host %q: a host of that name exists", name)
	}
	var err error
	if len(addrs) == 0 {
		addrs, err = n.allocateLocked()
	} else {
		addrs, err = n.checkAddrsLocked(addrs)
	}
	if err != nil {
		return nil, fmt.Errorf("netstack: new host %q: %w", name, err)
	}
	// Building the stack under n.mu is safe: the packet path never takes it.
	h, err := newHost(n, name, addrs)
	if err != nil {
		return nil, fmt.Errorf("netstack: new host %q: %w", name, err)
	}
	n.hosts[name] = h
	n.updateRoutesLocked(func(m map[tcpip.Address]*link) {
		for _, a := range addrs {
			m[tcpipAddr(a)] = h.link
		}
	})
	return h, nil
}

// checkName reports whether name can name a host.
func checkName(name string) error {
	if name == "" || len(name) > dialer.MaxHostLength {
		return fmt.Errorf("netstack: host name %q must be 1-%d bytes", name, dialer.MaxHostLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("netstack: host name %q holds %q: only letters, digits, '-', '_' and '.' are allowed", name, c)
		}
	}
	if strings.EqualFold(name, "localhost") {
		return errors.New(`netstack: "localhost" names every host's loopback; pick another host name`)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("netstack: host name %q is an IP address", name)
	}
	return nil
}

// allocateLocked picks the next free IPv4 and IPv6 addresses.
func (n *Network) allocateLocked() ([]netip.Addr, error) {
	a4, err := n.nextFreeLocked(&n.next4, n.opts.IPv4Prefix)
	if err != nil {
		return nil, err
	}
	a6, err := n.nextFreeLocked(&n.next6, n.opts.IPv6Prefix)
	if err != nil {
		return nil, err
	}
	return []netip.Addr{a4, a6}, nil
}

func (n *Network) nextFreeLocked(next *netip.Addr, p netip.Prefix) (netip.Addr, error) {
	routes := *n.routes.Load()
	for a := *next; p.Contains(a); a = a.Next() {
		if _, taken := routes[tcpipAddr(a)]; !taken {
			*next = a.Next()
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no address left in %v", p)
}

// checkAddrsLocked validates explicit host addresses.
func (n *Network) checkAddrsLocked(addrs []netip.Addr) ([]netip.Addr, error) {
	routes := *n.routes.Load()
	out := make([]netip.Addr, 0, len(addrs))
	seen := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.IsValid():
			return nil, errors.New("invalid address")
		case a.Zone() != "":
			return nil, fmt.Errorf("address %v has a zone", a)
		case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return nil, fmt.Errorf("address %v is not a unicast address a host can own", a)
		}
		if _, taken := routes[tcpipAddr(a)]; taken {
			return nil, fmt.Errorf("address %v belongs to another host", a)
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// updateRoutesLocked publishes a changed copy of the address table.
func (n *Network) updateRoutesLocked(change func(map[tcpip.Address]*link)) {
	old := *n.routes.Load()
	m := make(map[tcpip.Address]*link, len(old)+2)
	for k, v := range old {
		m[k] = v
	}
	change(m)
	n.routes.Store(&m)
}

// linkOf returns the link of the host owning address a, or nil. It takes no
// lock: it runs on the packet path.
func (n *Network) linkOf(a tcpip.Address) *link {
	return (*n.routes.Load())[a]
}

// owns reports whether a host of the network has address a.
func (n *Network) owns(a netip.Addr) bool {
	return n.linkOf(tcpipAddr(a)) != nil
}

// host returns the host called name, or nil.
func (n *Network) host(name string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hosts[name]
}

// remove forgets h: its name and addresses become free, and packets to its
// addresses are dropped from now on.
func (n *Network) remove(h *Host) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts[h.name] == h {
		delete(n.hosts, h.name)
	}
	n.updateRoutesLocked(func(m map[tcpip.Address]*link) {
		for _, a := range h.addrs {
			if m[tcpipAddr(a)] == h.link {
				delete(m, tcpipAddr(a))
			}
		}
	})
}

// ResolveSprite returns the host called name, for a server that places each
// sprite's targets in a host of this network. The error for an unknown name
// matches dialer.ErrUnknownSprite. ctx is not used: the lookup does not
// block.
func (n *Network) ResolveSprite(ctx context.Context, name string) (dialer.ContextDialer, error) {
	if h := n.host(name); h != nil {
		return h, nil
	}
	return nil, fmt.Errorf("netstack: %w %q", dialer.ErrUnknownSprite, name)
}

// Close closes every host of the network (see Host.Close) and refuses new
// ones. It returns once every goroutine the network's stacks started has
// exited. It is safe to call more than once and concurrently; it always
// returns nil.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		hosts := make([]*Host, 0, len(n.hosts))
		for _, h := range n.hosts {
			hosts = append(hosts, h)
		}
		n.mu.Unlock()
		for _, h := range hosts {
			h.Close()
		}
	})
	return nil
}

// tcpipAddr converts a (unmapped) netip.Addr to gVisor's form.
func tcpipAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// netipAddr converts gVisor's address form to an unmapped netip.Addr.
func netipAddr(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}
