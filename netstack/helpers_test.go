package netstack_test

import (
	"net"
	"testing"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"github.com/spriteproxy/spriteproxy/netstack"
)

// newNetwork returns a Network closed when the test ends.
func newNetwork(t testing.TB) *netstack.Network {
	t.Helper()
	n := netstack.NewNetwork(nil)
	t.Cleanup(func() { n.Close() })
	return n
}

func newHost(t testing.TB, n *netstack.Network, name string) *netstack.Host {
	t.Helper()
	h, err := n.NewHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func listen(t testing.TB, h *netstack.Host, network, addr string) net.Listener {
	t.Helper()
	l, err := h.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs handle for each conn accepted on l (testnet.Serve: conns
// closed after, everything torn down when the test ends).
func serve(t testing.TB, l net.Listener, handle func(net.Conn)) {
	testnet.Serve(t, l, handle)
}

// port returns l's port.
func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }
